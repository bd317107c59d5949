//! A small shop, run end to end on the embedded in-memory backend:
//! sub-tasks, `parallelize`, a retry, and a printed summary.
//!
//! ```text
//! cargo run -p pynenc --example demo
//! RUST_LOG=debug cargo run -p pynenc --example demo   # every transition, with ids
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use pynenc::{InvocationStatus, Pynenc, PynencError, TaskError};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

static PRICE_LOOKUPS: AtomicU32 = AtomicU32::new(0);

/// Looks up the price of an item in cents. The price service fails every
/// fifth lookup; the task retries those (`retry_for = ["Unavailable"]`).
#[pynenc::task(max_retries = 3, retry_for = ["Unavailable"])]
async fn price_of(item: String) -> Result<u64, TaskError> {
    let n = PRICE_LOOKUPS.fetch_add(1, Ordering::SeqCst);
    if n % 5 == 4 {
        return Err(TaskError::new(
            "Unavailable",
            format!("price service busy (lookup {n})"),
        ));
    }
    Ok(item.bytes().map(u64::from).sum::<u64>() * 3)
}

/// Prices every line of an order in parallel and sums them.
#[pynenc::task]
async fn order_total(items: Vec<String>) -> Result<u64, PynencError> {
    let prices = price_of::parallelize(items.into_iter().map(|i| (i,))).await?;
    Ok(prices.results().await?.into_iter().sum())
}

/// Checks out a customer's basket: a task calling a task, waiting for it
/// without holding a runner slot.
#[pynenc::task]
async fn checkout(customer: String, items: Vec<String>) -> Result<String, PynencError> {
    let total = order_total::call(items).await?.result().await?;
    tracing::info!(%customer, total, "checked out");
    Ok(format!(
        "{customer} pays {}.{:02}",
        total / 100,
        total % 100
    ))
}

/// A task that always fails, to show how errors come back.
#[pynenc::task]
async fn refund(order_id: u32) -> Result<(), TaskError> {
    Err(TaskError::new(
        "RefundRefused",
        format!("order {order_id} was never paid"),
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter: Targets = std::env::var("RUST_LOG")
        .unwrap_or_else(|_| "warn,pynenc=info,demo=info".into())
        .parse()?;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .compact()
                // colour only on a terminal, plain text when piped
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
        )
        .with(filter)
        .init();

    // In memory by default; `PYNENC__...` variables and pynenc.toml apply too.
    let app = Pynenc::builder()
        .app_id("demo-shop")
        .max_parallel_slots(4)
        .build()?;
    let runner = app.runner().spawn();

    let baskets = [
        ("ada", vec!["tea", "scones", "jam"]),
        ("grace", vec!["coffee", "cake"]),
        (
            "alan",
            vec!["apples", "bread", "cheese", "wine", "olives", "figs"],
        ),
    ];
    let mut invocations = Vec::new();
    for (customer, items) in baskets {
        let items = items.into_iter().map(String::from).collect();
        invocations.push(checkout::call(customer.to_string(), items).await?);
    }
    println!("\n== results");
    for inv in &invocations {
        println!("{:<40} {}", inv.invocation_id(), inv.result().await?);
    }
    match refund::call(42).await?.result().await {
        Err(PynencError::TaskFailed { error, .. }) => {
            println!(
                "refund failed as expected: {} — {}",
                error.kind, error.message
            )
        }
        other => println!("unexpected refund outcome: {other:?}"),
    }
    runner.stop().await?;

    println!("\n== every invocation by task and status");
    let ids = app.state_backend().list_invocation_ids().await?;
    let mut table: BTreeMap<(String, InvocationStatus), usize> = BTreeMap::new();
    let mut retried = Vec::new();
    for id in &ids {
        let record = app.state_backend().get_invocation(id).await?;
        let status = app.orchestrator().get_status(id).await?.status;
        *table
            .entry((record.call.task_id.to_string(), status))
            .or_default() += 1;
        if app.orchestrator().get_num_retries(id).await? > 0 {
            retried.push(*id);
        }
    }
    for ((task, status), n) in &table {
        println!("{task:<28} {status:<10} {n}");
    }
    println!("{} invocations, {} retried", ids.len(), retried.len());

    if let Some(id) = retried.first() {
        println!("\n== history of retried invocation {id}");
        for h in app.state_backend().get_history(id).await? {
            println!(
                "{}  {:<10} owner={}",
                h.timestamp.to_rfc3339(),
                h.status,
                h.owner.as_deref().unwrap_or("-")
            );
        }
    }
    println!("\n== effective configuration (value and source)");
    for line in app.conf().describe().lines().take(8) {
        println!("{line}");
    }
    println!("…");
    Ok(())
}
