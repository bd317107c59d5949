//! What a store step can fail with.

use std::sync::Arc;

use pynenc_model::{
    CallId, CycleError, InvalidId, InvocationId, RouteRequest, SerializationError, TaskId,
    TransitionError,
};

/// The error of a store step. Unless a variant says otherwise, a step that
/// fails changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No invocation has this id: it was purged, or never existed.
    #[error("invocation {invocation_id} not found{}", suffix(.during))]
    NotFound {
        /// The id looked for.
        invocation_id: InvocationId,
        /// What the step was doing (`while finishing it`), or empty.
        during: String,
    },
    /// The state machine refused a transition: the invocation moved on
    /// meanwhile (it ended, or was killed or recovered). Read its status again.
    #[error("invocation {invocation_id}: {source}")]
    Transition {
        /// The invocation.
        invocation_id: InvocationId,
        /// Why the transition was refused.
        #[source]
        source: TransitionError,
    },
    /// A resume that travelled with the end of a run it waited for
    /// ([`crate::Orchestrator::runner_step`]) found that run, or another
    /// invocation it waits for, not final (the end was refused in the same
    /// step): nothing was written, the invocation stays `PAUSED` and goes
    /// on waiting.
    #[error("invocation {invocation_id} still waits for invocation {waited}: it was not resumed")]
    StillWaiting {
        /// The invocation that was to resume.
        invocation_id: InvocationId,
        /// An invocation it waits for that is not final.
        waited: InvocationId,
    },
    /// Cycle control refused a call: it would close a cycle of invocations
    /// waiting for each other.
    #[error("cycle detected: {0}")]
    Cycle(#[from] CycleError),
    /// Registration concurrency found a registered invocation of the same
    /// key with other arguments, and the task raises on a difference.
    #[error("task {task_id} already has registered invocation {existing_invocation_id} with different arguments (new call {new_call_id}):\n{diff}")]
    RegistrationConflict {
        /// The task.
        task_id: TaskId,
        /// The invocation already registered.
        existing_invocation_id: InvocationId,
        /// The call that was refused.
        new_call_id: CallId,
        /// The arguments that differ, readable.
        diff: String,
    },
    /// A value could not be serialized or read back.
    #[error(transparent)]
    Serialization(#[from] SerializationError),
    /// Stored data cannot be read: which data, where, and why. The data is
    /// left as it is; repair or purge it.
    #[error("corrupt data at {location}: {reason}")]
    Corrupt {
        /// The key, row or field.
        location: String,
        /// What is wrong with it.
        reason: String,
        /// The parser's error, where there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// An option the backend was opened with cannot be used.
    #[error("{backend} backend: option '{option}': {reason}")]
    InvalidOption {
        /// The backend.
        backend: &'static str,
        /// The option.
        option: &'static str,
        /// Why it cannot be used.
        reason: String,
        /// The driver's or the system's error, where there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend failed: its server or file could not be reached, or
    /// refused the operation. The step wrote nothing; it may work later.
    #[error("{backend} backend: {message}")]
    Backend {
        /// The backend (`sqlite`, `redis`, `memory`).
        backend: &'static str,
        /// What failed, with the path, address, key or statement involved.
        message: String,
        /// The driver's own error, where there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

fn suffix(during: &str) -> String {
    if during.is_empty() {
        String::new()
    } else {
        format!(" ({during})")
    }
}

impl StoreError {
    /// No invocation `invocation_id`; `during` says during what.
    pub fn not_found(invocation_id: &InvocationId, during: impl Into<String>) -> Self {
        StoreError::NotFound {
            invocation_id: *invocation_id,
            during: during.into(),
        }
    }

    /// A backend failure with a message and no driver error.
    pub fn backend(backend: &'static str, message: impl Into<String>) -> Self {
        StoreError::Backend {
            backend,
            message: message.into(),
            source: None,
        }
    }

    /// A backend failure caused by a driver error.
    pub fn backend_caused(
        backend: &'static str,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            backend,
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// Stored data at `location` that cannot be read.
    pub fn corrupt(location: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            location: location.into(),
            reason: reason.to_string(),
            source: None,
        }
    }

    /// Stored data at `location` that `cause` (a parser's error) cannot read.
    pub fn corrupt_caused(
        location: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Corrupt {
            location: location.into(),
            reason: cause.to_string(),
            source: Some(Arc::new(cause)),
        }
    }

    /// A stored id that is not an invocation id.
    pub fn bad_id(location: impl Into<String>, err: InvalidId) -> Self {
        StoreError::corrupt_caused(location, err)
    }

    /// The backend cannot use `option` for `reason`.
    pub fn invalid_option(
        backend: &'static str,
        option: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        StoreError::InvalidOption {
            backend,
            option,
            reason: reason.into(),
            source: None,
        }
    }

    /// The backend cannot use `option`, for `reason` that `cause` gives.
    pub fn invalid_option_caused(
        backend: &'static str,
        option: &'static str,
        reason: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::InvalidOption {
            backend,
            option,
            reason: reason.into(),
            source: Some(Arc::new(cause)),
        }
    }

    /// The error for `req`, refused because `existing` is registered under
    /// the same key with other arguments (`diff`).
    pub fn registration_conflict(
        req: &RouteRequest,
        existing: &InvocationId,
        new_call_id: CallId,
        diff: String,
    ) -> Self {
        StoreError::RegistrationConflict {
            task_id: req.call.task_id.clone(),
            existing_invocation_id: *existing,
            new_call_id,
            diff,
        }
    }

    /// The class name of the error, as in the original exception hierarchy
    /// (`StateBackendError` for the failures of the backend itself).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => pynenc_model::NOT_FOUND_ERROR_KIND,
            StoreError::Transition { .. } | StoreError::StillWaiting { .. } => {
                pynenc_model::STATUS_TRANSITION_ERROR_KIND
            }
            StoreError::Cycle(_) => pynenc_model::CYCLE_ERROR_KIND,
            StoreError::RegistrationConflict { .. } => {
                pynenc_model::REGISTRATION_CONFLICT_ERROR_KIND
            }
            StoreError::Serialization(_) => pynenc_model::SERIALIZATION_ERROR_KIND,
            StoreError::Corrupt { .. }
            | StoreError::InvalidOption { .. }
            | StoreError::Backend { .. } => pynenc_model::STATE_BACKEND_ERROR_KIND,
        }
    }

    /// Whether a finish was refused before it wrote anything: the
    /// invocation is gone or no longer in a status its runner may end (it
    /// was killed or recovered meanwhile).
    pub fn is_refused_finish(&self) -> bool {
        self.is_refused()
    }

    /// Whether one change of a runner's step (an end, a pause, a resume) was
    /// refused before it wrote anything: an invocation it names is gone,
    /// the state machine refused its transition, or a resume found what it
    /// waits for not final. The rest of the step goes on.
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            StoreError::Transition { .. }
                | StoreError::NotFound { .. }
                | StoreError::StillWaiting { .. }
        )
    }
}

/// The result of a store step.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
