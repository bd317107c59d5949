//! What makes a trigger fire: a cron schedule, or something that happened
//! to an invocation (a status, a result, an error) or an event; and what a
//! reaction knows of it ([`TriggerSource`]).

use std::fmt;
use std::sync::Arc;

use pynenc_model::{InvocationId, InvocationStatus, Serializer, TaskError};
use serde_json::{Map, Value};

use super::cron::CronSchedule;
use super::event::EVENT_TASK_ID;
use crate::task::TaskDefinition;

/// The statuses an `on_status` trigger can react to: those a runner sets
/// while it runs an invocation, where the reaction is routed in the same
/// run (so a runner that dies before it did runs the invocation again and
/// routes it then).
pub const REACTABLE_STATUSES: [InvocationStatus; 4] = [
    InvocationStatus::Running,
    InvocationStatus::Success,
    InvocationStatus::Failed,
    InvocationStatus::Retry,
];

/// A check of a JSON value (a result, an argument, an event's payload).
pub(crate) type JsonCheck = Arc<dyn Fn(&Value) -> bool + Send + Sync>;
/// A check of a serialized result, decoded as the source task's type.
pub(crate) type ResultCheck = Arc<dyn Fn(&str, Serializer) -> bool + Send + Sync>;

/// A trigger's condition as declared.
#[derive(Clone)]
pub(crate) enum Condition {
    /// Every tick of a cron expression.
    Cron {
        expr: String,
        timezone: Option<String>,
    },
    /// An invocation of `source` reached one of `statuses`.
    Status {
        source: &'static TaskDefinition,
        statuses: Vec<InvocationStatus>,
    },
    /// An invocation of `source` succeeded (and its result passed `check`).
    Result {
        source: &'static TaskDefinition,
        check: Option<ResultCheck>,
    },
    /// An invocation of `source` failed for good with one of `kinds` (any
    /// kind when empty).
    Exception {
        source: &'static TaskDefinition,
        kinds: Vec<String>,
    },
    /// An event named `name` was emitted (and its payload passed `check`).
    Event {
        name: String,
        check: Option<JsonCheck>,
    },
}

impl Condition {
    /// How the condition reads in names and listings.
    pub(crate) fn describe(&self) -> String {
        match self {
            Condition::Cron { expr, timezone } => match timezone {
                Some(tz) => format!("cron({expr} {tz})"),
                None => format!("cron({expr})"),
            },
            Condition::Status { source, statuses } => {
                let s: Vec<&str> = statuses.iter().map(|s| s.as_lower_str()).collect();
                format!("on_status({}: {})", source.task_id, s.join("|"))
            }
            Condition::Result { source, check } => match check {
                Some(_) => format!("on_result({}, filtered)", source.task_id),
                None => format!("on_any_result({})", source.task_id),
            },
            Condition::Exception { source, kinds } if kinds.is_empty() => {
                format!("on_exception({})", source.task_id)
            }
            Condition::Exception { source, kinds } => {
                format!("on_exception({}: {})", source.task_id, kinds.join("|"))
            }
            Condition::Event { name, .. } => format!("on_event({name})"),
        }
    }

    /// The task whose invocations the condition watches (`None` for cron).
    pub(crate) fn source_task(&self) -> Option<&'static str> {
        match self {
            Condition::Cron { .. } => None,
            Condition::Status { source, .. }
            | Condition::Result { source, .. }
            | Condition::Exception { source, .. } => Some(source.task_id),
            Condition::Event { .. } => Some(EVENT_TASK_ID),
        }
    }

    /// The parameters of the watched task (what argument filters may name).
    pub(crate) fn source_params(&self) -> &'static [&'static str] {
        match self {
            Condition::Cron { .. } => &[],
            Condition::Status { source, .. }
            | Condition::Result { source, .. }
            | Condition::Exception { source, .. } => source.params,
            Condition::Event { .. } => &["name", "payload"],
        }
    }

    /// What is wrong with the condition itself, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        match self {
            Condition::Status { statuses, .. } => {
                if statuses.is_empty() {
                    return Some("on_status needs at least one status".into());
                }
                statuses
                    .iter()
                    .find(|s| !REACTABLE_STATUSES.contains(s))
                    .map(|s| {
                        format!(
                            "on_status reacts to the statuses a runner sets while it runs an invocation (running, success, failed, retry); {} is set elsewhere",
                            s.as_lower_str()
                        )
                    })
            }
            Condition::Exception { kinds, .. } if kinds.iter().any(|k| k.trim().is_empty()) => {
                Some("on_exception names an empty error kind".into())
            }
            Condition::Event { name, .. } if name.trim().is_empty() => {
                Some("on_event needs an event name".into())
            }
            _ => None,
        }
    }
}

/// How a trigger's conditions combine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Combine {
    /// One condition.
    One,
    /// Any of them (a source meeting several fires once).
    Any,
    /// All of them, each met by a source that ended within the window.
    All(std::time::Duration),
}

