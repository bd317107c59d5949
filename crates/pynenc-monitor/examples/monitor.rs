//! The monitor over an app on the embedded backend with a small workload:
//! orders charged (some refused), a slow report, a runner working.
//!
//! ```text
//! cargo run -p pynenc-monitor --example monitor
//! ```
//!
//! Open the address it prints and sign in with the token it prints.

use std::time::Duration;

use pynenc::{Pynenc, TaskError, ThreadRunner};
use pynenc_monitor::{Monitor, MonitorOptions};

/// Charges an order; orders above 100 are refused.
#[pynenc::task]
async fn charge(order: u32, card_token: String) -> Result<u32, TaskError> {
    let _ = card_token;
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    tokio::time::sleep(Duration::from_secs(30)).await;
    weeks
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = Pynenc::builder().app_id("monitor-example").build()?;
    let runner = ThreadRunner::with_slots(&app, 2).spawn();
    let monitor = Monitor::start(&app, MonitorOptions::default()).await?;
    println!("pynenc monitor on http://{}/", monitor.addr());
    if let Some(token) = monitor.generated_token() {
        println!("operator token: {token}");
    }
    slow_report::call_on(&app, 52).await?;
    // a new order every second until Ctrl-C
    let mut order = 0u32;
    loop {
        order = (order + 37) % 160;
        charge::call_on(&app, order, "tok_live_do_not_show".to_string()).await?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = pynenc_monitor::shutdown_signal() => break,
        }
    }
    monitor.shutdown().await?;
    runner.stop().await?;
    Ok(())
}
