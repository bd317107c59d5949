//! The error hierarchy of pynenc.
//!
//! [`PynencError`] mirrors the exceptions of the original Pynenc: one variant
//! per error class, each naming what went wrong and where, and each
//! serializable (with [`PynencError::to_json`] / [`PynencError::from_json`]) so
//! it can be stored by a state backend and returned to another process.
//!
//! [`TaskError`] is the error a task body returns: a `kind` (used by
//! `retry_for`) and a message.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::status::{InvocationStatus, TransitionError};

/// The kind of the error that always triggers a retry (within `max_retries`).
pub const RETRY_ERROR_KIND: &str = "RetryError";
/// The kind recorded when a task body panics.
pub const PANIC_KIND: &str = "Panic";

/// The error of a task body: a kind and a human readable message.
///
/// Return it (or any `Display` error, whose type name becomes the kind) from a
/// task. `TaskError::retry` asks for a retry whatever `retry_for` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// What kind of error it is: the error type's name, or one chosen by the task.
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

impl TaskError {
    /// A task error of the given kind.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError {
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// An error that asks for the invocation to be retried (kind `RetryError`).
    pub fn retry(message: impl Into<String>) -> Self {
        TaskError::new(RETRY_ERROR_KIND, message)
    }

    /// Whether this is the retry error.
    pub fn is_retry(&self) -> bool {
        self.kind == RETRY_ERROR_KIND
    }

    /// Builds a task error from any displayable error, using its type name
    /// (last path segment) as the kind. A `TaskError` is passed through.
    pub fn from_error<E: fmt::Display + 'static>(err: E) -> Self {
        let any: &dyn std::any::Any = &err;
        if let Some(te) = any.downcast_ref::<TaskError>() {
            return te.clone();
        }
        if let Some(pe) = any.downcast_ref::<PynencError>() {
            return TaskError::from(pe.clone());
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

impl From<PynencError> for TaskError {
    fn from(e: PynencError) -> Self {
        match e {
            // a sub-task's failure keeps its kind, and says where it came from
            PynencError::TaskFailed {
                task_id,
                invocation_id,
                error,
            } => TaskError::new(
                error.kind,
                format!(
                    "{} (raised by {task_id}, invocation {invocation_id})",
                    error.message
                ),
            ),
            other => TaskError::new(other.kind(), other.to_string()),
        }
    }
}

/// The last path segment of a type name, without generics: `my::Error<T>` → `Error`.
pub fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

/// Every error pynenc reports. The variant names follow the original
/// exception classes; [`PynencError::kind`] gives that class name.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum PynencError {
    /// The invocation's task returned an error (or panicked).
    #[error("invocation {invocation_id} of task {task_id} failed: {error}")]
    TaskFailed {
        /// The task.
        task_id: String,
        /// The failed invocation.
        invocation_id: String,
        /// The task's own error.
        error: TaskError,
    },
    /// A task related error.
    #[error("task {task_id}: {message}")]
    TaskError {
        /// The task.
        task_id: String,
        /// What went wrong.
        message: String,
    },
    /// The options given to a task are invalid.
    #[error("invalid options for task {task_id}: option '{option}': {message}")]
    InvalidTaskOptions {
        /// The task.
        task_id: String,
        /// The offending option.
        option: String,
        /// Why it is invalid.
        message: String,
    },
    /// The task could not be routed.
    #[error("task {task_id} could not be routed: {message}")]
    TaskRouting {
        /// The task.
        task_id: String,
        /// Why.
        message: String,
    },
    /// Registration concurrency found a registered invocation with other arguments.
    #[error("task {task_id} already has registered invocation {existing_invocation_id} with different arguments (new call {new_call_id}):\n{diff}")]
    InvocationConcurrencyWithDifferentArguments {
        /// The task.
        task_id: String,
        /// The invocation already registered.
        existing_invocation_id: String,
        /// The call that was refused.
        new_call_id: String,
        /// A readable difference between the two calls' arguments.
        diff: String,
    },
    /// The call would close a cycle of invocations waiting for each other.
    #[error("cycle detected: {message}")]
    CycleDetected {
        /// The calls forming the cycle, in call order.
        call_ids: Vec<String>,
        /// The cycle, readable.
        message: String,
    },
    /// The invocation does not exist in the state backend.
    #[error("invocation {invocation_id} not found{}", context_suffix(.message))]
    InvocationNotFound {
        /// The missing invocation.
        invocation_id: String,
        /// Where it was looked for.
        message: String,
    },
    /// The task id is not in this process's task registry.
    #[error("task {task_id} is not registered in this process (known tasks: {known})")]
    TaskNotRegistered {
        /// The unknown task id.
        task_id: String,
        /// The registered task ids, for the reader.
        known: String,
    },
    /// A status change refused by the state machine.
    #[error("invocation {invocation_id}: {source}")]
    StatusTransition {
        /// The invocation.
        invocation_id: String,
        /// Why it was refused.
        source: TransitionError,
    },
    /// Two processes tried to set the same invocation pending.
    #[error("invocation {invocation_id} is already being set to pending by another runner")]
    PendingInvocationLock {
        /// The invocation.
        invocation_id: String,
    },
    /// A value could not be serialized or deserialized.
    #[error("cannot {action} {what}: {message}")]
    Serialization {
        /// "serialize" or "deserialize".
        action: String,
        /// What was being converted (an argument, a result, a record and its id).
        what: String,
        /// The codec's message.
        message: String,
    },
    /// The state backend (or the store behind any component) failed.
    #[error("state backend error: {message}")]
    StateBackend {
        /// What failed, with the key or path involved.
        message: String,
    },
    /// A runner failed.
    #[error("runner error: {message}")]
    Runner {
        /// What failed.
        message: String,
    },
    /// The runner cannot execute in this configuration.
    #[error("runner not executable: {message}")]
    RunnerNotExecutable {
        /// Why.
        message: String,
    },
    /// A task asked for a retry.
    #[error("retry requested: {message}")]
    Retry {
        /// The reason.
        message: String,
    },
    /// A configuration value is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A component was changed after it was initialized.
    #[error("component '{component}' is already initialized")]
    AlreadyInitialized {
        /// The component.
        component: String,
    },
    /// Waiting for an invocation ended because its status can no longer give a result.
    #[error("invocation {invocation_id} ended as {status} without a result")]
    NoResult {
        /// The invocation.
        invocation_id: String,
        /// The status it ended in.
        status: InvocationStatus,
    },
}

fn context_suffix(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(" ({m})")
    }
}

