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
    let cfg = ChaosConfig::test_size(
        ChaosBackend::Redis(server.url()),
        env!("CARGO_BIN_EXE_worker").into(),
        vec!["run".into()],
    );
    let report = run_chaos(&cfg).await.expect("chaos run");
    println!("{report}");
    report.assert_sound(cfg.kills, Duration::from_secs(5));
}
