//! pynenc benchmarks: `burn`, `latency`, `fanout` and `query` on a chosen backend.
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
use pynenc::{Pynenc, PynencError, ThreadRunner};

mod prefill;
mod query;

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
    /// and after `burn` and print the commands, scripts and server CPU per task.
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
    let app = b.build().context("building the app")?;
    Ok(app)
}

async fn burn(
    app: &Pynenc,
    n: u64,
    fresh: bool,
    stats: Option<&redis_stats::Probe>,
) -> Result<Row> {
    if fresh {
        app.purge().await?;
    }
    let before = stats.map(|p| p.snapshot()).transpose()?;
    let a0 = allocations();
    let t0 = Instant::now();
    let group = noop::parallelize_on(app, 0..n).await?;
    let routed = t0.elapsed();
    let a1 = allocations();
    let runner = ThreadRunner::new(app);
    let slots = runner.max_parallel_slots();
    let runner = runner.spawn();
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
    if let (Some(probe), Some(before)) = (stats, before) {
        probe.report(&before, &probe.snapshot()?, n);
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

/// `fib(18)`, 8,361 invocations, on a runner with 2 slots.
async fn recursive(app: &Pynenc, fresh: bool) -> Result<Row> {
    const N: u64 = 18;
    if fresh {
        app.purge().await?;
    }
    let runner = ThreadRunner::with_slots(app, 2).spawn();
    let t0 = Instant::now();
    let v = fib::call_on(app, N).await?.result().await?;
    let total = t0.elapsed();
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
    let probe = match (args.redis_commandstats, args.backend) {
        (false, _) => None,
        (true, Backend::Redis) => Some(redis_stats::Probe::new(&args.redis_url)?),
        (true, _) => bail!("--redis-commandstats needs --backend redis"),
    };
    let mut rows = Vec::new();
    let wants = |w: Workload| args.workload == Workload::All || args.workload == w;
    if args.workload == Workload::Query {
        app.purge().await?;
        query::prefill(&app, args.query_stored).await?;
        for _ in 0..args.repeat.max(1) {
            rows.extend(query::run(&app, args.query_stored, args.query_samples).await?);
        }
    }
    for _ in 0..args.repeat.max(1) {
        if wants(Workload::Burn) {
            rows.push(burn(&app, args.burn_tasks, fresh, probe.as_ref()).await?);
        }
        if wants(Workload::Latency) {
            rows.push(latency(&app, args.latency_calls, fresh).await?);
        }
        if wants(Workload::Fanout) {
            rows.push(fanout(&app, args.fanout_tasks, fresh).await?);
        }
        if wants(Workload::Recursive) {
            rows.push(recursive(&app, fresh).await?);
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

/// `--redis-commandstats`: the server's own counters around a workload, read
/// over a plain connection of its own (a minimal RESP client, so the bench
/// needs no Redis client library).
mod redis_stats {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use anyhow::{anyhow, bail, Context, Result};

    /// Where the server is and how to log in.
    pub struct Probe {
        address: String,
        auth: Option<(Option<String>, String)>,
    }

    /// Counters at one moment.
    pub struct Snapshot {
        /// command → (calls, µs)
        commands: BTreeMap<String, (u64, u64)>,
        /// used_cpu_sys + used_cpu_user, seconds
        cpu: f64,
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    impl Probe {
        /// From a `redis://[user][:password@]host[:port][/db]` URL.
        pub fn new(url: &str) -> Result<Probe> {
            let Some(rest) = url.strip_prefix("redis://") else {
                bail!("--redis-commandstats reads the server over a plain redis:// URL, not {url}");
            };
            let rest = rest.split('/').next().unwrap_or_default();
            let (userinfo, hostport) = match rest.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, rest),
            };
            let auth = userinfo.map(|u| match u.split_once(':') {
                Some((user, pass)) => (
                    Some(percent_decode(user)).filter(|u| !u.is_empty()),
                    percent_decode(pass),
                ),
                None => (None, percent_decode(u)),
            });
            let address = if hostport.contains(':') {
                hostport.to_string()
            } else {
                format!("{hostport}:6379")
            };
            let probe = Probe { address, auth };
            probe
                .snapshot()
                .context("reading INFO for --redis-commandstats")?;
            Ok(probe)
        }

        fn info(&self, section: &str) -> Result<String> {
            let stream = TcpStream::connect(&self.address)
                .with_context(|| format!("connecting to {}", self.address))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut w = stream.try_clone()?;
            let mut r = BufReader::new(stream);
            if let Some((user, pass)) = &self.auth {
                let mut args = vec!["AUTH"];
                if let Some(u) = user {
                    args.push(u);
                }
                args.push(pass);
                send(&mut w, &args)?;
                let mut line = String::new();
                r.read_line(&mut line)?;
                if line.starts_with('-') {
                    bail!("AUTH: {}", line.trim());
                }
            }
            send(&mut w, &["INFO", section])?;
            let mut line = String::new();
            r.read_line(&mut line)?;
            let n: usize = line
                .trim()
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| anyhow!("INFO {section}: {}", line.trim()))?;
            let mut body = vec![0u8; n + 2];
            r.read_exact(&mut body)?;
            body.truncate(n);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }

        /// The counters now.
        pub fn snapshot(&self) -> Result<Snapshot> {
            let mut commands = BTreeMap::new();
            for line in self.info("commandstats")?.lines() {
                let Some((name, rest)) = line
                    .strip_prefix("cmdstat_")
                    .and_then(|l| l.split_once(':'))
                else {
                    continue;
                };
                let field = |key: &str| {
                    rest.split(',')
                        .find_map(|kv| kv.strip_prefix(key))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                commands.insert(name.to_string(), (field("calls="), field("usec=")));
            }
            let mut cpu = 0.0;
            for line in self.info("cpu")?.lines() {
                if let Some((k, v)) = line.split_once(':') {
                    if k == "used_cpu_sys" || k == "used_cpu_user" {
                        cpu += v.trim().parse::<f64>().unwrap_or(0.0);
                    }
                }
            }
            Ok(Snapshot { commands, cpu })
        }

        /// Prints what the server did between two snapshots, per task.
        pub fn report(&self, before: &Snapshot, after: &Snapshot, tasks: u64) {
            let per = |x: f64| x / tasks.max(1) as f64;
            let mut rows: Vec<(String, u64, u64)> = after
                .commands
                .iter()
                .filter(|(name, _)| !name.starts_with("info") && name.as_str() != "auth")
                .map(|(name, &(calls, usec))| {
                    let (c0, u0) = before.commands.get(name).copied().unwrap_or((0, 0));
                    (
                        name.clone(),
                        calls.saturating_sub(c0),
                        usec.saturating_sub(u0),
                    )
                })
                .filter(|(_, calls, _)| *calls > 0)
                .collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.2));
            let scripts = ["evalsha", "eval", "fcall", "fcall_ro", "evalsha_ro"];
            let script_calls: u64 = rows
                .iter()
                .filter(|(n, _, _)| scripts.contains(&n.as_str()))
                .map(|(_, c, _)| c)
                .sum();
            let script_usec: u64 = rows
                .iter()
                .filter(|(n, _, _)| scripts.contains(&n.as_str()))
                .map(|(_, _, u)| u)
                .sum();
            let inner: u64 = rows
                .iter()
                .filter(|(n, _, _)| !scripts.contains(&n.as_str()))
                .map(|(_, c, _)| c)
                .sum();
            println!("redis commandstats during burn ({tasks} tasks; commands run by scripts are counted too):");
            println!(
                "  {:<16} {:>10} {:>10} {:>12}",
                "command", "calls", "per task", "µs per task"
            );
            for (name, calls, usec) in &rows {
                println!(
                    "  {:<16} {:>10} {:>10.2} {:>12.2}",
                    name,
                    calls,
                    per(*calls as f64),
                    per(*usec as f64)
                );
            }
            println!(
                "  scripts (EVALSHA/FCALL) per task {:.3}, their µs per task {:.1}; other commands per task {:.2}; server CPU per task {:.1} µs",
                per(script_calls as f64),
                per(script_usec as f64),
                per(inner as f64),
                per((after.cpu - before.cpu) * 1e6)
            );
        }
    }

    fn send(w: &mut impl Write, args: &[&str]) -> Result<()> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        w.write_all(&buf)?;
        Ok(())
    }
}
