//! The chaos program: drains a workload on worker processes while killing
//! them with SIGKILL at random, then prints tasks, kills, lost invocations,
//! duplicate runs and the longest time from a kill to the killed work
//! running again.
//!
//! ```text
//! cargo build --release -p pynenc-testkit --bins
//! target/release/chaos --backend sqlite --tasks 20000 --workers 3 --kills 40
//! target/release/chaos --backend redis --redis-url redis://127.0.0.1:6379/0 --tasks 20000
//! target/release/chaos --backend postgres --postgres-url postgres://user@127.0.0.1:5433/scratch --tasks 20000
//! ```
//!
//! It starts itself again as the workers (`chaos worker`).
//!
//! With `--backend postgres`, `--postgres-url` is required: the run writes
//! the app's tables in that database and purges the app at the end, so
//! there is no default server to write to by accident. The database must
//! exist (the tables are created when missing); use a scratch database.

use std::time::Duration;

use clap::Parser;
use pynenc_testkit::chaos::{run_chaos, ChaosBackend, ChaosConfig};

#[derive(Parser, Debug)]
#[command(about = "kill -9 chaos against pynenc worker processes")]
struct Args {
    /// `worker` runs as a worker process (used by the program itself).
    mode: Option<String>,
    /// `sqlite`, `redis` or `postgres`.
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// SQLite file (default: a temporary file).
    #[arg(long)]
    sqlite_path: Option<String>,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis_url: String,
    /// PostgreSQL URL of an existing scratch database
    /// (`postgres://user:password@host:port/database`); required with
    /// `--backend postgres`, which writes and purges the app there.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Tasks in the workload.
    #[arg(long, default_value_t = 20_000)]
    tasks: u64,
    /// Longest task, in milliseconds (durations are 1..=this).
    #[arg(long, default_value_t = 20)]
    max_task_ms: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 16)]
    slots: usize,
    /// How many SIGKILLs.
    #[arg(long, default_value_t = 30)]
    kills: usize,
    /// Milliseconds between kills.
    #[arg(long, default_value_t = 300)]
    kill_every_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.mode.as_deref() == Some("worker") {
        return rt.block_on(async {
            let app = pynenc::Pynenc::builder().build()?;
            pynenc::ThreadRunner::new(&app).run_until_signal().await?;
            Ok(())
        });
    }
    let tmp = tempfile::tempdir()?;
    let backend = match args.backend.as_str() {
        "sqlite" => ChaosBackend::Sqlite(
            args.sqlite_path
                .clone()
                .map(Into::into)
                .unwrap_or_else(|| tmp.path().join("chaos.db")),
        ),
        "redis" => ChaosBackend::Redis(args.redis_url.clone()),
        "postgres" => match args.postgres_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => ChaosBackend::Postgres(url.to_string()),
            _ => anyhow::bail!(
                "--backend postgres needs --postgres-url postgres://user:password@host:port/database \
                 (an existing scratch database: the run writes its tables there and purges the app at the end)"
            ),
        },
        other => anyhow::bail!("unknown backend {other} (sqlite, redis or postgres)"),
    };
    let cfg = ChaosConfig {
        backend,
        app_id: format!("chaos-{}", std::process::id()),
        worker_exe: std::env::current_exe()?,
        worker_args: vec!["worker".into()],
        tasks: args.tasks,
        max_task_ms: args.max_task_ms,
        workers: args.workers,
        slots: args.slots,
        kills: args.kills,
        kill_every: Duration::from_millis(args.kill_every_ms),
        finish_timeout: Duration::from_secs(300),
    };
    let report = rt.block_on(async {
        let report = run_chaos(&cfg).await?;
        // leave the backend clean
        pynenc_testkit::chaos::chaos_app(&cfg)?.purge().await?;
        Ok::<_, pynenc::PynencError>(report)
    })?;
    println!(
        "backend {}  workers {} × {} slots",
        args.backend, args.workers, args.slots
    );
    println!("{report}");
    if report.lost > 0
        || report.wrong_results > 0
        || report.illegal_histories > 0
        || report.unexplained_duplicates > 0
    {
        anyhow::bail!("chaos run found problems");
    }
    Ok(())
}
