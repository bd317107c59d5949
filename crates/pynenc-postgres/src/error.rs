//! Errors of the PostgreSQL backend: every one names the server (its URL
//! without the password), the app and what was being done, and keeps the
//! driver's error as its source.

use pynenc_model::InvocationId;
use pynenc_store::StoreError;
use tokio_postgres::error::SqlState;

/// The backend's name in errors.
pub(crate) const BACKEND: &str = "postgres";

/// Where a store is: shared by its connections and transactions.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// The URL without its password.
    pub(crate) shown: String,
    pub(crate) app_id: String,
    /// The app's number in `pynenc_apps`.
    pub(crate) app: i32,
    /// The key of the app's advisory lock.
    pub(crate) lock_key: i64,
    /// What this process knows of the queue: where a read of its head
    /// starts, and whether it was found drained (see [`crate::queue_head`]).
    pub(crate) queue: std::sync::Arc<crate::queue_head::QueueKnown>,
    /// The rows of running invocations as this process's writer last
    /// committed them (see [`crate::seen_rows`]).
    pub(crate) seen: std::sync::Arc<crate::seen_rows::SeenRows>,
}

/// Whether a driver error means the connection is gone (the statement did
/// not run, or its transaction was rolled back by the server).
pub(crate) fn is_connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // the server is shutting down or restarting, or cancelled the session
        Some(code) => {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || code.code().starts_with("08")
        }
        // not an error of the server: I/O on the socket
        None => e.as_db_error().is_none(),
    }
}

/// What a driver error says, in one line.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(": ");
                text.push_str(detail);
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

impl Ctx {
    /// A store error for a failed statement during `op`.
    pub(crate) fn err(&self, e: tokio_postgres::Error, op: &str) -> StoreError {
        let message = format!(
            "PostgreSQL {} (app '{}'): {op}: {}",
            self.shown,
            self.app_id,
            describe(&e)
        );
        StoreError::backend_caused(BACKEND, message, e)
    }

    /// A store error with a message of its own.
    pub(crate) fn fail(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError::backend(
            BACKEND,
            format!(
                "PostgreSQL {} (app '{}'): {message}",
                self.shown, self.app_id
            ),
        )
    }

    /// No invocation `id` in this app's rows.
    pub(crate) fn not_found(&self, id: &InvocationId) -> StoreError {
        StoreError::not_found(
            id,
            format!(
                "in the PostgreSQL database {} (app '{}')",
                self.shown, self.app_id
            ),
        )
    }

    /// The `what` of invocation `id` cannot be read.
    pub(crate) fn corrupt(
        &self,
        id: &str,
        what: &str,
        detail: impl std::fmt::Display,
    ) -> StoreError {
        StoreError::corrupt(
            format!(
                "PostgreSQL database {}: invocation {id} (app '{}'), its {what}",
                self.shown, self.app_id
            ),
            detail,
        )
    }
}
