//! What a command can fail with, and the exit code each failure gives.

use std::process::ExitCode;

use pynenc::PynencError;
use pynenc_operate::OperateError;

/// A command that did not do what it was asked. The message names what was
/// wrong and where; [`CliError::exit_code`] tells scripts which kind it was.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: a filter, a status, a task, a time or an id that cannot be
    /// used. Nothing was read or changed.
    #[error("{0}")]
    Usage(String),
    /// No such invocation, or no such app on the backend.
    #[error("{0}")]
    NotFound(String),
    /// Refused: nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// The app could not be reached: configuration, server, credentials, file.
    #[error("{0}")]
    Connect(String),
    /// The backend or an action failed.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The exit code of this failure (see [`crate::EXIT_CODES`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::Refused(_) => 4,
            CliError::Connect(_) => 5,
        }
    }

    /// As a process exit code.
    pub fn as_exit(&self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }
}

/// The outcome of a command.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl From<OperateError> for CliError {
    fn from(e: OperateError) -> Self {
        match e {
            OperateError::Invalid { .. } => CliError::Usage(e.to_string()),
            OperateError::NotFound(_) => CliError::NotFound(e.to_string()),
            OperateError::WrongStatus { .. } => CliError::Refused(e.to_string()),
            OperateError::Store(s) => from_store(s),
            OperateError::Runtime(r) => r.into(),
        }
    }
}

impl From<PynencError> for CliError {
    fn from(e: PynencError) -> Self {
        match e {
            PynencError::InvocationNotFound { .. } => CliError::NotFound(e.to_string()),
            PynencError::TaskNotRegistered { .. }
            | PynencError::InvalidArguments { .. }
            | PynencError::TaskRouting { .. } => CliError::Usage(e.to_string()),
            PynencError::StateBackend(s) => from_store(s),
            PynencError::Config(_) => CliError::Connect(e.to_string()),
            other => CliError::Failed(other.to_string()),
        }
    }
}

fn from_store(e: pynenc::store::StoreError) -> CliError {
    match e {
        pynenc::store::StoreError::NotFound { .. } => CliError::NotFound(e.to_string()),
        other => CliError::Failed(other.to_string()),
    }
}
