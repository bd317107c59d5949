//! Workflows (task option `workflow`): the calls a workflow makes are
//! steps, recorded once; when it runs again, each step gives back what it
//! recorded, and a step that asks for another call than the recorded one
//! fails the workflow.

use std::time::Duration;

use pynenc::model::InvocationQuery;
use pynenc::{InvocationId, InvocationStatus, PynencError, TaskId};
use pynenc_operate::Operate;

use crate::tasks::*;
use crate::{check_histories, new_app, ok, start_runner, BackendFactory};

use super::finish;

/// A workflow interrupted after some steps runs again: the steps made
/// before (a parallel group and a sequence) are not run again, the rest
/// are, and the result is right.
pub async fn w01_workflow_steps_replay(f: &dyn BackendFactory) {
    let app = new_app(f, "w01", &[]);
    let runner = start_runner(&app, 2);
    let key = format!("w01-{}-{}", f.name(), InvocationId::random());
    let (n, stop_after) = (6, 4);
    let wf = ok(
        wf_steps::call_on(&app, key.clone(), n, stop_after).await,
        "workflow",
    );
    let expected: u64 =
        (0..3).map(|g| g * 10).sum::<u64>() + (0..u64::from(n)).map(|i| i * 10).sum::<u64>();
    assert_eq!(ok(wf.result().await, "result"), expected);
    assert_eq!(ok(wf.num_retries().await, "retries"), 1, "it ran twice");
    assert_eq!(runs_of(&format!("{key}/workflow")), 2);
    // every step ran once, though the workflow ran twice
    for step in (0..3)
        .map(|g| format!("{key}/g{g}"))
        .chain((0..n).map(|i| format!("{key}/s{i}")))
    {
        assert_eq!(runs_of(&step), 1, "step {step} ran again");
    }
    // one invocation per step, children of the workflow
    let children = ok(
        app.inspect()
            .list(&InvocationQuery {
                parent: Some(*wf.invocation_id()),
                ..InvocationQuery::new()
            })
            .await,
        "children",
    );
    assert_eq!(children.items.len(), 3 + n as usize, "{:?}", children.items);
    finish(&app, runner).await;
}

/// A workflow whose code asks, at a recorded step, for another call fails
/// with an error naming the step, the recorded call and the one asked for.
pub async fn w02_workflow_non_determinism_fails(f: &dyn BackendFactory) {
    let app = new_app(f, "w02", &[]);
    let runner = start_runner(&app, 2);
    let key = format!("w02-{}-{}", f.name(), InvocationId::random());
    let wf = ok(wf_diverge::call_on(&app, key.clone()).await, "workflow");
    let err = match wf.result().await {
        Err(PynencError::TaskFailed { error, .. }) => error,
        other => panic!("expected the workflow to fail, got {other:?}"),
    };
    assert_eq!(err.kind, "WorkflowNonDeterminismError", "{err:?}");
    for needle in ["step 1", "i=1", "i=2", wf.invocation_id().as_str()] {
        assert!(
            err.message.contains(needle),
            "no {needle} in: {}",
            err.message
        );
    }
    // the recorded step ran once; nothing ran for the call asked the second time
    assert_eq!(runs_of(&format!("{key}/a")), 1);
    finish(&app, runner).await;
}

/// A workflow's sleep is a step: the workflow is paused and its slot freed
/// meanwhile (other work runs on a one-slot runner), it resumes when the
/// step is due, and running again it does not sleep again. Outside a
/// workflow, sleep is refused.
pub async fn w03_workflow_sleep_is_durable(f: &dyn BackendFactory) {
    let app = new_app(f, "w03", &[]);
    match pynenc::workflow::sleep(Duration::from_millis(1)).await {
        Err(PynencError::TaskRouting { message, .. }) => {
            assert!(message.contains("workflow"), "{message}")
        }
        other => panic!("sleep outside a workflow: {other:?}"),
    }
    let runner = start_runner(&app, 1);
    let key = format!("w03-{}-{}", f.name(), InvocationId::random());
    let started = std::time::Instant::now();
    let wf = ok(
        wf_sleepy::call_on(&app, key.clone(), 1500).await,
        "workflow",
    );
    ok(
        wf.wait_for_status(&[InvocationStatus::Paused], Duration::from_secs(20))
            .await,
        "the workflow pauses while it sleeps",
    );
    // the one slot is free: other work runs while the workflow sleeps
    let other = ok(add::call_on(&app, 2, 3).await, "other work");
    assert_eq!(ok(other.result().await, "other work runs"), 5);
    assert!(
        !ok(wf.status().await, "status").is_final(),
        "the other work ran after the workflow ended"
    );
    assert_eq!(ok(wf.result().await, "result"), 30);
    assert!(started.elapsed() >= Duration::from_millis(1500), "it slept");
    assert_eq!(runs_of(&format!("{key}/workflow")), 2);
    assert_eq!(runs_of(&format!("{key}/a")), 1);
    assert_eq!(runs_of(&format!("{key}/b")), 1);
    // one sleep step, run once, though the workflow ran twice
    let sleeps = ok(
        app.inspect()
            .list(&InvocationQuery {
                parent: Some(*wf.invocation_id()),
                task_ids: vec![TaskId::from(pynenc::workflow::SLEEP_TASK_ID)],
                ..InvocationQuery::new()
            })
            .await,
        "sleeps",
    );
    assert_eq!(sleeps.items.len(), 1, "{:?}", sleeps.items);
    assert_eq!(sleeps.items[0].status, InvocationStatus::Success);
    finish(&app, runner).await;
}

