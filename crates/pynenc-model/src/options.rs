//! The effective options of a task: its `#[task]` options with configuration applied.

use pynenc_options::{ConcurrencyControl, OptionKind, OptionProblem, TaskOptionsSpec};
use serde::{Deserialize, Serialize};

use crate::outcome::TaskError;

/// The effective options of a task. See [`pynenc_options::OPTIONS`] for
/// what each does; the defaults are [`TaskOptionsSpec::DEFAULT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOptions {
    /// How many times a retriable error is retried (default 0).
    pub max_retries: u32,
    /// Error kinds that are retried; the retry error always is.
    pub retry_for: Vec<String>,
    /// Concurrency control when picking invocations to run.
    #[serde(with = "concurrency_name")]
    pub running_concurrency: ConcurrencyControl,
    /// Concurrency control when routing new calls.
    #[serde(with = "concurrency_name")]
    pub registration_concurrency: ConcurrencyControl,
    /// The arguments that identify an invocation for `Keys` concurrency.
    pub key_arguments: Vec<String>,
    /// Raise instead of reusing when a registered invocation has other non-key arguments.
    pub on_diff_non_key_args_raise: bool,
    /// Re-route (default) instead of ending `CONCURRENCY_CONTROLLED_FINAL`.
    pub reroute_on_concurrency_control: bool,
    /// How many calls `parallelize` routes per batch (default 100).
    pub parallel_batch_size: usize,
}

/// One option value, parsed according to its [`OptionKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionValue {
    /// [`OptionKind::Count`].
    Count(u32),
    /// [`OptionKind::BatchSize`].
    BatchSize(usize),
    /// [`OptionKind::Flag`].
    Flag(bool),
    /// [`OptionKind::ErrorKinds`] and [`OptionKind::ParamNames`].
    List(Vec<String>),
    /// [`OptionKind::Concurrency`].
    Concurrency(ConcurrencyControl),
}

impl OptionValue {
    /// The kind of value this is ([`OptionKind::ErrorKinds`] and
    /// [`OptionKind::ParamNames`] are both lists).
    pub fn fits(&self, kind: OptionKind) -> bool {
        matches!(
            (self, kind),
            (OptionValue::Count(_), OptionKind::Count)
                | (OptionValue::BatchSize(_), OptionKind::BatchSize)
                | (OptionValue::Flag(_), OptionKind::Flag)
                | (
                    OptionValue::List(_),
                    OptionKind::ErrorKinds | OptionKind::ParamNames
                )
                | (OptionValue::Concurrency(_), OptionKind::Concurrency)
        )
    }
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions::from(&TaskOptionsSpec::DEFAULT)
    }
}

impl From<&TaskOptionsSpec> for TaskOptions {
    fn from(s: &TaskOptionsSpec) -> Self {
        TaskOptions {
            max_retries: s.max_retries,
            retry_for: s.retry_for.iter().map(|s| s.to_string()).collect(),
            running_concurrency: s.running_concurrency,
            registration_concurrency: s.registration_concurrency,
            key_arguments: s.key_arguments.iter().map(|s| s.to_string()).collect(),
            on_diff_non_key_args_raise: s.on_diff_non_key_args_raise,
            reroute_on_concurrency_control: s.reroute_on_concurrency_control,
            parallel_batch_size: s.parallel_batch_size,
        }
    }
}

impl TaskOptions {
    /// Sets the option `name` (one of [`pynenc_options::OPTIONS`]) to `value`.
    ///
    /// # Errors
    ///
    /// An unknown option, or a value of another kind than the option takes.
    pub fn set(&mut self, name: &str, value: OptionValue) -> Result<(), String> {
        let def = pynenc_options::find_known(name)?;
        if !value.fits(def.kind) {
            return Err(format!("expected {}", def.kind.expected()));
        }
        match (def.name, value) {
            ("max_retries", OptionValue::Count(n)) => self.max_retries = n,
            ("retry_for", OptionValue::List(l)) => self.retry_for = l,
            ("running_concurrency", OptionValue::Concurrency(c)) => self.running_concurrency = c,
            ("registration_concurrency", OptionValue::Concurrency(c)) => {
                self.registration_concurrency = c
            }
            ("key_arguments", OptionValue::List(l)) => self.key_arguments = l,
            ("on_diff_non_key_args_raise", OptionValue::Flag(b)) => {
                self.on_diff_non_key_args_raise = b
            }
            ("reroute_on_concurrency_control", OptionValue::Flag(b)) => {
                self.reroute_on_concurrency_control = b
            }
            ("parallel_batch_size", OptionValue::BatchSize(n)) => self.parallel_batch_size = n,
            (other, _) => return Err(format!("option {other} has no field")),
        }
        Ok(())
    }

