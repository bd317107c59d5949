//! A durable workflow on the embedded in-memory backend: an order that is
//! charged, waits for the warehouse's signal, sleeps, and ships — and that
//! fails once after charging, so its second run replays the steps the first
//! made instead of charging the customer twice.
//!
//! ```text
//! cargo run -p pynenc --example workflow
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pynenc::{Pynenc, TaskError};

static CHARGES: AtomicU32 = AtomicU32::new(0);
static RUNS: AtomicU32 = AtomicU32::new(0);

/// Charges the customer (counted: it must happen once).
#[pynenc::task]
async fn charge(order: String, cents: u64) -> String {
    CHARGES.fetch_add(1, Ordering::SeqCst);
    format!("receipt-{order}-{cents}")
}

/// Ships the order.
#[pynenc::task]
async fn ship(order: String, box_size: String) -> String {
    format!("{order} shipped in a {box_size} box")
}

/// The order's workflow. Its first run stops with a retriable error right
/// after the warehouse answered: the second run gets every step back.
#[pynenc::workflow(max_retries = 1, retry_for = ["Flaky"])]
async fn fulfil(order: String) -> Result<String, TaskError> {
    let run = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    let started = pynenc::workflow::now().await?;
    let receipt = charge::call(order.clone(), 4_200).await?.result().await?;
    let box_size: String = pynenc::workflow::wait_signal("packed").await?;
    if run == 1 {
        return Err(TaskError::new("Flaky", "the first run stops here"));
    }
    pynenc::workflow::sleep(Duration::from_millis(500)).await?;
    let shipped = ship::call(order, box_size).await?.result().await?;
    let took = started.elapsed().unwrap_or_default();
    Ok(format!(
        "{receipt}; {shipped} (run {run}, {:.1} s since the first run started)",
        took.as_secs_f64()
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = Pynenc::builder().app_id("workflow-example").build()?;
    let runner = app.runner().spawn();
    let wf = fulfil::call_on(&app, "order-7".into()).await?;
    let id = *wf.invocation_id();
    println!("workflow {id} started");
    // the warehouse answers a moment later: meanwhile the workflow waits,
    // paused, its runner slot free
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "workflow is {} when the warehouse answers",
        wf.status().await?
    );
    app.signal(&id, "packed", "medium").await?;
    println!("{}", wf.result().await?);
    println!(
        "the workflow ran {} times; the customer was charged {} time(s)",
        RUNS.load(Ordering::SeqCst),
        CHARGES.load(Ordering::SeqCst)
    );
    println!("\n== its steps (invocations, children of the workflow), by creation");
    let query = pynenc::model::InvocationQuery {
        parent: Some(id),
        ..pynenc::model::InvocationQuery::new()
    };
    let mut steps = app.queries().list_invocations(&query).await?;
    steps.sort_by_key(|s| s.created_at);
    for step in steps {
        println!("{:<26} {}", step.task_id, step.status);
    }
    runner.stop().await?;
    Ok(())
}
