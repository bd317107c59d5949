//! Cron triggers with three runner processes on one backend (SQLite, and a
//! `redis-server` of the test's own, skipped with a message when it is not
//! installed, a failure with `PYNENC_REQUIRE_REDIS=1`): over 60 one-second
//! ticks, exactly one invocation per tick — none lost, none twice — also
//! when the runner evaluating the triggers is SIGKILLed during the run; and
//! reactions to statuses, results, errors and events made once per source
//! by three runner processes, one of them SIGKILLed while it runs sources.

use std::path::Path;
use std::time::{Duration, Instant};

use pynenc::model::{InvocationQuery, Order};
use pynenc::{InvocationId, TaskId, Timestamp};
use pynenc_operate::Operate;
use pynenc_testkit::process::{signal, SharedBackend};
use pynenc_testkit::runner_process::RunnerProcess;
use pynenc_testkit::tasks::{append_line, fail_with, sleeper};
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
        // the ticks missed while the lease changes hands fire late, up to
        // this window: wide enough for a machine paused as a whole for
        // 20 s and more (a virtual machine's snapshot did, and every
        // runner, the killer included, missed the same ticks)
        ("PYNENC__TRIGGERS__MISSED_TICK_WINDOW_SECONDS", "60"),
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

/// Sources of each kind, routed to three runner processes with reaction
/// triggers; one runner is killed while it runs sources, which run again
/// elsewhere. Every reaction is one invocation per source, none lost.
async fn reactions_with_a_killed_runner(backend: SharedBackend, logs: &Path) {
    let app_id = "reactions";
    let lines_file = logs.join("reactions");
    let lines_path = lines_file.display().to_string();
    let env = [
        ("PYNENC_TEST_REACTIONS_FILE", lines_path.as_str()),
        ("PYNENC__RUNNER__RUNNER_DEAD_AFTER_SECONDS", "2"),
        ("PYNENC__RUNNER__RECOVERY_INTERVAL_SECONDS", "0.5"),
    ];
    let app = ok(backend.app(app_id), "app");
    let exe = env!("CARGO_BIN_EXE_worker");
    let mut runners: Vec<RunnerProcess> = (0..3)
        .map(|i| RunnerProcess::start(exe, &backend, logs, app_id, &format!("r{i}"), &env))
        .collect();
    let sleepers = ok(
        sleeper::parallelize_on(&app, (0..30).map(|i| (format!("s{i}"), 1500u64))).await,
        "sleepers",
    );
    let failures = ok(
        fail_with::parallelize_on(
            &app,
            (0..10).map(|i| ("Broken".to_string(), format!("f{i}"))),
        )
        .await,
        "failures",
    );
    let mut events = Vec::new();
    for i in 0..10 {
        events.push(ok(
            app.emit_event("tick", serde_json::json!({ "i": i })).await,
            "event",
        ));
    }
    // kill a runner while it runs sleepers: one that owns at least two
    // sleepers (of 1.5 s) that became RUNNING under it less than 1 s ago,
    // so that they are still running at the kill (the listing of runners
    // is refreshed at their heartbeats; the histories are read now)
    let looking = Instant::now();
    let (victim, victim_id, held) = loop {
        assert!(
            looking.elapsed() < Duration::from_secs(30),
            "no runner was seen running two fresh sleepers"
        );
        let infos = ok(app.queries().runners().await, "runners");
        let mut found = None;
        for r in infos.iter().filter(|r| r.running.len() >= 2) {
            let mut held = Vec::new();
            for id in &r.running {
                let history = ok(
                    ok(app.invocation(id).await, "sleeper").history().await,
                    "history",
                );
                let fresh = history.last().is_some_and(|h| {
                    h.status == pynenc::InvocationStatus::Running
                        && h.owner.as_ref() == Some(&r.runner_id)
                        && h.timestamp > Timestamp::now() - Duration::from_millis(1000)
                });
                if fresh {
                    held.push(*id);
                }
            }
            if held.len() >= 2 {
                found = Some((r.pid, r.runner_id.clone(), held));
                break;
            }
        }
        if let Some(f) = found {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    signal(victim, "-KILL");
    runners.retain(|r| r.pid != victim);
    let sleeper_ids: Vec<InvocationId> = sleepers
        .invocations()
        .iter()
        .map(|i| *i.invocation_id())
        .collect();
    let failure_ids: Vec<InvocationId> = failures
        .invocations()
        .iter()
        .map(|i| *i.invocation_id())
        .collect();
    for id in &sleeper_ids {
        ok(
            ok(app.invocation(id).await, "sleeper").wait().await,
            "sleeper ends",
        );
    }
    for id in failure_ids.iter().chain(&events) {
        ok(
            ok(app.invocation(id).await, "source").wait().await,
            "source ends",
        );
    }
    // the expected reactions, one invocation each
    let mut expected: Vec<String> = Vec::new();
    for id in &sleeper_ids {
        expected.push(format!("running:{id}"));
        expected.push(format!("result:{id}"));
    }
    expected.extend(failure_ids.iter().map(|id| format!("error:{id}")));
    expected.extend(events.iter().map(|id| format!("event:{id}")));
    expected.sort();
    let query = InvocationQuery {
        task_ids: vec![TaskId::from(append_line::task().task_id())],
        ..InvocationQuery::new()
    };
    let reactions = ok(app.inspect().list_all(&query, 10_000).await, "reactions");
    let mut lines: Vec<String> = Vec::new();
    for s in &reactions {
        let record = ok(
            app.state_backend().get_invocation(&s.invocation_id).await,
            "record",
        );
        let line = record.call.arguments.get("line").unwrap_or_default();
        lines.push(ok(serde_json::from_str::<String>(line), "line"));
        ok(
            ok(app.invocation(&s.invocation_id).await, "reaction")
                .wait()
                .await,
            "reaction runs",
        );
    }
    lines.sort();
    assert_eq!(
        lines, expected,
        "one reaction invocation per source and condition"
    );
    let twice = lines_ran(&lines_file, &expected);
    // the killed runner's sleepers ran again elsewhere: their `running`
    // happened twice, and made one reaction (one that ended under the
    // killed runner all the same, between the read and the kill, had no
    // need to)
    let (mut ran_again, mut ended_before_kill) = (0, 0);
    for id in &held {
        let history = ok(
            ok(app.invocation(id).await, "sleeper").history().await,
            "history",
        );
        if history
            .iter()
            .any(|h| h.status == pynenc::InvocationStatus::Success && h.actor == victim_id)
        {
            ended_before_kill += 1;
            continue;
        }
        let runs = history
            .iter()
            .filter(|h| h.status == pynenc::InvocationStatus::Running)
            .count();
        ran_again += usize::from(runs > 1);
    }
    assert_eq!(
        ran_again + ended_before_kill,
        held.len(),
        "the killed runner's sleepers ran again"
    );
    assert!(ran_again >= 1, "the kill cut no sleeper short");
    println!(
        "{} reactions, one invocation each; {ran_again} sources ran twice; {twice} reaction runs were made twice (a run of the killed runner, run again)",
        expected.len()
    );
    for r in runners {
        r.stop();
    }
    check_histories(&app).await;
}

/// Checks that every expected line is in the file (each reaction ran at
/// least once); returns how many lines are there more than once (a run of
/// the killed runner, run again).
fn lines_ran(file: &Path, expected: &[String]) -> usize {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let seen: std::collections::BTreeSet<&str> = text.lines().collect();
    for e in expected {
        assert!(seen.contains(e.as_str()), "the reaction {e} never ran");
    }
    text.lines().count() - seen.len()
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reactions_with_a_killed_runner() {
    let (dir, db) = pynenc_testkit::process::fresh_db("reactions.db");
    reactions_with_a_killed_runner(SharedBackend::Sqlite(db), dir.path()).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reactions_with_a_killed_runner() {
    use pynenc_testkit::redis_server::{skip_reason, RedisServer};
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    reactions_with_a_killed_runner(SharedBackend::Redis(server.url()), dir.path()).await;
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
