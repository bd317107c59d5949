//! Operating an app on the embedded backend: what runs, what failed and
//! why, and steering it — cancel, retry, purge.
//!
//! ```text
//! cargo run -p pynenc-operate --example operate
//! ```

use std::time::Duration;

use anyhow::Result;
use pynenc::model::{InvocationQuery, InvocationStatus, TaskCounter};
use pynenc::{Pynenc, TaskError, TaskId, ThreadRunner};
use pynenc_operate::{parse_statuses, Operate};

/// Charges an order; orders above 100 are refused.
#[pynenc::task]
async fn charge(order: u32) -> Result<u32, TaskError> {
    if order > 100 {
        return Err(TaskError::new(
            "CardDeclined",
            format!("order {order} refused"),
        ));
    }
    Ok(order * 2)
}

/// A report that takes a while.
#[pynenc::task]
async fn slow_report(weeks: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(60)).await;
    weeks
}

#[tokio::main]
async fn main() -> Result<()> {
    let app = Pynenc::builder().app_id("operate-example").build()?;
    let runner = ThreadRunner::with_slots(&app, 4).spawn();

    let orders = charge::parallelize_on(&app, [7, 150, 42, 300].map(|o| (o,))).await?;
    for inv in orders.invocations() {
        inv.wait().await?;
    }
    let report = slow_report::call_on(&app, 52).await?;
    report
        .wait_for_status(&[InvocationStatus::Running], Duration::from_secs(5))
        .await?;

    // what failed, and why
    let failed = app
        .inspect()
        .list(&InvocationQuery {
            statuses: parse_statuses("failed")?,
            ..InvocationQuery::new()
        })
        .await?;
    println!("FAILED: {}", failed.items.len());
    for kind in app.inspect().failed_by_kind(&[]).await? {
        println!("  {} × {} ({})", kind.count, kind.kind, kind.task_id);
    }

    // who runs what (a runner reports what it runs with every heartbeat, 0.5 s)
    tokio::time::sleep(Duration::from_millis(600)).await;
    for r in app.inspect().runners().await? {
        let running: Vec<String> = r.info.running.iter().map(|id| id.to_string()).collect();
        println!(
            "runner {} ({}, pid {}): {} slots, running [{}], {}",
            r.info.runner_id,
            r.info.kind,
            r.info.pid,
            r.info.slots,
            running.join(", "),
            if r.alive { "alive" } else { "silent" }
        );
    }

    // cancel the slow report while it runs: its runner drops it
    let control = app.control().as_actor("example-operator");
    let report_id = *report.invocation_id();
    control.cancel(&report_id, false).await?;
    let status = report
        .wait_for_status(&[InvocationStatus::Cancelled], Duration::from_secs(5))
        .await?;
    match report.result().await {
        Err(e) => println!("slow_report is {status}: {e}"),
        Ok(weeks) => println!("slow_report finished first: {weeks}"),
    }

    // retry the failed charges (they fail again: the card is still declined)
    let retried = control
        .retry_failed_matching(&InvocationQuery {
            task_ids: vec![TaskId::from(charge::task().task_id())],
            ..InvocationQuery::new()
        })
        .await?;
    println!("retried {} failed charges", retried.len());
    for r in &retried {
        app.invocation(&r.new).await?.wait().await?;
    }

    // counts by status, then purge what ended
    let counts = app.inspect().counts(&[]).await?;
    for (status, n) in &counts.totals {
        println!("  {status:<10} {n}");
    }
    let purged = control.purge_matching(&InvocationQuery::new()).await?;
    println!("purged {purged} final invocations");
    // the task totals stay: routed, started, ended, and how long runs took
    for t in app.inspect().task_totals(&[]).await? {
        let counts: Vec<String> = TaskCounter::ALL
            .iter()
            .filter(|c| t.get(**c) > 0)
            .map(|c| format!("{} {}", c.name(), t.get(*c)))
            .collect();
        let mean = t.run_times.mean_us().map_or_else(String::new, |us| {
            format!(", mean run {:.3} ms", us as f64 / 1000.0)
        });
        println!("  {}: {}{mean}", t.task_id, counts.join(", "));
    }
    runner.stop().await?;
    Ok(())
}
