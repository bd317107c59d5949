//! `cancel`, `rerun`, `retry-failed`, `purge`: changing the work. Every id
//! is checked before anything changes; actions by filter show progress on
//! a terminal; a purge shows what will go and asks first.

use std::future::Future;
use std::io::{BufRead, IsTerminal, Write};

use pynenc::model::{CancelOutcome, InvocationQuery, TimeRange};
use pynenc::status::ALL_STATUSES;
use pynenc::{InvocationId, InvocationStatus, Pynenc, Timestamp};
use pynenc_operate::{parse_statuses, CancelReport, Controller, Operate, Rerun};
use serde_json::json;

use crate::args::{CancelArgs, FilterArgs, PurgeArgs, RerunArgs, RetryArgs};
use crate::commands::listing::summaries;
use crate::error::{CliError, Result};
use crate::filters::{self, invocation_id};
use crate::output::{line, Out, Table};
use crate::progress::Progress;

/// How many invocations a purge preview lists.
const PREVIEW: usize = 20;
/// How far a purge preview counts when the total is not in the counters.
const PREVIEW_COUNT_CAP: usize = 10_000;

fn ids(texts: &[String]) -> Result<Vec<InvocationId>> {
    texts.iter().map(|t| invocation_id(t)).collect()
}

/// The query of an action by filter: at least one filter is needed.
fn filter_query(verb: &str, f: &FilterArgs) -> Result<InvocationQuery> {
    if !filters::any(f) {
        return Err(CliError::Usage(format!(
            "{verb} what? give invocation ids, or filters (--task, --status, --since...)"
        )));
    }
    filters::query(f)
}

/// Runs an action by filter on a controller that counts what it handled
/// as `what` on a terminal.
async fn with_progress<T, F, Fut>(out: &Out, app: &Pynenc, what: &str, action: F) -> Result<T>
where
    F: FnOnce(Controller) -> Fut,
    Fut: Future<Output = pynenc_operate::Result<T>>,
{
    let progress = Progress::start(what, out.json);
    let done = action(app.control().on_progress(progress.counter())).await;
    progress.finish();
    Ok(done?)
}

/// `cancel`.
pub(crate) async fn cancel(out: &Out, app: &Pynenc, a: &CancelArgs) -> Result<()> {
    let report = if a.ids.is_empty() {
        let query = filter_query("cancel", &a.filter)?;
        let children = a.children;
        with_progress(out, app, "looked at", |c| async move {
            c.cancel_matching(&query, children).await
        })
        .await?
    } else {
        let ids = ids(&a.ids)?;
        let mut all = CancelReport::default();
        for id in &ids {
            let r = app.control().cancel(id, a.children).await?;
            all.outcomes.extend(r.outcomes);
        }
        all
    };
    if out.json {
        let outcomes: Vec<_> = report
            .outcomes
            .iter()
            .map(|(id, o)| json!({ "invocation_id": id, "outcome": o }))
            .collect();
        return out.json(&json!({
            "cancelled": report.cancelled(),
            "requested": report.requested(),
            "already_final": report.already_final(),
            "outcomes": outcomes,
        }));
    }
    let mut t = Table::new(&["INVOCATION", "OUTCOME"]);
    for (id, o) in &report.outcomes {
        let what = match o {
            CancelOutcome::Cancelled => "cancelled".to_string(),
            CancelOutcome::Requested { owner } => format!("runner {owner} asked to stop it"),
            CancelOutcome::AlreadyFinal { status } => format!("already {status}"),
        };
        t.row(vec![id.to_string(), what]);
    }
    t.print(out, "nothing to cancel")?;
    line(&format!(
        "{} cancelled, {} being stopped by their runners, {} already ended",
        report.cancelled(),
        report.requested(),
        report.already_final()
    ))
}

fn print_reruns(out: &Out, reruns: &[Rerun], verb: &str) -> Result<()> {
    if out.json {
        return out.json(&json!({ verb: reruns }));
    }
    let mut t = Table::new(&["ORIGINAL", "NEW"]);
    for r in reruns {
        t.row(vec![r.original.to_string(), r.new.to_string()]);
    }
    t.print(out, &format!("nothing {verb}"))?;
    line(&format!("{} {verb}", reruns.len()))
}

/// `rerun`.
pub(crate) async fn rerun(out: &Out, app: &Pynenc, a: &RerunArgs) -> Result<()> {
    let reruns = if a.ids.is_empty() {
        let query = filter_query("rerun", &a.filter)?;
        with_progress(out, app, "rerun", |c| async move {
            c.rerun_matching(&query).await
        })
        .await?
    } else {
        let ids = ids(&a.ids)?;
        // every id must exist before anything is routed
        for id in &ids {
            app.orchestrator()
                .get_status(id)
                .await
                .map_err(pynenc::PynencError::from)?;
        }
        let mut reruns = Vec::new();
        for id in &ids {
            reruns.push(app.control().rerun(id).await?);
        }
        reruns
    };
    print_reruns(out, &reruns, "rerun")
}

