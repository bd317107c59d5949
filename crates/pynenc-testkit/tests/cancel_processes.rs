//! Cancelling invocations that run in other OS processes, with real
//! processes on a shared backend (a SQLite file; a `redis-server` started
//! per test, skipped with a message when it is not installed, a failure
//! with `PYNENC_REQUIRE_REDIS=1`). The runner is the testkit's
//! `cancel_worker` binary (its children are the same binary started again);
//! the test process is the caller and the operator.
//!
//! - `ProcessRunner`: the child gets `SIGTERM`; one that ignores it gets
//!   `SIGKILL` after the grace period; a child stopped while `PAUSED` too;
//!   each run ends `CANCELLED` (not a crash, not re-routed).
//! - `PersistentProcessRunner`: the worker process running a cancelled
//!   invocation is stopped and replaced; one taken ahead and waiting for
//!   its turn ends in the worker, which lives on.
//! - `MultiThreadRunner`: the worker cancels in-process and lives on.
//! - a runner process killed with a cancel pending: recovery ends the
//!   invocation `CANCELLED`, and the dead runner is pruned from the list.

#![cfg(any(feature = "sqlite", feature = "redis"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pynenc::model::{CancelOutcome, RunnerInfo};
use pynenc::{Invocation, InvocationId, InvocationStatus, Pynenc, RunnerId, ThreadRunner};
use pynenc_testkit::process::{SharedBackend, WorkerProcess};
use pynenc_testkit::tasks::{add, add_via_slow_child, sleeper};
use pynenc_testkit::{
    assert_add_works, assert_cancelled_by, check_histories, eventually, ok, unique,
};
use serde_json::{json, Value};

/// What a cancelled invocation never goes through: it is not re-routed, failed
/// or retried.
const NEVER: &[InvocationStatus] = &[
    InvocationStatus::Rerouted,
    InvocationStatus::Failed,
    InvocationStatus::Retry,
];

/// How long a test waits for a status before it fails.
const WAIT: Duration = Duration::from_secs(30);
/// The runners' `shutdown_grace_seconds` in these tests.
const GRACE: Duration = Duration::from_secs(1);

/// An app on `backend` configured by `extra` only.
fn shared_app(backend: &SharedBackend, app_id: &str, extra: &[(&str, Value)]) -> Pynenc {
    let mut b = backend.builder(app_id);
    for (k, v) in extra {
        b = b.config_value(k, v.clone());
    }
    ok(b.build(), "app")
}

/// A runner process of `kind` (the `cancel_worker` binary), killed when dropped.
fn start_runner(
    backend: &SharedBackend,
    app_id: &str,
    kind: &str,
    extra: &[(&str, &str)],
) -> WorkerProcess {
    let grace = GRACE.as_secs_f64().to_string();
    let mut env = vec![
        ("PYNENC__RUNNER__KIND", kind),
        ("PYNENC__RUNNER__SHUTDOWN_GRACE_SECONDS", grace.as_str()),
        ("PYNENC__RUNNER__CANCEL_POLL_SECONDS", "0.05"),
        ("PYNENC__RUNNER__HEARTBEAT_INTERVAL_SECONDS", "0.1"),
    ];
    env.extend_from_slice(extra);
    ok(
        WorkerProcess::start(
            env!("CARGO_BIN_EXE_cancel_worker"),
            &["run"],
            backend,
            app_id,
            &env,
        ),
        "start the runner process",
    )
}

