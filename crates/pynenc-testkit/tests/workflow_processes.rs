//! A workflow of ten steps whose runner process is SIGKILLed in the middle
//! (SQLite; a `redis-server` and a PostgreSQL server of the test's own,
//! skipped with a message when not installed, a failure with
//! `PYNENC_REQUIRE_REDIS=1` / `PYNENC_REQUIRE_POSTGRES=1`): a
//! second runner recovers the workflow, the steps that had finished do not
//! run again, the step that was running runs again, and the result is
//! right.

use std::path::Path;
use std::time::{Duration, Instant};

use pynenc::InvocationStatus;
use pynenc_testkit::process::{signal, SharedBackend};
use pynenc_testkit::runner_process::RunnerProcess;
use pynenc_testkit::tasks::wf_file;
use pynenc_testkit::{check_histories, ok};

/// How many times each step started, from the lines the steps wrote.
fn starts(path: &Path, steps: u32) -> Vec<usize> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    (0..steps)
        .map(|i| text.lines().filter(|l| *l == i.to_string()).count())
        .collect()
}

async fn workflow_survives_a_killed_runner(backend: SharedBackend, logs: &Path) {
    let app_id = "workflows";
    let env = [
        ("PYNENC__RUNNER__RUNNER_DEAD_AFTER_SECONDS", "1"),
        ("PYNENC__RUNNER__RECOVERY_INTERVAL_SECONDS", "0.2"),
    ];
    let steps_file = logs.join("steps");
    let steps: u32 = 10;
    // the caller's app first: the schema exists before the runners open it
    let app = ok(backend.app(app_id), "app");
    let exe = env!("CARGO_BIN_EXE_worker");
    let first = RunnerProcess::start(exe, &backend, logs, app_id, "r0", &env);
    let wf = ok(
        wf_file::call_on(&app, steps_file.display().to_string(), steps, 300).await,
        "workflow",
    );
    // kill the runner once the fifth step has started
    let deadline = Instant::now() + Duration::from_secs(60);
    while starts(&steps_file, steps)
        .iter()
        .filter(|n| **n > 0)
        .count()
        < 5
    {
        assert!(
            Instant::now() < deadline,
            "five steps did not start within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(first.pid, "-KILL");
    let at_kill = starts(&steps_file, steps);
    drop(first);
    let second = RunnerProcess::start(exe, &backend, logs, app_id, "r1", &env);
    let result = tokio::time::timeout(Duration::from_secs(120), wf.result())
        .await
        .expect("the workflow ended within 120 s of the kill");
    let expected: u64 = (0..u64::from(steps)).map(|i| i * 10).sum();
    assert_eq!(ok(result, "result"), expected);
    let after = starts(&steps_file, steps);
    println!("step starts at the kill {at_kill:?}, at the end {after:?}");
    for (i, (before, now)) in at_kill.iter().zip(&after).enumerate() {
        assert!(*now >= 1, "step {i} never ran");
        if *before > 0 {
            // started before the kill: finished then (never again), or
            // running at the kill (once more)
            assert!(*now <= before + 1, "step {i} ran {now} times");
        } else {
            assert_eq!(*now, 1, "step {i}, after the kill, ran {now} times");
        }
    }
    let again = after
        .iter()
        .zip(&at_kill)
        .filter(|(a, b)| a > b && **b > 0)
        .count();
    assert!(
        again <= 1,
        "{again} steps finished before the kill ran again"
    );
    // the workflow itself ran again (its first run was lost with the runner)
    let runs = ok(wf.history().await, "history")
        .iter()
        .filter(|h| h.status == InvocationStatus::Running)
        .count();
    assert!(runs >= 2, "the workflow ran {runs} times");
    second.stop();
    check_histories(&app).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_workflow_survives_a_killed_runner() {
    let (dir, db) = pynenc_testkit::process::fresh_db("workflows.db");
    workflow_survives_a_killed_runner(SharedBackend::Sqlite(db), dir.path()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_workflow_survives_a_killed_runner() {
    let factory = pynenc_testkit::PostgresFactory::new();
    if let Some(reason) = pynenc_testkit::BackendFactory::skip_reason(&factory) {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    workflow_survives_a_killed_runner(SharedBackend::Postgres(factory.url()), dir.path()).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_workflow_survives_a_killed_runner() {
    use pynenc_testkit::redis_server::{skip_reason, RedisServer};
    if let Some(reason) = skip_reason() {
        if std::env::var("PYNENC_REQUIRE_REDIS").as_deref() == Ok("1") {
            panic!("PYNENC_REQUIRE_REDIS=1 but {reason}");
        }
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    workflow_survives_a_killed_runner(SharedBackend::Redis(server.url()), dir.path()).await;
}
