//! `GET /metrics`: Prometheus text, read from the backend's indexes at each
//! scrape (nothing is counted in this process but the monitor's own
//! actions). Labels are bounded: task id, status, error kind, action —
//! never an invocation id.
//!
//! | metric | type | labels | derived from |
//! |---|---|---|---|
//! | `pynenc_invocations_routed_total`, `…_started_total`, `…_succeeded_total`, `…_failed_total`, `…_retried_total`, `…_cancelled_total` | counter | `task` | the task totals, kept by the backend in the step of each transition (a run started once per attempt; a purge of invocations keeps them) |
//! | `pynenc_run_duration_seconds` | histogram | `task` | the run times runners measured (body start to end), per bucket of the task totals |
//! | `pynenc_invocations` | gauge | `task`, `status` | the count-by-status index: invocations of the task now in the status (all stored, until purged) |
//! | `pynenc_failures` | gauge | `task`, `kind` | the failed-by-kind index: `FAILED` invocations stored, by error kind |
//! | `pynenc_queue_depth` | gauge | — | invocations waiting for a runner (`REGISTERED`, `REROUTED`, `RETRY`) |
//! | `pynenc_queue_oldest_age_seconds` | gauge | — | age of the oldest of them (0 when none) |
//! | `pynenc_runners` | gauge | `state` (`alive`, `dead`) | registered runners by heartbeat age |
//! | `pynenc_runner_slots` | gauge | — | slots of the live runners |
//! | `pynenc_runner_running` | gauge | — | invocations the live runners run now |
//! | `pynenc_monitor_actions_total` | counter | `action` | actions taken through this monitor process |

use std::fmt::Write;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use pynenc_model::{TaskCounter, TaskTotals, Timestamp};
use pynenc_operate::Operate;

use crate::error::HttpResult;
use crate::state::Shared;

/// A label value escaped as the text format asks.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The counters and the run-time histogram of the task totals.
fn write_totals(out: &mut String, totals: &[TaskTotals]) {
    for counter in TaskCounter::ALL {
        let name = format!("pynenc_invocations_{}_total", counter.name());
        let _ = writeln!(
            out,
            "# HELP {name} Invocations {} per task, since the app's data began.\n# TYPE {name} counter",
            counter.name()
        );
        for t in totals {
            let _ = writeln!(
                out,
                "{name}{{task=\"{}\"}} {}",
                label(t.task_id.as_str()),
                t.get(counter)
            );
        }
    }
    let name = "pynenc_run_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} How long runs took, body start to end, per task.\n# TYPE {name} histogram"
    );
    for t in totals {
        let task = label(t.task_id.as_str());
        for (bound, n) in t.run_times.cumulative() {
            let le = bound.map_or_else(|| "+Inf".to_string(), |us| (us as f64 / 1e6).to_string());
            let _ = writeln!(out, "{name}_bucket{{task=\"{task}\",le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_sum{{task=\"{task}\"}} {}",
            t.run_times.sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "{name}_count{{task=\"{task}\"}} {}",
            t.run_times.count()
        );
    }
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(s): State<Shared>) -> HttpResult<Response> {
    let inspect = s.app.inspect();
    let counts = inspect.counts(&[]).await?;
    let failures = inspect.failed_by_kind(&[]).await?;
    let queue = inspect.queue().await?;
    let runners = inspect.runners().await?;
    let totals = inspect.task_totals(&[]).await?;
    let mut out = String::new();
    write_totals(&mut out, &totals);
    // writing to a String cannot fail
    let _ = writeln!(
        out,
        "# HELP pynenc_invocations Invocations stored, by task and current status."
    );
    let _ = writeln!(out, "# TYPE pynenc_invocations gauge");
    for c in &counts.by_task {
        let _ = writeln!(
            out,
            "pynenc_invocations{{task=\"{}\",status=\"{}\"}} {}",
            label(c.task_id.as_str()),
            c.status.as_lower_str(),
            c.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP pynenc_failures FAILED invocations stored, by task and error kind."
    );
    let _ = writeln!(out, "# TYPE pynenc_failures gauge");
    for f in &failures {
        let _ = writeln!(
            out,
            "pynenc_failures{{task=\"{}\",kind=\"{}\"}} {}",
            label(f.task_id.as_str()),
            label(&f.kind),
            f.count
        );
    }
    let age = queue
        .oldest
        .map_or(0.0, |(_, at)| Timestamp::now().since(at).as_secs_f64());
    let alive: Vec<_> = runners.iter().filter(|r| r.alive).collect();
    let slots: u64 = alive.iter().map(|r| u64::from(r.info.slots)).sum();
    let running: usize = alive.iter().map(|r| r.info.running.len()).sum();
    for (name, help, value) in [
        (
            "pynenc_queue_depth",
            "Invocations waiting for a runner.",
            queue.depth as f64,
        ),
        (
            "pynenc_queue_oldest_age_seconds",
            "Age of the oldest invocation waiting for a runner.",
            age,
        ),
        (
            "pynenc_runner_slots",
            "Slots of the live runners.",
            slots as f64,
        ),
        (
            "pynenc_runner_running",
            "Invocations the live runners run now.",
            running as f64,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP pynenc_runners Registered runners by state.\n# TYPE pynenc_runners gauge"
    );
    let _ = writeln!(out, "pynenc_runners{{state=\"alive\"}} {}", alive.len());
    let _ = writeln!(
        out,
        "pynenc_runners{{state=\"dead\"}} {}",
        runners.len() - alive.len()
    );
    let _ = writeln!(out, "# HELP pynenc_monitor_actions_total Actions taken through this monitor process.\n# TYPE pynenc_monitor_actions_total counter");
    for (action, n) in s.audit.totals() {
        let _ = writeln!(
            out,
            "pynenc_monitor_actions_total{{action=\"{}\"}} {n}",
            label(&action)
        );
    }
    let mut res = out.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(res)
}
