//! The waits of a runner's invocations carried by its steps: a pause that
//! takes the next invocation for the slot it frees, and a resume that
//! travels with the end of the run it waited for and takes that run's slot.

use pynenc::model::{InvocationId, RunOutcome, RunnerId};
use pynenc::store::{EndOutcome, RunEnd, StoreError, WaitChange, WaitOutcome};
use pynenc::InvocationStatus;

use crate::tasks::{self, *};
use crate::{new_app, ok, start_runner, unique, BackendFactory};

use super::finish;

fn paused(outcome: &Result<WaitOutcome, StoreError>) -> Option<bool> {
    match outcome {
        Ok(WaitOutcome::Paused(p)) => Some(*p),
        _ => None,
    }
}

/// 12d. A runner's step carries the pauses and resumes of its waiting
/// invocations after its ends, each checked on its own: a pause that takes
/// the next invocation for its slot when it pauses (and takes none when
/// what it waits for has ended), a resume with the end of the run it waited
/// for (reading that end's result), a resume refused while a waited run is
/// not final, a pause of an unknown invocation refused — nothing written
/// for the refused ones, the others go on.
pub async fn s12d_runner_steps_carry_waits(f: &dyn BackendFactory) {
    let app = new_app(f, "s12d", &[]);
    let orch = app.orchestrator();
    let r = RunnerId::from("runner-r");
    let w = ok(add::call_on(&app, 1, 1).await, "waiter");
    let x = ok(add::call_on(&app, 2, 2).await, "x");
    let q = ok(add::call_on(&app, 5, 5).await, "q");
    let (wid, xid, qid) = (*w.invocation_id(), *x.invocation_id(), *q.invocation_id());
    let started = ok(orch.get_invocations_to_start(&r, 2, None).await, "start");
    let mut ids: Vec<_> = started.iter().map(|s| s.invocation_id).collect();
    ids.sort();
    let mut want = vec![wid, xid];
    want.sort();
    assert_eq!(ids, want, "the waiter and x run");

    // the pause takes the next invocation (q) for the slot it frees
    let pause = |waited: InvocationId, take_next: bool| WaitChange::Pause {
        waiter: wid,
        waited: vec![waited],
        take_next,
    };
    let report = orch
        .runner_step(&r, Vec::new(), vec![pause(xid, true)], 0, Some("host:1"))
        .await;
    assert_eq!(paused(&report.waits[0]), Some(true), "{:?}", report.waits);
    assert_eq!(ok(w.status().await, "w"), InvocationStatus::Paused);
    let next: Vec<_> = report.next.iter().map(|n| n.invocation_id).collect();
    assert_eq!(next, vec![qid], "the paused slot's next invocation");
    let status = ok(orch.get_status(&qid).await, "q");
    assert_eq!(status.status, InvocationStatus::Running);
    assert_eq!(status.owner.as_deref(), Some("runner-r"));

    // x ends and w resumes in the same step, reading x's result
    let end = |id: InvocationId, v: &str| RunEnd::new(id, RunOutcome::Success(v.into()));
    let resume = |waited: InvocationId| WaitChange::Resume {
        waiter: wid,
        waited: vec![waited],
    };
    let report = orch
        .runner_step(&r, vec![end(xid, "4")], vec![resume(xid)], 0, None)
        .await;
    assert!(matches!(
        report.ends[0],
        EndOutcome::Recorded(InvocationStatus::Success)
    ));
    match &report.waits[0] {
        Ok(WaitOutcome::Resumed(outcomes)) => {
            assert_eq!(outcomes.len(), 1);
            assert_eq!(outcomes[0].status, InvocationStatus::Success);
            assert_eq!(outcomes[0].result.as_deref(), Some("4"));
        }
        other => panic!("the resume with x's end: {other:?}"),
    }
    assert_eq!(ok(w.status().await, "w"), InvocationStatus::Resumed);
    assert!(report.next.is_empty(), "a step without pick-ups took work");

    // w waits for q; an end refused in the step (an unknown invocation)
    // leaves q running: the resume is refused, w stays PAUSED; a pause of
    // an unknown invocation is refused too, and nothing else changes
    let report = orch
        .runner_step(&r, Vec::new(), vec![pause(qid, false)], 0, None)
        .await;
    assert_eq!(paused(&report.waits[0]), Some(true), "{:?}", report.waits);
    let unknown = InvocationId::time_ordered();
    let stranger = WaitChange::Pause {
        waiter: unknown,
        waited: vec![qid],
        take_next: true,
    };
    let report = orch
        .runner_step(
            &r,
            vec![end(unknown, "0")],
            vec![resume(qid), stranger],
            0,
            None,
        )
        .await;
    assert!(matches!(report.ends[0], EndOutcome::NotRecorded(_)));
    assert!(
        matches!(&report.waits[0], Err(StoreError::StillWaiting { invocation_id, waited })
            if *invocation_id == wid && *waited == qid),
        "{:?}",
        report.waits[0]
    );
    assert!(
        matches!(&report.waits[1], Err(StoreError::NotFound { .. })),
        "{:?}",
        report.waits[1]
    );
    assert!(report.next.is_empty(), "a refused pause took work");
    assert_eq!(ok(w.status().await, "w"), InvocationStatus::Paused);
    assert_eq!(
        ok(orch.get_status(&qid).await, "q").status,
        InvocationStatus::Running
    );
    // q ends: w resumes with it
    let report = orch
        .runner_step(&r, vec![end(qid, "10")], vec![resume(qid)], 0, None)
        .await;
    match &report.waits[0] {
        Ok(WaitOutcome::Resumed(outcomes)) => {
            assert_eq!(outcomes[0].result.as_deref(), Some("10"))
        }
        other => panic!("the resume with q's end: {other:?}"),
    }

    // a pause whose waited run has ended does not pause, and takes nothing
    let queued = ok(add::call_on(&app, 7, 7).await, "queued");
    let report = orch
        .runner_step(&r, Vec::new(), vec![pause(xid, true)], 0, None)
        .await;
    assert_eq!(paused(&report.waits[0]), Some(false), "{:?}", report.waits);
    assert!(
        report.next.is_empty(),
        "a pause that kept its slot took work"
    );
    assert_eq!(ok(w.status().await, "w"), InvocationStatus::Resumed);
    assert_eq!(
        ok(queued.status().await, "queued"),
        InvocationStatus::Registered
    );
    let history = ok(app.state_backend().get_history(&wid).await, "history");
    let seen: Vec<_> = history.iter().map(|h| h.status).collect();
    assert_eq!(
        seen,
        vec![
            InvocationStatus::Registered,
            InvocationStatus::Pending,
            InvocationStatus::Running,
            InvocationStatus::Paused,
            InvocationStatus::Resumed,
            InvocationStatus::Paused,
            InvocationStatus::Resumed,
        ]
    );
}

/// 12e. A task that waits for one sub-task goes on in the slot of that
/// sub-task's run when it ends, before older queued work: with one slot
/// (and nothing taken ahead) the parent's pause hands its slot to the
/// child, and the child's end hands it back to the parent.
pub async fn s12e_a_waiter_takes_the_slot_of_the_run_it_waited_for(f: &dyn BackendFactory) {
    let app = new_app(f, "s12e", &[("runner.prefetch", 1.into())]);
    let group = unique("handoff");
    let parent = ok(
        parent_then_resumed::call_on(&app, group.clone()).await,
        "parent",
    );
    let mut fillers = Vec::new();
    for i in 0..3 {
        fillers.push(ok(
            filler::call_on(&app, group.clone(), format!("f{i}"), 0).await,
            "filler",
        ));
    }
    let runner = start_runner(&app, 1);
    assert_eq!(ok(parent.result().await, "parent"), "child");
    for fl in &fillers {
        ok(fl.result().await, "filler");
    }
    let order: Vec<String> = tasks::events_of(&group)
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(
        order,
        vec!["parent", "child", "resumed", "f0", "f1", "f2"],
        "the parent goes on in its child's slot before older work"
    );
    finish(&app, runner).await;
}
