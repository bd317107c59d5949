//! kill -9 chaos on PostgreSQL: 2,000 tasks of 1–20 ms on 3 worker
//! processes, a random worker SIGKILLed every 300 ms (8 times) and
//! restarted, all on a fresh database of a PostgreSQL server the test starts
//! itself (never the machine's own). Nothing may be lost, every history must
//! replay, duplicates only from killed workers, and killed work must run
//! again within 5 s.
//!
//! Skipped with a message when the PostgreSQL server binaries are not
//! installed (a failure with `PYNENC_REQUIRE_POSTGRES=1`).

#![cfg(feature = "postgres")]

use std::time::Duration;

use pynenc_testkit::chaos::{run_chaos, ChaosBackend, ChaosConfig};
use pynenc_testkit::PostgresFactory;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_kill_9_of_workers() {
    let factory = pynenc_testkit::factory_or_skip!(PostgresFactory::new());
    let cfg = ChaosConfig::test_size(
        ChaosBackend::Postgres(factory.url()),
        env!("CARGO_BIN_EXE_worker").into(),
        vec!["run".into()],
    );
    let report = run_chaos(&cfg).await.expect("chaos run");
    println!("postgres chaos: {report}");
    report.assert_sound(cfg.kills, Duration::from_secs(5));
}
