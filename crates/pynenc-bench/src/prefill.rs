//! Fills the backend before measuring, to check that the cost per task does
//! not grow with the data: finished invocations of the measured app, and
//! registered invocations of another app sharing the backend.

use std::time::Instant;

use anyhow::Result;
use pynenc::{Pynenc, ThreadRunner};

use crate::noop;

/// Routes `n` no-op tasks on `app` and runs them to the end, in chunks.
pub async fn finished(app: &Pynenc, n: u64) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let t0 = Instant::now();
    let runner = ThreadRunner::new(app).spawn();
    let chunk = 100_000;
    let mut done = 0;
    while done < n {
        let size = chunk.min(n - done);
        let group = noop::parallelize_on(app, done..done + size).await?;
        group.results().await?;
        done += size;
        eprintln!(
            "prefill: {done} finished invocations ({:.0} s)",
            t0.elapsed().as_secs_f64()
        );
    }
    runner.stop().await?;
    Ok(())
}

/// Routes `n` calls on another app without running them (they stay
/// registered, with their records, history and queue entries).
pub async fn foreign(other: &Pynenc, n: u64) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let chunk = 100_000;
    let mut done = 0;
    while done < n {
        let size = chunk.min(n - done);
        noop::parallelize_on(other, done..done + size).await?;
        done += size;
    }
    eprintln!("prefill: {n} registered invocations of another app");
    Ok(())
}
