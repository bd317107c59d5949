//! [`When`]: one condition of a trigger that reacts — to a status, a
//! result, an error of an invocation, or to an event — with the filters on
//! its source's arguments or payload. A trigger reacts to one condition
//! ([`crate::Trigger::on`]), to any of several ([`crate::Trigger::any_of`])
//! or to all of several within a time window ([`crate::Trigger::all_of`]).

use std::fmt;
use std::sync::Arc;

use pynenc_model::{InvocationStatus, Serializer};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::condition::{Condition, Happened, JsonCheck, TriggerEvent};
use crate::task::Task;

/// A condition a trigger reacts to.
///
/// ```rust,ignore
/// use pynenc::{InvocationStatus, Trigger, When};
///
/// // a large charge, or a refund, in the EU
/// Trigger::any_of(
///     vec![
///         When::result(charge::task(), |amount: &u64| *amount > 1000),
///         When::any_result(refund::task()),
///     ],
///     review::task(),
///     (),
/// );
/// // both the export and the upload succeeded within ten minutes
/// Trigger::all_of(
///     vec![When::any_result(export::task()), When::event("upload.done")],
///     std::time::Duration::from_secs(600),
///     publish::task(),
///     (),
/// );
/// ```
#[derive(Clone)]
pub struct When {
    pub(crate) condition: Condition,
    pub(crate) argument_filters: Vec<(String, JsonCheck)>,
}

impl fmt::Debug for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl When {
    pub(crate) fn of(condition: Condition) -> When {
        When {
            condition,
            argument_filters: Vec::new(),
        }
    }

    /// An invocation of `source` reaches one of `statuses` (those of
    /// [`super::REACTABLE_STATUSES`]: `running` and `retry` once per
    /// attempt, `success` and `failed` once).
    pub fn status<P, R>(source: Task<P, R>, statuses: &[InvocationStatus]) -> When
    where
        R: DeserializeOwned + Send + 'static,
    {
        When::of(Condition::Status {
            source: source.definition(),
            statuses: statuses.to_vec(),
        })
    }

    /// An invocation of `source` succeeds with a result `filter` accepts (a
    /// result that does not decode as `R` is not accepted).
    pub fn result<P, R>(
        source: Task<P, R>,
        filter: impl Fn(&R) -> bool + Send + Sync + 'static,
    ) -> When
    where
        R: DeserializeOwned + Send + 'static,
    {
        let source_id = source.task_id();
        let check = Arc::new(move |text: &str, serializer: Serializer| {
            match serializer.deserialize::<R>(text, format_args!("a result of {source_id}")) {
                Ok(value) => filter(&value),
                Err(e) => {
                    tracing::warn!(task_id = source_id, error = %e, "on_result: the result does not decode as the task's type; not a match");
                    false
                }
            }
        });
        When::of(Condition::Result {
            source: source.definition(),
            check: Some(check),
        })
    }

    /// An invocation of `source` succeeds.
    pub fn any_result<P, R>(source: Task<P, R>) -> When
    where
        R: DeserializeOwned + Send + 'static,
    {
        When::of(Condition::Result {
            source: source.definition(),
            check: None,
        })
    }

    /// An invocation of `source` fails for good (no retry left) with an
    /// error of one of `kinds` (any kind when `kinds` is empty).
    pub fn exception<P, R>(source: Task<P, R>, kinds: &[&str]) -> When
    where
        R: DeserializeOwned + Send + 'static,
    {
        When::of(Condition::Exception {
            source: source.definition(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
        })
    }

    /// The event `name` is emitted ([`crate::Pynenc::emit_event`]).
    pub fn event(name: &str) -> When {
        When::of(Condition::Event {
            name: name.to_string(),
            check: None,
        })
    }

    /// Only events whose payload `filter` accepts (a [`When::event`]).
    pub fn when_payload(mut self, filter: impl Fn(&Value) -> bool + Send + Sync + 'static) -> When {
        if let Condition::Event { check, .. } = &mut self.condition {
            *check = Some(Arc::new(filter));
        }
        self
    }

    /// Only sources whose argument `name` `filter` accepts (as JSON). Every
    /// filter must accept. The source task must have the parameter: checked
    /// when the app builds (for an event, `name` and `payload`).
    pub fn when_argument(
        mut self,
        name: &str,
        filter: impl Fn(&Value) -> bool + Send + Sync + 'static,
    ) -> When {
        self.argument_filters
            .push((name.to_string(), Arc::new(filter)));
        self
    }

    /// How the condition reads in names and listings.
    pub(crate) fn describe(&self) -> String {
        let base = self.condition.describe();
        if self.argument_filters.is_empty() {
            return base;
        }
        let names: Vec<&str> = self
            .argument_filters
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        format!("{base} filtered on {}", names.join(", "))
    }

    /// What is wrong with the condition or its filters, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        if let Some(p) = self.condition.problem() {
            return Some(p);
        }
        let params = self.condition.source_params();
        self.argument_filters
            .iter()
            .find(|(arg, _)| !params.contains(&arg.as_str()))
            .map(|(arg, _)| {
                let source = self.condition.source_task().unwrap_or("a cron schedule");
                format!(
                    "a filter names the argument '{arg}', which {source} does not have (its parameters: {})",
                    params.join(", ")
                )
            })
    }

    /// The task whose invocations the condition watches (`None`: cron).
    pub(crate) fn source_task(&self) -> Option<&'static str> {
        self.condition.source_task()
    }

    /// Whether `happened` to a source invocation with `arguments` meets the
    /// condition and its filters.
    pub(crate) fn is_met(
        &self,
        happened: &Happened<'_>,
        serializer: Serializer,
        event: Option<&TriggerEvent>,
        arguments: &Map<String, Value>,
    ) -> bool {
        self.condition.is_met(happened, serializer, event)
            && self
                .argument_filters
                .iter()
                .all(|(name, check)| arguments.get(name).is_some_and(|v| check(v)))
    }
}
