//! `workflow`: one workflow of 100 steps, and 1,000 workflows of 10 steps,
//! each run to its end, then run again (a retriable error after its last
//! step): the second run replays every step. Reports the first run and the
//! replay per step, and how many times the steps ran (a replayed step must
//! not run).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use pynenc::{Pynenc, TaskError, ThreadRunner};

use crate::Row;

/// How many times a step ran, all workflows together.
static STEP_RUNS: AtomicU64 = AtomicU64::new(0);

/// Per workflow key: its runs so far, and how long each took.
fn runs() -> &'static Mutex<HashMap<String, Vec<Duration>>> {
    static RUNS: std::sync::OnceLock<Mutex<HashMap<String, Vec<Duration>>>> =
        std::sync::OnceLock::new();
    RUNS.get_or_init(Default::default)
}

/// A step: counts its run.
#[pynenc::task]
async fn wf_bench_step(i: u64) -> u64 {
    STEP_RUNS.fetch_add(1, Ordering::Relaxed);
    i
}

/// `n` steps one after the other; the first run ends with a retriable
/// error after the last step, so the second run replays them all. Each
/// run's time is kept under `key`.
#[pynenc::task(workflow = true, max_retries = 1, retry_for = ["Replay"])]
async fn wf_bench(key: String, n: u64) -> Result<u64, TaskError> {
    let started = Instant::now();
    let mut total = 0;
    for i in 0..n {
        total += wf_bench_step::call(i).await?.result().await?;
    }
    let first = {
        let mut runs = runs()
            .lock()
            .map_err(|_| TaskError::new("Bench", "poisoned"))?;
        let mine = runs.entry(key).or_default();
        mine.push(started.elapsed());
        mine.len() == 1
    };
    if first {
        return Err(TaskError::new("Replay", "run again: every step replays"));
    }
    Ok(total)
}

/// Runs `count` workflows of `steps` steps each; one row.
async fn measure(app: &Pynenc, count: u64, steps: u64) -> Result<Row> {
    STEP_RUNS.store(0, Ordering::Relaxed);
    runs()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clear();
    let runner = ThreadRunner::new(app).spawn();
    let t0 = Instant::now();
    let calls = (0..count).map(|w| (format!("w{w}"), steps));
    let group = wf_bench::parallelize_on(app, calls).await?;
    let sums = group.results().await?;
    let total = t0.elapsed();
    runner.stop().await?;
    let expected = steps * (steps - 1) / 2;
    if sums.iter().any(|s| *s != expected) {
        bail!("a workflow returned another sum than {expected}");
    }
    let step_runs = STEP_RUNS.load(Ordering::Relaxed);
    let (mut first, mut replay) = (Duration::ZERO, Duration::ZERO);
    for times in runs()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .values()
    {
        first += times.first().copied().unwrap_or_default();
        replay += times.get(1).copied().unwrap_or_default();
    }
    // a run's own time, per step, averaged over the workflows (runs of
    // concurrent workflows overlap: each waits for its steps among all)
    let per_step = |d: Duration| d.as_secs_f64() * 1e6 / (count * steps) as f64;
    Ok(Row {
        workload: "workflow",
        n: count * steps,
        seconds: total.as_secs_f64(),
        detail: format!(
            "{count} workflow(s) of {steps} steps, run and replayed: {:.0} steps/s overall; per step, first run {:.0} µs, replay {:.0} µs; steps ran {step_runs} times for {} steps",
            (count * steps) as f64 / total.as_secs_f64(),
            per_step(first),
            per_step(replay),
            count * steps
        ),
    })
}

/// The two measures of the workload.
pub(crate) async fn run(app: &Pynenc, fresh: bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (count, steps) in [(1, 100), (1_000, 10)] {
        if fresh {
            app.purge().await?;
        }
        rows.push(measure(app, count, steps).await?);
    }
    Ok(rows)
}