    /// The value of the option `name`, if it is one.
    pub fn get(&self, name: &str) -> Option<OptionValue> {
        Some(match name {
            "max_retries" => OptionValue::Count(self.max_retries),
            "retry_for" => OptionValue::List(self.retry_for.clone()),
            "running_concurrency" => OptionValue::Concurrency(self.running_concurrency),
            "registration_concurrency" => OptionValue::Concurrency(self.registration_concurrency),
            "key_arguments" => OptionValue::List(self.key_arguments.clone()),
            "on_diff_non_key_args_raise" => OptionValue::Flag(self.on_diff_non_key_args_raise),
            "reroute_on_concurrency_control" => {
                OptionValue::Flag(self.reroute_on_concurrency_control)
            }
            "parallel_batch_size" => OptionValue::BatchSize(self.parallel_batch_size),
            _ => return None,
        })
    }

    /// Checks the options against each other and the task's parameters
    /// (the same rules `#[task]` checks at compile time).
    ///
    /// # Errors
    ///
    /// The first rule broken: which option, and why.
    pub fn validate(&self, params: &[&str]) -> Result<(), OptionProblem> {
        pynenc_options::check_batch_size(self.parallel_batch_size as u64)?;
        pynenc_options::check_key_arguments(&self.key_arguments, params)?;
        pynenc_options::check_keys_have_arguments(
            self.running_concurrency,
            self.registration_concurrency,
            !self.key_arguments.is_empty(),
            params,
        )?;
        pynenc_options::check_retry_for(&self.retry_for)
    }

    /// Whether an error of `kind` is retried by this task (within `max_retries`).
    pub fn is_retriable(&self, error: &TaskError) -> bool {
        error.is_retry() || self.retry_for.iter().any(|k| k == &error.kind)
    }

    /// Whether `error`, after `retries` retries so far, is retried.
    pub fn should_retry(&self, error: &TaskError, retries: u32) -> bool {
        self.is_retriable(error) && retries < self.max_retries
    }

    /// The arguments that identify a call for `Keys` concurrency.
    pub fn key_args(&self) -> Vec<&str> {
        self.key_arguments.iter().map(String::as_str).collect()
    }
}

/// Concurrency modes serialize as their configuration name (`"task"`).
mod concurrency_name {
    use pynenc_options::ConcurrencyControl;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &ConcurrencyControl, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ConcurrencyControl, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ConcurrencyControl::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected {}, got \"{name}\"",
                ConcurrencyControl::EXPECTED
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_option() {
        let mut o = TaskOptions {
            registration_concurrency: ConcurrencyControl::Keys,
            ..TaskOptions::default()
        };
        let err = o.validate(&["x", "y"]).unwrap_err();
        assert_eq!(err.option, "registration_concurrency");
        o.key_arguments = vec!["z".into()];
        let err = o.validate(&["x", "y"]).unwrap_err();
        assert!(err.message.contains("`z` is not a parameter"), "{err}");
        o.key_arguments = vec!["x".into()];
        assert!(o.validate(&["x", "y"]).is_ok());
        o.parallel_batch_size = 0;
        assert_eq!(
            o.validate(&["x", "y"]).unwrap_err().option,
            "parallel_batch_size"
        );
    }

    #[test]
    fn retriable_kinds() {
        let o = TaskOptions {
            retry_for: vec!["Timeout".into()],
            ..TaskOptions::default()
        };
        assert!(o.is_retriable(&TaskError::new("Timeout", "slow")));
        assert!(o.is_retriable(&TaskError::retry("again")));
        assert!(!o.is_retriable(&TaskError::new("ValueError", "bad")));
    }

    #[test]
    fn every_option_can_be_set_and_read_back() {
        let mut o = TaskOptions::default();
        for def in pynenc_options::OPTIONS {
            let value = o
                .get(def.name)
                .unwrap_or_else(|| panic!("no field for {}", def.name));
            assert!(value.fits(def.kind), "{}", def.name);
            o.set(def.name, value.clone()).unwrap();
            assert_eq!(o.get(def.name), Some(value));
        }
        assert!(o.set("max_retries", OptionValue::Flag(true)).is_err());
        assert!(o.set("retries", OptionValue::Count(1)).is_err());
        o.set(
            "running_concurrency",
            OptionValue::Concurrency(ConcurrencyControl::Task),
        )
        .unwrap();
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.contains("\"running_concurrency\":\"task\""), "{json}");
        assert_eq!(serde_json::from_str::<TaskOptions>(&json).unwrap(), o);
    }
}
