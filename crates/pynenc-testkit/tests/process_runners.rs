//! Process runners on a shared SQLite file (and, for registration scopes,
//! on a `redis-server` too), as real OS processes: the testkit's `worker`
//! binary runs the runner (its children are the worker binary started
//! again), the test process is the caller.

#![cfg(feature = "sqlite")]

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use pynenc::model::{TaskCounter, TaskTotals};
use pynenc::{InvocationStatus, Pynenc, PynencError, TaskId};
use pynenc_operate::Operate;
use pynenc_testkit::process::{fresh_db, try_signal, SharedBackend, WorkerProcess};
use pynenc_testkit::tasks::*;
use pynenc_testkit::{
    assert_add_works, assert_nothing_waits_behind_a_long_run, check_histories, eventually,
    expect_task_failed, statuses, wait_for_status,
};

/// A fresh SQLite file, an app on it, and a runner process of `kind` on it
/// (killed when dropped).
fn runner_on_fresh_file(
    app_id: &str,
    kind: &str,
    extra: &[(&str, &str)],
) -> (tempfile::TempDir, Pynenc, WorkerProcess) {
    let (dir, db) = fresh_db("p.db");
    let (app, worker) = runner_on(&SharedBackend::Sqlite(db), app_id, kind, extra);
    (dir, app, worker)
}

/// An app on `backend` and a runner process of `kind` on it (killed when
/// dropped).
fn runner_on(
    backend: &SharedBackend,
    app_id: &str,
    kind: &str,
    extra: &[(&str, &str)],
) -> (Pynenc, WorkerProcess) {
    let app = backend.app(app_id).expect("app");
    let mut env = vec![("PYNENC__RUNNER__KIND", kind)];
    env.extend_from_slice(extra);
    let worker = WorkerProcess::start(
        env!("CARGO_BIN_EXE_worker"),
        &["run"],
        backend,
        app_id,
        &env,
    )
    .expect("start the worker");
    (app, worker)
}

/// The totals of one task.
async fn task_totals(app: &Pynenc, task: &str) -> TaskTotals {
    let totals = app
        .inspect()
        .task_totals(&[TaskId::from(task)])
        .await
        .expect("task totals");
    totals
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no totals for {task}"))
}

