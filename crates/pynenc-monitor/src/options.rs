//! [`MonitorOptions`]: where the monitor listens, who may use it, what it hides.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use crate::auth::Role;

/// The address the monitor listens on unless told otherwise: this machine only.
pub const DEFAULT_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8025);

/// The argument names redacted unless others are configured: any name
/// containing one of these (case-insensitive).
pub const DEFAULT_REDACT: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "access_key",
    "credential",
    "auth",
    "cookie",
];

/// The largest page of invocations the monitor serves unless configured.
pub const DEFAULT_MAX_PAGE_SIZE: usize = 200;

/// The largest request body accepted unless configured (bytes).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// A secret: compared in constant time, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret from its text.
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The text (to compare or to print once at start).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Someone who may use the monitor: a name, a secret and a role.
///
/// The secret is accepted as a bearer token (`Authorization: Bearer
/// <secret>`), as the password of HTTP basic authentication with `user`,
/// and in the login form.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The user name (shown in the audit log).
    pub user: String,
    /// The token or password.
    pub secret: Secret,
    /// What the user may do.
    pub role: Role,
}

impl Credential {
    /// A credential for `user` with `secret` and `role`.
    pub fn new(user: impl Into<String>, secret: impl Into<String>, role: Role) -> Self {
        Credential {
            user: user.into(),
            secret: Secret::new(secret),
            role,
        }
    }
}

/// How to run the monitor.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// Where to listen ([`DEFAULT_BIND`]: 127.0.0.1:8025). Port 0 picks a
    /// free port ([`crate::Monitor::addr`] tells which).
    pub bind: SocketAddr,
    /// Who may use it. When empty, an operator token is generated at start
    /// (see [`crate::Monitor::generated_token`]); the monitor then refuses to
    /// listen on anything but a loopback address.
    pub credentials: Vec<Credential>,
    /// Argument names to redact: any name containing one of these,
    /// case-insensitive ([`DEFAULT_REDACT`]). JSON object keys inside
    /// arguments and results are redacted by the same rule.
    pub redact: Vec<String>,
    /// The largest page of invocations served; a request for more is refused.
    pub max_page_size: usize,
    /// The largest request body accepted; a larger one gets 413.
    pub max_body_bytes: usize,
    /// Origins allowed to POST besides the monitor's own (`Host` header), e.g.
    /// `https://monitor.example.com` behind a reverse proxy.
    pub allowed_origins: Vec<String>,
    /// How many actions the audit log keeps in memory (oldest dropped first).
    pub audit_capacity: usize,
    /// A file the audit log is appended to (JSON lines), and read back from
    /// at start; without one, the audit page starts empty at each start.
    pub audit_file: Option<std::path::PathBuf>,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            bind: DEFAULT_BIND,
            credentials: Vec::new(),
            redact: DEFAULT_REDACT.iter().map(|s| (*s).to_string()).collect(),
            max_page_size: DEFAULT_MAX_PAGE_SIZE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            allowed_origins: Vec::new(),
            audit_capacity: 10_000,
            audit_file: None,
        }
    }
}

impl MonitorOptions {
    /// The same options listening on `bind`.
    pub fn bind(mut self, bind: SocketAddr) -> Self {
        self.bind = bind;
        self
    }

    /// The same options with one more credential.
    pub fn credential(mut self, credential: Credential) -> Self {
        self.credentials.push(credential);
        self
    }
}
