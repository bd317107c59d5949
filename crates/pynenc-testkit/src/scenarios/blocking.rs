//! Blocking control (waiting on sub-tasks without deadlock) and cycle control.

use pynenc::{InvocationStatus, PynencError};
use serde_json::json;

use crate::tasks::{self, *};
use crate::{new_app, ok, start_runner, statuses, unique, BackendFactory};

use super::finish;

/// 4. A task waits on a sub-task's result without deadlock, with one slot.
pub async fn s04_wait_on_subtask_single_slot(f: &dyn BackendFactory) {
    let app = new_app(f, "s04", &[]);
    let runner = start_runner(&app, 1);
    let inv = ok(add_via_child::call_on(&app, 20, 22).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 42);
    let st = statuses(&inv).await;
    assert!(
        st.contains(&InvocationStatus::Paused),
        "the parent pauses while waiting: {st:?}"
    );
    assert!(st.contains(&InvocationStatus::Resumed), "{st:?}");
    finish(&app, runner).await;
}

/// 4b. A sync task body calls and waits on a sub-task.
pub async fn s04b_sync_task_waits_on_subtask(f: &dyn BackendFactory) {
    let app = new_app(f, "s04b", &[]);
    let runner = start_runner(&app, 1);
    let inv = ok(add_via_child_sync::call_on(&app, 1, 2).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 3);
    finish(&app, runner).await;
}

/// 5. A chain 50 deep finishes with a single-slot runner.
pub async fn s05_chain_deeper_than_slots(f: &dyn BackendFactory) {
    let app = new_app(f, "s05", &[]);
    let runner = start_runner(&app, 1);
    let inv = ok(chain::call_on(&app, 50).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 50);
    let ids = ok(app.state_backend().list_invocation_ids().await, "list");
    assert_eq!(ids.len(), 51);
    finish(&app, runner).await;
}

/// Routes `parent_of_child` and then five older-than-its-child fillers,
/// runs them on `slots` slots and returns the order they ran in.
async fn parent_then_fillers(
    app: &pynenc::Pynenc,
    prefix: &str,
    slots: usize,
) -> (
    Vec<String>,
    pynenc::Invocation<String>,
    pynenc::SpawnedRunner,
) {
    let group = unique(prefix);
    let parent = ok(parent_of_child::call_on(app, group.clone()).await, "parent");
    let mut fillers = Vec::new();
    for i in 0..5 {
        fillers.push(ok(
            filler::call_on(app, group.clone(), format!("f{i}"), 20).await,
            "filler",
        ));
    }
    let runner = start_runner(app, slots);
    assert_eq!(ok(parent.result().await, "parent"), "child");
    for fl in &fillers {
        ok(fl.result().await, "filler");
    }
    let order = tasks::events_of(&group)
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    (order, parent, runner)
}

/// 12. Invocations waited on are picked before older queued work; a waiting invocation holds no slot.
pub async fn s12_blocking_control_priority(f: &dyn BackendFactory) {
    let app = new_app(f, "s12", &[]);
    let (order, _, runner) = parent_then_fillers(&app, "block", 1).await;
    assert_eq!(
        order.first().map(String::as_str),
        Some("parent"),
        "{order:?}"
    );
    assert_eq!(
        order.get(1).map(String::as_str),
        Some("child"),
        "the waited child runs before older fillers: {order:?}"
    );
    finish(&app, runner).await;
}

/// 12b. With `orchestrator.blocking_control = false` a waiting parent keeps
/// running (never PAUSED) and its child waits its turn behind older work.
pub async fn s12b_blocking_control_off(f: &dyn BackendFactory) {
    let app = new_app(
        f,
        "s12b",
        &[("orchestrator.blocking_control", serde_json::json!(false))],
    );
    let (order, parent, runner) = parent_then_fillers(&app, "noblock", 2).await;
    // parent and f0 start together on the two slots; the child comes last
    assert_eq!(order.len(), 7, "{order:?}");
    assert_eq!(
        order.last().map(String::as_str),
        Some("child"),
        "without blocking control the child is not picked first: {order:?}"
    );
    let st = statuses(&parent).await;
    assert!(!st.contains(&InvocationStatus::Paused), "{st:?}");
    finish(&app, runner).await;
}

fn assert_cycle(err: PynencError, names: &[&str]) {
    match &err {
        PynencError::TaskFailed { error, .. } => {
            assert_eq!(error.kind, "CycleDetectedError", "{}", error.message);
            for n in names {
                assert!(
                    error.message.contains(n),
                    "'{}' does not name {n}",
                    error.message
                );
            }
            // readable: the calls by task and arguments, not 64-digit hashes
            assert!(
                error.message.contains("(x=1)") || error.message.contains("(x=3)"),
                "{}",
                error.message
            );
            assert!(error.message.len() < 600, "{}", error.message);
        }
        other => panic!("expected the cycle error to fail the task, got {other}"),
    }
    // the structure crosses the task boundary: the calls, by task
    let calls = err.cycle().expect("the calls of the cycle");
    assert!(calls.len() >= 2, "{calls:?}");
    assert_eq!(
        calls.first().map(|c| &c.task_id),
        calls.last().map(|c| &c.task_id)
    );
    for n in names {
        assert!(
            calls.iter().any(|c| c.task_id == *n),
            "{n} not in {calls:?}"
        );
    }
    // every call of the cycle is named with its arguments, not by a hash
    assert!(calls.iter().all(|c| c.arguments.is_some()), "{calls:?}");
}

