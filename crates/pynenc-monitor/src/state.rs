//! What every request handler shares.

use std::sync::Arc;

use pynenc::Pynenc;

use crate::audit::AuditLog;
use crate::auth::Auth;
use crate::redact::Redactor;

/// The monitor's shared state.
pub(crate) type Shared = Arc<MonitorState>;

/// The app, the credentials and sessions, the process's CSRF token, the
/// audit log and the limits.
#[derive(Debug)]
pub(crate) struct MonitorState {
    pub(crate) app: Pynenc,
    pub(crate) auth: Auth,
    /// The CSRF token of signed-in users' forms and scripts (only ever
    /// shown to a signed-in user).
    pub(crate) csrf: String,
    /// The token of the sign-in form, shown to anyone: it protects nothing
    /// but the sign-in itself, so that the other one stays unknown to
    /// whoever has not signed in.
    pub(crate) login_csrf: String,
    pub(crate) audit: AuditLog,
    pub(crate) redactor: Redactor,
    pub(crate) max_page_size: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) allowed_origins: Arc<Vec<String>>,
    /// When listening on loopback only: the host names a request may name
    /// (`localhost`, loopback addresses, the allowed origins' hosts), against
    /// DNS rebinding. `None` on other addresses.
    pub(crate) allowed_hosts: Option<Vec<String>>,
    /// The shared watcher of live pages.
    pub(crate) live: crate::sse::Live,
    /// Set to `true` when the server shuts down (ends the event streams).
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
}