/// How conditions combined read in names and listings.
pub(crate) fn describe(conditions: &[super::When], combine: &Combine) -> String {
    let parts: Vec<String> = conditions.iter().map(super::When::describe).collect();
    match combine {
        Combine::One => parts.join("; "),
        Combine::Any => format!("any_of({})", parts.join("; ")),
        Combine::All(within) => format!(
            "all_of({} within {}s)",
            parts.join("; "),
            within.as_secs_f64()
        ),
    }
}

impl Condition {
    /// Whether the condition is met by an outcome a runner can look back
    /// on later (what `all_of` combines): a result, an error, the statuses
    /// `success` and `failed`, an event.
    pub(crate) fn is_outcome(&self) -> bool {
        match self {
            Condition::Cron { .. } => false,
            Condition::Status { statuses, .. } => statuses
                .iter()
                .all(|s| matches!(s, InvocationStatus::Success | InvocationStatus::Failed)),
            Condition::Result { .. } | Condition::Exception { .. } | Condition::Event { .. } => {
                true
            }
        }
    }

    /// The final statuses of the sources that meet an outcome condition.
    pub(crate) fn outcome_statuses(&self) -> Vec<InvocationStatus> {
        match self {
            Condition::Status { statuses, .. } => statuses.clone(),
            Condition::Exception { .. } => vec![InvocationStatus::Failed],
            _ => vec![InvocationStatus::Success],
        }
    }

    /// The name of the events the condition watches.
    pub(crate) fn event_name(&self) -> Option<&str> {
        match self {
            Condition::Event { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// The schedule or the reaction of a checked trigger.
#[derive(Clone)]
pub(crate) enum Resolved {
    /// A cron trigger.
    Cron {
        expr: String,
        timezone: Option<String>,
        schedule: Box<CronSchedule>,
    },
    /// A trigger reacting to invocations of its sources' tasks (an event
    /// is an invocation of the built-in event task).
    Reaction {
        conditions: Vec<super::When>,
        combine: Combine,
    },
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resolved::Cron { expr, .. } => write!(f, "Cron({expr})"),
            Resolved::Reaction {
                conditions,
                combine,
            } => write!(f, "Reaction({})", describe(conditions, combine)),
        }
    }
}

/// What happened to an invocation, as a reaction sees it.
#[derive(Debug, Clone)]
pub(crate) struct Happened<'a> {
    /// The status it reached.
    pub(crate) status: InvocationStatus,
    /// Its serialized result (a success).
    pub(crate) result: Option<&'a str>,
    /// Its error (a failure or a retry).
    pub(crate) error: Option<&'a TaskError>,
}

impl Condition {
    /// Whether `happened` to an invocation of the source task meets the
    /// condition (the argument filters are checked apart). `event` is the
    /// event's name and payload when the source is an event.
    pub(crate) fn is_met(
        &self,
        happened: &Happened<'_>,
        serializer: Serializer,
        event: Option<&TriggerEvent>,
    ) -> bool {
        match self {
            Condition::Cron { .. } => false,
            Condition::Status { statuses, .. } => statuses.contains(&happened.status),
            Condition::Result { check, .. } => {
                happened.status == InvocationStatus::Success
                    && match (check, happened.result) {
                        (None, _) => true,
                        (Some(check), Some(text)) => check(text, serializer),
                        (Some(_), None) => false,
                    }
            }
            Condition::Exception { kinds, .. } => {
                happened.status == InvocationStatus::Failed
                    && happened
                        .error
                        .is_some_and(|e| kinds.is_empty() || kinds.contains(&e.kind))
            }
            Condition::Event { name, check } => {
                happened.status == InvocationStatus::Success
                    && event.is_some_and(|ev| {
                        ev.name == *name && check.as_ref().is_none_or(|c| c(&ev.payload))
                    })
            }
        }
    }
}

/// An event emitted with [`crate::Pynenc::emit_event`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TriggerEvent {
    /// The event's name.
    pub name: String,
    /// Its payload.
    pub payload: Value,
}

/// What a reaction's arguments are made from: the invocation that met the
/// trigger's condition (for an event: the event's invocation, with the
/// event).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TriggerSource {
    /// The invocation.
    pub invocation_id: InvocationId,
    /// Its task.
    pub task_id: String,
    /// The status it reached.
    pub status: InvocationStatus,
    /// Its arguments, as JSON (a value that does not decode is `null`).
    pub arguments: Map<String, Value>,
    /// Its result, as JSON, when it succeeded.
    pub result: Option<Value>,
    /// Its error, when it failed or is retried.
    pub error: Option<TaskError>,
    /// The event, when the source is one.
    pub event: Option<TriggerEvent>,
}

impl TriggerSource {
    /// The field `key` of the event's payload (`null` when absent or when
    /// the source is not an event).
    pub fn event_payload(&self, key: &str) -> Value {
        self.event
            .as_ref()
            .and_then(|e| e.payload.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    }
}
