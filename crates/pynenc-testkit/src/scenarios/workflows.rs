//! Workflows (task option `workflow`): the calls a workflow makes are
//! steps, recorded once; when it runs again, each step gives back what it
//! recorded, and a step that asks for another call than the recorded one
//! fails the workflow.

use std::time::Duration;

use pynenc::model::InvocationQuery;
use pynenc::{InvocationId, InvocationStatus, PynencError, TaskId};
use pynenc_operate::Operate;

use crate::tasks::*;
use crate::{new_app, ok, start_runner, BackendFactory};

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
