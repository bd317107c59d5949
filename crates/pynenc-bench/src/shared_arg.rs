//! `shared-arg`: routing 1,000 calls that share a 1 MB argument, with the
//! data store off (every record carries the value) and on (the value is
//! stored once): the time to route and drain them, and how much the
//! backend grew.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pynenc::{Pynenc, Shared, ThreadRunner};

use crate::{Args, Backend, Row};

/// Returns the length of its argument plus `i`.
#[pynenc::task]
async fn sized(data: Shared<String>, i: u64) -> u64 {
    data.len() as u64 + i
}

/// The calls of one measure.
const CALLS: u64 = 1_000;
/// The size of the shared argument.
const SIZE: usize = 1_000_000;

/// `SIZE` bytes that no backend compresses (PostgreSQL compresses large
/// text): letters and digits from a fixed pseudo-random sequence.
fn incompressible(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(CHARS[(x % CHARS.len() as u64) as usize])
        })
        .collect()
}

/// How many bytes the backend holds, as it measures them: the SQLite file
/// with its write-ahead log, Redis' `used_memory`, PostgreSQL's database
/// size; `None` for memory.
async fn backend_bytes(args: &Args, sqlite_path: &str) -> Result<Option<u64>> {
    Ok(match args.backend {
        Backend::Memory => None,
        Backend::Sqlite => {
            let size = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            Some(size(sqlite_path.to_string()) + size(format!("{sqlite_path}-wal")))
        }
        Backend::Redis => Some(crate::redis_stats::Probe::new(&args.redis_url)?.used_memory()?),
        Backend::Postgres => {
            let url = args.postgres_url.as_deref().context("--postgres-url")?;
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            let row = client
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await?;
            Some(u64::try_from(row.get::<_, i64>(0))?)
        }
    })
}

/// One measure on `app` (data store on or off, as it was built).
async fn measure(app: &Pynenc, args: &Args, sqlite_path: &str, label: &'static str) -> Result<Row> {
    app.purge().await?;
    let data = Shared::new(incompressible(SIZE));
    let before = backend_bytes(args, sqlite_path).await?;
    let t0 = Instant::now();
    // the value is serialized once (`Shared`) in both measures: what
    // differs is whether each record carries it
    let items = (0..CALLS).map(|i| (data.clone(), i));
    let group = sized::parallelize_on(app, items).await?;
    let routed = t0.elapsed();
    let after = backend_bytes(args, sqlite_path).await?;
    let usage = app.data_store().data_usage().await?;
    let runner = ThreadRunner::new(app).spawn();
    let t1 = Instant::now();
    let results = group.results().await?;
    let drained = t1.elapsed();
    runner.stop().await?;
    let expected = CALLS * SIZE as u64 + CALLS * (CALLS - 1) / 2;
    if results.iter().sum::<u64>() != expected {
        bail!("shared-arg returned wrong results");
    }
    let grew = match (before, after) {
        (Some(b), Some(a)) => format!("backend grew {:.1} MB", (a as f64 - b as f64) / 1e6),
        _ => "backend growth not measured (memory)".to_string(),
    };
    app.purge().await?;
    Ok(Row {
        workload: label,
        n: CALLS,
        seconds: routed.as_secs_f64(),
        detail: format!(
            "route {:.3} s, drain {:.3} s; {grew}; data store: {} value(s), {:.1} MB",
            routed.as_secs_f64(),
            drained.as_secs_f64(),
            usage.values,
            usage.bytes as f64 / 1e6
        ),
    })
}

/// The workload: the data store on, then off, on apps of their own (on
/// SQLite each in a file of its own, per repetition: a file keeps the
/// pages it freed).
/// The stored measure goes first, on a backend that holds nothing yet,
/// so its growth is not hidden by space an earlier measure freed.
pub async fn run(args: &Args, tmp: &tempfile::TempDir) -> Result<Vec<Row>> {
    static REPETITION: AtomicU32 = AtomicU32::new(0);
    let rep = REPETITION.fetch_add(1, Ordering::Relaxed);
    let file = |mode: &str| {
        let base = args
            .sqlite_path
            .clone()
            .unwrap_or_else(|| tmp.path().join("bench.db").to_string_lossy().to_string());
        format!("{base}.{mode}.{rep}")
    };
    let mut rows = Vec::new();
    for (label, enabled) in [("shared-arg stored", true), ("shared-arg inline", false)] {
        let mode = if enabled { "stored" } else { "inline" };
        let path = file(mode);
        let app_id = format!("pynenc-bench-{mode}");
        let app = crate::build_app_with(args, &app_id, tmp, |b| {
            let b = b.config_value("data_store.data_store_enabled", enabled);
            match args.backend {
                Backend::Sqlite => b.config_value("sqlite.sqlite_path", path.clone()),
                _ => b,
            }
        })?;
        rows.push(measure(&app, args, &path, label).await?);
    }
    Ok(rows)
}