impl PynencError {
    /// The class name of the error, as in the original exception hierarchy.
    pub fn kind(&self) -> &'static str {
        match self {
            PynencError::TaskFailed { .. } => "TaskFailed",
            PynencError::TaskError { .. } => "TaskError",
            PynencError::InvalidTaskOptions { .. } => "InvalidTaskOptionsError",
            PynencError::TaskRouting { .. } => "TaskRoutingError",
            PynencError::InvocationConcurrencyWithDifferentArguments { .. } => {
                "InvocationConcurrencyWithDifferentArgumentsError"
            }
            PynencError::CycleDetected { .. } => "CycleDetectedError",
            PynencError::InvocationNotFound { .. } => "InvocationNotFoundError",
            PynencError::TaskNotRegistered { .. } => "TaskNotRegisteredError",
            PynencError::StatusTransition { .. } => "StatusTransitionError",
            PynencError::PendingInvocationLock { .. } => "PendingInvocationLockError",
            PynencError::Serialization { .. } => "SerializationError",
            PynencError::StateBackend { .. } => "StateBackendError",
            PynencError::Runner { .. } => "RunnerError",
            PynencError::RunnerNotExecutable { .. } => "RunnerNotExecutableError",
            PynencError::Retry { .. } => "RetryError",
            PynencError::Config(_) => "ConfigError",
            PynencError::AlreadyInitialized { .. } => "AlreadyInitializedError",
            PynencError::NoResult { .. } => "NoResultError",
        }
    }

    /// Whether this error belongs to the task error family
    /// (`TaskError` and its subclasses in the original hierarchy).
    pub fn is_task_error(&self) -> bool {
        matches!(
            self,
            PynencError::TaskError { .. }
                | PynencError::InvalidTaskOptions { .. }
                | PynencError::TaskRouting { .. }
                | PynencError::InvocationConcurrencyWithDifferentArguments { .. }
        )
    }

    /// Whether this error belongs to the state backend family.
    pub fn is_state_backend_error(&self) -> bool {
        matches!(
            self,
            PynencError::StateBackend { .. } | PynencError::InvocationNotFound { .. }
        )
    }

    /// Whether a finish was refused before it wrote anything: the
    /// invocation is gone or no longer in a status its runner may end (it
    /// was killed or recovered meanwhile).
    pub fn is_refused_finish(&self) -> bool {
        matches!(
            self,
            PynencError::StatusTransition { .. } | PynencError::InvocationNotFound { .. }
        )
    }

    /// The error as JSON (with its `kind`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"kind\":\"Runner\",\"message\":\"unserializable error: {e}\"}}")
        })
    }

    /// Reads an error written by [`PynencError::to_json`].
    pub fn from_json(json: &str) -> Result<PynencError, PynencError> {
        serde_json::from_str(json).map_err(|e| PynencError::Serialization {
            action: "deserialize".into(),
            what: "error".into(),
            message: e.to_string(),
        })
    }

    /// A state backend error with a message.
    pub fn backend(message: impl Into<String>) -> Self {
        PynencError::StateBackend {
            message: message.into(),
        }
    }

    /// No invocation `invocation_id`; `message` says during what.
    pub fn not_found(invocation_id: &str, message: &str) -> Self {
        PynencError::InvocationNotFound {
            invocation_id: invocation_id.to_string(),
            message: message.to_string(),
        }
    }

    /// Calling `callee_call_id` from `parent_call_id` closes the cycle
    /// `call_ids`.
    pub fn cycle(parent_call_id: &str, callee_call_id: &str, call_ids: Vec<String>) -> Self {
        let message = format!(
            "calling {} from {} would close the cycle {}; an invocation would wait for itself",
            callee_call_id,
            parent_call_id,
            call_ids.join(" -> ")
        );
        PynencError::CycleDetected { call_ids, message }
    }

    /// A serialization error.
    pub fn serialization(
        action: &str,
        what: impl Into<String>,
        message: impl fmt::Display,
    ) -> Self {
        PynencError::Serialization {
            action: action.into(),
            what: what.into(),
            message: message.to_string(),
        }
    }
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigSource {
    /// The built-in default.
    Default,
    /// A configuration file (project file, file given in code, or `PYNENC__FILEPATH`).
    File(String),
    /// An environment variable.
    Env(String),
    /// A value set in code.
    Code,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Default => f.write_str("default"),
            ConfigSource::File(p) => write!(f, "file {p}"),
            ConfigSource::Env(v) => write!(f, "environment variable {v}"),
            ConfigSource::Code => f.write_str("code"),
        }
    }
}

