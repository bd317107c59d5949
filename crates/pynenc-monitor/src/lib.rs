//! The pynenc web monitor: live views of an app's invocations, tasks,
//! runners and queue, with actions (cancel, rerun, retry, purge) behind
//! authentication — safe by default.
//!
//! ```no_run
//! # async fn demo(app: pynenc::Pynenc) -> Result<(), pynenc_monitor::MonitorError> {
//! use pynenc_monitor::{Monitor, MonitorOptions};
//!
//! // 127.0.0.1:8025, an operator token generated and printed
//! pynenc_monitor::serve(&app, MonitorOptions::default()).await?;
//!
//! // or keep the handle (tests: port 0, then `addr()`)
//! let monitor = Monitor::start(&app, MonitorOptions::default()).await?;
//! println!("http://{}/ token {:?}", monitor.addr(), monitor.generated_token());
//! monitor.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Everything it shows comes from the backend through `pynenc_operate`
//! (queries answered from indexes), so it works on every backend and keeps
//! no copy of events; every action goes through the engine's transitions,
//! recorded in each invocation's history with the actor `monitor:<user>`.
//!
//! Security, by default: it listens on 127.0.0.1 only, and refuses a
//! non-loopback address without configured credentials; it needs a user
//! (bearer token, HTTP basic, or the login form's HttpOnly SameSite=Strict
//! cookie), generating an operator token when none is configured; viewers
//! read, operators act; every change is a POST carrying the process's CSRF
//! token, from the monitor's own origin; responses carry a CSP without
//! inline scripts or styles, frame denial, nosniff, no-referrer and
//! no-store; argument values with secret-looking names are redacted on
//! every page and in every API answer; credentials are compared in constant
//! time; page and body sizes are capped.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod actions;
mod api;
mod assets;
mod audit;
mod auth;
mod csrf;
mod data;
mod error;
mod filter;
mod gate;
mod headers;
mod metrics;
mod options;
mod redact;
mod server;
mod sse;
mod state;
mod views;

pub use audit::AuditEntry;
pub use auth::{
    constant_time_eq, random_token, Principal, Role, FAILURE_WINDOW, MAX_FAILURES, SESSION_COOKIE,
};
pub use csrf::{CSRF_FIELD, CSRF_HEADER};
pub use error::MonitorError;
pub use headers::CSP;
pub use options::{
    Credential, MonitorOptions, Secret, DEFAULT_BIND, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_PAGE_SIZE, DEFAULT_REDACT,
};
pub use redact::{
    ShownArgument, MAX_ARGUMENT_CHARS, MAX_RESULT_CHARS, MAX_SCANNED_BYTES, REDACTED,
};
pub use server::Monitor;
pub use sse::CHECK_EVERY;

/// Serves `app` until Ctrl-C (or SIGTERM on Unix): prints where it listens
/// and, when no credential is configured, the operator token it generated.
///
/// # Errors
///
/// As [`Monitor::start`] and [`Monitor::shutdown`].
pub async fn serve(app: &pynenc::Pynenc, options: MonitorOptions) -> Result<(), MonitorError> {
    let monitor = Monitor::start(app, options).await?;
    eprintln!("pynenc monitor on http://{}/", monitor.addr());
    if let Some(token) = monitor.generated_token() {
        eprintln!("operator token (user admin): {token}");
    }
    shutdown_signal().await;
    monitor.shutdown().await
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
