//! The errors of pynenc.
//!
//! [`PynencError`] mirrors the exceptions of the original Pynenc: one variant
//! per error class ([`PynencError::kind`] gives the class name), each saying
//! what went wrong and where, and each keeping the error it came from as its
//! [`std::error::Error::source`]. The errors of the layers below keep their
//! own types — [`StoreError`] for the backends, [`SerializationError`],
//! [`TransitionError`], [`CycleError`] — and are turned into the variant
//! that names them.
//!
//! [`TaskError`] is the error a task body returns and the one stored with a
//! failed invocation: a `kind` (used by `retry_for`) and a message.

use std::fmt;
use std::sync::Arc;

use pynenc_model as model;
use pynenc_model::{
    CallId, CallRef, CycleError, ErrorDetail, InvocationId, InvocationStatus, SerializationError,
    TaskError, TaskId, TransitionError, CYCLE_ERROR_KIND,
};
use pynenc_store::StoreError;

/// Every error pynenc reports. The variant names follow the original
/// exception classes; [`PynencError::kind`] gives that class name.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PynencError {
    /// The invocation's task returned an error (or panicked). Its kind and
    /// message are kept as the task returned them.
    #[error("invocation {invocation_id} of task {task_id} failed: {error}")]
    TaskFailed {
        /// The task.
        task_id: TaskId,
        /// The failed invocation.
        invocation_id: InvocationId,
        /// The task's own error.
        error: TaskError,
    },
    /// The options of a task (in `#[task]` or in configuration) break a
    /// rule; fix the option named.
    #[error("invalid options for task {task_id}: option '{option}': {message}")]
    InvalidTaskOptions {
        /// The task.
        task_id: String,
        /// The offending option.
        option: String,
        /// Why it is invalid (and where the value came from).
        message: String,
    },
    /// The arguments of a call do not match the task's parameters; nothing
    /// was routed.
    #[error("task {task_id} cannot be called with these arguments: {}", argument_problems(.unknown, .missing, .parameters))]
    InvalidArguments {
        /// The task.
        task_id: TaskId,
        /// Arguments the task has no parameter for.
        unknown: Vec<String>,
        /// Parameters no argument was given for.
        missing: Vec<String>,
        /// The task's parameters, in order.
        parameters: Vec<String>,
    },
    /// The call could not be routed, and why; nothing was routed.
    #[error("task {task_id} could not be routed: {message}")]
    TaskRouting {
        /// The task.
        task_id: String,
        /// Why.
        message: String,
    },
    /// Registration concurrency found a registered invocation of the same
    /// key with other arguments, and the task raises on a difference.
    #[error("task {task_id} already has registered invocation {existing_invocation_id} with different arguments (new call {new_call_id}):\n{diff}")]
    InvocationConcurrencyWithDifferentArguments {
        /// The task.
        task_id: TaskId,
        /// The invocation already registered.
        existing_invocation_id: InvocationId,
        /// The call that was refused.
        new_call_id: CallId,
        /// A readable difference between the two calls' arguments.
        diff: String,
    },
    /// A workflow ran again and asked, at a step it had recorded, for
    /// another call than the one recorded: its code does not make the same
    /// calls in the same order every time it runs.
    #[error("workflow {workflow_id} is not deterministic: step {step} recorded {recorded} but now asks for {asked}")]
    WorkflowNonDeterminism {
        /// The workflow's invocation.
        workflow_id: InvocationId,
        /// The step (its calls numbered from 1, in the order it makes them).
        step: u32,
        /// The call recorded at that step (task and arguments).
        recorded: String,
        /// The call asked for now.
        asked: String,
    },
    /// The call would close a cycle of invocations waiting for each other;
    /// it was refused instead of deadlocking.
    #[error("cycle detected: {0}")]
    CycleDetected(CycleError),
    /// The invocation does not exist in the state backend (it was purged,
    /// or never existed).
    #[error("invocation {invocation_id} not found{}", context_suffix(.during))]
    InvocationNotFound {
        /// The missing invocation.
        invocation_id: InvocationId,
        /// What was being done.
        during: String,
    },
    /// The task id is not compiled into this process.
    #[error("task {task_id} is not registered in this process{}", suggestion(.suggestions, *.registered))]
    TaskNotRegistered {
        /// The unknown task id.
        task_id: String,
        /// Registered task ids that look like it, best first.
        suggestions: Vec<String>,
        /// How many tasks are registered.
        registered: usize,
    },
    /// A status change refused by the state machine; nothing changed.
    #[error("invocation {invocation_id}: {source}")]
    StatusTransition {
        /// The invocation.
        invocation_id: InvocationId,
        /// Why it was refused.
        #[source]
        source: TransitionError,
    },
    /// A value could not be serialized or deserialized.
    #[error(transparent)]
    Serialization(#[from] SerializationError),
    /// A trigger declared for the app cannot be used (an invalid cron
    /// expression or time zone, arguments that do not fit its task); the
    /// app is not built.
    #[error("trigger {trigger} (calls {task_id}): {message}")]
    InvalidTrigger {
        /// The trigger's name.
        trigger: String,
        /// The task it calls.
        task_id: String,
        /// What is wrong.
        message: String,
    },
    /// The backend failed (unreachable, refused, corrupt data, a bad
    /// option); the operation wrote nothing.
    #[error(transparent)]
    StateBackend(StoreError),
    /// A runner failed.
    #[error("runner error: {message}")]
    Runner {
        /// What failed.
        message: String,
        /// The error behind it (the operating system's, a task's join
        /// error, …), where there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The runner cannot execute in this configuration.
    #[error("runner not executable: {message}")]
    RunnerNotExecutable {
        /// Why.
        message: String,
    },
    /// A configuration value is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The invocation was cancelled (by an operator, or with its parent);
    /// it has no result. Whoever waited for it gets this error instead of
    /// hanging.
    #[error("invocation {invocation_id} of task {task_id} was cancelled: {error}")]
    Cancelled {
        /// The task.
        task_id: TaskId,
        /// The cancelled invocation.
        invocation_id: InvocationId,
        /// Who cancelled it (kind `InvocationCancelledError`; boxed, so
        /// that every `Result` stays small).
        error: Box<TaskError>,
    },
    /// A wait for a status ran out of time; nothing changed.
    #[error("invocation {invocation_id} did not reach {} within {timeout_ms} ms (it is {status})", join_statuses(.expected))]
    WaitTimeout {
        /// The invocation.
        invocation_id: InvocationId,
        /// The statuses waited for.
        expected: Vec<InvocationStatus>,
        /// Its status when the wait gave up.
        status: InvocationStatus,
        /// How long the wait lasted, in milliseconds.
        timeout_ms: u64,
    },
    /// A wait for a status can never end: the invocation is final in another status.
    #[error("invocation {invocation_id} ended as {status} and will never be {}", join_statuses(.expected))]
    StatusUnreachable {
        /// The invocation.
        invocation_id: InvocationId,
        /// The statuses waited for.
        expected: Vec<InvocationStatus>,
        /// The final status it ended in.
        status: InvocationStatus,
    },
    /// Waiting for an invocation ended because its status can no longer give a result.
    #[error("invocation {invocation_id} ended as {status} without a result")]
    NoResult {
        /// The invocation.
        invocation_id: InvocationId,
        /// The status it ended in.
        status: InvocationStatus,
    },
}

fn join_statuses(list: &[InvocationStatus]) -> String {
    list.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

fn context_suffix(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(" ({m})")
    }
}

fn suggestion(suggestions: &[String], registered: usize) -> String {
    match did_you_mean(suggestions) {
        Some(question) => format!(" ({question})"),
        None if registered == 0 => {
            " (no task is registered: is the crate defining it linked into this binary?)".into()
        }
        None => format!(" (none of the {registered} registered tasks is close to it)"),
    }
}

/// `did you mean a?` / `did you mean one of a, b?`; `None` without suggestions.
pub(crate) fn did_you_mean(suggestions: &[String]) -> Option<String> {
    match suggestions {
        [] => None,
        [one] => Some(format!("did you mean {one}?")),
        many => Some(format!("did you mean one of {}?", many.join(", "))),
    }
}

fn argument_problems(unknown: &[String], missing: &[String], parameters: &[String]) -> String {
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        parts.push(format!("unknown arguments {}", unknown.join(", ")));
    }
    if !missing.is_empty() {
        parts.push(format!("missing arguments {}", missing.join(", ")));
    }
    let params = if parameters.is_empty() {
        "the task has no parameters".to_string()
    } else {
        format!("parameters: {}", parameters.join(", "))
    };
    format!("{} ({params})", parts.join("; "))
}

