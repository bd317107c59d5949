//! pynenc benchmarks: `burn`, `latency` and `fanout` on a chosen backend.
//!
//! ```text
//! cargo run --release -p pynenc-bench -- --backend memory --workload all
//! ```

use std::time::{Duration, Instant};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use pynenc::{Pynenc, PynencError, ThreadRunner};

mod prefill;

/// A task that does nothing but return its argument.
#[pynenc::task]
async fn noop(i: u64) -> u64 {
    i
}

/// Parallelizes `n` no-op sub-tasks and sums their results.
#[pynenc::task]
async fn fan(n: u64) -> Result<u64, PynencError> {
    let group = noop::parallelize(0..n).await?;
    Ok(group.results().await?.into_iter().sum())
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Backend {
    Memory,
    Sqlite,
    Redis,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Workload {
    Burn,
    Latency,
    Fanout,
    All,
}

#[derive(Parser, Debug)]
#[command(about = "Throughput, latency and fan-out of pynenc on one backend")]
struct Args {
    /// Backend to measure.
    #[arg(long, value_enum, default_value = "memory")]
    backend: Backend,
    /// Workload to run.
    #[arg(long, value_enum, default_value = "all")]
    workload: Workload,
    /// Tasks for `burn`.
    #[arg(long, default_value_t = 100_000)]
    burn_tasks: u64,
    /// Sequential calls for `latency`.
    #[arg(long, default_value_t = 5_000)]
    latency_calls: u64,
    /// Sub-tasks for `fanout`.
    #[arg(long, default_value_t = 10_000)]
    fanout_tasks: u64,
    /// Runner slots (0: the configured default).
    #[arg(long, default_value_t = 0)]
    slots: usize,
    /// Redis URL for `--backend redis`.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis_url: String,
    /// SQLite file for `--backend sqlite` (default: a temporary file).
    #[arg(long)]
    sqlite_path: Option<String>,
    /// Repetitions of each workload (every repetition is printed).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Before measuring, run this many invocations to the end (they stay in
    /// the backend) and keep the data between workloads.
    #[arg(long, default_value_t = 0)]
    prefill_finished: u64,
    /// Before measuring, register this many invocations of another app on
    /// the same backend.
    #[arg(long, default_value_t = 0)]
    prefill_foreign: u64,
}

struct Row {
    workload: &'static str,
    n: u64,
    seconds: f64,
    detail: String,
}

fn build_app(args: &Args, app_id: &str, tmp: &tempfile::TempDir) -> Result<Pynenc> {
    let mut b = Pynenc::builder()
        .app_id(app_id)
        .config_value("print_arguments", "hidden");
    if args.slots > 0 {
        b = b.max_parallel_slots(args.slots);
    }
    b = match args.backend {
        Backend::Memory => b,
        Backend::Sqlite => {
            let path = args
                .sqlite_path
                .clone()
                .unwrap_or_else(|| tmp.path().join("bench.db").to_string_lossy().to_string());
            b.config_value("backend", "sqlite").config_value("sqlite.sqlite_path", path)
        }
        Backend::Redis => b
            .config_value("backend", "redis")
            .config_value("redis.redis_url", args.redis_url.clone()),
    };
    let app = b.build().context("building the app")?;
    Ok(app)
}

async fn burn(app: &Pynenc, n: u64, fresh: bool) -> Result<Row> {
    if fresh {
        app.purge().await?;
    }
    let t0 = Instant::now();
    let group = noop::parallelize_on(app, 0..n).await?;
    let routed = t0.elapsed();
    let runner = ThreadRunner::new(app);
    let slots = runner.max_parallel_slots();
    let runner = runner.spawn();
    let t1 = Instant::now();
    let results = group.results().await?;
    let drained = t1.elapsed();
    let total = t0.elapsed();
    runner.stop().await?;
    if results.len() as u64 != n || results.iter().sum::<u64>() != n * (n - 1) / 2 {
        bail!("burn returned wrong results");
    }
    Ok(Row {
        workload: "burn",
        n,
        seconds: total.as_secs_f64(),
        detail: format!(
            "{:.0} tasks/s overall; enqueue {:.0}/s ({:.3} s), drain {:.0}/s ({:.3} s); {slots} slots",
            n as f64 / total.as_secs_f64(),
            n as f64 / routed.as_secs_f64(),
            routed.as_secs_f64(),
            n as f64 / drained.as_secs_f64(),
            drained.as_secs_f64()
        ),
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn latency(app: &Pynenc, n: u64, fresh: bool) -> Result<Row> {
    if fresh {
        app.purge().await?;
    }
    let runner = ThreadRunner::new(app).spawn();
    // the caller runs as a task on the runtime, as a request handler would
    let caller = app.clone();
    let (mut samples, total) = tokio::spawn(async move {
        // warm up
        for i in 0..100 {
            noop::call_on(&caller, i).await?.result().await?;
        }
        let mut samples = Vec::with_capacity(n as usize);
        let t0 = Instant::now();
        for i in 0..n {
            let s = Instant::now();
            let v = noop::call_on(&caller, i).await?.result().await?;
            samples.push(s.elapsed());
            if v != i {
                bail!("latency returned a wrong result");
            }
        }
        Ok((samples, t0.elapsed()))
    })
    .await??;
    runner.stop().await?;
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok(Row {
        workload: "latency",
        n,
        seconds: total.as_secs_f64(),
        detail: format!(
            "p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs (call → result, sequential)",
            us(percentile(&samples, 0.50)),
            us(percentile(&samples, 0.90)),
            us(percentile(&samples, 0.99)),
            us(*samples.last().unwrap_or(&Duration::ZERO)),
        ),
    })
}

async fn fanout(app: &Pynenc, n: u64, fresh: bool) -> Result<Row> {
    if fresh {
        app.purge().await?;
    }
    let runner = ThreadRunner::new(app).spawn();
    let t0 = Instant::now();
    let sum = fan::call_on(app, n).await?.result().await?;
    let total = t0.elapsed();
    runner.stop().await?;
    if sum != n * (n - 1) / 2 {
        bail!("fanout returned {sum}, expected {}", n * (n - 1) / 2);
    }
    Ok(Row {
        workload: "fanout",
        n,
        seconds: total.as_secs_f64(),
        detail: format!(
            "parent parallelizes {n} sub-tasks and sums them: {:.3} s ({:.0} sub-tasks/s)",
            total.as_secs_f64(),
            n as f64 / total.as_secs_f64()
        ),
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let app = build_app(&args, "pynenc-bench", &tmp)?;
    app.set_as_default();
    let fresh = args.prefill_finished == 0 && args.prefill_foreign == 0;
    let other = build_app(&args, "pynenc-bench-other", &tmp)?;
    if !fresh {
        app.purge().await?;
        other.purge().await?;
        prefill::finished(&app, args.prefill_finished).await?;
        prefill::foreign(&other, args.prefill_foreign).await?;
    }
    let mut rows = Vec::new();
    let wants = |w: Workload| args.workload == Workload::All || args.workload == w;
    for _ in 0..args.repeat.max(1) {
        if wants(Workload::Burn) {
            rows.push(burn(&app, args.burn_tasks, fresh).await?);
        }
        if wants(Workload::Latency) {
            rows.push(latency(&app, args.latency_calls, fresh).await?);
        }
        if wants(Workload::Fanout) {
            rows.push(fanout(&app, args.fanout_tasks, fresh).await?);
        }
    }
    println!(
        "pynenc-bench  backend={:?}  allocator={}  cores={}  slots={}",
        args.backend,
        if cfg!(feature = "mimalloc") { "mimalloc" } else { "system" },
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        if args.slots > 0 { args.slots } else { app.conf().effective_max_parallel_slots() }
    );
    println!("{:<9} {:>9} {:>10}  detail", "workload", "n", "seconds");
    for r in &rows {
        println!("{:<9} {:>9} {:>10.3}  {}", r.workload, r.n, r.seconds, r.detail);
    }
    if !fresh {
        println!(
            "(prefilled: {} finished invocations of this app, {} registered invocations of another app)",
            args.prefill_finished, args.prefill_foreign
        );
    }
    app.purge().await?;
    other.purge().await?;
    Ok(())
}
