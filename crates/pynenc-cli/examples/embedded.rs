//! The embedded command line: a program with its tasks hands `pynenc …`
//! arguments to `pynenc_cli`, and does its own work otherwise.
//!
//! ```text
//! cargo run -p pynenc-cli --example embedded -- pynenc call embedded::add --arg x=1 --arg y=2 --wait
//! cargo run -p pynenc-cli --example embedded -- pynenc --sqlite-path shop.db runner start --slots 4
//! cargo run -p pynenc-cli --example embedded -- pynenc --sqlite-path shop.db list --status failed
//! ```

use std::process::ExitCode;

use pynenc::TaskError;

/// Adds two numbers.
#[pynenc::task]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// Refuses an order that was never paid.
#[pynenc::task]
async fn refund(order_id: u32) -> Result<(), TaskError> {
    Err(TaskError::new(
        "RefundRefused",
        format!("order {order_id} was never paid"),
    ))
}

/// Sums `add(i, i)` for `i` in `0..n`, fanned out as sub-tasks.
#[pynenc::task]
async fn fan_out(n: i64) -> Result<i64, pynenc::PynencError> {
    let group = add::parallelize((0..n).map(|i| (i, i))).await?;
    Ok(group.results().await?.into_iter().sum())
}

fn main() -> ExitCode {
    pynenc_cli::init_logging();
    // a trigger: `embedded pynenc triggers` lists it (new year only, so the
    // runner of the examples never fires it)
    let new_year =
        pynenc::Trigger::cron("0 0 0 1 1 *", add::task(), (2026i64, 1i64)).named("new year");
    let builder = pynenc::Pynenc::builder().app_id("shop").trigger(new_year);
    if let Some(code) = pynenc_cli::run_if_requested(builder) {
        return code;
    }
    println!("this program's own work; try `embedded pynenc --help`");
    ExitCode::SUCCESS
}
