//! `monitor`: serves the web monitor (`pynenc-monitor`) until Ctrl-C or
//! SIGTERM. Credentials come from the environment; without them an
//! operator token is generated and printed, and only loopback is allowed.

use pynenc::Pynenc;
use pynenc_monitor::{Credential, Monitor, MonitorError, MonitorOptions, Role};
use serde_json::json;

use crate::args::MonitorArgs;
use crate::error::{CliError, Result};
use crate::output::{line, Out};

/// The variable holding the operator's token (user `operator`).
pub(crate) const OPERATOR_ENV: &str = "PYNENC_MONITOR_OPERATOR_TOKEN";
/// The variable holding the viewer's token (user `viewer`).
pub(crate) const VIEWER_ENV: &str = "PYNENC_MONITOR_VIEWER_TOKEN";

/// `monitor`.
pub(crate) async fn monitor(out: &Out, app: &Pynenc, a: &MonitorArgs) -> Result<()> {
    let mut options = MonitorOptions {
        bind: a.bind,
        allowed_origins: a.allow_origins.clone(),
        max_page_size: a.max_page_size,
        audit_file: a.audit_file.clone(),
        ..MonitorOptions::default()
    };
    options.redact.extend(a.redact.iter().cloned());
    for (var, user, role) in [
        (OPERATOR_ENV, "operator", Role::Operator),
        (VIEWER_ENV, "viewer", Role::Viewer),
    ] {
        if let Ok(token) = std::env::var(var) {
            if !token.is_empty() {
                options.credentials.push(Credential::new(user, token, role));
            }
        }
    }
    let monitor = Monitor::start(app, options).await.map_err(|e| match e {
        MonitorError::InsecureBind { .. } => CliError::Usage(format!(
            "{e}: set {OPERATOR_ENV} (and {VIEWER_ENV} for read-only users)"
        )),
        MonitorError::InvalidOption { .. } | MonitorError::AuditFile { .. } => {
            CliError::Usage(e.to_string())
        }
        other => CliError::Failed(other.to_string()),
    })?;
    let url = format!("http://{}/", monitor.addr());
    if out.json {
        line(
            &json!({ "url": url, "app_id": app.app_id(), "token": monitor.generated_token() })
                .to_string(),
        )?;
    } else {
        eprintln!(
            "pynenc monitor for app '{}' on {url}  (Ctrl-C to stop)",
            app.app_id()
        );
        if let Some(token) = monitor.generated_token() {
            eprintln!("operator token (user admin, or paste it in the sign-in form): {token}");
        }
    }
    pynenc_monitor::shutdown_signal().await;
    monitor
        .shutdown()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))
}