/// The time, random numbers and UUIDs a workflow takes are the same on
/// every run; its data outlives a run; outside a workflow they are refused.
pub async fn w04_workflow_values_and_data(f: &dyn BackendFactory) {
    let app = new_app(f, "w04", &[]);
    assert!(matches!(
        pynenc::workflow::set_data("k", &1).await,
        Err(PynencError::TaskRouting { .. })
    ));
    assert!(pynenc::workflow::random().await.is_err());
    let runner = start_runner(&app, 2);
    let key = format!("w04-{}-{}", f.name(), InvocationId::random());
    let wf = ok(wf_values::call_on(&app, key.clone()).await, "workflow");
    let text = ok(wf.result().await, "result");
    type Taken = (u64, f64, String);
    let (micros, random, id, kept, never): (u64, f64, String, Option<Taken>, Option<u32>) =
        ok(serde_json::from_str(&text), "decode");
    assert_eq!(runs_of(&format!("{key}/workflow")), 2);
    assert_eq!(
        kept,
        Some((micros, random, id.clone())),
        "the second run took what the first took"
    );
    assert!((0.0..1.0).contains(&random), "{random}");
    assert!(uuid_like(&id), "{id}");
    assert_eq!(never, None);
    ok(runner.stop().await, "stop");
    assert!(check_histories(&app).await > 0);
    // the data goes with the workflow
    let wf_id = *wf.invocation_id();
    assert!(ok(
        app.workflow_data()
            .workflow_data(&wf_id, "data:first")
            .await,
        "data"
    )
    .is_some());
    ok(
        app.control()
            .purge_matching(&InvocationQuery {
                task_ids: vec![TaskId::from(wf_values::task().task_id())],
                ..InvocationQuery::new()
            })
            .await,
        "purge",
    );
    assert_eq!(
        ok(
            app.workflow_data()
                .workflow_data(&wf_id, "data:first")
                .await,
            "purged"
        ),
        None
    );
    assert!(matches!(
        app.workflow_data()
            .put_workflow_data(&wf_id, "k", "1", false)
            .await,
        Err(pynenc::store::StoreError::NotFound { .. })
    ));
}

/// Whether `s` reads as a hyphenated UUID.
fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

/// A workflow that calls a workflow gets the child's result back when it
/// runs again (the child does not run again); cancelling a workflow with
/// its children stops the step it waits on.
pub async fn w05_child_workflows_and_cancel(f: &dyn BackendFactory) {
    let app = new_app(f, "w05", &[]);
    let runner = start_runner(&app, 4);
    let key = format!("w05-{}-{}", f.name(), InvocationId::random());
    let parent = ok(wf_parent::call_on(&app, key.clone()).await, "parent");
    assert_eq!(ok(parent.result().await, "result"), 90);
    assert_eq!(
        runs_of(&format!("{key}/workflow")),
        2,
        "the parent ran twice"
    );
    assert_eq!(
        runs_of(&format!("{key}/child/workflow")),
        1,
        "the child workflow ran once"
    );
    assert_eq!(runs_of(&format!("{key}/last")), 1);

    let slow_key = format!("{key}/slow");
    let slow = ok(
        wf_slow::call_on(&app, slow_key.clone(), 60_000).await,
        "slow",
    );
    let step = {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let children = ok(
                app.inspect()
                    .list(&InvocationQuery {
                        parent: Some(*slow.invocation_id()),
                        statuses: vec![InvocationStatus::Running],
                        ..InvocationQuery::new()
                    })
                    .await,
                "children",
            );
            if let Some(c) = children.items.first() {
                break c.invocation_id;
            }
            assert!(std::time::Instant::now() < deadline, "the step never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    ok(
        app.control().cancel(slow.invocation_id(), true).await,
        "cancel",
    );
    assert!(matches!(
        slow.result().await,
        Err(PynencError::Cancelled { .. })
    ));
    let step = ok(app.invocation(&step).await, "step");
    ok(step.wait().await, "the step ends");
    assert_eq!(
        ok(step.status().await, "status"),
        InvocationStatus::Cancelled
    );
    finish(&app, runner).await;
}

/// Signals: one sent before the workflow waits is there when it does; one
/// sent while it waits (paused, its slot free) ends the wait; running again
/// it gets both back at once; a name is received once; a signal to an
/// unknown workflow is an error.
pub async fn w06_workflow_signals(f: &dyn BackendFactory) {
    let app = new_app(f, "w06", &[]);
    let key = format!("w06-{}-{}", f.name(), InvocationId::random());
    let wf = ok(wf_signals::call_on(&app, key.clone()).await, "workflow");
    let id = *wf.invocation_id();
    // before any runner: the workflow has not started waiting
    assert!(ok(app.signal(&id, "early", "e").await, "early signal"));
    let runner = start_runner(&app, 1);
    ok(
        wf.wait_for_status(&[InvocationStatus::Paused], Duration::from_secs(20))
            .await,
        "the workflow waits for the late signal",
    );
    // its slot is free meanwhile
    assert_eq!(
        ok(
            ok(add::call_on(&app, 1, 1).await, "other").result().await,
            "other runs"
        ),
        2
    );
    assert!(ok(app.signal(&id, "late", 7u32).await, "late signal"));
    assert_eq!(ok(wf.result().await, "result"), format!("e-7@{id}"));
    assert!(pynenc::workflow::id().is_err(), "no workflow here");
    assert_eq!(runs_of(&format!("{key}/workflow")), 2);
    // a name is received once
    assert!(!ok(app.signal(&id, "late", 8u32).await, "again"));
    assert!(ok(app.signal(&id, "late", 7u32).await, "the same again"));
    match app.signal(&InvocationId::random(), "early", 1).await {
        Err(PynencError::InvocationNotFound { .. }) => {}
        other => panic!("a signal to an unknown workflow: {other:?}"),
    }
    finish(&app, runner).await;
}