/// `retry-failed`.
pub(crate) async fn retry_failed(out: &Out, app: &Pynenc, a: &RetryArgs) -> Result<()> {
    let reruns = if a.ids.is_empty() {
        if a.filter.status.is_some() {
            return Err(CliError::Usage(
                "retry-failed takes no --status: it retries FAILED invocations only".into(),
            ));
        }
        let query = filters::query(&a.filter)?;
        with_progress(out, app, "retried", |c| async move {
            c.retry_failed_matching(&query).await
        })
        .await?
    } else {
        let ids = ids(&a.ids)?;
        for id in &ids {
            let status = app
                .orchestrator()
                .get_status(id)
                .await
                .map_err(pynenc::PynencError::from)?
                .status;
            if status != InvocationStatus::Failed {
                return Err(CliError::Refused(format!(
                    "invocation {id} is {status}: only FAILED invocations are retried (nothing was retried)"
                )));
            }
        }
        let mut reruns = Vec::new();
        for id in &ids {
            reruns.push(app.control().retry_failed(id).await?);
        }
        reruns
    };
    print_reruns(out, &reruns, "retried")
}

/// The query of `purge`'s flags: final statuses only.
fn purge_query(a: &PurgeArgs) -> Result<InvocationQuery> {
    let mut q = InvocationQuery::new();
    q.task_ids = filters::task_ids(&a.tasks);
    q.statuses = match &a.status {
        Some(s) => {
            let statuses = parse_statuses(s)?;
            if let Some(open) = statuses.iter().find(|s| !s.is_final()) {
                return Err(CliError::Usage(format!(
                    "--status {open}: a purge deletes ended invocations only (final statuses: {})",
                    final_statuses()
                        .iter()
                        .map(|s| s.as_lower_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            statuses
        }
        None => final_statuses(),
    };
    if let Some(age) = &a.older_than {
        let age = filters::duration("--older-than", age)?;
        q.ended = TimeRange {
            from: None,
            to: Some(Timestamp::now() - age),
        };
    }
    Ok(q)
}

/// `1 invocation`, `2 invocations`.
fn invocations(n: usize) -> String {
    if n == 1 {
        "1 invocation".into()
    } else {
        format!("{n} invocations")
    }
}

fn final_statuses() -> Vec<InvocationStatus> {
    ALL_STATUSES
        .iter()
        .copied()
        .filter(|s| s.is_final())
        .collect()
}

/// How many a purge of `q` deletes: exact from the counters when no time
/// limits it, else counted page by page up to a cap (`true`: at least).
async fn purge_count(app: &Pynenc, q: &InvocationQuery) -> Result<(usize, bool)> {
    if q.ended.to.is_none() {
        let counts = app.inspect().counts(&q.task_ids).await?;
        let n: u64 = q.statuses.iter().map(|s| counts.of(*s)).sum();
        return Ok((usize::try_from(n).unwrap_or(usize::MAX), false));
    }
    let found = app.inspect().list_all(q, PREVIEW_COUNT_CAP).await?.len();
    Ok((found, found >= PREVIEW_COUNT_CAP))
}

/// `purge`.
pub(crate) async fn purge(out: &Out, app: &Pynenc, a: &PurgeArgs) -> Result<()> {
    let q = purge_query(a)?;
    let (count, at_least) = purge_count(app, &q).await?;
    if count == 0 {
        if out.json {
            return out.json(&json!({ "deleted": 0 }));
        }
        return line("nothing to purge");
    }
    let many = if at_least {
        format!("{count} or more invocations")
    } else {
        invocations(count)
    };
    if !a.yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Err(CliError::Refused(format!(
                "a purge would delete {many}; not on a terminal, so pass --yes to confirm (nothing was deleted)"
            )));
        }
        let preview = app.control().purge_preview(&q, PREVIEW).await?;
        eprintln!("{}", summaries(out, &preview, true).render(out));
        if count > preview.len() {
            let rest = count - preview.len();
            eprintln!("… and {rest}{} more", if at_least { " or" } else { "" });
        }
        eprint!("delete {many} (records, results, histories)? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        stdin
            .lock()
            .read_line(&mut answer)
            .map_err(|e| CliError::Failed(format!("cannot read the answer: {e}")))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            return Err(CliError::Refused(
                "not confirmed: nothing was deleted".into(),
            ));
        }
    }
    let deleted = with_progress(
        out,
        app,
        "purged",
        |c| async move { c.purge_matching(&q).await },
    )
    .await?;
    if out.json {
        return out.json(&json!({ "deleted": deleted }));
    }
    line(&format!("{} deleted", invocations(deleted)))
}
