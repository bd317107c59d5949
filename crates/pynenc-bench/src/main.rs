//! pynenc benchmarks: `burn`, `latency`, `fanout`, `enqueue`, `recursive`,
//! `query` and `shared-arg` on a chosen backend.
//!
//! ```text
//! cargo run --release -p pynenc-bench -- --backend memory --workload all
//! cargo run --release -p pynenc-bench -- --backend postgres \
//!     --postgres-url postgres://pynenc@127.0.0.1:5433/bench
//! cargo run --release -p pynenc-bench --features pynenc/redis -- --backend redis \
//!     --redis-url redis://127.0.0.1:7000/0 --workload burn --redis-commandstats
//! ```

use std::time::{Duration, Instant};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "alloc-count", not(feature = "mimalloc")))]
mod alloc_count {
    //! A global allocator that counts allocations, for `--features alloc-count`.
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The system allocator, counting.
    pub struct Counting;
    /// Allocations (and reallocations) so far.
    pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

    // SAFETY: every call is forwarded to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the caller's contract is passed on to System.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract is passed on to System.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the caller's contract is passed on to System.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;
}

/// Heap allocations so far (0 unless built with `--features alloc-count`).
fn allocations() -> u64 {
    #[cfg(all(feature = "alloc-count", not(feature = "mimalloc")))]
    {
        alloc_count::ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(all(feature = "alloc-count", not(feature = "mimalloc"))))]
    {
        0
    }
}

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use pynenc::{
    MultiThreadRunner, PersistentProcessRunner, Pynenc, PynencError, SpawnedRunner, ThreadRunner,
};

mod prefill;
mod query;
mod redis_stats;
mod shared_arg;
mod workflow;

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

/// Fibonacci through sub-tasks: `fib(n)` calls `fib(n - 1)` and
/// `fib(n - 2)` and waits for both (2·fib(n+1) − 1 invocations).
#[pynenc::task]
async fn fib(n: u64) -> Result<u64, PynencError> {
    if n < 2 {
        return Ok(n);
    }
    let a = fib::call(n - 1).await?;
    let b = fib::call(n - 2).await?;
    Ok(a.result().await? + b.result().await?)
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Backend {
    Memory,
    Sqlite,
    Redis,
    Postgres,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Workload {
    Burn,
    Latency,
    Fanout,
    /// Calls routed one at a time, each awaited (a web handler's pattern):
    /// from one caller, then from 100 concurrent callers; then drained.
    Enqueue,
    /// fib(18) through sub-tasks that it awaits (8,361 invocations) on a
    /// runner with 2 slots: waiting-heavy work.
    Recursive,
    /// The query API on many stored invocations (not part of `all`).
    Query,
    /// 1,000 calls sharing a 1 MB argument, with the data store off and on:
    /// time and backend growth (not part of `all`).
    SharedArg,
    /// One workflow of 100 steps and 1,000 workflows of 10 steps, each run
    /// to its end and then again: the first run and the replay per step
    /// (not part of `all`).
    Workflow,
    All,
}

/// The runner that drains the `burn`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum RunnerChoice {
    /// `ThreadRunner`: this process, `--slots` slots.
    Thread,
    /// `PersistentProcessRunner`: `--processes` worker processes that run one body at a time.
    PersistentProcess,
    /// `MultiThreadRunner`: `--processes` worker processes of `--slots` slots each.
    MultiThread,
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
    /// The runner that drains `burn` and answers `latency` (process runners
    /// need SQLite, Redis or PostgreSQL; with them the latency is that of a
    /// caller in another process than the runner's workers).
    #[arg(long, value_enum, default_value = "thread")]
    runner: RunnerChoice,
    /// Worker processes of `--runner persistent-process` and `multi-thread`.
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Redis URL for `--backend redis`.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis_url: String,
    /// PostgreSQL URL for `--backend postgres` (the database must exist;
    /// the bench writes its tables and purges its app).
    #[arg(long)]
    postgres_url: Option<String>,
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
    /// Finished invocations stored before the `query` workload (one in ten FAILED).
    #[arg(long, default_value_t = 1_000_000)]
    query_stored: u64,
    /// Times each query of the `query` workload is measured.
    #[arg(long, default_value_t = 200)]
    query_samples: usize,
    /// With `--backend redis`: read `INFO commandstats` and `INFO cpu` before
    /// and after `burn` and `recursive` and print the commands, scripts and
    /// server CPU per task (per invocation for `recursive`).
    #[arg(long)]
    redis_commandstats: bool,
}

struct Row {
    workload: &'static str,
    n: u64,
    seconds: f64,
    detail: String,
}

fn build_app(args: &Args, app_id: &str, tmp: &tempfile::TempDir) -> Result<Pynenc> {
    build_app_with(args, app_id, tmp, |b| b)
}

/// [`build_app`], with `customize` applied to the builder.
fn build_app_with(
    args: &Args,
    app_id: &str,
    tmp: &tempfile::TempDir,
    customize: impl FnOnce(pynenc::PynencBuilder) -> pynenc::PynencBuilder,
) -> Result<Pynenc> {
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
            b.config_value("backend", "sqlite")
                .config_value("sqlite.sqlite_path", path)
        }
        Backend::Redis => b
            .config_value("backend", "redis")
            .config_value("redis.redis_url", args.redis_url.clone()),
        Backend::Postgres => {
            let url = args
                .postgres_url
                .clone()
                .context("--backend postgres needs --postgres-url")?;
            b.config_value("backend", "postgres")
                .config_value("postgres.postgres_url", url)
        }
    };
    let app = customize(b).build().context("building the app")?;
    Ok(app)
}