/// A configuration value that could not be accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigError {
    /// Where the value came from.
    pub source: ConfigSource,
    /// The key (with its section), e.g. `runner.max_parallel_slots`.
    pub key: String,
    /// Why it was refused.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "configuration error in {}: key '{}': {}",
            self.source, self.key, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

/// The result type of pynenc operations.
pub type Result<T, E = PynencError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<PynencError> {
        vec![
            PynencError::TaskFailed {
                task_id: "t".into(),
                invocation_id: "i".into(),
                error: TaskError::new("ValueError", "bad"),
            },
            PynencError::TaskError {
                task_id: "t".into(),
                message: "m".into(),
            },
            PynencError::InvalidTaskOptions {
                task_id: "t".into(),
                option: "max_retries".into(),
                message: "negative".into(),
            },
            PynencError::TaskRouting {
                task_id: "t".into(),
                message: "m".into(),
            },
            PynencError::InvocationConcurrencyWithDifferentArguments {
                task_id: "t".into(),
                existing_invocation_id: "i".into(),
                new_call_id: "c".into(),
                diff: "x: 1 != 2".into(),
            },
            PynencError::CycleDetected {
                call_ids: vec!["a".into(), "b".into()],
                message: "a -> b -> a".into(),
            },
            PynencError::InvocationNotFound {
                invocation_id: "i".into(),
                message: String::new(),
            },
            PynencError::TaskNotRegistered {
                task_id: "x".into(),
                known: "y".into(),
            },
            PynencError::StatusTransition {
                invocation_id: "i".into(),
                source: TransitionError::NotOwner {
                    to: InvocationStatus::Running,
                    actor: "a".into(),
                    owner: "b".into(),
                },
            },
            PynencError::PendingInvocationLock {
                invocation_id: "i".into(),
            },
            PynencError::serialization("deserialize", "argument x", "eof"),
            PynencError::backend("down"),
            PynencError::Runner {
                message: "m".into(),
            },
            PynencError::RunnerNotExecutable {
                message: "m".into(),
            },
            PynencError::Retry {
                message: "m".into(),
            },
            PynencError::Config(ConfigError {
                source: ConfigSource::Env("PYNENC__X".into()),
                key: "x".into(),
                reason: "unknown key".into(),
            }),
            PynencError::AlreadyInitialized {
                component: "broker".into(),
            },
            PynencError::NoResult {
                invocation_id: "i".into(),
                status: InvocationStatus::ConcurrencyControlledFinal,
            },
        ]
    }

    #[test]
    fn every_error_round_trips_through_json() {
        for e in samples() {
            let json = e.to_json();
            assert!(json.contains("\"kind\""), "{json}");
            let back = PynencError::from_json(&json).unwrap();
            assert_eq!(back, e);
            assert_eq!(back.kind(), e.kind());
            assert!(!e.to_string().is_empty());
        }
    }

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
    fn families() {
        assert!(PynencError::TaskRouting {
            task_id: "t".into(),
            message: "m".into()
        }
        .is_task_error());
        assert!(PynencError::InvocationNotFound {
            invocation_id: "i".into(),
            message: String::new()
        }
        .is_state_backend_error());
    }
}
