//! kill -9 chaos on Redis: 2,000 tasks of 1–20 ms on 3 worker processes, a
//! random worker SIGKILLed every 300 ms (8 times) and restarted, all on a
//! `redis-server` the test starts itself. Nothing may be lost, every history
//! must replay, duplicates only from killed workers, and killed work must run
//! again within 5 s.
//!
//! Skipped with a message when `redis-server` is not installed (a failure
//! with `PYNENC_REQUIRE_REDIS=1`).

#![cfg(feature = "redis")]

use std::time::Duration;

use pynenc_testkit::chaos::{run_chaos, ChaosBackend, ChaosConfig};
use pynenc_testkit::redis_server::{skip_reason, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_survives_kill_9_of_workers() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let server = RedisServer::start();
    let cfg = ChaosConfig {
        backend: ChaosBackend::Redis(server.url()),
        app_id: "chaos".into(),
        worker_exe: env!("CARGO_BIN_EXE_worker").into(),
        worker_args: vec!["run".into()],
        tasks: 2_000,
        max_task_ms: 20,
        workers: 3,
        slots: 8,
        kills: 8,
        kill_every: Duration::from_millis(300),
        finish_timeout: Duration::from_secs(60),
    };
    let report = run_chaos(&cfg).await.expect("chaos run");
    println!("{report}");
    assert_eq!(report.kills, 8);
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.wrong_results, 0, "{report}");
    assert_eq!(report.illegal_histories, 0, "{report}");
    assert_eq!(report.unexplained_duplicates, 0, "{report}");
    assert!(report.max_recovery <= Duration::from_secs(5), "{report}");
}
