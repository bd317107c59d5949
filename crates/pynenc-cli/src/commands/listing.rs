//! `list`, `tasks`, `runners`, `queue`, `apps`: what there is.

use std::collections::BTreeMap;
use std::time::Duration;

use pynenc::model::{InvocationQuery, InvocationSummary, Order};
use pynenc::{InvocationStatus, Pynenc, Timestamp};
use pynenc_operate::{parse_cursor, Operate};
use serde_json::json;

use crate::args::ListArgs;
use crate::error::Result;
use crate::filters;
use crate::output::{duration, line, time, Out, Table};

/// `list`: one page of invocations matching the filters.
pub(crate) async fn list(out: &Out, app: &Pynenc, a: &ListArgs) -> Result<()> {
    let mut q = filters::query(&a.filter)?;
    q.limit = a.limit;
    if a.oldest_first {
        q.order = Order::OldestFirst;
    }
    q.after = a.after.as_deref().map(parse_cursor).transpose()?;
    let page = app.inspect().list(&q).await?;
    let next = page.next.map(|c| c.to_string());
    if out.json {
        return out.json(&json!({ "items": page.items, "next": next }));
    }
    summaries(out, &page.items, true).print(out, "no invocation matches")?;
    if let Some(next) = next {
        line(&format!("more: --after {next}"))?;
    }
    Ok(())
}

/// The table of invocation summaries; `full` adds their age and owner.
pub(crate) fn summaries(out: &Out, items: &[InvocationSummary], full: bool) -> Table {
    let now = Timestamp::now();
    let header: &[&str] = if full {
        &["INVOCATION", "TASK", "STATUS", "CREATED", "AGE", "OWNER"]
    } else {
        &["INVOCATION", "TASK", "STATUS", "CREATED"]
    };
    let mut t = Table::new(header);
    for s in items {
        let mut row = vec![
            s.invocation_id.to_string(),
            s.task_id.to_string(),
            out.status(s.status),
            time(s.created_at),
        ];
        if full {
            row.push(duration(now.since(s.created_at)));
            row.push(
                s.owner
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            );
        }
        t.row(row);
    }
    t
}

/// `tasks`: counts by status per task, and failures by error kind.
pub(crate) async fn tasks(out: &Out, app: &Pynenc) -> Result<()> {
    let inspector = app.inspect();
    let tasks = inspector.tasks().await?;
    let counts = inspector.counts(&[]).await?;
    let kinds = inspector.failed_by_kind(&[]).await?;
    let mut by_task: BTreeMap<String, BTreeMap<InvocationStatus, u64>> = tasks
        .iter()
        .map(|t| (t.to_string(), BTreeMap::new()))
        .collect();
    for c in &counts.by_task {
        *by_task
            .entry(c.task_id.to_string())
            .or_default()
            .entry(c.status)
            .or_insert(0) += c.count;
    }
    if out.json {
        let tasks: Vec<_> = by_task
            .iter()
            .map(|(task, counts)| {
                let counts: BTreeMap<&str, u64> =
                    counts.iter().map(|(s, n)| (s.as_lower_str(), *n)).collect();
                let failed: BTreeMap<&str, u64> = kinds
                    .iter()
                    .filter(|k| k.task_id.as_str() == task)
                    .map(|k| (k.kind.as_str(), k.count))
                    .collect();
                json!({ "task_id": task, "counts": counts, "failed_by_kind": failed })
            })
            .collect();
        return out.json(&json!({ "tasks": tasks }));
    }
    let mut t = Table::new(&["TASK", "TOTAL", "COUNTS BY STATUS"]);
    for (task, counts) in &by_task {
        let total: u64 = counts.values().sum();
        let shown: Vec<String> = counts
            .iter()
            .map(|(s, n)| format!("{} {n}", out.status(*s)))
            .collect();
        t.row(vec![task.clone(), total.to_string(), shown.join(", ")]);
    }
    t.print(out, "no task registered or seen")?;
    if !kinds.is_empty() {
        line("")?;
        let mut k = Table::new(&["TASK", "ERROR KIND", "FAILED"]);
        for c in &kinds {
            k.row(vec![
                c.task_id.to_string(),
                c.kind.clone(),
                c.count.to_string(),
            ]);
        }
        k.print(out, "")?;
    }
    Ok(())
}