/// Starts the runner `choice`; also says what it is (name and slots).
fn start_runner(app: &Pynenc, choice: RunnerChoice, processes: usize) -> (SpawnedRunner, String) {
    let slots = app.conf().effective_max_parallel_slots();
    match choice {
        RunnerChoice::Thread => {
            let runner = ThreadRunner::new(app);
            let slots = runner.max_parallel_slots();
            (runner.spawn(), format!("ThreadRunner, {slots} slots"))
        }
        RunnerChoice::PersistentProcess => (
            PersistentProcessRunner::with_processes(app, processes).spawn(),
            format!("PersistentProcessRunner, {processes} worker processes"),
        ),
        RunnerChoice::MultiThread => (
            MultiThreadRunner::with_limits(app, processes, processes, slots).spawn(),
            format!("MultiThreadRunner, {processes} worker processes of {slots} slots"),
        ),
    }
}

async fn burn(
    app: &Pynenc,
    n: u64,
    fresh: bool,
    stats: Option<&redis_stats::Probe>,
    choice: RunnerChoice,
    processes: usize,
) -> Result<Row> {
    if fresh {
        app.purge().await?;
    }
    let before = stats.map(|p| p.snapshot()).transpose()?;
    let a0 = allocations();
    let t0 = Instant::now();
    let group = noop::parallelize_on(app, 0..n).await?;
    let routed = t0.elapsed();
    let mid = stats.map(|p| p.snapshot()).transpose()?;
    let a1 = allocations();
    let (runner, runner_name) = start_runner(app, choice, processes);
    let t1 = Instant::now();
    let results = group.results().await?;
    let drained = t1.elapsed();
    let total = t0.elapsed();
    let a2 = allocations();
    if a2 > 0 {
        println!(
            "burn allocations per task: enqueue {:.1}, drain {:.1}",
            (a1 - a0) as f64 / n as f64,
            (a2 - a1) as f64 / n as f64
        );
    }
    if let (Some(probe), Some(before), Some(mid)) = (stats, before, mid) {
        let after = probe.snapshot()?;
        probe.report("the burn's enqueue", &before, &mid, n);
        probe.report("the burn's drain", &mid, &after, n);
        probe.report("the whole burn", &before, &after, n);
    }
    runner.stop().await?;
    if results.len() as u64 != n || results.iter().sum::<u64>() != n * (n - 1) / 2 {
        bail!("burn returned wrong results");
    }
    Ok(Row {
        workload: "burn",
        n,
        seconds: total.as_secs_f64(),
        detail: format!(
            "{:.0} tasks/s overall; enqueue {:.0}/s ({:.3} s), drain {:.0}/s ({:.3} s); {runner_name}",
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

/// Sequential call → result on the runner `choice`: with a process runner
/// the bodies run, and their ends are written, in another process than the
/// caller's (a client in one process, workers in another).
async fn latency(
    app: &Pynenc,
    n: u64,
    fresh: bool,
    choice: RunnerChoice,
    processes: usize,
) -> Result<Row> {
    if fresh {
        app.purge().await?;
    }
    let (runner, runner_name) = start_runner(app, choice, processes);
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
            "p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs (call → result, sequential); {runner_name}",
            us(percentile(&samples, 0.50)),
            us(percentile(&samples, 0.90)),
            us(percentile(&samples, 0.99)),
            us(*samples.last().unwrap_or(&Duration::ZERO)),
        ),
    })
}

/// `fib(18)`, 8,361 invocations, on a runner with 2 slots.
async fn recursive(app: &Pynenc, fresh: bool, stats: Option<&redis_stats::Probe>) -> Result<Row> {
    const N: u64 = 18;
    if fresh {
        app.purge().await?;
    }
    let runner = ThreadRunner::with_slots(app, 2).spawn();
    let before = stats.map(|p| p.snapshot()).transpose()?;
    let t0 = Instant::now();
    let v = fib::call_on(app, N).await?.result().await?;
    let total = t0.elapsed();
    if let (Some(probe), Some(before)) = (stats, before) {
        probe.report("recursive", &before, &probe.snapshot()?, 8_361);
    }
    runner.stop().await?;
    if v != 2584 {
        bail!("fib({N}) returned {v}, expected 2584");
    }
    let invocations = 8_361.0;
    Ok(Row {
        workload: "recursive",
        n: 8_361,
        seconds: total.as_secs_f64(),
        detail: format!(
            "fib({N}) through awaited sub-tasks on 2 slots: {:.3} s ({:.1} µs per invocation)",
            total.as_secs_f64(),
            total.as_secs_f64() * 1e6 / invocations
        ),
    })
}

/// Concurrent callers of `enqueue`.
const CALLERS: u64 = 100;

async fn enqueue(app: &Pynenc, n: u64, fresh: bool) -> Result<Vec<Row>> {
    if fresh {
        app.purge().await?;
    }
    let mut rows = Vec::new();
    for callers in [1, CALLERS] {
        let per_caller = (n / callers).max(1);
        let t0 = Instant::now();
        let mut handles = Vec::new();
        for c in 0..callers {
            let caller = app.clone();
            handles.push(tokio::spawn(async move {
                let mut ids = Vec::with_capacity(per_caller as usize);
                for i in 0..per_caller {
                    ids.push(noop::call_on(&caller, c * per_caller + i).await?);
                }
                Ok::<_, anyhow::Error>(ids)
            }));
        }
        let mut ids = Vec::new();
        for h in handles {
            ids.extend(h.await??);
        }
        let routed = t0.elapsed();
        let runner = ThreadRunner::new(app).spawn();
        for inv in &ids {
            inv.result().await?;
        }
        runner.stop().await?;
        let calls = ids.len() as f64;
        rows.push(Row {
            workload: if callers == 1 { "enqueue" } else { "enqueue×100" },
            n: ids.len() as u64,
            seconds: routed.as_secs_f64(),
            detail: format!(
                "{:.0} calls/s, each awaited, from {callers} caller(s) ({:.1} µs per call per caller)",
                calls / routed.as_secs_f64(),
                routed.as_secs_f64() * 1e6 * callers as f64 / calls
            ),
        });
    }
    Ok(rows)
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

fn main() -> Result<()> {
    // the worker processes of `--runner persistent-process | multi-thread`
    // are this binary started again: they run their role here and exit
    pynenc::run_child_if_requested();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<()> {
    let args = Args::parse();
    if args.runner != RunnerChoice::Thread {
        let runner = args
            .runner
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        if args.backend == Backend::Memory {
            bail!(
                "--runner {runner} runs the tasks in worker processes, which cannot see the \
                 memory backend of this one: use --backend sqlite, redis or postgres"
            );
        }
        if args.processes == 0 {
            bail!("--runner {runner} needs --processes 1 or more");
        }
    }
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
    let probe = match (args.redis_commandstats, args.backend) {
        (false, _) => None,
        (true, Backend::Redis) => Some(redis_stats::Probe::new(&args.redis_url)?),
        (true, _) => bail!("--redis-commandstats needs --backend redis"),
    };
    let mut rows = Vec::new();
    let wants = |w: Workload| args.workload == Workload::All || args.workload == w;
    if args.workload == Workload::SharedArg {
        for _ in 0..args.repeat.max(1) {
            rows.extend(shared_arg::run(&args, &tmp).await?);
        }
    }
    if args.workload == Workload::Workflow {
        for _ in 0..args.repeat.max(1) {
            rows.extend(workflow::run(&app, fresh).await?);
        }
    }
    if args.workload == Workload::Query {
        app.purge().await?;
        query::prefill(&app, args.query_stored).await?;
        for _ in 0..args.repeat.max(1) {
            rows.extend(query::run(&app, args.query_stored, args.query_samples).await?);
        }
    }
    for _ in 0..args.repeat.max(1) {
        if wants(Workload::Burn) {
            rows.push(
                burn(
                    &app,
                    args.burn_tasks,
                    fresh,
                    probe.as_ref(),
                    args.runner,
                    args.processes,
                )
                .await?,
            );
        }
        if wants(Workload::Latency) {
            rows.push(latency(&app, args.latency_calls, fresh, args.runner, args.processes).await?);
        }
        if wants(Workload::Fanout) {
            rows.push(fanout(&app, args.fanout_tasks, fresh).await?);
        }
        if wants(Workload::Recursive) {
            rows.push(recursive(&app, fresh, probe.as_ref()).await?);
        }
        if wants(Workload::Enqueue) {
            rows.extend(enqueue(&app, args.latency_calls, fresh).await?);
        }
    }
    println!(
        "pynenc-bench  backend={:?}  allocator={}  cores={}  slots={}",
        args.backend,
        if cfg!(feature = "mimalloc") {
            "mimalloc"
        } else {
            "system"
        },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        if args.slots > 0 {
            args.slots
        } else {
            app.conf().effective_max_parallel_slots()
        }
    );
    println!("{:<9} {:>9} {:>10}  detail", "workload", "n", "seconds");
    for r in &rows {
        println!(
            "{:<9} {:>9} {:>10.3}  {}",
            r.workload, r.n, r.seconds, r.detail
        );
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
