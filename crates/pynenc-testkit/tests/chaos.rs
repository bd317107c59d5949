//! kill -9 chaos on SQLite: 2,000 tasks of 1–20 ms on 3 worker processes, a
//! random worker SIGKILLed about every 300 ms and restarted. Nothing may be
//! lost, every history must replay, duplicates only from killed workers.

#![cfg(feature = "sqlite")]

use std::time::Duration;

use pynenc_testkit::chaos::{run_chaos, ChaosBackend, ChaosConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_kill_9_of_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ChaosConfig::test_size(
        ChaosBackend::Sqlite(dir.path().join("chaos.db")),
        env!("CARGO_BIN_EXE_worker").into(),
        vec!["run".into()],
    );
    let report = run_chaos(&cfg).await.expect("chaos run");
    println!("{report}");
    report.assert_sound(cfg.kills, Duration::from_secs(5));
}
