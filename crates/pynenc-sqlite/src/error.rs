//! Errors of the SQLite backend: every one names the database file and
//! what was being done, and keeps SQLite's own error as its source.

use std::path::PathBuf;
use std::time::Duration;

use pynenc_model::InvocationId;
use pynenc_store::StoreError;
use rusqlite::ErrorCode;

/// The backend's name in errors.
pub(crate) const BACKEND: &str = "sqlite";

/// Where a store is and how it waits: shared by its connections and transactions.
pub(crate) struct Ctx {
    pub(crate) path: PathBuf,
    pub(crate) shown: String,
    pub(crate) app_id: String,
    /// The app's number in the `apps` table.
    pub(crate) app: i64,
    pub(crate) busy_timeout: Duration,
}

/// What a failed statement was about, rendered only when it fails.
#[derive(Clone, Copy)]
pub(crate) enum Key<'k> {
    None,
    Of(&'static str, &'k str),
}

impl Key<'_> {
    fn render(self) -> String {
        match self {
            Key::None => String::new(),
            Key::Of(what, value) => format!("{what} {value}"),
        }
    }
}

/// The key of an invocation.
pub(crate) fn inv(id: &InvocationId) -> Key<'_> {
    Key::Of("invocation", id.as_str())
}

impl Ctx {
    /// A store error for a failed SQLite call during `op` (on `key`, if any).
    pub(crate) fn err(&self, e: rusqlite::Error, op: &str, key: Key<'_>) -> StoreError {
        describe(&self.shown, self.busy_timeout, e, op, &key.render())
    }

    /// No invocation `id` in this app's rows.
    pub(crate) fn not_found(&self, id: &InvocationId) -> StoreError {
        StoreError::not_found(
            id,
            format!(
                "in the SQLite database {} (app '{}')",
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
                "SQLite database {}: invocation {id} (app '{}'), its {what}",
                self.shown, self.app_id
            ),
            detail,
        )
    }

    /// The `what` of invocation `id` that `cause` (a parser) cannot read.
    pub(crate) fn corrupt_by(
        &self,
        id: &str,
        what: &str,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::corrupt_caused(
            format!(
                "SQLite database {}: invocation {id} (app '{}'), its {what}",
                self.shown, self.app_id
            ),
            cause,
        )
    }

    /// A failure of this store with a message (no SQLite error behind it).
    pub(crate) fn fail(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError::backend(
            BACKEND,
            format!("SQLite database {}: {message}", self.shown),
        )
    }

    /// A failure of this store caused by `cause` (not an SQLite error).
    pub(crate) fn fail_caused(
        &self,
        message: impl std::fmt::Display,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::backend_caused(
            BACKEND,
            format!("SQLite database {}: {message}", self.shown),
            cause,
        )
    }
}

/// What a failed SQLite call means, in words that say what to do.
pub(crate) fn describe(
    path: &str,
    busy_timeout: Duration,
    e: rusqlite::Error,
    op: &str,
    key: &str,
) -> StoreError {
    let on = if key.is_empty() {
        op.to_string()
    } else {
        format!("{op} ({key})")
    };
    let message = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            format!("SQLite database {path}: file is not a database ({on}: {e})")
        }
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => format!(
            "SQLite database {path} stayed locked for {} ms (busy_timeout_ms) during {on}: \
             another connection holds a write transaction ({e})",
            busy_timeout.as_millis()
        ),
        Some(ErrorCode::ReadOnly) => format!(
            "SQLite database {path} is read-only ({on}: {e}); pynenc needs write access to the \
             file and to its directory (for the -wal and -shm files)"
        ),
        Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => format!(
            "cannot open SQLite database {path} ({on}: {e}); check that its directory exists \
             and that the file and the directory are writable"
        ),
        Some(ErrorCode::DiskFull) => {
            format!("SQLite database {path}: the disk is full ({on}: {e})")
        }
        _ => format!("SQLite database {path}: {on} failed: {e}"),
    };
    StoreError::backend_caused(BACKEND, message, e)
}

/// Whether SQLite refused because another connection holds the lock.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
    )
}