impl From<StoreError> for PynencError {
    /// The errors a store names are turned into the variant of the same
    /// class; the failures of the backend itself stay whole, with their source.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound {
                invocation_id,
                during,
            } => PynencError::InvocationNotFound {
                invocation_id,
                during,
            },
            StoreError::Transition {
                invocation_id,
                source,
            } => PynencError::StatusTransition {
                invocation_id,
                source,
            },
            StoreError::Cycle(c) => PynencError::CycleDetected(c),
            StoreError::RegistrationConflict {
                task_id,
                existing_invocation_id,
                new_call_id,
                diff,
            } => PynencError::InvocationConcurrencyWithDifferentArguments {
                task_id,
                existing_invocation_id,
                new_call_id,
                diff,
            },
            StoreError::Serialization(s) => PynencError::Serialization(s),
            other => PynencError::StateBackend(other),
        }
    }
}

impl PynencError {
    /// The class name of the error, as in the original exception hierarchy.
    pub fn kind(&self) -> &'static str {
        match self {
            PynencError::TaskFailed { .. } => "TaskFailed",
            PynencError::InvalidTaskOptions { .. } => "InvalidTaskOptionsError",
            PynencError::InvalidArguments { .. } => "InvalidArgumentsError",
            PynencError::TaskRouting { .. } => "TaskRoutingError",
            PynencError::InvocationConcurrencyWithDifferentArguments { .. } => {
                model::REGISTRATION_CONFLICT_ERROR_KIND
            }
            PynencError::CycleDetected(_) => CYCLE_ERROR_KIND,
            PynencError::WorkflowNonDeterminism { .. } => "WorkflowNonDeterminismError",
            PynencError::InvocationNotFound { .. } => model::NOT_FOUND_ERROR_KIND,
            PynencError::TaskNotRegistered { .. } => "TaskNotRegisteredError",
            PynencError::StatusTransition { .. } => model::STATUS_TRANSITION_ERROR_KIND,
            PynencError::Serialization(_) => model::SERIALIZATION_ERROR_KIND,
            PynencError::InvalidTrigger { .. } => "InvalidTriggerError",
            PynencError::StateBackend(_) => model::STATE_BACKEND_ERROR_KIND,
            PynencError::Runner { .. } => "RunnerError",
            PynencError::RunnerNotExecutable { .. } => "RunnerNotExecutableError",
            PynencError::Config(_) => "ConfigError",
            PynencError::NoResult { .. } => "NoResultError",
            PynencError::Cancelled { .. } => model::CANCELLED_ERROR_KIND,
            PynencError::WaitTimeout { .. } => "WaitTimeoutError",
            PynencError::StatusUnreachable { .. } => "StatusUnreachableError",
        }
    }

    /// Whether this error belongs to the task error family
    /// (`TaskError` and its subclasses in the original hierarchy).
    pub fn is_task_error(&self) -> bool {
        matches!(
            self,
            PynencError::InvalidTaskOptions { .. }
                | PynencError::InvalidArguments { .. }
                | PynencError::TaskRouting { .. }
                | PynencError::InvocationConcurrencyWithDifferentArguments { .. }
        )
    }

    /// Whether this error belongs to the state backend family.
    pub fn is_state_backend_error(&self) -> bool {
        matches!(
            self,
            PynencError::StateBackend(_) | PynencError::InvocationNotFound { .. }
        )
    }

    /// The calls of the cycle, for a cycle error: refused here
    /// ([`PynencError::CycleDetected`]), or raised in an invocation this
    /// one waited for and returned as its failure ([`PynencError::TaskFailed`]
    /// of kind `CycleDetectedError`).
    pub fn cycle(&self) -> Option<&[CallRef]> {
        match self {
            PynencError::CycleDetected(c) => Some(&c.calls),
            PynencError::TaskFailed { error, .. } => error.cycle(),
            _ => None,
        }
    }

    /// A runner error with a message.
    pub fn runner(message: impl Into<String>) -> Self {
        PynencError::Runner {
            message: message.into(),
            source: None,
        }
    }

    /// A runner error caused by `source` (an operating system error, …).
    pub fn runner_caused(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        PynencError::Runner {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The error as the [`TaskError`] of a task that returns it: its kind and
    /// message, and, for a cycle, the calls; a sub-task's failure keeps its
    /// own kind and says where it came from.
    pub fn to_task_error(&self) -> TaskError {
        match self {
            PynencError::TaskFailed {
                task_id,
                invocation_id,
                error,
            } => TaskError {
                kind: error.kind.clone(),
                message: format!(
                    "{} (raised by {task_id}, invocation {invocation_id})",
                    error.message
                ),
                detail: error.detail.clone(),
            },
            PynencError::CycleDetected(c) => {
                TaskError::new(self.kind(), c.message()).with_detail(ErrorDetail::Cycle {
                    calls: c.calls.clone(),
                })
            }
            other => TaskError::new(other.kind(), other.to_string()),
        }
    }
}

impl From<PynencError> for TaskError {
    fn from(e: PynencError) -> Self {
        e.to_task_error()
    }
}

/// The task error of any displayable error returned by a task body: a
/// [`PynencError`] keeps its kind and structure ([`PynencError::to_task_error`]),
/// a [`TaskError`] is passed through, anything else gets its type name as kind.
pub fn task_error_of<E: fmt::Display + 'static>(err: E) -> TaskError {
    let any: &dyn std::any::Any = &err;
    if let Some(pe) = any.downcast_ref::<PynencError>() {
        return pe.to_task_error();
    }
    TaskError::from_error(err)
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A configuration value that could not be accepted: where it came from,
/// which key, and why. Fix the value at its source.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// Where the value came from.
    pub source: ConfigSource,
    /// The key (with its section), e.g. `runner.max_parallel_slots`.
    pub key: String,
    /// Why it was refused.
    pub reason: String,
    /// The error behind the refusal, where there is one (a file that could
    /// not be read or parsed); it is also [`std::error::Error::source`].
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ConfigError {
    /// The value of `key` from `source` is refused for `reason`.
    pub fn new(source: ConfigSource, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            source,
            key: key.into(),
            reason: reason.into(),
            cause: None,
        }
    }

    /// The same error, caused by `cause`.
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }
}