/// Routes `stubborn(60 s, marker)` through the `cancel_worker` binary (the
/// task is registered there); its id.
fn call_stubborn(backend: &SharedBackend, app_id: &str, marker: &Path) -> InvocationId {
    let marker = marker.to_string_lossy().to_string();
    let mut cmd = WorkerProcess::command(
        env!("CARGO_BIN_EXE_cancel_worker"),
        &["call-stubborn", "60000", marker.as_str()],
        backend,
        app_id,
        &[],
    );
    let out = ok(cmd.stdout(Stdio::piped()).output(), "run call-stubborn");
    assert!(out.status.success(), "call-stubborn failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default().trim().to_string();
    ok(
        InvocationId::parse(&line),
        "the invocation id call-stubborn printed",
    )
}

/// The child processes of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Cancels `id` as an operator; the owner asked to stop it.
async fn cancel_running(app: &Pynenc, id: &InvocationId) -> RunnerId {
    match ok(
        app.orchestrator()
            .cancel(id, &RunnerId::from("operator"))
            .await,
        "cancel",
    ) {
        CancelOutcome::Requested { owner } => owner,
        other => panic!("expected a cancel request, got {other:?}"),
    }
}

/// Waits until `inv` is in `status`; fails the test otherwise.
async fn reach<R>(inv: &Invocation<R>, status: InvocationStatus)
where
    R: serde::de::DeserializeOwned + Send + 'static,
{
    let reached = inv.wait_for_status(&[status], WAIT).await;
    assert_eq!(ok(reached, &format!("waiting for {status}")), status);
}

/// The runner listed with process id `pid`, once it lists `running`.
async fn listed_with(app: &Pynenc, pid: u32, running: &InvocationId) -> RunnerInfo {
    let mut found = None;
    let deadline = Instant::now() + WAIT;
    while found.is_none() {
        assert!(
            Instant::now() < deadline,
            "no runner of pid {pid} lists {running}"
        );
        found = ok(app.queries().runners().await, "runners")
            .into_iter()
            .find(|r| r.pid == pid && r.running.contains(running));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    found.expect("found")
}

/// Whether a runner with process id `pid` is listed.
async fn is_listed(app: &Pynenc, pid: u32) -> bool {
    ok(app.queries().runners().await, "runners")
        .iter()
        .any(|r| r.pid == pid)
}

/// Waits until the file `marker` exists.
async fn wait_for_file(marker: &Path) {
    let there = eventually(WAIT, || async { marker.exists() }).await;
    assert!(there, "{} was never written", marker.display());
}

/// Stops the runner process with SIGTERM: it stops cleanly and leaves the list.
async fn stop_and_check(mut worker: WorkerProcess, app: &Pynenc) {
    let pid = worker.pid();
    let status = worker.stop(WAIT).expect("the runner stopped after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        !is_listed(app, pid).await,
        "a runner that stopped cleanly left the list"
    );
    check_histories(app).await;
}

/// `ProcessRunner`: `SIGTERM` ends an async body's child at once; a child
/// that ignores it gets `SIGKILL` after the grace period; a child stopped
/// while `PAUSED` is stopped too. Each run ends `CANCELLED` by the runner.
async fn process_runner(backend: SharedBackend, dir: &Path) {
    let app_id = "cancel-process";
    let app = shared_app(&backend, app_id, &[]);
    let worker = start_runner(
        &backend,
        app_id,
        "process",
        &[("PYNENC__RUNNER__MAX_PROCESSES", "2")],
    );

    let s = ok(sleeper::call_on(&app, unique("proc"), 60_000).await, "call");
    reach(&s, InvocationStatus::Running).await;
    let info = listed_with(&app, worker.pid(), s.invocation_id()).await;
    assert_eq!((info.kind.as_str(), info.slots), ("process", 2));
    let owner = cancel_running(&app, s.invocation_id()).await;
    assert_eq!(owner, info.runner_id);
    reach(&s, InvocationStatus::Cancelled).await;
    assert_cancelled_by(&s, &owner, NEVER).await;

    let marker = dir.join("stubborn-process");
    let id = call_stubborn(&backend, app_id, &marker);
    let stubborn = ok(app.invocation_as::<u64>(&id).await, "handle");
    wait_for_file(&marker).await;
    let asked = Instant::now();
    assert_eq!(cancel_running(&app, &id).await, owner);
    reach(&stubborn, InvocationStatus::Cancelled).await;
    assert!(
        asked.elapsed() >= GRACE,
        "a child that ignores SIGTERM was stopped before the grace period ended ({:?})",
        asked.elapsed()
    );
    assert_cancelled_by(&stubborn, &owner, NEVER).await;

    let parent = ok(
        add_via_slow_child::call_on(&app, 1, 2, 60_000).await,
        "call",
    );
    reach(&parent, InvocationStatus::Paused).await;
    let child = ok(
        app.queries().wait_graph(parent.invocation_id()).await,
        "graph",
    )
    .waiting_on;
    assert_eq!(child.len(), 1);
    cancel_running(&app, parent.invocation_id()).await;
    reach(&parent, InvocationStatus::Cancelled).await;
    assert_cancelled_by(&parent, &owner, NEVER).await;
    let child = ok(app.invocation_as::<u64>(&child[0]).await, "child");
    reach(&child, InvocationStatus::Running).await;
    cancel_running(&app, child.invocation_id()).await;
    reach(&child, InvocationStatus::Cancelled).await;

    assert_add_works(&app, 1, 1).await;
    let none_left = eventually(WAIT, || async { children_of(worker.pid()).is_empty() }).await;
    assert!(none_left, "a child process outlived its cancel");
    stop_and_check(worker, &app).await;
}

/// `PersistentProcessRunner`: the worker running a cancelled invocation is
/// stopped (async body, and a sync body that ignores `SIGTERM`) and
/// replaced; the pool works on. One taken ahead and cancelled before its
/// turn ends in the worker.
async fn persistent_pool(backend: SharedBackend, dir: &Path) {
    let app_id = "cancel-persistent";
    let app = shared_app(&backend, app_id, &[]);
    let worker = start_runner(
        &backend,
        app_id,
        "persistent_process",
        &[
            ("PYNENC__RUNNER__MAX_PROCESSES", "1"),
            // runs up to a minute count as short: what the worker takes
            // ahead stays in it while a body of a few seconds runs
            ("PYNENC__RUNNER__PREFETCH_LONG_RUN_MS", "60000"),
        ],
    );
    let one_worker = || async { children_of(worker.pid()) };

    let s = ok(sleeper::call_on(&app, unique("pool"), 60_000).await, "call");
    reach(&s, InvocationStatus::Running).await;
    let info = listed_with(&app, worker.pid(), s.invocation_id()).await;
    assert_eq!((info.kind.as_str(), info.slots), ("persistent_process", 1));
    let first = one_worker().await;
    assert_eq!(first.len(), 1, "{first:?}");
    let owner = cancel_running(&app, s.invocation_id()).await;
    assert!(
        owner
            .as_str()
            .starts_with(&format!("{}/worker-", info.runner_id)),
        "{owner}"
    );
    reach(&s, InvocationStatus::Cancelled).await;
    assert_cancelled_by(&s, &owner, NEVER).await;
    let replaced = eventually(WAIT, || async {
        let now = one_worker().await;
        now.len() == 1 && now[0] != first[0]
    })
    .await;
    assert!(replaced, "the stopped worker was not replaced");

    let second = one_worker().await;
    let marker = dir.join("stubborn-pool");
    let id = call_stubborn(&backend, app_id, &marker);
    let stubborn = ok(app.invocation_as::<u64>(&id).await, "handle");
    wait_for_file(&marker).await;
    let owner = cancel_running(&app, &id).await;
    reach(&stubborn, InvocationStatus::Cancelled).await;
    assert_cancelled_by(&stubborn, &owner, NEVER).await;
    let replaced = eventually(WAIT, || async {
        let now = one_worker().await;
        now.len() == 1 && !second.contains(&now[0])
    })
    .await;
    assert!(replaced, "the worker that ignored SIGTERM was not replaced");

    // short runs let the worker take invocations ahead; one taken ahead
    // while a body runs, cancelled, ends in the worker: its body never
    // begins and the worker process lives on
    let warm = ok(
        add::parallelize_on(&app, (0..20).map(|i| (i, i))).await,
        "route",
    );
    assert_eq!(ok(warm.results().await, "warm-up").len(), 20);
    let third = one_worker().await;
    let running = ok(sleeper::call_on(&app, unique("ahead"), 3_000).await, "call");
    reach(&running, InvocationStatus::Running).await;
    let ahead = ok(
        sleeper::call_on(&app, unique("ahead"), 60_000).await,
        "call",
    );
    reach(&ahead, InvocationStatus::Running).await;
    assert_eq!(
        ok(running.status().await, "status"),
        InvocationStatus::Running,
        "taken while the body before it runs"
    );
    cancel_running(&app, ahead.invocation_id()).await;
    let cancelled_at = Instant::now();
    reach(&ahead, InvocationStatus::Cancelled).await;
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(2),
        "the cancel waited for the body before it: {:?}",
        cancelled_at.elapsed()
    );
    assert_eq!(ok(running.result().await, "the body before it"), 3_000);
    assert_eq!(one_worker().await, third, "the worker process lives on");

    assert_add_works(&app, 2, 2).await;
    stop_and_check(worker, &app).await;
}

/// `MultiThreadRunner`: a worker runs several invocations, so it cancels
/// in-process and lives on.
async fn multi_thread_pool(backend: SharedBackend, _dir: &Path) {
    let app_id = "cancel-multi";
    let app = shared_app(&backend, app_id, &[]);
    let worker = start_runner(
        &backend,
        app_id,
        "multi_thread",
        &[
            ("PYNENC__RUNNER__MIN_PROCESSES", "1"),
            ("PYNENC__RUNNER__MAX_PROCESSES", "1"),
            ("PYNENC__RUNNER__MAX_PARALLEL_SLOTS", "2"),
        ],
    );
    let s = ok(
        sleeper::call_on(&app, unique("multi"), 60_000).await,
        "call",
    );
    reach(&s, InvocationStatus::Running).await;
    let info = listed_with(&app, worker.pid(), s.invocation_id()).await;
    assert_eq!((info.kind.as_str(), info.slots), ("multi_thread", 2));
    let before = children_of(worker.pid());
    let owner = cancel_running(&app, s.invocation_id()).await;
    reach(&s, InvocationStatus::Cancelled).await;
    assert_cancelled_by(&s, &owner, NEVER).await;
    assert_add_works(&app, 3, 4).await;
    assert_eq!(
        children_of(worker.pid()),
        before,
        "the worker process lives on"
    );
    stop_and_check(worker, &app).await;
}

/// A runner process killed with SIGKILL while it ran an invocation that is
/// then cancelled: the recovery of another runner ends it `CANCELLED`
/// (not re-routed), and the dead runner is pruned from the list.
async fn dead_runner_process(backend: SharedBackend, _dir: &Path) {
    let app_id = "cancel-dead";
    let app = shared_app(
        &backend,
        app_id,
        &[
            ("runner.runner_dead_after_seconds", json!(0.5)),
            ("runner.recovery_interval_seconds", json!(0.05)),
            ("runner.runner_info_keep_seconds", json!(1.0)),
            ("runner.heartbeat_interval_seconds", json!(0.1)),
        ],
    );
    let mut worker = start_runner(&backend, app_id, "thread", &[]);
    let s = ok(sleeper::call_on(&app, unique("dead"), 60_000).await, "call");
    reach(&s, InvocationStatus::Running).await;
    let info = listed_with(&app, worker.pid(), s.invocation_id()).await;
    assert_eq!(info.kind, "thread");
    ok(worker.kill(), "SIGKILL the runner");
    assert_eq!(
        cancel_running(&app, s.invocation_id()).await,
        info.runner_id
    );
    let runner = ThreadRunner::with_slots(&app, 1);
    let recovery = RunnerId::from(format!("recovery@{}", runner.runner_id()));
    let spawned = runner.spawn();
    reach(&s, InvocationStatus::Cancelled).await;
    assert_cancelled_by(&s, &recovery, NEVER).await;
    let pruned = eventually(WAIT, || async {
        let runners = ok(app.queries().runners().await, "runners");
        !runners.iter().any(|r| r.runner_id == info.runner_id)
    })
    .await;
    assert!(pruned, "the dead runner was not pruned");
    ok(spawned.stop().await, "stop");
    check_histories(&app).await;
}

/// Instantiates every scenario for a backend: `$backend` builds a
/// `(keep-alive guard, SharedBackend)` pair, or returns early to skip.
macro_rules! process_tests {
    ($backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((_guard, backend)) = $backend else {
                    return;
                };
                let dir = tempfile::tempdir().expect("tempdir");
                let run = super::$name(backend, dir.path());
                if tokio::time::timeout(Duration::from_secs(180), run).await.is_err() {
                    panic!("{} timed out", stringify!($name));
                }
            }
        )*
    };
    ($backend:expr) => {
        process_tests!($backend; process_runner, persistent_pool, multi_thread_pool, dead_runner_process);
    };
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    /// A fresh SQLite file (its directory is the guard).
    fn backend() -> Option<(tempfile::TempDir, SharedBackend)> {
        let (dir, db) = pynenc_testkit::process::fresh_db("cancel.db");
        Some((dir, SharedBackend::Sqlite(db)))
    }

    process_tests!(backend());
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use pynenc_testkit::redis_server::{skip_reason, RedisServer};

    /// A fresh `redis-server` (the guard), or `None` with a message when
    /// it is not installed.
    fn backend() -> Option<(RedisServer, SharedBackend)> {
        if let Some(reason) = skip_reason() {
            eprintln!("SKIPPED: {reason}");
            return None;
        }
        let server = RedisServer::start();
        let url = server.url();
        Some((server, SharedBackend::Redis(url)))
    }

    process_tests!(backend());
}
