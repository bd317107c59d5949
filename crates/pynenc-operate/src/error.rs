//! The errors of operating an app.

use pynenc::PynencError;
use pynenc_model::{InvocationId, InvocationStatus};
use pynenc_store::StoreError;

/// What went wrong when asking about an app or acting on it. A refused
/// request changes nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OperateError {
    /// A query or an action was given something it cannot use: `what` names
    /// the field (`task`, `status`, `limit`, `cursor`, ...), `reason` says why.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The field at fault.
        what: &'static str,
        /// Why, with the value given.
        reason: String,
    },
    /// The invocation does not exist (never routed, or purged).
    #[error("invocation {0} not found")]
    NotFound(InvocationId),
    /// The action does not apply to an invocation in this status (nothing changed).
    #[error("invocation {invocation_id} is {status}: {reason}")]
    WrongStatus {
        /// The invocation.
        invocation_id: InvocationId,
        /// Its status.
        status: InvocationStatus,
        /// Why the action does not apply.
        reason: &'static str,
    },
    /// The backend failed.
    #[error(transparent)]
    Store(StoreError),
    /// The runtime refused or failed (routing a rerun, a task error).
    #[error(transparent)]
    Runtime(PynencError),
}

impl OperateError {
    /// An [`OperateError::Invalid`].
    pub fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        OperateError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}

impl From<StoreError> for OperateError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { invocation_id, .. } => OperateError::NotFound(invocation_id),
            other => OperateError::Store(other),
        }
    }
}

impl From<PynencError> for OperateError {
    fn from(e: PynencError) -> Self {
        match e {
            PynencError::InvocationNotFound { invocation_id, .. } => {
                OperateError::NotFound(invocation_id)
            }
            other => OperateError::Runtime(other),
        }
    }
}

/// The result of an operation.
pub type Result<T> = std::result::Result<T, OperateError>;
