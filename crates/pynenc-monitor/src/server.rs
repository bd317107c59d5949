//! Starting and stopping the monitor: the checks made before listening, the
//! routes and their layers, the server task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use pynenc::Pynenc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::audit::AuditLog;
use crate::auth::{random_token, Auth, Role};
use crate::error::MonitorError;
use crate::options::{Credential, MonitorOptions};
use crate::redact::Redactor;
use crate::state::{MonitorState, Shared};
use crate::{actions, api, assets, csrf, gate, headers, metrics, sse, views};

/// How long a shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running monitor: where it listens, the token it generated (if it did),
/// and how to stop it.
#[derive(Debug)]
pub struct Monitor {
    addr: SocketAddr,
    generated_token: Option<String>,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Monitor {
    /// Checks `options`, binds, and serves `app` in a tokio task.
    ///
    /// # Errors
    ///
    /// [`MonitorError::InsecureBind`] for a non-loopback address without
    /// configured credentials; [`MonitorError::InvalidOption`] for a cap of
    /// zero; [`MonitorError::Bind`] when the address cannot be bound.
    pub async fn start(app: &Pynenc, options: MonitorOptions) -> Result<Monitor, MonitorError> {
        if options.credentials.is_empty() && !options.bind.ip().is_loopback() {
            return Err(MonitorError::InsecureBind { addr: options.bind });
        }
        for (what, v) in [
            ("max_page_size", options.max_page_size),
            ("max_body_bytes", options.max_body_bytes),
        ] {
            if v == 0 {
                return Err(MonitorError::InvalidOption {
                    what,
                    reason: "must be above 0".into(),
                });
            }
        }
        if let Some(c) = options
            .credentials
            .iter()
            .find(|c| c.secret.expose().len() < 8)
        {
            return Err(MonitorError::InvalidOption {
                what: "credentials",
                reason: format!("the secret of '{}' is shorter than 8 characters", c.user),
            });
        }
        let mut credentials = options.credentials.clone();
        let generated_token = credentials.is_empty().then(|| {
            let token = random_token();
            credentials.push(Credential::new("admin", token.clone(), Role::Operator));
            token
        });
        let audit = match &options.audit_file {
            Some(path) => AuditLog::with_file(options.audit_capacity, path).map_err(|source| {
                MonitorError::AuditFile {
                    path: path.clone(),
                    source,
                }
            })?,
            None => AuditLog::new(options.audit_capacity),
        };
        let listener = tokio::net::TcpListener::bind(options.bind)
            .await
            .map_err(|source| MonitorError::Bind {
                addr: options.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| MonitorError::Bind {
            addr: options.bind,
            source,
        })?;
        let (stop, stopped) = watch::channel(false);
        let state: Shared = Arc::new(MonitorState {
            app: app.clone(),
            auth: Auth::new(credentials),
            csrf: random_token(),
            login_csrf: random_token(),
            audit,
            redactor: Redactor::new(&options.redact),
            max_page_size: options.max_page_size.min(pynenc_model::MAX_PAGE_SIZE),
            max_body_bytes: options.max_body_bytes,
            allowed_origins: Arc::new(options.allowed_origins.clone()),
            allowed_hosts: addr
                .ip()
                .is_loopback()
                .then(|| allowed_hosts(&options.allowed_origins)),
            live: crate::sse::Live::default(),
            shutdown: stopped.clone(),
        });
        let router = router(state);
        let mut shutdown = stopped;
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                })
                .await
        });
        info!(%addr, app_id = app.app_id(), "monitor listening");
        Ok(Monitor {
            addr,
            generated_token,
            stop,
            task,
        })
    }

    /// The address it listens on (the port chosen when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The operator token generated at start, when no credential was
    /// configured (user `admin`).
    pub fn generated_token(&self) -> Option<&str> {
        self.generated_token.as_deref()
    }

    /// Stops listening, ends the event streams, and waits (a few seconds
    /// at most) for requests in flight.
    ///
    /// # Errors
    ///
    /// [`MonitorError::Serve`] when the server had failed.
    pub async fn shutdown(self) -> Result<(), MonitorError> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(SHUTDOWN_GRACE, self.task).await {
            Ok(Ok(r)) => r.map_err(MonitorError::Serve),
            Ok(Err(e)) => Err(MonitorError::Serve(std::io::Error::other(e))),
            Err(_) => {
                warn!("monitor: requests still in flight after the grace period, stopped anyway");
                Ok(())
            }
        }
    }
}

/// The host names a loopback monitor answers to.
fn allowed_hosts(origins: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
        .into_iter()
        .map(String::from)
        .collect();
    for o in origins {
        let rest = o.split_once("://").map_or(o.as_str(), |(_, r)| r);
        let host = rest.split('/').next().unwrap_or("");
        hosts.push(crate::gate::host_name(host).to_ascii_lowercase());
    }
    hosts
}

/// Every route, with the layers: security headers (outermost), the
/// authentication gate, the POST guard (origin, CSRF, body size).
fn router(state: Shared) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/", get(views::overview))
        .route("/invocations", get(views::invocations))
        .route("/invocations/{id}", get(views::invocation))
        .route("/tasks", get(views::tasks))
        .route("/runners", get(views::runners))
        .route("/failures", get(views::failures))
        .route("/triggers", get(views::triggers))
        .route("/config", get(views::config))
        .route("/audit", get(views::audit))
        .route("/purge", get(views::purge_form))
        .route("/actions/{action}", post(actions::html))
        .route("/login", get(views::login::page).post(views::login::submit))
        .route("/logout", post(views::login::logout))
        .route("/api/overview", get(api::overview))
        .route("/api/invocations", get(api::invocations))
        .route("/api/invocations/{id}", get(api::invocation))
        .route("/api/tasks", get(api::tasks))
        .route("/api/runners", get(api::runners))
        .route("/api/failures", get(api::failures))
        .route("/api/triggers", get(api::triggers))
        .route("/api/config", get(api::config))
        .route("/api/audit", get(api::audit))
        .route("/api/me", get(api::me))
        .route("/api/actions/{action}", post(actions::api))
        .route("/health", get(api::health))
        .route("/metrics", get(metrics::metrics))
        .route("/events", get(sse::events))
        .route("/assets/{name}", get(assets::asset))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            csrf::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gate::gate,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(headers::security_headers))
        .with_state(state)
}
