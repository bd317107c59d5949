//! The control API: cancel, rerun, retry, purge by filter, retention.

use std::collections::HashSet;
use std::time::Duration;

use pynenc::model::{CancelOutcome, InvocationQuery};
use pynenc::store::StoreError;
use pynenc::{InvocationId, InvocationStatus, PynencError, Retention, RunnerId, TaskId};
use pynenc_operate::{Operate, OperateError};
use serde_json::json;

use crate::tasks::*;
use crate::{check_histories, new_app, ok, start_runner, statuses, unique, BackendFactory};

use super::finish;

/// A waiting invocation is `CANCELLED` at once by the operator; its waiter
/// gets `Cancelled`; cancelling again is harmless; a finished one refuses;
/// an unknown id is `NotFound`; a scheduled one never runs.
pub async fn c01_cancel_waiting(f: &dyn BackendFactory) {
    let app = new_app(f, "c01", &[]);
    let control = app.control().as_actor("ops@test");
    let queued = ok(add::call_on(&app, 1, 2).await, "queued");
    let later = ok(
        add::task()
            .schedule_on(
                &app,
                std::time::SystemTime::now() + Duration::from_millis(300),
                (5, 5),
            )
            .await,
        "scheduled",
    );
    let report = ok(
        control.cancel(queued.invocation_id(), false).await,
        "cancel",
    );
    assert_eq!(report.cancelled(), 1);
    assert_eq!(
        ok(queued.status().await, "status"),
        InvocationStatus::Cancelled
    );
    let history = ok(queued.history().await, "history");
    let last = history.last().expect("a history");
    assert_eq!(last.status, InvocationStatus::Cancelled);
    assert_eq!(last.actor.as_str(), "ops@test");
    match queued.result().await {
        Err(PynencError::Cancelled { error, .. }) => {
            assert_eq!(error.kind, "InvocationCancelledError");
            assert!(error.message.contains("ops@test"), "{}", error.message);
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    // again: harmless
    let again = ok(control.cancel(queued.invocation_id(), false).await, "again");
    assert_eq!(
        again.outcomes[0].1,
        CancelOutcome::AlreadyFinal {
            status: InvocationStatus::Cancelled
        }
    );
    ok(
        control.cancel(later.invocation_id(), false).await,
        "cancel scheduled",
    );
    let unknown = InvocationId::time_ordered();
    assert!(matches!(
        control.cancel(&unknown, false).await,
        Err(OperateError::NotFound(id)) if id == unknown
    ));
    let runner = start_runner(&app, 2);
    let done = ok(add::call_on(&app, 3, 4).await, "done");
    assert_eq!(ok(done.result().await, "result"), 7);
    let refused = control.cancel(done.invocation_id(), false).await;
    assert!(
        matches!(
            refused,
            Err(OperateError::WrongStatus {
                status: InvocationStatus::Success,
                ..
            })
        ),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ok(later.status().await, "scheduled"),
        InvocationStatus::Cancelled
    );
    assert_eq!(
        statuses(&later).await,
        vec![InvocationStatus::Scheduled, InvocationStatus::Cancelled],
        "the scheduled call never ran"
    );
    finish(&app, runner).await;
}

/// Cancel by filter reaches every matching waiting invocation and nothing else.
pub async fn c02_cancel_by_filter(f: &dyn BackendFactory) {
    let app = new_app(f, "c02", &[]);
    let adds = ok(
        add::parallelize_on(&app, (0..12).map(|i| (i, i))).await,
        "adds",
    );
    let other = ok(double::call_on(&app, 21).await, "other task");
    let report = ok(
        app.control()
            .cancel_matching(
                &InvocationQuery {
                    task_ids: vec![TaskId::from(add::task().task_id())],
                    ..InvocationQuery::new()
                },
                false,
            )
            .await,
        "cancel by filter",
    );
    assert_eq!(report.cancelled(), 12);
    for inv in adds.invocations() {
        assert_eq!(
            ok(inv.status().await, "status"),
            InvocationStatus::Cancelled
        );
    }
    let counts = ok(app.inspect().counts(&[]).await, "counts");
    assert_eq!(counts.of(InvocationStatus::Cancelled), 12);
    let runner = start_runner(&app, 2);
    assert_eq!(ok(other.result().await, "untouched"), 42);
    finish(&app, runner).await;
}

/// A running invocation is asked to stop: it ends `CANCELLED` by its
/// runner, and whoever waits gets `Cancelled` instead of hanging.
pub async fn c03_cancel_running(f: &dyn BackendFactory) {
    let app = new_app(f, "c03", &[("runner.cancel_poll_seconds", json!(0.05))]);
    let runner = start_runner(&app, 2);
    let key = unique("cancel-running");
    let inv = ok(sleeper::call_on(&app, key, 30_000).await, "call");
    ok(
        inv.wait_for_status(&[InvocationStatus::Running], Duration::from_secs(10))
            .await,
        "running",
    );
    let report = ok(
        app.control()
            .as_actor("ops@c03")
            .cancel(inv.invocation_id(), false)
            .await,
        "cancel",
    );
    assert_eq!(report.requested(), 1, "{report:?}");
    let status = ok(
        inv.wait_for_status(&[InvocationStatus::Cancelled], Duration::from_secs(10))
            .await,
        "cancelled",
    );
    assert_eq!(status, InvocationStatus::Cancelled);
    match inv.result().await {
        // the error names the operator who asked, not only the runner that stopped it
        Err(PynencError::Cancelled { error, .. }) => {
            assert!(error.message.contains("ops@c03"), "{}", error.message)
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    // the slot is free again
    let next = ok(add::call_on(&app, 2, 2).await, "next");
    assert_eq!(ok(next.result().await, "next result"), 4);
    finish(&app, runner).await;
}

/// Rerun: a new invocation of the same call, linked to the original;
/// retry now of a `FAILED` one; both refused where they do not apply.
pub async fn c04_rerun_and_retry(f: &dyn BackendFactory) {
    let app = new_app(f, "c04", &[]);
    let runner = start_runner(&app, 2);
    let control = app.control();
    let good = ok(add::call_on(&app, 20, 1).await, "good");
    assert_eq!(ok(good.result().await, "good"), 21);
    let rerun = ok(control.rerun(good.invocation_id()).await, "rerun");
    assert_ne!(rerun.new, *good.invocation_id());
    let again = ok(app.invocation_as::<i64>(&rerun.new).await, "handle");
    assert_eq!(again.rerun_of(), Some(good.invocation_id()));
    assert_eq!(ok(again.result().await, "rerun result"), 21);
    assert_eq!(again.call_id(), good.call_id());

    let bad = ok(
        fail_with::call_on(&app, "Nope".into(), "always".into()).await,
        "bad",
    );
    assert!(bad.result().await.is_err());
    let retried = ok(control.retry_failed(bad.invocation_id()).await, "retry");
    let retry = ok(app.invocation(&retried.new).await, "retry handle");
    assert_eq!(ok(retry.wait().await, "wait"), InvocationStatus::Failed);
    assert_eq!(
        ok(bad.status().await, "original"),
        InvocationStatus::Failed,
        "the original is untouched"
    );
    let family = ok(app.inspect().family(&retried.new).await, "family");
    assert_eq!(family.rerun_of, Some(*bad.invocation_id()));
    let refused = control.retry_failed(good.invocation_id()).await;
    assert!(
        matches!(refused, Err(OperateError::WrongStatus { .. })),
        "{refused:?}"
    );
    let unknown = InvocationId::time_ordered();
    assert!(matches!(
        control.rerun(&unknown).await,
        Err(OperateError::NotFound(_))
    ));
    // retry by filter: the two FAILED of fail_with
    let reruns = ok(
        control
            .retry_failed_matching(&InvocationQuery {
                task_ids: vec![TaskId::from(fail_with::task().task_id())],
                ..InvocationQuery::new()
            })
            .await,
        "retry by filter",
    );
    assert_eq!(reruns.len(), 2);
    for r in &reruns {
        let h = ok(app.invocation(&r.new).await, "handle");
        assert_eq!(ok(h.wait().await, "wait"), InvocationStatus::Failed);
    }
    // rerun by filter: both SUCCESS of add, once each (the reruns it makes
    // are not rerun again)
    let add_query = InvocationQuery {
        task_ids: vec![TaskId::from(add::task().task_id())],
        statuses: vec![InvocationStatus::Success],
        ..InvocationQuery::new()
    };
    let reruns = ok(control.rerun_matching(&add_query).await, "rerun by filter");
    let originals: HashSet<InvocationId> = reruns.iter().map(|r| r.original).collect();
    assert_eq!(
        originals,
        HashSet::from([*good.invocation_id(), rerun.new]),
        "{reruns:?}"
    );
    for r in &reruns {
        let h = ok(app.invocation_as::<i64>(&r.new).await, "handle");
        assert_eq!(ok(h.result().await, "rerun result"), 21);
        assert_eq!(h.rerun_of(), Some(&r.original));
    }
    finish(&app, runner).await;
}

/// Purge by filter deletes the final invocations that match, shows them
/// first, and never deletes one that is not final.
pub async fn c05_purge_by_filter(f: &dyn BackendFactory) {
    let app = new_app(f, "c05", &[]);
    let runner = start_runner(&app, 2);
    let adds = ok(
        add::parallelize_on(&app, (0..6).map(|i| (i, i))).await,
        "adds",
    );
    ok(adds.results().await, "adds ran");
    let doubles = ok(
        double::parallelize_on(&app, (0..4).map(|i| (i,))).await,
        "doubles",
    );
    ok(doubles.results().await, "doubles ran");
    ok(runner.stop().await, "stop");
    let waiting = ok(add::call_on(&app, 100, 1).await, "waiting");
    let query = InvocationQuery {
        task_ids: vec![TaskId::from(add::task().task_id())],
        ..InvocationQuery::new()
    };
    let preview = ok(app.control().purge_preview(&query, 100).await, "preview");
    assert_eq!(preview.len(), 6, "the queued one is not in the preview");
    let deleted = ok(app.control().purge_matching(&query).await, "purge");
    assert_eq!(deleted, 6);
    let counts = ok(app.inspect().counts(&[]).await, "counts");
    assert_eq!(counts.total(), 5, "4 doubles and the waiting add are left");
    assert_eq!(
        ok(waiting.status().await, "waiting"),
        InvocationStatus::Registered
    );
    for inv in adds.invocations() {
        assert!(matches!(
            inv.status().await,
            Err(PynencError::InvocationNotFound { .. })
        ));
    }
    let runner = start_runner(&app, 2);
    assert_eq!(ok(waiting.result().await, "waiting runs"), 101);
    finish(&app, runner).await;
}

/// Retention: each final status kept its own time, then a count limit.
pub async fn c06_retention(f: &dyn BackendFactory) {
    let app = new_app(f, "c06", &[]);
    let runner = start_runner(&app, 2);
    let good = ok(
        add::parallelize_on(&app, (0..3).map(|i| (i, i))).await,
        "good",
    );
    ok(good.results().await, "good ran");
    let bad = ok(
        fail_with::call_on(&app, "Kept".into(), "longer".into()).await,
        "bad",
    );
    assert!(bad.result().await.is_err());
    ok(runner.stop().await, "stop");
    // queued with no runner up: cancel it
    let gone = ok(add::call_on(&app, 50, 50).await, "to cancel");
    ok(
        app.control().cancel(gone.invocation_id(), false).await,
        "cancel",
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let policy = Retention {
        success: Duration::from_millis(100),
        failed: Duration::from_secs(3600),
        cancelled: Duration::from_millis(100),
        max_final: None,
    };
    let purged = ok(app.orchestrator().auto_purge(&policy).await, "purge");
    assert_eq!(purged, 4, "3 successes and the cancelled one");
    let left = ok(app.state_backend().list_invocation_ids().await, "left");
    assert_eq!(left, vec![*bad.invocation_id()], "FAILED is kept longer");
    assert_eq!(
        ok(bad.status().await, "failed kept"),
        InvocationStatus::Failed
    );
    // a count limit: keep at most 0 final invocations
    let policy = Retention {
        max_final: Some(0),
        ..Retention::all(Duration::from_secs(3600))
    };
    assert_eq!(
        ok(app.orchestrator().auto_purge(&policy).await, "count purge"),
        1
    );
    assert!(ok(app.state_backend().list_invocation_ids().await, "empty").is_empty());
    assert_eq!(check_histories(&app).await, 0);
}

/// Registration scopes: `active` joins a run in progress (the diamond
/// `a → b, c → d(1)` runs `d(1)` once), `cached` returns a recent success.
pub async fn c07_registration_scopes(f: &dyn BackendFactory) {
    let app = new_app(f, "c07", &[]);
    let runner = start_runner(&app, 4);
    let key = unique("diamond");
    let top = ok(diamond_top::call_on(&app, key.clone()).await, "top");
    assert_eq!(ok(top.result().await, "diamond"), 20);
    assert_eq!(crate::tasks::runs_of(&key), 1, "the shared leaf ran once");

    let key = unique("cached");
    let first = ok(cached_leaf::call_on(&app, key.clone(), 1).await, "first");
    assert_eq!(ok(first.result().await, "first"), 2);
    let second = ok(cached_leaf::call_on(&app, key.clone(), 1).await, "second");
    assert!(second.is_reused(), "a recent success is reused");
    assert_eq!(second.invocation_id(), first.invocation_id());
    assert_eq!(ok(second.result().await, "second"), 2);
    assert_eq!(crate::tasks::runs_of(&key), 1);
    let other = ok(
        cached_leaf::call_on(&app, key.clone(), 2).await,
        "other args",
    );
    assert!(!other.is_reused());
    assert_eq!(ok(other.result().await, "other"), 3);
    finish(&app, runner).await;
}

/// A run whose invocation was asked to stop and that ends with a retriable
/// error is not retried: it ends `CANCELLED`, with the error naming who
/// asked (the engine decides this, not the runner).
pub async fn c08_cancel_wins_over_a_retry(f: &dyn BackendFactory) {
    let app = new_app(f, "c08", &[]);
    let inv = ok(always_retry::call_on(&app, unique("c08")).await, "call");
    let runner = pynenc::RunnerId::from("c08-runner");
    let orch = app.orchestrator();
    let started = ok(
        orch.get_invocations_to_start(&runner, 1, None).await,
        "start",
    );
    assert_eq!(started.len(), 1);
    let report = ok(
        app.control()
            .as_actor("ops@c08")
            .cancel(inv.invocation_id(), false)
            .await,
        "cancel",
    );
    assert_eq!(report.requested(), 1, "{report:?}");
    let end = ok(
        orch.finish(
            inv.invocation_id(),
            &runner,
            pynenc::model::RunOutcome::Retry(pynenc::TaskError::retry("again")),
        )
        .await,
        "finish",
    );
    assert_eq!(end, InvocationStatus::Cancelled);
    match inv.result().await {
        Err(PynencError::Cancelled { error, .. }) => {
            assert!(error.message.contains("ops@c08"), "{}", error.message)
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert_eq!(ok(inv.num_retries().await, "retries"), 0);
    assert!(check_histories(&app).await > 0);
}

/// A scheduled call run now: the same invocation becomes `REGISTERED` and
/// runs without waiting for its time; one that is not scheduled is refused
/// naming its status, an unknown id is not found, and nothing changes.
pub async fn c09_run_a_scheduled_call_now(f: &dyn BackendFactory) {
    let app = new_app(f, "c09", &[]);
    let runner = start_runner(&app, 2);
    let hour = std::time::Duration::from_secs(3600);
    let inv = ok(
        add::task().schedule_after_on(&app, hour, (20, 22)).await,
        "schedule",
    );
    assert_eq!(
        ok(inv.status().await, "status"),
        InvocationStatus::Scheduled
    );
    let control = app.control().as_actor("operator:ana");
    ok(
        control.run_scheduled_now(inv.invocation_id()).await,
        "run now",
    );
    assert_eq!(ok(inv.result().await, "result"), 42);
    let history = ok(inv.history().await, "history");
    assert_eq!(history[0].status, InvocationStatus::Scheduled);
    assert_eq!(history[1].status, InvocationStatus::Registered);
    assert_eq!(history[1].actor.as_str(), "operator:ana");
    // again: it is not scheduled any more
    match control.run_scheduled_now(inv.invocation_id()).await {
        Err(OperateError::WrongStatus { status, .. }) => {
            assert_eq!(status, InvocationStatus::Success)
        }
        other => panic!("expected WrongStatus, got {other:?}"),
    }
    let unknown = InvocationId::random();
    assert!(matches!(
        control.run_scheduled_now(&unknown).await,
        Err(OperateError::NotFound(id)) if id == unknown
    ));
    // the store's step refuses a status that moved on too
    let done = *inv.invocation_id();
    let refused = app
        .orchestrator()
        .run_scheduled_now(&done, &RunnerId::from("x"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Transition { .. })),
        "{refused:?}"
    );
    assert_eq!(ok(inv.status().await, "status"), InvocationStatus::Success);
    super::finish(&app, runner).await;
}
