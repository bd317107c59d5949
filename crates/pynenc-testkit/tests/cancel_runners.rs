//! Cancelling invocations while they run, with real runners and backends:
//!
//! - in-process runners on the memory backend, on SQLite files and on Redis
//!   (a `redis-server` per test; skipped with a message when it is not
//!   installed, a failure with `PYNENC_REQUIRE_REDIS=1`): async bodies,
//!   sync bodies checking `is_cancelled()`, paused parents, waiters of a
//!   cancelled child, queued invocations, double cancels, a dead runner's
//!   invocation with a cancel pending, the runners list and its pruning;
//!
//! The process runners are tested as real OS processes in
//! `tests/cancel_processes.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use pynenc::model::{CancelOutcome, RunnerInfo};
use pynenc::{
    Invocation, InvocationStatus, Pynenc, PynencError, RunnerId, ThreadRunner, Timestamp,
};
use pynenc_testkit::tasks::{add, add_sync, events_of, filler, record};
use pynenc_testkit::{
    assert_cancelled_by, check_histories, eventually, new_app, ok, statuses, unique, BackendFactory,
};
use serde_json::json;

/// What a cancelled invocation never goes through: it is not re-routed or failed.
const NEVER: &[InvocationStatus] = &[InvocationStatus::Rerouted, InvocationStatus::Failed];

/// How long a test waits for a status before it fails.
const WAIT: Duration = Duration::from_secs(20);

/// Records `before`, then sleeps `ms` on an await, then records `after`;
/// records `dropped` when its future is dropped (or ends).
#[pynenc::task]
async fn probe(group: String, ms: u64) -> u64 {
    struct OnDrop(String);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            record(&self.0, "dropped");
        }
    }
    record(&group, "before");
    let _guard = OnDrop(group.clone());
    tokio::time::sleep(Duration::from_millis(ms)).await;
    record(&group, "after");
    ms
}

