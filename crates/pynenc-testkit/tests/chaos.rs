//! kill -9 chaos on SQLite: 2,000 tasks of 1–20 ms on 3 worker processes, a
//! random worker SIGKILLed about every 300 ms and restarted. Nothing may be
//! lost, every history must replay, duplicates only from killed workers.

#![cfg(feature = "sqlite")]

use std::time::Duration;

use pynenc_testkit::chaos::{run_chaos, ChaosBackend, ChaosConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_kill_9_of_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ChaosConfig {
        backend: ChaosBackend::Sqlite(dir.path().join("chaos.db")),
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
