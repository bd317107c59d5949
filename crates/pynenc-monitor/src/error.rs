//! The monitor's errors: starting it ([`MonitorError`]) and answering a
//! request ([`HttpError`]).

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pynenc_operate::OperateError;
use serde_json::json;

/// Why the monitor did not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// It was asked to listen beyond this machine without credentials
    /// configured: a generated token printed on a terminal is not enough
    /// there.
    #[error("refusing to listen on {addr} without configured credentials: a non-loopback address needs at least one credential (or bind 127.0.0.1)")]
    InsecureBind {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// An option cannot be used.
    #[error("invalid monitor option {what}: {reason}")]
    InvalidOption {
        /// The option.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        source: std::io::Error,
    },
    /// The audit file could not be opened or read.
    #[error("cannot use the audit file {path}: {source}")]
    AuditFile {
        /// The file.
        path: std::path::PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("the monitor's server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// A request the monitor could not answer as asked; JSON `{"error": …}`
/// with the status code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct HttpError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl HttpError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
}

impl From<OperateError> for HttpError {
    fn from(e: OperateError) -> Self {
        let status = match &e {
            OperateError::Invalid { .. } => StatusCode::BAD_REQUEST,
            OperateError::NotFound(_) => StatusCode::NOT_FOUND,
            OperateError::WrongStatus { .. } => StatusCode::CONFLICT,
            OperateError::Store(_) | OperateError::Runtime(_) => {
                tracing::error!(error = %e, "backend failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        HttpError::new(status, e.to_string())
    }
}

impl From<pynenc::PynencError> for HttpError {
    fn from(e: pynenc::PynencError) -> Self {
        OperateError::from(e).into()
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// The result of a handler.
pub(crate) type HttpResult<T> = std::result::Result<T, HttpError>;