/// A sync body that checks `is_cancelled()` (for at most `ms`): records
/// `saw-cancel` and returns 42 once it is.
#[pynenc::task]
fn polite(group: String, ms: u64) -> u32 {
    record(&group, "before");
    let deadline = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < deadline {
        if pynenc::context::is_cancelled() {
            record(&group, "saw-cancel");
            return 42;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    record(&group, "timed-out");
    0
}

/// Waits for `probe(group, ms)`: paused meanwhile; says how it ended.
#[pynenc::task]
async fn waits_on_probe(group: String, ms: u64) -> Result<String, PynencError> {
    let child = probe::call(group, ms).await?;
    match child.result().await {
        Ok(v) => Ok(format!("value {v}")),
        Err(PynencError::Cancelled { .. }) => Ok("child cancelled".into()),
        Err(e) => Err(e),
    }
}

/// [`waits_on_probe`] from a sync body.
#[pynenc::task]
fn sync_waits_on_probe(group: String, ms: u64) -> Result<String, PynencError> {
    pynenc::block_on(async move {
        let child = probe::call(group, ms).await?;
        child.result().await.map(|v| format!("value {v}"))
    })
}

/// Cancels `id` as an operator.
async fn cancel(app: &Pynenc, id: &pynenc::InvocationId) -> CancelOutcome {
    ok(
        app.orchestrator()
            .cancel(id, &RunnerId::from("operator"))
            .await,
        "cancel",
    )
}

/// Waits until `inv` is in `status`; fails the test otherwise.
async fn reach<R>(inv: &Invocation<R>, status: InvocationStatus)
where
    R: serde::de::DeserializeOwned + Send + 'static,
{
    let reached = inv.wait_for_status(&[status], WAIT).await;
    assert_eq!(ok(reached, &format!("waiting for {status}")), status);
}

/// Waits until the group's events include `label`.
async fn saw(group: &str, label: &str) {
    let seen = eventually(WAIT, || async {
        events_of(group).iter().any(|(l, _)| l == label)
    })
    .await;
    assert!(seen, "{group}: no {label} event in {:?}", events_of(group));
}

/// Whether the group's events include `label`.
fn has(group: &str, label: &str) -> bool {
    events_of(group).iter().any(|(l, _)| l == label)
}

/// The one invocation `parent` waits on, once it waits.
async fn waited_child(app: &Pynenc, parent: &pynenc::InvocationId) -> pynenc::InvocationId {
    let deadline = Instant::now() + WAIT;
    loop {
        let graph = ok(app.queries().wait_graph(parent).await, "wait graph");
        if let Some(child) = graph.waiting_on.first() {
            return *child;
        }
        assert!(
            Instant::now() < deadline,
            "the parent never waited on a child"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// With one slot, two 100 ms `filler` runs start at least 100 ms apart:
/// the runner's slot accounting is intact (no slot lost, none gained).
async fn assert_one_slot(app: &Pynenc) {
    let group = unique("one-slot");
    let a = ok(
        filler::call_on(app, group.clone(), "a".into(), 100).await,
        "a",
    );
    let b = ok(
        filler::call_on(app, group.clone(), "b".into(), 100).await,
        "b",
    );
    ok(a.result().await, "a ran");
    ok(b.result().await, "b ran");
    let events = events_of(&group);
    assert_eq!(events.len(), 2, "{events:?}");
    let apart = (events[1].1 - events[0].1).abs();
    assert!(
        apart >= 100_000,
        "two runs overlapped on one slot: {events:?}"
    );
}

/// A runner of `slots` slots, started in the background, and its id.
fn runner(app: &Pynenc, slots: usize) -> (pynenc::SpawnedRunner, RunnerId) {
    let runner = ThreadRunner::with_slots(app, slots);
    let id = runner.runner_id().clone();
    (runner.spawn(), id)
}

/// The configuration of every in-process scenario: quick cancel polls and heartbeats.
fn app(f: &dyn BackendFactory, app_id: &str) -> Pynenc {
    new_app(
        f,
        app_id,
        &[
            ("runner.cancel_poll_seconds", json!(0.02)),
            ("runner.heartbeat_interval_seconds", json!(0.05)),
        ],
    )
}

/// An async body stops at its next await; the run ends `CANCELLED` by the
/// runner; the waiter gets `Cancelled`; the slot is reusable.
async fn async_body_is_dropped(f: &dyn BackendFactory) {
    let app = app(f, "cancel-async");
    let (spawned, runner_id) = runner(&app, 1);
    let group = unique("async");
    let inv = ok(probe::call_on(&app, group.clone(), 60_000).await, "call");
    saw(&group, "before").await;
    assert_eq!(
        cancel(&app, inv.invocation_id()).await,
        CancelOutcome::Requested {
            owner: runner_id.clone()
        }
    );
    reach(&inv, InvocationStatus::Cancelled).await;
    assert!(
        has(&group, "dropped") && !has(&group, "after"),
        "{:?}",
        events_of(&group)
    );
    assert_cancelled_by(&inv, &runner_id, NEVER).await;
    assert_one_slot(&app).await;
    ok(spawned.stop().await, "stop");
    check_histories(&app).await;
}

/// A sync body is not interrupted: it sees `is_cancelled()`, and whatever it
/// returns, the run ends `CANCELLED`.
async fn sync_body_sees_the_flag(f: &dyn BackendFactory) {
    let app = app(f, "cancel-sync");
    let (spawned, runner_id) = runner(&app, 1);
    let group = unique("sync");
    let inv = ok(polite::call_on(&app, group.clone(), 30_000).await, "call");
    saw(&group, "before").await;
    assert!(matches!(
        cancel(&app, inv.invocation_id()).await,
        CancelOutcome::Requested { .. }
    ));
    reach(&inv, InvocationStatus::Cancelled).await;
    assert!(has(&group, "saw-cancel"), "{:?}", events_of(&group));
    assert_cancelled_by(&inv, &runner_id, NEVER).await;
    assert_eq!(
        ok(
            ok(add_sync::call_on(&app, 1, 2).await, "call")
                .result()
                .await,
            "sync after"
        ),
        3
    );
    assert_one_slot(&app).await;
    ok(spawned.stop().await, "stop");
    check_histories(&app).await;
}

/// A parent paused on a child (holding no slot) is cancelled: its wait is
/// dropped, it ends `CANCELLED` from `PAUSED`; the child runs on until it is
/// cancelled too; the one slot is still exactly one slot.
async fn paused_parent(f: &dyn BackendFactory, sync: bool) {
    let app = app(
        f,
        if sync {
            "cancel-paused-sync"
        } else {
            "cancel-paused"
        },
    );
    let (spawned, runner_id) = runner(&app, 1);
    let group = unique("paused");
    let parent: Invocation<String> = if sync {
        ok(
            sync_waits_on_probe::call_on(&app, group.clone(), 60_000).await,
            "call",
        )
    } else {
        ok(
            waits_on_probe::call_on(&app, group.clone(), 60_000).await,
            "call",
        )
    };
    reach(&parent, InvocationStatus::Paused).await;
    let child_id = waited_child(&app, parent.invocation_id()).await;
    saw(&group, "before").await;
    assert!(matches!(
        cancel(&app, parent.invocation_id()).await,
        CancelOutcome::Requested { .. }
    ));
    reach(&parent, InvocationStatus::Cancelled).await;
    assert_cancelled_by(&parent, &runner_id, NEVER).await;
    let st = statuses(&parent).await;
    assert!(!st.contains(&InvocationStatus::Resumed), "{st:?}");
    // the child is not affected by its parent's cancel
    let child = ok(app.invocation_as::<u64>(&child_id).await, "child");
    assert_eq!(
        ok(child.status().await, "child status"),
        InvocationStatus::Running
    );
    assert!(matches!(
        cancel(&app, &child_id).await,
        CancelOutcome::Requested { .. }
    ));
    reach(&child, InvocationStatus::Cancelled).await;
    assert_cancelled_by(&child, &runner_id, NEVER).await;
    assert_one_slot(&app).await;
    ok(spawned.stop().await, "stop");
    check_histories(&app).await;
}

async fn paused_async_parent(f: &dyn BackendFactory) {
    paused_parent(f, false).await;
}

async fn paused_sync_parent(f: &dyn BackendFactory) {
    paused_parent(f, true).await;
}

/// A parent waiting on a child that is cancelled gets `Cancelled` from
/// `result()` and goes on (it does not hang).
async fn waiter_of_a_cancelled_child(f: &dyn BackendFactory) {
    let app = app(f, "cancel-child");
    let (spawned, runner_id) = runner(&app, 2);
    let group = unique("child");
    let parent = ok(
        waits_on_probe::call_on(&app, group.clone(), 60_000).await,
        "call",
    );
    let child_id = waited_child(&app, parent.invocation_id()).await;
    saw(&group, "before").await;
    assert!(matches!(
        cancel(&app, &child_id).await,
        CancelOutcome::Requested { .. }
    ));
    assert_eq!(ok(parent.result().await, "parent"), "child cancelled");
    let child = ok(app.invocation_as::<u64>(&child_id).await, "child");
    assert_cancelled_by(&child, &runner_id, NEVER).await;
    ok(spawned.stop().await, "stop");
    check_histories(&app).await;
}

/// A queued invocation is `CANCELLED` at once, by the operator; no runner
/// ever runs it.
async fn queued_is_cancelled_at_once(f: &dyn BackendFactory) {
    let app = app(f, "cancel-queued");
    let inv = ok(add::call_on(&app, 1, 1).await, "call");
    assert_eq!(
        cancel(&app, inv.invocation_id()).await,
        CancelOutcome::Cancelled
    );
    assert_eq!(
        ok(inv.status().await, "status"),
        InvocationStatus::Cancelled
    );
    assert_cancelled_by(&inv, &RunnerId::from("operator"), NEVER).await;
    let (spawned, _) = runner(&app, 1);
    assert_eq!(
        ok(
            ok(add::call_on(&app, 2, 2).await, "call").result().await,
            "after"
        ),
        4
    );
    assert_eq!(
        ok(inv.status().await, "status"),
        InvocationStatus::Cancelled
    );
    ok(spawned.stop().await, "stop");
    check_histories(&app).await;
}

/// Cancelling twice is harmless: one `CANCELLED`, and a cancel of a final
/// invocation changes nothing.
async fn cancel_twice(f: &dyn BackendFactory) {
    let app = app(f, "cancel-twice");
    let (spawned, runner_id) = runner(&app, 1);
    let group = unique("twice");
    let inv = ok(probe::call_on(&app, group.clone(), 60_000).await, "call");
    saw(&group, "before").await;
    let first = cancel(&app, inv.invocation_id()).await;
    let second = cancel(&app, inv.invocation_id()).await;
    assert!(
        matches!(first, CancelOutcome::Requested { .. }),
        "{first:?}"
    );
    assert!(
        matches!(
            second,
            CancelOutcome::Requested { .. }
                | CancelOutcome::AlreadyFinal {
                    status: InvocationStatus::Cancelled
                }
        ),
        "{second:?}"
    );
    reach(&inv, InvocationStatus::Cancelled).await;
    assert_eq!(
        cancel(&app, inv.invocation_id()).await,
        CancelOutcome::AlreadyFinal {
            status: InvocationStatus::Cancelled
        }
    );
    assert_cancelled_by(&inv, &runner_id, NEVER).await;
    assert_one_slot(&app).await;
    ok(spawned.stop().await, "stop");
    check_histories(&app).await;
}

/// A runner that took an invocation and died (here: one that never beats a
/// heartbeat) with a cancel pending: recovery ends it `CANCELLED` instead
/// of re-routing it.
async fn dead_runner_cancel_is_recovered(f: &dyn BackendFactory) {
    let app = new_app(
        f,
        "cancel-dead",
        &[
            ("runner.runner_dead_after_seconds", json!(0.3)),
            ("runner.recovery_interval_seconds", json!(0.05)),
        ],
    );
    let group = unique("dead");
    let inv = ok(probe::call_on(&app, group.clone(), 60_000).await, "call");
    let ghost = RunnerId::from("ghost-runner");
    let taken = ok(
        app.orchestrator()
            .get_invocations_to_start(&ghost, 1, None)
            .await,
        "take",
    );
    assert_eq!(taken.len(), 1);
    assert_eq!(
        cancel(&app, inv.invocation_id()).await,
        CancelOutcome::Requested {
            owner: ghost.clone()
        }
    );
    let (spawned, runner_id) = runner(&app, 1);
    reach(&inv, InvocationStatus::Cancelled).await;
    let history = ok(inv.history().await, "history");
    let last = history.last().expect("history");
    assert_eq!(
        last.actor,
        RunnerId::from(format!("recovery@{runner_id}")),
        "{history:?}"
    );
    assert!(!has(&group, "before"), "the body never ran");
    assert!(matches!(
        inv.result().await,
        Err(PynencError::Cancelled { .. })
    ));
    ok(spawned.stop().await, "stop");
    check_histories(&app).await;
}

/// The runner of `runner_id` as listed, if it is.
async fn listed(app: &Pynenc, runner_id: &RunnerId) -> Option<RunnerInfo> {
    ok(app.queries().runners().await, "runners")
        .into_iter()
        .find(|r| &r.runner_id == runner_id)
}

/// A running runner is listed with its kind, host, pid, slots and what it
/// runs; it leaves the list on a clean stop.
async fn runners_list(f: &dyn BackendFactory) {
    let app = app(f, "cancel-runners");
    let (spawned, runner_id) = runner(&app, 3);
    let group = unique("listed");
    let inv = ok(probe::call_on(&app, group.clone(), 60_000).await, "call");
    saw(&group, "before").await;
    let shows_it = eventually(WAIT, || async {
        listed(&app, &runner_id)
            .await
            .is_some_and(|r| r.running.contains(inv.invocation_id()))
    })
    .await;
    assert!(
        shows_it,
        "the runner does not list its invocation: {:?}",
        listed(&app, &runner_id).await
    );
    let info = listed(&app, &runner_id).await.expect("listed");
    assert_eq!(info.kind, "thread");
    assert_eq!(info.slots, 3);
    assert_eq!(info.pid, std::process::id());
    assert!(!info.host.is_empty());
    assert!(info.started_at <= info.heartbeat_at, "{info:?}");
    cancel(&app, inv.invocation_id()).await;
    reach(&inv, InvocationStatus::Cancelled).await;
    let idle = eventually(WAIT, || async {
        listed(&app, &runner_id)
            .await
            .is_some_and(|r| r.running.is_empty())
    })
    .await;
    assert!(idle, "the runner still lists a cancelled invocation");
    ok(spawned.stop().await, "stop");
    assert_eq!(
        listed(&app, &runner_id).await,
        None,
        "a runner that stopped cleanly left"
    );
    check_histories(&app).await;
}

/// The runner holding the recovery lease forgets runners silent for longer
/// than `runner_info_keep_seconds`, and keeps the live ones.
async fn silent_runners_are_pruned(f: &dyn BackendFactory) {
    let app = new_app(
        f,
        "cancel-prune",
        &[
            ("runner.runner_info_keep_seconds", json!(1.0)),
            ("runner.heartbeat_interval_seconds", json!(0.05)),
            ("runner.recovery_interval_seconds", json!(0.05)),
        ],
    );
    let ghost = RunnerId::from("ghost-runner@nowhere");
    let now = Timestamp::now();
    let info = RunnerInfo {
        runner_id: ghost.clone(),
        kind: "thread".into(),
        host: "nowhere".into(),
        pid: 1,
        started_at: now,
        heartbeat_at: now,
        slots: 1,
        running: Vec::new(),
    };
    ok(app.coordination().register_runner(&info).await, "register");
    assert!(listed(&app, &ghost).await.is_some());
    let (spawned, runner_id) = runner(&app, 1);
    let pruned = eventually(WAIT, || async { listed(&app, &ghost).await.is_none() }).await;
    assert!(pruned, "a silent runner was not pruned");
    assert!(
        listed(&app, &runner_id).await.is_some(),
        "a live runner was pruned"
    );
    ok(spawned.stop().await, "stop");
}

/// Instantiates every in-process scenario for a backend factory expression.
macro_rules! in_process_tests {
    ($factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let factory = $factory;
                if let Some(reason) = BackendFactory::skip_reason(&factory) {
                    eprintln!("SKIPPED {}: {}", stringify!($name), reason);
                    return;
                }
                let run = super::$name(&factory);
                if tokio::time::timeout(Duration::from_secs(120), run).await.is_err() {
                    panic!("{} timed out on {}", stringify!($name), BackendFactory::name(&factory));
                }
            }
        )*
    };
    ($factory:expr) => {
        in_process_tests!($factory;
            async_body_is_dropped,
            sync_body_sees_the_flag,
            paused_async_parent,
            paused_sync_parent,
            waiter_of_a_cancelled_child,
            queued_is_cancelled_at_once,
            cancel_twice,
            dead_runner_cancel_is_recovered,
            runners_list,
            silent_runners_are_pruned,
        );
    };
}

mod memory {
    use super::*;
    in_process_tests!(pynenc_testkit::MemoryFactory::new());
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    in_process_tests!(pynenc_testkit::SqliteFactory::new());
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    in_process_tests!(pynenc_testkit::RedisFactory::new());
}
