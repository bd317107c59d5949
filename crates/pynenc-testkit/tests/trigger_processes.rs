//! Cron triggers with three runner processes on one backend (SQLite, and a
//! `redis-server` of the test's own, skipped with a message when it is not
//! installed, a failure with `PYNENC_REQUIRE_REDIS=1`): over 60 one-second
//! ticks, exactly one invocation per tick — none lost, none twice — also
//! when the runner evaluating the triggers is SIGKILLed during the run.

use std::path::Path;
use std::time::{Duration, Instant};

use pynenc::model::{InvocationQuery, Order};
use pynenc::{InvocationId, TaskId, Timestamp};
use pynenc_operate::Operate;
use pynenc_testkit::process::{signal, SharedBackend};
use pynenc_testkit::runner_process::RunnerProcess;
use pynenc_testkit::tasks::append_line;
use pynenc_testkit::{assert_one_per_second, check_histories, ok, start_runner};

/// How long the runners fire: 60 one-second ticks.
const RUN: Duration = Duration::from_secs(61);

async fn sixty_ticks_with_a_killed_evaluator(backend: SharedBackend, logs: &Path) {
    let app_id = "triggers";
    let runs_file = logs.join("runs");
    let runs_path = runs_file.display().to_string();
    let env = [
        ("PYNENC_TEST_TRIGGER", "* * * * * *"),
        ("PYNENC_TEST_TRIGGER_FILE", runs_path.as_str()),
        ("PYNENC__TRIGGERS__EVALUATE_INTERVAL_SECONDS", "0.2"),
        ("PYNENC__RUNNER__RUNNER_DEAD_AFTER_SECONDS", "2"),
    ];
    // the caller's app first: the schema exists before the runners open it
    let app = ok(backend.app(app_id), "app");
    let exe = env!("CARGO_BIN_EXE_worker");
    let mut runners: Vec<RunnerProcess> = (0..3)
        .map(|i| RunnerProcess::start(exe, &backend, logs, app_id, &format!("r{i}"), &env))
        .collect();
    let started = Instant::now();
    let start = Timestamp::now();

    // a third of the way in, kill the runner that holds the triggers' lease
    tokio::time::sleep(RUN / 3).await;
    let holder = ok(app.queries().lease("triggers").await, "lease").expect("a lease holder");
    let infos = ok(app.queries().runners().await, "runners");
    let pid = infos
        .iter()
        .find(|r| r.runner_id == holder.holder)
        .map(|r| r.pid)
        .expect("the lease holder is a listed runner");
    let victim = runners
        .iter()
        .position(|r| r.pid == pid)
        .expect("the lease holder is one of the runner processes");
    signal(pid, "-KILL");
    let killed_at = Timestamp::now();
    drop(runners.remove(victim));

    tokio::time::sleep(RUN.saturating_sub(started.elapsed())).await;
    for r in runners {
        r.stop();
    }
    let end = Timestamp::now();

    let query = InvocationQuery {
        task_ids: vec![TaskId::from(append_line::task().task_id())],
        order: Order::OldestFirst,
        ..InvocationQuery::new()
    };
    let listed = ok(app.inspect().list_all(&query, 10_000).await, "list");
    let ids: Vec<InvocationId> = listed.iter().map(|s| s.invocation_id).collect();
    // one invocation per tick, none lost (the kill was at `killed_at`);
    // below, each ran once
    println!("the evaluator was killed at {killed_at}");
    let (_, _, ticks) = assert_one_per_second(&ids, start, end, 4_000_000);
    assert!(ticks >= 60, "{ticks} ticks");
    println!("{ticks} ticks, one invocation each");
    // every firing runs, once: one line per tick in the runs file
    let runner = start_runner(&app, 8);
    for id in &ids {
        let v = ok(
            ok(app.invocation(id).await, "handle").result().await,
            "result",
        );
        assert_eq!(v, serde_json::Value::Null);
    }
    ok(runner.stop().await, "stop");
    let runs = std::fs::read_to_string(&runs_file).unwrap_or_default();
    assert_eq!(runs.lines().count(), ticks, "each tick ran once");
    check_histories(&app).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sixty_ticks_with_a_killed_evaluator() {
    let (dir, db) = pynenc_testkit::process::fresh_db("triggers.db");
    sixty_ticks_with_a_killed_evaluator(SharedBackend::Sqlite(db), dir.path()).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sixty_ticks_with_a_killed_evaluator() {
    use pynenc_testkit::redis_server::{skip_reason, RedisServer};
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    sixty_ticks_with_a_killed_evaluator(SharedBackend::Redis(server.url()), dir.path()).await;
}