/// Two configuration errors are equal when they name the same source, key
/// and reason (their causes are not compared).
impl PartialEq for ConfigError {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.key == other.key && self.reason == other.reason
    }
}

impl Eq for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "configuration error in {}: key '{}': {}",
            self.source, self.key, self.reason
        )
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// The result type of pynenc operations.
pub type Result<T, E = PynencError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use pynenc_model::CycleError;

    fn samples() -> Vec<PynencError> {
        let id = InvocationId::from_u128(7);
        vec![
            PynencError::TaskFailed {
                task_id: "t".into(),
                invocation_id: id,
                error: TaskError::new("ValueError", "bad"),
            },
            PynencError::InvalidTaskOptions {
                task_id: "t".into(),
                option: "max_retries".into(),
                message: "negative".into(),
            },
            PynencError::InvalidArguments {
                task_id: "t".into(),
                unknown: vec!["z".into()],
                missing: vec!["y".into()],
                parameters: vec!["x".into(), "y".into()],
            },
            PynencError::TaskRouting {
                task_id: "t".into(),
                message: "m".into(),
            },
            PynencError::InvocationConcurrencyWithDifferentArguments {
                task_id: "t".into(),
                existing_invocation_id: id,
                new_call_id: "t#c".into(),
                diff: "x: 1 != 2".into(),
            },
            PynencError::CycleDetected(CycleError {
                calls: vec![CallRef::from_call_id("a#00".into())],
            }),
            PynencError::InvocationNotFound {
                invocation_id: id,
                during: String::new(),
            },
            PynencError::TaskNotRegistered {
                task_id: "x".into(),
                suggestions: vec!["y".into()],
                registered: 1,
            },
            PynencError::StatusTransition {
                invocation_id: id,
                source: TransitionError::NotOwner {
                    to: InvocationStatus::Running,
                    actor: "a".into(),
                    owner: "b".into(),
                },
            },
            PynencError::Serialization(SerializationError::deserialize(
                "argument x",
                serde_json::from_str::<i32>("eof").unwrap_err(),
            )),
            PynencError::StateBackend(StoreError::backend("memory", "down")),
            PynencError::runner("m"),
            PynencError::RunnerNotExecutable {
                message: "m".into(),
            },
            PynencError::Config(ConfigError::new(
                ConfigSource::Env("PYNENC__X".into()),
                "x",
                "unknown key",
            )),
            PynencError::NoResult {
                invocation_id: id,
                status: InvocationStatus::ConcurrencyControlledFinal,
            },
        ]
    }

    #[test]
    fn every_error_has_a_kind_a_message_and_a_task_error() {
        let mut kinds = std::collections::HashSet::new();
        for e in samples() {
            assert!(kinds.insert(e.kind()), "{} twice", e.kind());
            assert!(!e.to_string().is_empty());
            let te = e.to_task_error();
            match &e {
                PynencError::TaskFailed { error, .. } => assert_eq!(te.kind, error.kind),
                other => assert_eq!(te.kind, other.kind()),
            }
        }
    }

    #[test]
    fn sources_are_kept() {
        use std::error::Error as _;
        let json_err = serde_json::from_str::<i32>("x").unwrap_err();
        let e = PynencError::Serialization(SerializationError::deserialize("argument x", json_err));
        let codec = e.source().expect("the codec error");
        assert!(codec.source().is_some(), "serde_json's own error is kept");
        let io = std::io::Error::other("no such file");
        let e = PynencError::runner_caused("cannot start a child", io);
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("no such file")
        );
        let store = StoreError::backend_caused("sqlite", "locked", std::io::Error::other("busy"));
        let e = PynencError::from(store);
        assert!(matches!(e, PynencError::StateBackend(_)));
        assert!(e.source().is_some());
    }

    #[test]
    fn store_errors_become_the_variant_of_their_class() {
        let id = InvocationId::from_u128(1);
        assert!(matches!(
            PynencError::from(StoreError::not_found(&id, "x")),
            PynencError::InvocationNotFound { .. }
        ));
        let cycle = StoreError::Cycle(CycleError { calls: vec![] });
        assert!(matches!(
            PynencError::from(cycle),
            PynencError::CycleDetected(_)
        ));
    }

    #[test]
    fn a_cycle_keeps_its_kind_and_calls_across_the_task_boundary() {
        let calls = vec![
            CallRef::from_call_id("m::a#01".into()),
            CallRef::from_call_id("m::b#02".into()),
            CallRef::from_call_id("m::a#01".into()),
        ];
        let refused = PynencError::CycleDetected(CycleError {
            calls: calls.clone(),
        });
        let raised = refused.to_task_error();
        assert_eq!(raised.kind, CYCLE_ERROR_KIND);
        assert_eq!(raised.cycle(), Some(&calls[..]));
        // waited on by another task, which returns the failure with `?`
        let failed = PynencError::TaskFailed {
            task_id: "m::b".into(),
            invocation_id: InvocationId::from_u128(2),
            error: raised,
        };
        assert_eq!(failed.cycle(), Some(&calls[..]));
        let passed_on = failed.to_task_error();
        assert_eq!(passed_on.kind, CYCLE_ERROR_KIND);
        assert_eq!(passed_on.cycle(), Some(&calls[..]));
        assert!(
            passed_on.message.contains("raised by m::b"),
            "{}",
            passed_on.message
        );
    }

    #[test]
    fn families() {
        assert!(PynencError::TaskRouting {
            task_id: "t".into(),
            message: "m".into()
        }
        .is_task_error());
        assert!(PynencError::InvocationNotFound {
            invocation_id: InvocationId::from_u128(1),
            during: String::new()
        }
        .is_state_backend_error());
    }

    #[test]
    fn unregistered_tasks_suggest_near_names() {
        let e = PynencError::TaskNotRegistered {
            task_id: "shop::ad".into(),
            suggestions: vec!["shop::add".into()],
            registered: 3,
        };
        assert_eq!(
            e.to_string(),
            "task shop::ad is not registered in this process (did you mean shop::add?)"
        );
    }
}
