//! A runner process for the cancellation tests of the process runners
//! (`tests/cancel_runners.rs`). It registers one task of its own,
//! `stubborn`, that only `SIGKILL` stops; its children (process runners
//! start this binary again) have it too.
//!
//! Modes (first argument):
//! - `run`: runs the runner `runner.kind` names until a signal;
//! - `call-stubborn <ms> <marker>`: routes `stubborn(ms, marker)`, prints
//!   its invocation id and exits.
//!
//! The app comes from the environment (`PYNENC__…`), as in `worker`.

use std::time::Duration;

use pynenc::Pynenc;

/// Sleeps `ms` milliseconds in a sync body, ignoring cancels and `SIGTERM`
/// (caught, and never acted on): only `SIGKILL` stops it early. Once
/// `SIGTERM` is caught, it creates the file `marker`.
#[pynenc::task]
pub fn stubborn(ms: u64, marker: String) -> Result<u64, pynenc::TaskError> {
    let term = tokio::runtime::Handle::try_current().ok().and_then(|rt| {
        let _entered = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
    });
    if term.is_none() {
        return Err(pynenc::TaskError::new("Setup", "cannot catch SIGTERM here"));
    }
    std::fs::write(&marker, std::process::id().to_string())
        .map_err(|e| pynenc::TaskError::new("Setup", format!("cannot write {marker}: {e}")))?;
    std::thread::sleep(Duration::from_millis(ms));
    Ok(ms)
}

fn main() -> anyhow::Result<()> {
    pynenc_testkit::init_program_logging();
    // process runners start this binary again as their children
    pynenc::run_child_if_requested();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "run".into());
    let app = Pynenc::builder().build()?;
    match mode.as_str() {
        "run" => {
            // links the testkit's tasks into this binary (its children run them)
            std::hint::black_box(pynenc_testkit::tasks::sleeper::task().task_id());
            app.runner().run_until_signal().await?;
            println!("DONE");
        }
        "call-stubborn" => {
            let ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60_000);
            let marker = args.next().unwrap_or_else(|| "/dev/null".into());
            let inv = stubborn::call_on(&app, ms, marker).await?;
            println!("{}", inv.invocation_id());
        }
        other => anyhow::bail!("unknown mode {other}"),
    }
    Ok(())
}