/// SIGTERM, and the runner's exit status once it stopped.
fn stop(mut worker: WorkerProcess) -> ExitStatus {
    worker
        .stop(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the runner did not stop after SIGTERM"))
}

/// The runner stops cleanly, and every history replays.
async fn stop_and_check(worker: WorkerProcess, app: &Pynenc) {
    assert!(stop(worker).success());
    check_histories(app).await;
}

/// Retried when the task's retry_for names ProcessCrashed (the marker file
/// in `dir` counts the crashes).
async fn assert_crash_is_retried(app: &Pynenc, dir: &Path) {
    let marker = dir.join("marker");
    let c = crash_then_succeed::call_on(app, marker.to_string_lossy().to_string(), 1)
        .await
        .expect("call");
    assert_eq!(c.result().await.expect("retried after the crash"), 2);
    assert_eq!(c.num_retries().await.expect("retries"), 1);
}

fn children_of(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runner_runs_each_invocation_in_a_child() {
    let (dir, app, worker) =
        runner_on_fresh_file("proc", "process", &[("PYNENC__RUNNER__MAX_PROCESSES", "3")]);
    let ids = whoami::parallelize_on(&app, (0..6).map(|i| (i,)))
        .await
        .expect("route");
    let pids: std::collections::HashSet<u32> = ids
        .results()
        .await
        .expect("results")
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(pids.len(), 6, "one child process per invocation");
    // the children's runs are counted and timed like any runner's
    let totals = task_totals(&app, whoami::task().task_id()).await;
    assert_eq!(totals.get(TaskCounter::Started), 6);
    assert_eq!(totals.get(TaskCounter::Succeeded), 6);
    assert_eq!(totals.run_times.count(), 6);
    assert!(
        !pids.contains(&worker.pid()),
        "not run in the runner process"
    );

    // a child waiting on a sub-task is PAUSED (SIGSTOP) and RESUMED
    let parent = add_via_child::call_on(&app, 2, 3).await.expect("call");
    assert_eq!(parent.result().await.expect("result"), 5);
    let st = statuses(&parent).await;
    assert!(
        st.contains(&InvocationStatus::Paused) && st.contains(&InvocationStatus::Resumed),
        "{st:?}"
    );

    // a panic, an abort and a segfault fail their invocation only
    assert_panic_abort_segfault_fail(&app).await;
    assert_crash_is_retried(&app, dir.path()).await;
    // the runner still works
    assert_add_works(&app, 1, 1).await;
    stop_and_check(worker, &app).await;
}

/// A panic, an abort and a segfault each fail their invocation (`Panic`,
/// then `ProcessCrashed` naming the signal); returns the abort's and the
/// segfault's invocations.
async fn assert_panic_abort_segfault_fail(
    app: &Pynenc,
) -> (pynenc::Invocation<u32>, pynenc::Invocation<u32>) {
    let p = panics_sync::call_on(app, "panic".into())
        .await
        .expect("call");
    let a = abort_process::call_on(app).await.expect("call");
    let s = segfault::call_on(app).await.expect("call");
    assert_eq!(
        expect_task_failed(&p, "a panic failure").await.kind,
        "Panic"
    );
    assert_crashed(&a, "SIGABRT").await;
    assert_crashed(&s, "SIGSEGV").await;
    (a, s)
}

/// `inv` failed with `ProcessCrashed`, naming the signal `what`.
async fn assert_crashed<R>(inv: &pynenc::Invocation<R>, what: &str)
where
    R: serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let error = expect_task_failed(inv, "a crash failure").await;
    assert_eq!(error.kind, pynenc::runner::process::PROCESS_CRASHED_KIND);
    assert!(error.message.contains(what), "{}", error.message);
}

/// How many times `inv` started running.
async fn runs_in_history<R: serde::de::DeserializeOwned + Send + 'static>(
    inv: &pynenc::Invocation<R>,
) -> usize {
    statuses(inv)
        .await
        .iter()
        .filter(|s| **s == InvocationStatus::Running)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_crashes_a_pool_worker_fails_or_is_retried() {
    let (dir, app, worker) = runner_on_fresh_file(
        "pool-crash",
        "persistent_process",
        &[("PYNENC__RUNNER__MAX_PROCESSES", "2")],
    );
    // a panic is caught in the worker: the invocation fails, the worker lives
    let (a, s) = assert_panic_abort_segfault_fail(&app).await;
    // alone in its worker, the crash is pinned on it at once: one run each
    assert_eq!(runs_in_history(&a).await, 1);
    assert_eq!(runs_in_history(&s).await, 1);
    assert_crash_is_retried(&app, dir.path()).await;
    // the pool still works
    assert_add_works(&app, 2, 2).await;
    stop_and_check(worker, &app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_beside_other_work_is_pinned_by_running_the_suspects_alone() {
    let (_dir, app, worker) = runner_on_fresh_file(
        "multi-crash",
        "multi_thread",
        &[
            ("PYNENC__RUNNER__MIN_PROCESSES", "1"),
            ("PYNENC__RUNNER__MAX_PROCESSES", "1"),
            ("PYNENC__RUNNER__MAX_PARALLEL_SLOTS", "2"),
        ],
    );
    let beside = sleeper::call_on(&app, "beside".into(), 1500)
        .await
        .expect("call");
    let running =
        wait_for_status(&beside, InvocationStatus::Running, Duration::from_secs(20)).await;
    assert!(running, "the first invocation never ran");
    // crashes the worker process while the sleeper runs beside it
    let s = segfault::call_on(&app).await.expect("call");
    assert_crashed(&s, "SIGSEGV").await;
    // the innocent one was re-routed, not failed, and finishes
    assert_eq!(beside.result().await.expect("re-routed and finished"), 1500);
    let st = statuses(&beside).await;
    assert!(st.contains(&InvocationStatus::Rerouted), "{st:?}");
    // the culprit ran twice: beside the sleeper, then alone
    assert_eq!(runs_in_history(&s).await, 2);
    assert_add_works(&app, 3, 4).await;
    stop_and_check(worker, &app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_process_runner_replaces_dead_workers() {
    let (_dir, app, worker) = runner_on_fresh_file(
        "persistent",
        "persistent_process",
        &[("PYNENC__RUNNER__MAX_PROCESSES", "3")],
    );
    let group = sleeper::parallelize_on(&app, (0..60).map(|i| (format!("p{i}"), 20u64)))
        .await
        .expect("route");
    let three = eventually(Duration::from_secs(20), || async {
        children_of(worker.pid()).len() == 3
    })
    .await;
    assert!(three, "three worker processes");
    let victim = children_of(worker.pid())[0];
    try_signal(victim, "-KILL");
    let replaced = eventually(Duration::from_secs(20), || async {
        let c = children_of(worker.pid());
        c.len() == 3 && !c.contains(&victim)
    })
    .await;
    assert!(replaced, "the killed worker was not replaced");
    let values = group.results().await.expect("all finish");
    assert_eq!(values.len(), 60);
    // every run that ended is timed, each at least its 20 ms sleep
    let totals = task_totals(&app, sleeper::task().task_id()).await;
    assert_eq!(totals.get(TaskCounter::Succeeded), 60);
    assert!(totals.run_times.count() >= 60, "{totals:?}");
    assert!(totals.run_times.sum_us >= 60 * 20_000, "{totals:?}");
    let last_children = children_of(worker.pid());
    assert!(stop(worker).success());
    // no worker process outlives the runner
    for pid in last_children {
        let gone = eventually(Duration::from_secs(5), || async move { !is_running(pid) }).await;
        assert!(gone, "worker process {pid} outlived its runner");
    }
    check_histories(&app).await;
}

/// A persistent worker takes invocations ahead while its runs are short,
/// and still runs one body at a time: in each worker process the bodies
/// never overlap, and some invocation was taken (`RUNNING` for the worker)
/// before another body of the same process began and ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_worker_takes_runs_ahead_and_runs_one_body_at_a_time() {
    let (_dir, app, worker) = runner_on_fresh_file(
        "one-body",
        "persistent_process",
        &[
            ("PYNENC__RUNNER__MAX_PROCESSES", "2"),
            ("PYNENC__RUNNER__PREFETCH", "8"),
        ],
    );
    // short runs, and every tenth one long enough to hold the others back
    let group = timed_body::parallelize_on(
        &app,
        (0..300).map(|i| (i, if i % 10 == 9 { 20 } else { 0 })),
    )
    .await
    .expect("route");
    let runs = group.results().await.expect("all finish");
    let mut by_pid: std::collections::HashMap<u32, Vec<(i64, i64, usize)>> = Default::default();
    for (n, (pid, began, ended)) in runs.iter().copied().enumerate() {
        by_pid.entry(pid).or_default().push((began, ended, n));
    }
    for (pid, spans) in &mut by_pid {
        spans.sort_unstable();
        for pair in spans.windows(2) {
            assert!(
                pair[1].0 >= pair[0].1,
                "two bodies at once in worker process {pid}: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
    }
    // when each was taken (its RUNNING step)
    let mut taken_at = Vec::with_capacity(runs.len());
    for inv in group.invocations() {
        let history = inv.history().await.expect("history");
        let running = history
            .iter()
            .find(|h| h.status == InvocationStatus::Running)
            .map(|h| h.timestamp.as_micros())
            .expect("a RUNNING step");
        taken_at.push(running);
    }
    let waited_behind_another = by_pid.values().any(|spans| {
        spans.iter().any(|&(began, _, n)| {
            spans
                .iter()
                .any(|&(b, e, m)| m != n && taken_at[n] < b && e <= began)
        })
    });
    assert!(
        waited_behind_another,
        "no invocation was taken ahead while another body of its worker ran"
    );
    stop_and_check(worker, &app).await;
}

/// A run that turns long gives back what its worker took ahead: with two
/// workers, after a burst of short runs, the calls routed together with a
/// long one all end before it does (none waits behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_gives_back_what_its_worker_took_ahead() {
    let (_dir, app, worker) = runner_on_fresh_file(
        "give-back",
        "persistent_process",
        &[("PYNENC__RUNNER__MAX_PROCESSES", "2")],
    );
    assert_nothing_waits_behind_a_long_run(&app, 3_000).await;
    stop_and_check(worker, &app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_runner_scales_with_the_queue() {
    let (_dir, app, worker) = runner_on_fresh_file(
        "multi",
        "multi_thread",
        &[
            ("PYNENC__RUNNER__MIN_PROCESSES", "1"),
            ("PYNENC__RUNNER__MAX_PROCESSES", "3"),
            ("PYNENC__RUNNER__MAX_PARALLEL_SLOTS", "2"),
        ],
    );
    let one = eventually(Duration::from_secs(20), || async {
        children_of(worker.pid()).len() == 1
    })
    .await;
    assert!(one, "starts with min_processes workers");
    // 200 tasks of 30 ms: seconds of work for one 2-slot worker
    let group = chaos_work::parallelize_on(&app, (0..200).map(|i| (i, 30u64)))
        .await
        .expect("route");
    let scaled = eventually(Duration::from_secs(20), || async {
        children_of(worker.pid()).len() > 1
    })
    .await;
    assert!(scaled, "more workers while the queue is deep");
    let values = group.results().await.expect("results");
    assert_eq!(values, (0..200).map(|i| 2 * i).collect::<Vec<u64>>());
    let owners: std::collections::HashSet<String> = {
        let mut owners = std::collections::HashSet::new();
        for inv in group.invocations() {
            for h in inv.history().await.expect("history") {
                if h.status == InvocationStatus::Running {
                    owners.extend(h.owner.map(|o| o.to_string()));
                }
            }
        }
        owners
    };
    assert!(
        owners.len() > 1,
        "the work was spread over several worker processes: {owners:?}"
    );
    stop_and_check(worker, &app).await;
}

#[tokio::test]
async fn process_runners_refuse_the_memory_backend() {
    let app = Pynenc::builder()
        .env_vars(Vec::new())
        .app_id("mem")
        .build()
        .expect("app");
    for result in [
        pynenc::ProcessRunner::new(&app).run().await,
        pynenc::PersistentProcessRunner::new(&app).run().await,
        pynenc::MultiThreadRunner::new(&app).run().await,
    ] {
        match result {
            Err(PynencError::RunnerNotExecutable { message }) => {
                assert!(
                    message.contains("in-memory backend") && message.contains("sqlite"),
                    "{message}"
                )
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // choosing a process runner without a backend selects SQLite
    let (_dir, db) = fresh_db("d.db");
    let chosen = Pynenc::builder()
        .env_vars(Vec::new())
        .config_value("runner.kind", "process")
        .config_value("sqlite.sqlite_path", db.to_string_lossy().to_string())
        .build()
        .expect("app");
    assert_eq!(chosen.conf().backend, pynenc::BackendKind::Sqlite);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_never_outlive_a_killed_runner() {
    let (_dir, app, worker) = runner_on_fresh_file(
        "orphans",
        "persistent_process",
        &[("PYNENC__RUNNER__MAX_PROCESSES", "2")],
    );
    let two = eventually(Duration::from_secs(20), || async {
        children_of(worker.pid()).len() == 2
    })
    .await;
    assert!(two, "two worker processes");
    let children = children_of(worker.pid());
    // SIGKILL the runner itself: it cannot clean up, its children must notice
    try_signal(worker.pid(), "-KILL");
    let gone = eventually(Duration::from_secs(10), || {
        let children = children.clone();
        async move { children.iter().all(|pid| !is_running(*pid)) }
    })
    .await;
    assert!(
        gone,
        "worker processes outlived their killed runner: {children:?}"
    );
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runner_stop_kills_children_past_the_grace_period_and_reroutes() {
    let (_dir, app, worker) = runner_on_fresh_file(
        "proc-stop",
        "process",
        &[("PYNENC__RUNNER__SHUTDOWN_GRACE_SECONDS", "0.3")],
    );
    let inv = sleeper::call_on(&app, "long".into(), 20_000)
        .await
        .expect("call");
    let running = wait_for_status(&inv, InvocationStatus::Running, Duration::from_secs(20)).await;
    assert!(running, "never ran");
    let children = children_of(worker.pid());
    assert_eq!(children.len(), 1, "one child for the invocation");
    assert!(stop(worker).success(), "the runner stops cleanly");
    let statuses = statuses(&inv).await;
    assert_eq!(
        &statuses[statuses.len() - 3..],
        &[
            InvocationStatus::Running,
            InvocationStatus::Killed,
            InvocationStatus::Rerouted
        ],
        "{statuses:?}"
    );
    let child = children[0];
    let gone = eventually(Duration::from_secs(5), || async move { !is_running(child) }).await;
    assert!(gone, "the child outlived its runner");
    check_histories(&app).await;
}

/// Whether a process exists and is not a zombie (a dead child whose new
/// parent has not reaped it yet).
fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // the state follows the parenthesised command name
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
    }
}

/// The process runners and their settings for a diamond (four slots).
const DIAMOND_RUNNERS: [(&str, &[(&str, &str)]); 3] = [
    ("process", &[("PYNENC__RUNNER__MAX_PROCESSES", "4")]),
    (
        "persistent_process",
        &[("PYNENC__RUNNER__MAX_PROCESSES", "4")],
    ),
    (
        "multi_thread",
        &[
            ("PYNENC__RUNNER__MIN_PROCESSES", "1"),
            ("PYNENC__RUNNER__MAX_PROCESSES", "1"),
            ("PYNENC__RUNNER__MAX_PARALLEL_SLOTS", "4"),
        ],
    ),
];

/// Registration scope `active`: in the diamond `a → b, c → d(1)` run by a
/// runner of `kind`, both sides get the one invocation of the shared leaf,
/// which runs once.
async fn diamond_runs_the_leaf_once(app: &Pynenc, worker: WorkerProcess, kind: &str) {
    let top = diamond_top::call_on(app, format!("diamond-{kind}"))
        .await
        .expect("call");
    let sum = tokio::time::timeout(Duration::from_secs(60), top.result())
        .await
        .unwrap_or_else(|_| panic!("{kind}: the diamond did not finish"))
        .expect("the diamond's result");
    assert_eq!(sum, 20, "{kind}");
    let query = pynenc::model::InvocationQuery {
        task_ids: vec![pynenc::TaskId::from(shared_leaf::task().task_id())],
        ..pynenc::model::InvocationQuery::new()
    };
    let leaves = app.queries().list_invocations(&query).await.expect("list");
    assert_eq!(
        leaves.len(),
        1,
        "{kind}: one invocation of the leaf: {leaves:?}"
    );
    let runs = app
        .invocation(&leaves[0].invocation_id)
        .await
        .expect("the leaf")
        .history()
        .await
        .expect("history")
        .iter()
        .filter(|h| h.status == InvocationStatus::Running)
        .count();
    assert_eq!(runs, 1, "{kind}: the leaf ran once");
    stop_and_check(worker, app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diamond_runs_its_shared_leaf_once_on_every_process_runner() {
    for (kind, extra) in DIAMOND_RUNNERS {
        let (_dir, app, worker) = runner_on_fresh_file("diamond", kind, extra);
        diamond_runs_the_leaf_once(&app, worker, kind).await;
    }
}

/// The same on Redis (a `redis-server` per runner kind; skipped with a
/// message when it is not installed, a failure with `PYNENC_REQUIRE_REDIS=1`).
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diamond_runs_its_shared_leaf_once_on_every_process_runner_on_redis() {
    use pynenc_testkit::redis_server::{skip_reason, RedisServer};
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    for (kind, extra) in DIAMOND_RUNNERS {
        let server = RedisServer::start();
        let (app, worker) = runner_on(&SharedBackend::Redis(server.url()), "diamond", kind, extra);
        diamond_runs_the_leaf_once(&app, worker, kind).await;
    }
}

/// Large arguments and results cross processes through the data store: a
/// runner process of each process kind reads a 2 MB argument stored once
/// for 20 calls, and returns large results the caller reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_arguments_and_results_cross_process_runners() {
    for kind in ["process", "persistent_process", "multi_thread"] {
        let (_dir, app, worker) = runner_on_fresh_file(&format!("data-{kind}"), kind, &[]);
        let len = 2_000_000;
        let big = pynenc::Shared::new(big_value(len));
        let group = check_big::parallelize_on(&app, (0..20u32).map(|i| (big.clone(), len, i)))
            .await
            .expect("route");
        let usage = app.data_store().data_usage().await.expect("usage");
        assert_eq!(
            (usage.values, usage.references),
            (1, 20),
            "{kind}: {usage:?}"
        );
        let results = group.results().await.expect("results");
        for (k, (i, n, right)) in results.into_iter().enumerate() {
            assert_eq!((i as usize, n, right), (k, len, true), "{kind}: call {k}");
        }
        let result = big_result::call_on(&app, 300_000).await.expect("call");
        let value = result.result().await.expect("large result");
        assert!(
            is_big_value(&value, 300_000),
            "{kind}: the result read back"
        );
        let usage = app.data_store().data_usage().await.expect("usage");
        assert_eq!(usage.values, 2, "{kind}: the result was stored: {usage:?}");
        stop_and_check(worker, &app).await;
    }
}
