//! Per-task options in configuration: `[task."<task id>"]` sections,
//! `task.<task id>.<option>` values in code and `PYNENC__TASK__…` variables.
//!
//! A task is named by its id (`my_crate::jobs::add`), with `.` accepted for
//! `::` (`my_crate.jobs.add`), or in the shell-safe form an environment
//! variable needs: `::` written `__`, in any case
//! (`PYNENC__TASK__MY_CRATE__JOBS__ADD__MAX_RETRIES=3`). All spellings of a
//! task meet under one key, its *shell key* ([`shell_key`]), so they
//! override each other in layer order like every other value.

use std::collections::BTreeMap;

use pynenc_options::{ConcurrencyControl, OptionKind, RegistrationScopeName};
use serde_json::Value;

use super::value::{parse_raw, FieldValue, Raw};
use super::{ConfigSource, TASK_SECTION};
use pynenc_model::{OptionValue, TaskOptions};

/// The options one task is given in configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct TaskOverrides {
    /// The task id as written last (for messages and `describe`).
    pub(crate) spelling: String,
    /// Option → (value as written in a file, where it came from).
    pub(crate) options: BTreeMap<String, (Value, ConfigSource)>,
}

/// Task ids are written with `::`; `.` is accepted in its place.
pub(crate) fn normalize_task_id(task_id: &str) -> String {
    task_id.replace('.', "::")
}

/// The key every spelling of a task id shares: `::` and `.` as `__`,
/// upper case (`my_crate::jobs::add` → `MY_CRATE__JOBS__ADD`).
pub(crate) fn shell_key(task_id: &str) -> String {
    task_id
        .replace("::", "__")
        .replace('.', "__")
        .to_ascii_uppercase()
}

/// The key of a task option in messages: `task.<task id>.<option>`.
pub(crate) fn task_key(task_id: &str, option: &str) -> String {
    format!("{TASK_SECTION}.{task_id}.{option}")
}

/// Reads the value of a task option of `kind`.
fn parse_option(kind: OptionKind, raw: Raw<'_>) -> Result<OptionValue, String> {
    Ok(match kind {
        OptionKind::Count => OptionValue::Count(parse_raw(raw)?),
        OptionKind::BatchSize => OptionValue::BatchSize(parse_raw(raw)?),
        OptionKind::Flag => OptionValue::Flag(parse_raw(raw)?),
        OptionKind::ErrorKinds | OptionKind::ParamNames => OptionValue::List(parse_raw(raw)?),
        OptionKind::Concurrency => OptionValue::Concurrency(parse_raw(raw)?),
        OptionKind::Scope => OptionValue::Scope(parse_raw(raw)?),
        OptionKind::Seconds => OptionValue::Seconds(parse_raw(raw)?),
    })
}

/// An option value as written in a file.
fn option_json(value: &OptionValue) -> Value {
    match value {
        OptionValue::Count(n) => n.to_json(),
        OptionValue::BatchSize(n) => n.to_json(),
        OptionValue::Flag(b) => b.to_json(),
        OptionValue::List(l) => l.to_json(),
        OptionValue::Concurrency(c) => FieldValue::to_json(c),
        OptionValue::Scope(s) => FieldValue::to_json(s),
        OptionValue::Seconds(n) => n.to_json(),
    }
}

/// Parses a task option (one of [`pynenc_options::OPTIONS`]), sets it on
/// `options`, and returns the value as written in a file.
pub(crate) fn apply_task_option(
    options: &mut TaskOptions,
    option: &str,
    raw: Raw<'_>,
) -> Result<Value, String> {
    let def = pynenc_options::find_known(option)?;
    let value = parse_option(def.kind, raw)?;
    let json = option_json(&value);
    options.set(def.name, value)?;
    Ok(json)
}

/// The registered task ids that look like `wanted` (a typo, a task that
/// moved to another module): the closest spellings of the whole id, and
/// those with the same function name; at most three, closest first.
pub(crate) fn near_task_ids<'a>(
    wanted: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let wanted_key = shell_key(wanted);
    let last = |id: &str| id.rsplit("__").next().unwrap_or_default().to_string();
    let wanted_last = last(&wanted_key);
    let scored: Vec<(usize, bool, &str)> = known
        .into_iter()
        .map(|id| {
            let key = shell_key(id);
            (
                edit_distance(&wanted_key, &key),
                last(&key) == wanted_last,
                id,
            )
        })
        .collect();
    let threshold = (wanted_key.len() / 4).max(2);
    let best = scored
        .iter()
        .map(|(d, _, _)| *d)
        .filter(|d| *d <= threshold)
        .min();
    let mut near: Vec<(usize, &str)> = scored
        .into_iter()
        .filter(|(d, same_name, _)| Some(*d) == best || *same_name)
        .map(|(d, _, id)| (d, id))
        .collect();
    near.sort();
    near.into_iter()
        .take(3)
        .map(|(_, id)| id.to_string())
        .collect()
}

/// The Levenshtein distance between two strings (by bytes: ids are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let old = row[j + 1];
            row[j + 1] = if ca == cb {
                prev
            } else {
                1 + prev.min(old).min(row[j])
            };
            prev = old;
        }
    }
    row[b.len()]
}

/// Concurrency modes in files are their names.
impl FieldValue for ConcurrencyControl {
    const KIND: &'static str = ConcurrencyControl::EXPECTED;

    fn from_json(v: &Value) -> Result<Self, String> {
        super::value::named_from_json(Self::KIND, v, ConcurrencyControl::from_name)
    }

    fn from_env(s: &str) -> Result<Self, String> {
        ConcurrencyControl::from_name(s.trim())
            .ok_or_else(|| super::value::expected(Self::KIND, super::value::quote(s)))
    }

    fn to_json(&self) -> Value {
        Value::from(self.name())
    }
}

/// Registration scopes in files are their names.
impl FieldValue for RegistrationScopeName {
    const KIND: &'static str = RegistrationScopeName::EXPECTED;

    fn from_json(v: &Value) -> Result<Self, String> {
        super::value::named_from_json(Self::KIND, v, RegistrationScopeName::from_name)
    }

    fn from_env(s: &str) -> Result<Self, String> {
        RegistrationScopeName::from_name(s.trim())
            .ok_or_else(|| super::value::expected(Self::KIND, super::value::quote(s)))
    }

    fn to_json(&self) -> Value {
        Value::from(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_task_shares_its_key() {
        let key = shell_key("my_crate::jobs::add");
        assert_eq!(key, "MY_CRATE__JOBS__ADD");
        assert_eq!(shell_key("my_crate.jobs.add"), key);
        assert_eq!(shell_key("MY_CRATE__JOBS__ADD"), key);
        assert_eq!(shell_key("my_crate__jobs__add"), key);
        assert_ne!(shell_key("my_crate::jobs_add"), key);
    }

    #[test]
    fn near_task_ids_catch_typos_and_moved_tasks() {
        let known = ["shop::jobs::add", "shop::jobs::total", "billing::invoice"];
        assert_eq!(
            near_task_ids("shop::jobs::ad", known),
            vec!["shop::jobs::add"]
        );
        assert_eq!(
            near_task_ids("SHOP__JOBS__TOTL", known),
            vec!["shop::jobs::total"]
        );
        assert_eq!(near_task_ids("other::add", known), vec!["shop::jobs::add"]);
        assert!(near_task_ids("nothing::like::it", known).is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
