//! How runs end: the error of a task, what a runner reports, what a state
//! backend remembers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::routing::CallRef;
use crate::status::InvocationStatus;

/// The kind of the error that always triggers a retry (within `max_retries`).
pub const RETRY_ERROR_KIND: &str = "RetryError";
/// The kind recorded when a task body panics.
pub const PANIC_KIND: &str = "Panic";
/// The kind of a cycle error (see [`crate::CycleError`]).
pub const CYCLE_ERROR_KIND: &str = "CycleDetectedError";
/// The kind of an error about an invocation that does not exist.
pub const NOT_FOUND_ERROR_KIND: &str = "InvocationNotFoundError";
/// The kind of a transition the state machine refused.
pub const STATUS_TRANSITION_ERROR_KIND: &str = "StatusTransitionError";
/// The kind of a call refused by registration concurrency for its arguments.
pub const REGISTRATION_CONFLICT_ERROR_KIND: &str =
    "InvocationConcurrencyWithDifferentArgumentsError";
/// The kind of a value that could not be serialized or read back.
pub const SERIALIZATION_ERROR_KIND: &str = "SerializationError";
/// The kind of the error kept with a `CANCELLED` invocation.
pub const CANCELLED_ERROR_KIND: &str = "InvocationCancelledError";
/// The kind of a failure of the backend itself.
pub const STATE_BACKEND_ERROR_KIND: &str = "StateBackendError";

/// The error of a task body: a kind and a human readable message, stored
/// with the invocation and returned to whoever waits for its result.
///
/// Return it (or any `Display` error, whose type name becomes the kind) from a
/// task. `TaskError::retry` asks for a retry whatever `retry_for` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// What kind of error it is: the error type's name, or one chosen by the task.
    pub kind: String,
    /// What went wrong.
    pub message: String,
    /// Structure that travels with some kinds, so that it survives the
    /// boundary between invocations (a cycle's calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ErrorDetail>,
}

/// Structure kept with a [`TaskError`] of some kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ErrorDetail {
    /// The calls of a cycle ([`CYCLE_ERROR_KIND`]), in call order.
    Cycle {
        /// The calls, the first one repeated at the end.
        calls: Vec<CallRef>,
    },
}

impl TaskError {
    /// A task error of the given kind.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError {
            kind: kind.into(),
            message: message.into(),
            detail: None,
        }
    }

    /// An error that asks for the invocation to be retried (kind `RetryError`).
    pub fn retry(message: impl Into<String>) -> Self {
        TaskError::new(RETRY_ERROR_KIND, message)
    }

    /// This error with `detail` attached.
    pub fn with_detail(mut self, detail: ErrorDetail) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Whether this is the retry error.
    pub fn is_retry(&self) -> bool {
        self.kind == RETRY_ERROR_KIND
    }

    /// The calls of the cycle, for a cycle error.
    pub fn cycle(&self) -> Option<&[CallRef]> {
        match &self.detail {
            Some(ErrorDetail::Cycle { calls }) => Some(calls),
            None => None,
        }
    }

    /// Builds a task error from any displayable error, using its type name
    /// (last path segment) as the kind. A `TaskError` is passed through.
    pub fn from_error<E: fmt::Display + 'static>(err: E) -> Self {
        let any: &dyn std::any::Any = &err;
        if let Some(te) = any.downcast_ref::<TaskError>() {
            return te.clone();
        }
        TaskError::new(short_type_name::<E>(), err.to_string())
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for TaskError {}

/// The last path segment of a type name, without generics: `my::Error<T>` → `Error`.
pub fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

/// How a run ended, as reported by the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunOutcome {
    /// The serialized result.
    Success(String),
    /// A retriable error within `max_retries`: status `RETRY`, queued again.
    Retry(TaskError),
    /// The error that ends the invocation.
    Failed(TaskError),
    /// The body stopped because the invocation was cancelled: status
    /// `CANCELLED`, the error (kind [`CANCELLED_ERROR_KIND`]) says by whom.
    Cancelled(TaskError),
}

impl RunOutcome {
    /// The status this outcome ends the run in.
    pub fn status(&self) -> InvocationStatus {
        match self {
            RunOutcome::Success(_) => InvocationStatus::Success,
            RunOutcome::Retry(_) => InvocationStatus::Retry,
            RunOutcome::Failed(_) => InvocationStatus::Failed,
            RunOutcome::Cancelled(_) => InvocationStatus::Cancelled,
        }
    }
}

/// What an invocation ended with, as the state backend stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationOutcome {
    /// The current status.
    pub status: InvocationStatus,
    /// The serialized result, once `SUCCESS`.
    pub result: Option<String>,
    /// The error, once `FAILED` or `CANCELLED` (or the last one that caused a retry).
    pub error: Option<TaskError>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{CallId, TaskId};

    #[test]
    fn task_error_kind_from_type_name() {
        #[derive(Debug)]
        struct MyBadThing;
        impl fmt::Display for MyBadThing {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("it broke")
            }
        }
        let te = TaskError::from_error(MyBadThing);
        assert_eq!(te.kind, "MyBadThing");
        assert_eq!(te.message, "it broke");
        let same = TaskError::from_error(TaskError::retry("again"));
        assert!(same.is_retry());
        let parse = TaskError::from_error("x".parse::<i32>().unwrap_err());
        assert_eq!(parse.kind, "ParseIntError");
    }

    #[test]
    fn errors_without_detail_read_as_before_and_details_round_trip() {
        let old: TaskError =
            serde_json::from_str(r#"{"kind":"ValueError","message":"bad"}"#).unwrap();
        assert_eq!(old, TaskError::new("ValueError", "bad"));
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"kind":"ValueError","message":"bad"}"#
        );
        let call = CallRef {
            task_id: TaskId::from("m::a"),
            call_id: CallId::from("m::a#00ff"),
            arguments: Some("(x=1)".into()),
        };
        let cycle = TaskError::new(CYCLE_ERROR_KIND, "m::a(x=1) → m::a(x=1)").with_detail(
            ErrorDetail::Cycle {
                calls: vec![call.clone(), call],
            },
        );
        let json = serde_json::to_string(&cycle).unwrap();
        let back: TaskError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cycle);
        assert_eq!(back.cycle().map(<[CallRef]>::len), Some(2));
    }
}
