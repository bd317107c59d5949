//! What each view shows, gathered from `pynenc_operate` and the app: one
//! function per view, each answer serializable, so that the page and its
//! JSON twin under `/api` show the same thing.

mod detail;
mod overview;
mod tasks;

pub(crate) use detail::{detail, Detail, Node};
pub(crate) use overview::{overview, Minute, Overview};
pub(crate) use tasks::{tasks, TaskRow, LATENCY_SAMPLE};

use pynenc_model::{ErrorKindCount, Page, DEFAULT_PAGE_SIZE};
use pynenc_operate::{Operate, RunnerView};
use serde::Serialize;

use crate::audit::AuditEntry;
use crate::error::HttpResult;
use crate::filter::Filter;
use crate::state::MonitorState;

/// A page of invocations with the filter that chose it.
#[derive(Debug, Serialize)]
pub(crate) struct Invocations {
    pub(crate) filter: Filter,
    pub(crate) page: Page,
    pub(crate) tasks: Vec<String>,
}

pub(crate) async fn invocations(s: &MonitorState, filter: Filter) -> HttpResult<Invocations> {
    let query = filter.query(DEFAULT_PAGE_SIZE, s.max_page_size)?;
    let inspect = s.app.inspect();
    let page = inspect.list(&query).await?;
    let tasks = inspect
        .tasks()
        .await?
        .into_iter()
        .map(|t| t.to_string())
        .collect();
    Ok(Invocations {
        filter,
        page,
        tasks,
    })
}

pub(crate) async fn runners(s: &MonitorState) -> HttpResult<Vec<RunnerView>> {
    Ok(s.app.inspect().runners().await?)
}

/// Every trigger: declared by this program or stored by a runner of the
/// app, with a cron trigger's recent firings; static arguments redacted
/// like any argument.
pub(crate) async fn triggers(s: &MonitorState) -> HttpResult<Vec<pynenc::TriggerInfo>> {
    let mut triggers = s.app.triggers().await?;
    for t in &mut triggers {
        t.arguments = t.arguments.as_deref().map(|a| s.redactor.value(a));
    }
    Ok(triggers)
}

/// Failures by error kind, most frequent first.
pub(crate) async fn failures(s: &MonitorState) -> HttpResult<Vec<ErrorKindCount>> {
    let mut v = s.app.inspect().failed_by_kind(&[]).await?;
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    Ok(v)
}

/// One configuration value (secrets masked by the app's configuration).
#[derive(Debug, Serialize)]
pub(crate) struct ConfigRow {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) source: String,
}

pub(crate) fn config(s: &MonitorState) -> Vec<ConfigRow> {
    s.app
        .conf()
        .described()
        .into_iter()
        .map(|e| ConfigRow {
            value: if s.redactor.hides(&e.key) && !e.value.is_null() {
                crate::redact::REDACTED.to_string()
            } else {
                e.value.to_string()
            },
            key: e.key,
            source: e.source.to_string(),
        })
        .collect()
}

pub(crate) fn audit(s: &MonitorState) -> Vec<AuditEntry> {
    s.audit.newest_first()
}

pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The monitor's own settings, as shown (never a secret).
pub(crate) fn monitor_settings(s: &MonitorState) -> Vec<(String, String)> {
    vec![
        ("users".into(), s.auth.describe()),
        ("redacted argument names".into(), s.redactor.describe()),
        ("page size cap".into(), s.max_page_size.to_string()),
        ("body size cap (bytes)".into(), s.max_body_bytes.to_string()),
        ("extra allowed origins".into(), s.allowed_origins.join(", ")),
        ("audit log".into(), s.audit.describe()),
    ]
}