/// 11. Cycles raise `CycleDetectedError` naming the calls; recursion on other arguments does not.
pub async fn s11_cycle_detection(f: &dyn BackendFactory) {
    let app = new_app(f, "s11", &[]);
    let runner = start_runner(&app, 4);
    let a = ok(cycle_a::call_on(&app, 1).await, "a");
    let err = a.result().await.expect_err("a cycle must fail");
    assert_cycle(
        err,
        &[cycle_a::DEFINITION.task_id, cycle_b::DEFINITION.task_id],
    );
    let s = ok(self_call::call_on(&app, 3).await, "self");
    let err = s.result().await.expect_err("a self call must fail");
    assert_cycle(err, &[self_call::DEFINITION.task_id]);
    let three = ok(three_a::call_on(&app, 1).await, "three");
    let err = three
        .result()
        .await
        .expect_err("a cycle of three must fail");
    assert_cycle(
        err,
        &[
            three_a::DEFINITION.task_id,
            three_b::DEFINITION.task_id,
            three_c::DEFINITION.task_id,
        ],
    );
    let fib8 = ok(fib::call_on(&app, 8).await, "fib");
    assert_eq!(ok(fib8.result().await, "fib"), 21);
    finish(&app, runner).await;
}

/// 11b. Dev mode has cycle control too: a cycle of three and a self-call
/// raise `CycleDetectedError` naming the calls instead of overflowing the
/// stack; recursion on other arguments runs.
pub async fn s11b_dev_mode_cycle_control(f: &dyn BackendFactory) {
    let app = new_app(f, "s11b", &[("dev_mode_force_sync_tasks", json!(true))]);
    let three = ok(three_a::call_on(&app, 1).await, "three");
    let err = three
        .result()
        .await
        .expect_err("a cycle of three must fail");
    assert_cycle(
        err,
        &[
            three_a::DEFINITION.task_id,
            three_b::DEFINITION.task_id,
            three_c::DEFINITION.task_id,
        ],
    );
    let own = ok(self_call::call_on(&app, 3).await, "self");
    let err = own.result().await.expect_err("a self call must fail");
    assert_cycle(err, &[self_call::DEFINITION.task_id]);
    let fib8 = ok(fib::call_on(&app, 8).await, "fib");
    assert_eq!(ok(fib8.result().await, "fib"), 21);
    // nothing went through the orchestrator
    assert!(ok(app.state_backend().list_invocation_ids().await, "list").is_empty());
}

/// 12c. A waiting task's waits and its pause are one step: refused as a
/// whole (nothing recorded), and skipped when what it waits on has ended;
/// its resume and the read of the outcomes are one step too.
pub async fn s12c_pause_for_results_is_one_step(f: &dyn BackendFactory) {
    use pynenc::RunnerId;
    let app = new_app(f, "s12c", &[]);
    let orch = app.orchestrator();
    let waiter = ok(add::call_on(&app, 1, 1).await, "waiter");
    let a = ok(add::call_on(&app, 2, 2).await, "a");
    let b = ok(add::call_on(&app, 3, 3).await, "b");
    let (w, ids) = (
        *waiter.invocation_id(),
        [*a.invocation_id(), *b.invocation_id()],
    );
    let (r, other) = (RunnerId::from("runner-r"), RunnerId::from("runner-x"));
    let started = ok(orch.get_invocations_to_start(&r, 1, None).await, "start");
    assert_eq!(started.len(), 1);
    assert_eq!(
        started[0].invocation_id, w,
        "the waiter routed first runs first"
    );

    // another runner cannot pause it: refused, and no wait recorded
    let refused = orch.pause_for_results(&w, &other, &ids).await;
    assert!(refused.is_err(), "{refused:?}");
    let graph = ok(app.queries().wait_graph(&w).await, "graph");
    assert!(graph.waiting_on.is_empty(), "{graph:?}");
    // an unknown waited id: not found, nothing recorded, not paused
    let unknown = pynenc::InvocationId::time_ordered();
    assert!(orch
        .pause_for_results(&w, &r, &[ids[0], unknown])
        .await
        .is_err());
    assert_eq!(
        ok(waiter.status().await, "status"),
        InvocationStatus::Running
    );
    assert!(ok(app.queries().wait_graph(&w).await, "graph")
        .waiting_on
        .is_empty());

    // its runner: the waits and PAUSED together
    assert!(ok(orch.pause_for_results(&w, &r, &ids).await, "pause"));
    assert_eq!(
        ok(waiter.status().await, "status"),
        InvocationStatus::Paused
    );
    let mut waiting = ok(app.queries().wait_graph(&w).await, "graph").waiting_on;
    waiting.sort();
    let mut want = ids.to_vec();
    want.sort();
    assert_eq!(waiting, want);

    // they end; it resumes and reads their outcomes in one step (an
    // unknown id: refused, still PAUSED)
    let runner = start_runner(&app, 2);
    ok(a.result().await, "a");
    ok(b.result().await, "b");
    runner.stop().await.ok();
    assert!(orch
        .resume_with_outcomes(&w, &r, &[ids[0], unknown])
        .await
        .is_err());
    assert_eq!(
        ok(waiter.status().await, "status"),
        InvocationStatus::Paused
    );
    let outcomes = ok(orch.resume_with_outcomes(&w, &r, &ids).await, "resume");
    assert_eq!(
        ok(waiter.status().await, "status"),
        InvocationStatus::Resumed
    );
    let results: Vec<Option<&str>> = outcomes.iter().map(|o| o.result.as_deref()).collect();
    assert_eq!(results, vec![Some("4"), Some("6")]);
    assert!(outcomes
        .iter()
        .all(|o| o.status == InvocationStatus::Success));
    // once what it waits on has ended, nothing is recorded and it is not paused
    assert!(!ok(
        orch.pause_for_results(&w, &r, &ids).await,
        "nothing open"
    ));
    assert_eq!(
        ok(waiter.status().await, "status"),
        InvocationStatus::Resumed
    );
}