/// `runners`: every registered runner, alive or not.
pub(crate) async fn runners(out: &Out, app: &Pynenc) -> Result<()> {
    let runners = app.inspect().runners().await?;
    if out.json {
        return out.json(&json!({ "runners": runners }));
    }
    let mut t = Table::new(&[
        "RUNNER",
        "KIND",
        "HOST",
        "PID",
        "STARTED",
        "HEARTBEAT",
        "ALIVE",
        "SLOTS",
        "RUNNING",
        "LEASE",
    ]);
    for r in &runners {
        let i = &r.info;
        t.row(vec![
            i.runner_id.to_string(),
            i.kind.clone(),
            i.host.clone(),
            i.pid.to_string(),
            time(i.started_at),
            format!(
                "{} ago",
                duration(Duration::from_millis(r.heartbeat_age_ms))
            ),
            if r.alive { "yes" } else { "no" }.to_string(),
            i.slots.to_string(),
            i.running.len().to_string(),
            if r.holds_recovery_lease {
                "recovery"
            } else {
                ""
            }
            .to_string(),
        ]);
    }
    t.print(out, "no runner registered")
}

/// `queue`: depth, oldest, and the oldest waiting invocations.
pub(crate) async fn queue(out: &Out, app: &Pynenc, next: usize) -> Result<()> {
    let inspector = app.inspect();
    let stats = inspector.queue().await?;
    let waiting = if next == 0 {
        Vec::new()
    } else {
        inspector
            .list(&InvocationQuery {
                statuses: pynenc::status::ALL_STATUSES
                    .iter()
                    .copied()
                    .filter(|s| s.is_available_for_run())
                    .collect(),
                order: Order::OldestFirst,
                limit: next,
                ..InvocationQuery::new()
            })
            .await?
            .items
    };
    let now = Timestamp::now();
    let oldest_age = stats.oldest.map(|(_, t)| now.since(t));
    if out.json {
        return out.json(&json!({
            "depth": stats.depth,
            "oldest": stats.oldest.map(|(id, t)| json!({ "invocation_id": id, "created_at": t })),
            "oldest_age_ms": oldest_age.map(|d| d.as_millis() as u64),
            "next": waiting,
        }));
    }
    line(&format!("depth   {}", stats.depth))?;
    match stats.oldest {
        Some((id, t)) => line(&format!(
            "oldest  {id}  created {} ({} ago)",
            time(t),
            duration(now.since(t))
        ))?,
        None => line("oldest  -")?,
    }
    if next > 0 && !waiting.is_empty() {
        line("")?;
        summaries(out, &waiting, true).print(out, "")?;
    }
    Ok(())
}

/// `apps`: the app ids with data on the backend.
pub(crate) async fn apps(out: &Out, app: &Pynenc) -> Result<()> {
    let apps = app.inspect().apps().await?;
    if out.json {
        return out.json(&json!({ "apps": apps }));
    }
    if apps.is_empty() {
        return line("no app has data on this backend");
    }
    for a in apps {
        line(&a)?;
    }
    Ok(())
}

/// `triggers`: the triggers the program declares and those runners of the
/// app stored, with what the latest ticks of cron triggers fired.
pub(crate) async fn triggers(out: &Out, app: &Pynenc) -> Result<()> {
    let triggers = app.triggers().await?;
    if out.json {
        return out.json(&json!({ "triggers": triggers }));
    }
    let mut t = Table::new(&["TRIGGER", "CONDITION", "TASK", "NEXT TICK", "LATEST TICKS"]);
    for tr in &triggers {
        let recent: Vec<String> = tr
            .recent
            .iter()
            .map(|f| {
                let status = f.status.map_or("not fired".to_string(), |s| s.to_string());
                format!("{} {status}", time(f.tick))
            })
            .collect();
        t.row(vec![
            tr.name.clone(),
            tr.condition.clone(),
            tr.task_id.clone(),
            tr.next_tick.map(time).unwrap_or_default(),
            recent.join(", "),
        ]);
    }
    t.print(
        out,
        "no trigger: none declared by this program, none stored by a runner of the app",
    )
}
