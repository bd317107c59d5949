//! The behaviour scenarios, one function each, written against the public
//! API only. Numbers follow the design's list.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use pynenc::model::{ConcurrencySpec, RouteRequest};
use pynenc::{Arguments, Call, InvocationId, InvocationStatus, PynencError, RunnerId};
use serde_json::json;

use crate::tasks::{self, *};
use crate::{
    assert_add_works, check_histories, eventually, expect_task_failed, new_app, ok, start_runner,
    statuses, unique, wait_for_status, BackendFactory,
};

async fn finish(app: &pynenc::Pynenc, runner: pynenc::SpawnedRunner) {
    ok(runner.stop().await, "stopping the runner");
    let checked = check_histories(app).await;
    assert!(checked > 0, "the scenario created no invocation");
}

/// 1. A call on a running runner returns its result; argument order does not change `call_id`.
pub async fn s01_call_returns_result_and_call_id_ignores_order(f: &dyn BackendFactory) {
    let app = new_app(f, "s01", &[]);
    let runner = start_runner(&app, 4);
    let inv = ok(add::call_on(&app, 2, 3).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 5);
    assert_eq!(ok(inv.status().await, "status"), InvocationStatus::Success);
    let ser = app.serializer();
    let a = ok(
        Arguments::new()
            .with(ser, "x", &2)
            .and_then(|a| a.with(ser, "y", &3)),
        "args",
    );
    let b = ok(
        Arguments::new()
            .with(ser, "y", &3)
            .and_then(|a| a.with(ser, "x", &2)),
        "args",
    );
    let inv_a = ok(add::task().call_on(&app, a).await, "call a");
    let inv_b = ok(add::task().call_on(&app, b).await, "call b");
    let inv_named = ok(
        add::task().call_on(&app, add::Params { y: 3, x: 2 }).await,
        "named",
    );
    assert_eq!(inv_a.call_id(), inv.call_id());
    assert_eq!(inv_b.call_id(), inv.call_id());
    assert_eq!(inv_named.call_id(), inv.call_id());
    assert_ne!(
        inv_a.invocation_id(),
        inv_b.invocation_id(),
        "each call is a new invocation"
    );
    assert_eq!(ok(inv_named.result().await, "named result"), 5);
    // zero-argument task and the JSON round trip of an invocation handle
    let c = ok(constant::call_on(&app).await, "constant");
    assert_eq!(ok(c.result().await, "constant"), 7);
    let json = ok(inv.to_json(), "to_json");
    let back = ok(
        pynenc::Invocation::<i64>::from_json(&app, &json).await,
        "from_json",
    );
    assert_eq!(back.invocation_id(), inv.invocation_id());
    assert_eq!(ok(back.result().await, "result"), 5);
    finish(&app, runner).await;
}

/// 1b. A sync task body runs on a blocking thread.
pub async fn s01b_sync_task_body(f: &dyn BackendFactory) {
    let app = new_app(f, "s01b", &[]);
    let runner = start_runner(&app, 2);
    let inv = ok(add_sync::call_on(&app, 40, 2).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 42);
    finish(&app, runner).await;
}

/// 2. A retriable error once with `max_retries = 2` succeeds and sees one retry.
pub async fn s02_retry_then_success(f: &dyn BackendFactory) {
    let app = new_app(f, "s02", &[]);
    let runner = start_runner(&app, 2);
    let key = unique("flaky");
    let inv = ok(flaky::call_on(&app, key.clone(), 1).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 2, "second run succeeds");
    assert_eq!(ok(inv.num_retries().await, "retries"), 1);
    let st = statuses(&inv).await;
    assert_eq!(
        st.iter().filter(|s| **s == InvocationStatus::Retry).count(),
        1,
        "{st:?}"
    );
    assert_eq!(
        st.iter()
            .filter(|s| **s == InvocationStatus::Running)
            .count(),
        2,
        "{st:?}"
    );
    finish(&app, runner).await;
}

/// 2b. Past `max_retries` the invocation ends FAILED.
pub async fn s02b_retries_exhausted_fail(f: &dyn BackendFactory) {
    let app = new_app(f, "s02b", &[]);
    let runner = start_runner(&app, 2);
    let key = unique("flaky");
    let inv = ok(flaky::call_on(&app, key.clone(), 10).await, "call");
    let err = inv.result().await.expect_err("must fail");
    match &err {
        PynencError::TaskFailed { error, .. } => assert_eq!(error.kind, "Flaky"),
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(ok(inv.num_retries().await, "retries"), 2);
    assert_eq!(tasks::runs_of(&key), 3, "one run plus two retries");
    assert_eq!(ok(inv.status().await, "status"), InvocationStatus::Failed);
    // the retry error always retries
    let key2 = unique("retry");
    let inv2 = ok(always_retry::call_on(&app, key2.clone()).await, "call");
    let err2 = inv2.result().await.expect_err("must fail");
    assert!(
        matches!(err2, PynencError::TaskFailed { ref error, .. } if error.is_retry()),
        "{err2}"
    );
    assert_eq!(tasks::runs_of(&key2), 3);
    finish(&app, runner).await;
}

/// 3. A non-retriable error comes back with its kind and message.
pub async fn s03_error_kind_and_message(f: &dyn BackendFactory) {
    let app = new_app(f, "s03", &[]);
    let runner = start_runner(&app, 2);
    let inv = ok(
        fail_with::call_on(&app, "ValueError".into(), "x must be positive".into()).await,
        "call",
    );
    match inv.result().await {
        Err(PynencError::TaskFailed {
            task_id,
            invocation_id,
            error,
        }) => {
            assert_eq!(error.kind, "ValueError");
            assert_eq!(error.message, "x must be positive");
            assert_eq!(task_id, fail_with::DEFINITION.task_id);
            assert_eq!(invocation_id, *inv.invocation_id());
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    assert_eq!(ok(inv.num_retries().await, "retries"), 0, "not retriable");
    finish(&app, runner).await;
}

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

/// 6. `parallelize` takes tuples, named arguments and `Arguments`, returns results in order, and batches routing.
pub async fn s06_parallelize_forms_order_and_batches(f: &dyn BackendFactory) {
    let app = new_app(f, "s06", &[]);
    let runner = start_runner(&app, 4);
    let tuples = ok(
        add::parallelize_on(&app, (0..30).map(|i| (i, 100))).await,
        "tuples",
    );
    let values = ok(tuples.results().await, "results");
    assert_eq!(values, (0..30).map(|i| i + 100).collect::<Vec<_>>());
    let named = ok(
        add::parallelize_on(&app, (0..5).map(|i| add::Params { x: i, y: -i })).await,
        "named",
    );
    assert_eq!(ok(named.results().await, "results"), vec![0; 5]);
    let ser = app.serializer();
    let raw: Vec<Arguments> = (0..5)
        .map(|i| {
            ok(
                Arguments::new()
                    .with(ser, "y", &i)
                    .and_then(|a| a.with(ser, "x", &1)),
                "args",
            )
        })
        .collect();
    let raw_group = ok(add::parallelize_on(&app, raw).await, "arguments");
    assert_eq!(
        ok(raw_group.results().await, "results"),
        vec![1, 2, 3, 4, 5]
    );
    // results as they complete
    let mut seen: Vec<(usize, i64)> = tuples
        .stream()
        .map(|(i, r)| (i, ok(r, "streamed")))
        .collect()
        .await;
    seen.sort();
    assert_eq!(seen.len(), 30);
    assert!(seen.iter().all(|(i, v)| *v == *i as i64 + 100));
    // batches of parallel_batch_size = 7: invocations of one batch are created in one step
    let doubled = ok(
        double::parallelize_on(&app, (0..20).map(|i| (i,))).await,
        "double",
    );
    assert_eq!(
        ok(doubled.results().await, "results"),
        (0..20).map(|i| i * 2).collect::<Vec<_>>()
    );
    let mut created = Vec::new();
    for inv in doubled.invocations() {
        let rec = ok(
            app.state_backend()
                .get_invocation(inv.invocation_id())
                .await,
            "record",
        );
        created.push(rec.created_at);
    }
    for chunk in created.chunks(7) {
        assert!(
            chunk.iter().all(|c| *c == chunk[0]),
            "one batch is routed in one step: {created:?}"
        );
    }
    finish(&app, runner).await;
}

/// 6b. A task fans out with `parallelize` and sums the results.
pub async fn s06b_fan_out_inside_task(f: &dyn BackendFactory) {
    let app = new_app(f, "s06b", &[]);
    let runner = start_runner(&app, 2);
    let inv = ok(fan_out::call_on(&app, 200).await, "call");
    assert_eq!(
        ok(inv.result().await, "result"),
        (0..200).map(|i| 2 * i).sum::<i64>()
    );
    finish(&app, runner).await;
}

/// 7. Exactly one RUNNING in the history of every successful invocation.
pub async fn s07_exactly_one_running(f: &dyn BackendFactory) {
    let app = new_app(f, "s07", &[]);
    let runner = start_runner(&app, 8);
    let group = ok(
        add::parallelize_on(&app, (0..300).map(|i| (i, 1))).await,
        "group",
    );
    ok(group.results().await, "results");
    for inv in group.invocations() {
        let st = statuses(inv).await;
        assert_eq!(
            st.iter()
                .filter(|s| **s == InvocationStatus::Running)
                .count(),
            1,
            "{st:?}"
        );
        assert_eq!(st.first(), Some(&InvocationStatus::Registered));
        assert_eq!(st.last(), Some(&InvocationStatus::Success));
    }
    finish(&app, runner).await;
}

fn no_overlap(events: &[(String, i64)]) {
    let mut open = 0;
    for (label, _) in events {
        if label.starts_with("start:") {
            open += 1;
            assert!(open <= 1, "two runs overlapped: {events:?}");
        } else {
            open -= 1;
        }
    }
}

/// 8. Running concurrency TASK: with reroute the second starts after the first finishes.
pub async fn s08_running_concurrency_task_reroute(f: &dyn BackendFactory) {
    let app = new_app(f, "s08", &[]);
    let runner = start_runner(&app, 4);
    let group = unique("excl");
    let first = ok(
        exclusive::call_on(&app, group.clone(), "a".into(), 200).await,
        "a",
    );
    let second = ok(
        exclusive::call_on(&app, group.clone(), "b".into(), 10).await,
        "b",
    );
    assert_eq!(ok(first.result().await, "a"), "a");
    assert_eq!(ok(second.result().await, "b"), "b");
    let ev = tasks::events_of(&group);
    assert_eq!(ev.len(), 4, "{ev:?}");
    no_overlap(&ev);
    let st = statuses(&second).await;
    assert!(
        st.contains(&InvocationStatus::ConcurrencyControlled),
        "{st:?}"
    );
    assert!(st.contains(&InvocationStatus::Rerouted), "{st:?}");
    finish(&app, runner).await;
}

/// 8b. Running concurrency TASK without reroute ends CONCURRENCY_CONTROLLED_FINAL.
pub async fn s08b_running_concurrency_task_final(f: &dyn BackendFactory) {
    let app = new_app(f, "s08b", &[]);
    let runner = start_runner(&app, 4);
    let group = unique("final");
    let first = ok(
        exclusive_final::call_on(&app, group.clone(), "a".into(), 300).await,
        "a",
    );
    let running = wait_for_status(&first, InvocationStatus::Running, Duration::from_secs(10)).await;
    assert!(running, "the first invocation never ran");
    let second = ok(
        exclusive_final::call_on(&app, group.clone(), "b".into(), 10).await,
        "b",
    );
    match second.result().await {
        Err(PynencError::NoResult { status, .. }) => {
            assert_eq!(status, InvocationStatus::ConcurrencyControlledFinal)
        }
        other => panic!("expected NoResult, got {other:?}"),
    }
    assert_eq!(ok(first.result().await, "a"), "a");
    assert_eq!(tasks::events_of(&group).len(), 2, "b never ran");
    finish(&app, runner).await;
}

/// 9. Running concurrency KEYS uses only `key_arguments`.
pub async fn s09_running_concurrency_keys(f: &dyn BackendFactory) {
    let app = new_app(f, "s09", &[]);
    let runner = start_runner(&app, 4);
    let same = unique("same");
    let a = ok(
        keyed::call_on(&app, same.clone(), "k1".into(), "a".into(), 150).await,
        "a",
    );
    let b = ok(
        keyed::call_on(&app, same.clone(), "k1".into(), "b".into(), 150).await,
        "b",
    );
    ok(a.result().await, "a");
    ok(b.result().await, "b");
    no_overlap(&tasks::events_of(&same));
    // different keys run side by side
    let diff = unique("diff");
    let c = ok(
        keyed::call_on(&app, diff.clone(), "k1".into(), "c".into(), 300).await,
        "c",
    );
    let d = ok(
        keyed::call_on(&app, diff.clone(), "k2".into(), "d".into(), 300).await,
        "d",
    );
    ok(c.result().await, "c");
    ok(d.result().await, "d");
    let ev = tasks::events_of(&diff);
    let starts: Vec<i64> = ev
        .iter()
        .filter(|(l, _)| l.starts_with("start"))
        .map(|(_, t)| *t)
        .collect();
    let ends: Vec<i64> = ev
        .iter()
        .filter(|(l, _)| l.starts_with("end"))
        .map(|(_, t)| *t)
        .collect();
    assert!(
        starts.iter().max() < ends.iter().min(),
        "different keys overlap: {ev:?}"
    );
    finish(&app, runner).await;
}

/// 10. Registration concurrency TASK / ARGUMENTS / KEYS.
pub async fn s10_registration_concurrency(f: &dyn BackendFactory) {
    let app = new_app(f, "s10", &[]);
    // no runner yet: invocations stay REGISTERED
    let t1 = ok(reg_task::call_on(&app, 1).await, "t1");
    let t2 = ok(reg_task::call_on(&app, 2).await, "t2");
    assert!(!t1.is_reused());
    assert!(
        t2.is_reused(),
        "task concurrency reuses the registered invocation"
    );
    assert_eq!(t1.invocation_id(), t2.invocation_id());
    let diff = t2.reuse_diff().unwrap_or_default();
    assert!(diff.contains("x: existing 1 != new 2"), "{diff}");

    let a1 = ok(reg_args::call_on(&app, 1).await, "a1");
    let a2 = ok(reg_args::call_on(&app, 1).await, "a2");
    let a3 = ok(reg_args::call_on(&app, 2).await, "a3");
    assert_eq!(a1.invocation_id(), a2.invocation_id());
    assert!(a2.is_reused() && a2.reuse_diff().is_none());
    assert_ne!(
        a1.invocation_id(),
        a3.invocation_id(),
        "other arguments, new invocation"
    );

    let k1 = ok(reg_keys_raise::call_on(&app, "k".into(), 1).await, "k1");
    let k2 = ok(reg_keys_raise::call_on(&app, "k".into(), 1).await, "k2");
    assert_eq!(k1.invocation_id(), k2.invocation_id());
    match reg_keys_raise::call_on(&app, "k".into(), 2).await {
        Err(e @ PynencError::InvocationConcurrencyWithDifferentArguments { .. }) => {
            let text = e.to_string();
            assert!(text.contains(k1.invocation_id().as_str()), "{text}");
            assert!(text.contains("v: existing 1 != new 2"), "{text}");
        }
        other => panic!("expected a concurrency error, got {other:?}"),
    }
    let other_key = ok(
        reg_keys_raise::call_on(&app, "other".into(), 2).await,
        "other key",
    );
    assert_ne!(other_key.invocation_id(), k1.invocation_id());

    let r1 = ok(reg_keys_reuse::call_on(&app, "k".into(), 1).await, "r1");
    let r2 = ok(reg_keys_reuse::call_on(&app, "k".into(), 5).await, "r2");
    assert_eq!(r1.invocation_id(), r2.invocation_id());
    assert!(r2
        .reuse_diff()
        .unwrap_or_default()
        .contains("v: existing 1 != new 5"));

    // once they run, new calls register new invocations
    let runner = start_runner(&app, 4);
    assert_eq!(
        ok(t2.result().await, "t"),
        1,
        "the reused invocation runs with its own arguments"
    );
    assert_eq!(ok(r2.result().await, "r"), 1);
    ok(a3.result().await, "a3");
    ok(k1.result().await, "k1");
    ok(other_key.result().await, "other");
    let t3 = ok(reg_task::call_on(&app, 3).await, "t3");
    assert_ne!(t3.invocation_id(), t1.invocation_id());
    assert_eq!(ok(t3.result().await, "t3"), 3);
    finish(&app, runner).await;
}

fn assert_cycle(err: PynencError, names: &[&str]) {
    match err {
        PynencError::TaskFailed { error, .. } => {
            assert_eq!(error.kind, "CycleDetectedError", "{}", error.message);
            for n in names {
                assert!(
                    error.message.contains(n),
                    "'{}' does not name {n}",
                    error.message
                );
            }
        }
        other => panic!("expected the cycle error to fail the task, got {other}"),
    }
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
    let fib8 = ok(fib::call_on(&app, 8).await, "fib");
    assert_eq!(ok(fib8.result().await, "fib"), 21);
    finish(&app, runner).await;
}

/// 12. Invocations waited on are picked before older queued work; a waiting invocation holds no slot.
pub async fn s12_blocking_control_priority(f: &dyn BackendFactory) {
    let app = new_app(f, "s12", &[]);
    let group = unique("block");
    let parent = ok(
        parent_of_child::call_on(&app, group.clone()).await,
        "parent",
    );
    let mut fillers = Vec::new();
    for i in 0..5 {
        fillers.push(ok(
            filler::call_on(&app, group.clone(), format!("f{i}"), 20).await,
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

/// 13. Stopping a runner mid-task: RUNNING → KILLED → REROUTED, then it runs again.
pub async fn s13_stop_runner_mid_task(f: &dyn BackendFactory) {
    let app = new_app(f, "s13", &[("runner.shutdown_grace_seconds", json!(0.0))]);
    let runner = start_runner(&app, 2);
    let key = unique("sleep");
    let inv = ok(sleeper::call_on(&app, key.clone(), 400).await, "call");
    let running = wait_for_status(&inv, InvocationStatus::Running, Duration::from_secs(10)).await;
    assert!(running, "never ran");
    ok(runner.stop().await, "stop");
    let st = statuses(&inv).await;
    assert_eq!(
        &st[st.len() - 3..],
        &[
            InvocationStatus::Running,
            InvocationStatus::Killed,
            InvocationStatus::Rerouted
        ],
        "{st:?}"
    );
    let runner2 = start_runner(&app, 2);
    assert_eq!(ok(inv.result().await, "result"), 400);
    assert_eq!(tasks::runs_of(&key), 2);
    finish(&app, runner2).await;
}

/// 14. A 20 MB argument round-trips.
pub async fn s14_large_argument(f: &dyn BackendFactory) {
    let app = new_app(f, "s14", &[]);
    let runner = start_runner(&app, 2);
    let data = "x".repeat(20 * 1024 * 1024);
    let inv = ok(byte_len::call_on(&app, data).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 20 * 1024 * 1024);
    finish(&app, runner).await;
}

/// 15. Two apps with different `app_id` on one backend are isolated; purging one leaves the other.
pub async fn s15_app_isolation(f: &dyn BackendFactory) {
    let a = new_app(f, "s15-a", &[]);
    let b = new_app(f, "s15-b", &[]);
    let ia = ok(add::call_on(&a, 1, 1).await, "a");
    let ib = ok(add::call_on(&b, 2, 2).await, "b");
    let ids_a = ok(a.state_backend().list_invocation_ids().await, "list a");
    let ids_b = ok(b.state_backend().list_invocation_ids().await, "list b");
    assert_eq!(ids_a, vec![*ia.invocation_id()]);
    assert_eq!(ids_b, vec![*ib.invocation_id()]);
    assert!(a
        .state_backend()
        .get_invocation(ib.invocation_id())
        .await
        .is_err());
    // a runner of app a does not run app b's work
    let runner_a = start_runner(&a, 2);
    assert_eq!(ok(ia.result().await, "a"), 2);
    assert_eq!(ok(ib.status().await, "b"), InvocationStatus::Registered);
    ok(runner_a.stop().await, "stop");
    ok(a.purge().await, "purge a");
    assert!(ok(a.state_backend().list_invocation_ids().await, "list").is_empty());
    assert_eq!(
        ok(b.state_backend().list_invocation_ids().await, "list").len(),
        1
    );
    let runner_b = start_runner(&b, 2);
    assert_eq!(ok(ib.result().await, "b"), 4);
    finish(&b, runner_b).await;
}

/// 16. Many concurrent `get_invocations_to_run` never hand one invocation to two runners.
pub async fn s16_concurrent_pickers(f: &dyn BackendFactory) {
    let app = new_app(f, "s16", &[]);
    let group = ok(
        add::parallelize_on(&app, (0..400).map(|i| (i, 0))).await,
        "group",
    );
    let mut joins = Vec::new();
    for r in 0..8 {
        let app = app.clone();
        joins.push(tokio::spawn(async move {
            let runner_id = RunnerId::from(format!("picker-{r}"));
            let mut mine = Vec::new();
            loop {
                let batch = app
                    .orchestrator()
                    .get_invocations_to_run(&runner_id, 7)
                    .await
                    .unwrap_or_else(|e| panic!("pick: {e}"));
                if batch.is_empty() {
                    break;
                }
                for rec in batch {
                    mine.push(rec.invocation_id);
                }
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for j in joins {
        all.extend(j.await.unwrap_or_default());
    }
    let unique_ids: HashSet<&InvocationId> = all.iter().collect();
    assert_eq!(all.len(), 400, "every invocation picked once");
    assert_eq!(unique_ids.len(), 400, "no invocation picked twice");
    for inv in group.invocations().iter().take(20) {
        let status = ok(
            app.orchestrator().get_status(inv.invocation_id()).await,
            "status",
        );
        assert_eq!(status.status, InvocationStatus::Pending);
        assert!(status.owner.is_some_and(|o| o.starts_with("picker-")));
    }
    let checked = check_histories(&app).await;
    assert_eq!(checked, 400);
}

/// 18. Dev mode runs calls in the caller with the same results.
pub async fn s18_dev_mode(f: &dyn BackendFactory) {
    let app = new_app(f, "s18", &[("dev_mode_force_sync_tasks", json!(true))]);
    let inv = ok(add::call_on(&app, 1, 2).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 3);
    assert_eq!(ok(inv.status().await, "status"), InvocationStatus::Success);
    let parent = ok(add_via_child::call_on(&app, 5, 6).await, "parent");
    assert_eq!(ok(parent.result().await, "parent"), 11);
    let key = unique("flaky-dev");
    let fl = ok(flaky::call_on(&app, key, 1).await, "flaky");
    assert_eq!(ok(fl.result().await, "flaky"), 2);
    assert_eq!(ok(fl.num_retries().await, "retries"), 1);
    let err = ok(
        fail_with::call_on(&app, "KeyError".into(), "k".into()).await,
        "fail",
    )
    .result()
    .await
    .expect_err("fails");
    assert!(matches!(err, PynencError::TaskFailed { ref error, .. } if error.kind == "KeyError"));
    let group = ok(
        add::parallelize_on(&app, (0..5).map(|i| (i, i))).await,
        "group",
    );
    assert_eq!(ok(group.results().await, "group"), vec![0, 2, 4, 6, 8]);
    // nothing went through the orchestrator
    assert!(ok(app.state_backend().list_invocation_ids().await, "list").is_empty());
}

/// 19. Auto purge removes final invocations older than the configured age, and nothing else.
pub async fn s19_auto_purge(f: &dyn BackendFactory) {
    let app = new_app(f, "s19", &[]);
    let runner = start_runner(&app, 2);
    let old = ok(
        add::parallelize_on(&app, (0..3).map(|i| (i, i))).await,
        "old",
    );
    ok(old.results().await, "old");
    ok(runner.stop().await, "stop");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = ok(add::call_on(&app, 9, 9).await, "registered");
    let purged = ok(
        app.orchestrator()
            .auto_purge(Duration::from_millis(150))
            .await,
        "purge",
    );
    assert_eq!(purged, 3);
    let ids = ok(app.state_backend().list_invocation_ids().await, "list");
    assert_eq!(
        ids,
        vec![*waiting.invocation_id()],
        "only the unfinished one is left"
    );
    // the runner purges periodically with the configured age
    let app2 = new_app(
        f,
        "s19-runner",
        &[
            (
                "orchestrator.auto_final_invocation_purge_hours",
                json!(0.1 / 3600.0),
            ),
            ("orchestrator.auto_purge_interval_seconds", json!(0.05)),
        ],
    );
    let runner2 = start_runner(&app2, 2);
    let inv = ok(add::call_on(&app2, 1, 1).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 2);
    let gone = eventually(Duration::from_secs(10), || async {
        app2.state_backend()
            .list_invocation_ids()
            .await
            .map(|ids| ids.is_empty())
            .unwrap_or(false)
    })
    .await;
    assert!(gone, "the runner did not purge the final invocation");
    ok(runner2.stop().await, "stop");
    let runner = start_runner(&app, 1);
    assert_eq!(ok(waiting.result().await, "waiting"), 18);
    finish(&app, runner).await;
}

/// 20. A scheduled call stays SCHEDULED until due, then runs.
pub async fn s20_scheduled_call(f: &dyn BackendFactory) {
    let app = new_app(f, "s20", &[]);
    let runner = start_runner(&app, 2);
    let at = SystemTime::now() + Duration::from_millis(600);
    let inv = ok(add::task().schedule_on(&app, at, (3, 4)).await, "schedule");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        ok(inv.status().await, "status"),
        InvocationStatus::Scheduled
    );
    assert_eq!(ok(inv.result().await, "result"), 7);
    assert!(SystemTime::now() >= at, "ran before it was due");
    let st = statuses(&inv).await;
    assert_eq!(
        st[..2],
        [InvocationStatus::Scheduled, InvocationStatus::Registered]
    );
    // run after a delay
    let before = SystemTime::now();
    let later = ok(
        add::task()
            .schedule_after_on(&app, Duration::from_millis(300), (1, 1))
            .await,
        "schedule after",
    );
    assert_eq!(
        ok(later.status().await, "status"),
        InvocationStatus::Scheduled
    );
    assert_eq!(ok(later.result().await, "result"), 2);
    assert!(
        SystemTime::now().duration_since(before).unwrap_or_default() >= Duration::from_millis(300),
        "ran before its delay"
    );
    finish(&app, runner).await;
}

fn raw_request(app: &pynenc::Pynenc, call: Call) -> RouteRequest {
    RouteRequest {
        call,
        parent_invocation_id: None,
        parent_call_id: None,
        concurrency: ConcurrencySpec::default(),
        scheduled_at: None,
        cycle_control: true,
        print_arguments: app.conf().print_arguments,
        actor: app.external_runner_id().clone(),
    }
}

/// Bad input: a queued invocation of a task this process does not know fails clearly; other work finishes.
pub async fn bad_unregistered_task(f: &dyn BackendFactory) {
    let app = new_app(f, "bad1", &[]);
    let call = Call::new("no_such_crate::missing_task", Arguments::new());
    let outcome = ok(
        app.orchestrator()
            .route_calls(vec![raw_request(&app, call)])
            .await,
        "route",
    );
    let id = outcome[0].record().invocation_id;
    let runner = start_runner(&app, 2);
    let good = ok(add::call_on(&app, 1, 1).await, "good");
    assert_eq!(ok(good.result().await, "good"), 2);
    let done = eventually(Duration::from_secs(10), || async {
        app.orchestrator()
            .get_status(&id)
            .await
            .map(|s| s.status.is_final())
            .unwrap_or(false)
    })
    .await;
    assert!(done, "the unknown task's invocation never ended");
    let out = ok(app.state_backend().get_outcomes(&[id]).await, "outcome").remove(0);
    assert_eq!(out.status, InvocationStatus::Failed);
    let err = out.error.unwrap_or_else(|| panic!("no error stored"));
    assert_eq!(err.kind, "TaskNotRegisteredError");
    assert!(
        err.message.contains("no_such_crate::missing_task"),
        "{}",
        err.message
    );
    assert_add_works(&app, 2, 2).await;
    finish(&app, runner).await;
}

/// Bad input: an argument that does not decode fails the invocation, naming the argument.
pub async fn bad_undecodable_payload(f: &dyn BackendFactory) {
    let app = new_app(f, "bad2", &[]);
    let mut args = Arguments::new();
    args.insert_serialized("x", "\"not a number\"");
    args.insert_serialized("y", "{broken json");
    let inv = ok(add::task().call_on(&app, args).await, "route");
    let runner = start_runner(&app, 2);
    let error = expect_task_failed(&inv, "a decoding failure").await;
    assert_eq!(error.kind, "SerializationError");
    assert!(error.message.contains("argument 'x'"), "{}", error.message);
    assert!(
        error.message.contains(inv.invocation_id().as_str()),
        "{}",
        error.message
    );
    assert_add_works(&app, 3, 3).await;
    finish(&app, runner).await;
}

/// Bad input: a panicking task fails only its invocation.
pub async fn bad_panicking_task(f: &dyn BackendFactory) {
    let app = new_app(f, "bad3", &[]);
    let runner = start_runner(&app, 2);
    let p = ok(panics::call_on(&app, "boom".into()).await, "panics");
    let ps = ok(
        panics_sync::call_on(&app, "sync boom".into()).await,
        "panics_sync",
    );
    let good = ok(add::call_on(&app, 5, 5).await, "good");
    for (inv, msg) in [(&p, "boom"), (&ps, "sync boom")] {
        let error = expect_task_failed(inv, "a panic failure").await;
        assert_eq!(error.kind, pynenc::model::PANIC_KIND);
        assert!(error.message.contains(msg), "{}", error.message);
    }
    assert_eq!(ok(good.result().await, "good"), 10);
    assert_add_works(&app, 1, 5).await;
    finish(&app, runner).await;
}

/// Bad input: an illegal transition is an error and changes nothing.
pub async fn bad_illegal_transition_changes_nothing(f: &dyn BackendFactory) {
    let app = new_app(f, "bad4", &[]);
    let inv = ok(add::call_on(&app, 1, 2).await, "route");
    let id = *inv.invocation_id();
    let (someone, runner_a, runner_b) = (
        RunnerId::from("someone"),
        RunnerId::from("runner-a"),
        RunnerId::from("runner-b"),
    );
    let before = ok(app.state_backend().get_history(&id).await, "history");
    let orch = app.orchestrator();
    let err = orch
        .set_status(&id, InvocationStatus::Success, &someone, None)
        .await
        .expect_err("REGISTERED -> SUCCESS is illegal");
    let err = PynencError::from(err);
    assert!(matches!(err, PynencError::StatusTransition { .. }), "{err}");
    let err = orch
        .finish(
            &id,
            &someone,
            pynenc::model::RunOutcome::Success("3".into()),
        )
        .await
        .expect_err("finish without owning it");
    assert!(
        err.to_string().contains("not allowed") || err.to_string().contains("owned"),
        "{err}"
    );
    // a PENDING invocation owned by one runner cannot be run by another
    let picked = ok(orch.get_invocations_to_run(&runner_a, 1).await, "pick");
    assert_eq!(picked.len(), 1);
    let err = orch
        .set_status(&id, InvocationStatus::Running, &runner_b, None)
        .await
        .expect_err("not the owner");
    assert!(err.to_string().contains("runner-a"), "{err}");
    let after = ok(app.state_backend().get_history(&id).await, "history");
    assert_eq!(
        after.len(),
        before.len() + 1,
        "only the PENDING step was recorded"
    );
    let out = ok(
        app.state_backend()
            .get_outcomes(std::slice::from_ref(&id))
            .await,
        "outcome",
    )
    .remove(0);
    assert_eq!(out.result, None, "the refused finish stored no result");
    ok(
        orch.set_status(&id, InvocationStatus::Running, &runner_a, None)
            .await,
        "run",
    );
    ok(
        orch.finish(
            &id,
            &runner_a,
            pynenc::model::RunOutcome::Success("3".into()),
        )
        .await,
        "finish",
    );
    assert_eq!(ok(inv.result().await, "result"), 3);
    assert!(check_histories(&app).await > 0);
}

/// 23. One step ends runs and starts the next ones; a refused end still picks.
///
/// The next invocations are `RUNNING` for the same runner; a refused end
/// writes nothing and the other ends of its step stand.
pub async fn s23_finish_and_start(f: &dyn BackendFactory) {
    use pynenc::model::RunOutcome;
    use pynenc::store::{EndOutcome, RunEnd};
    let end = |id: &InvocationId, value: &str| RunEnd {
        invocation_id: *id,
        outcome: RunOutcome::Success(value.into()),
    };
    let app = new_app(f, "s23", &[]);
    let orch = app.orchestrator();
    let (runner_a, runner_b) = (RunnerId::from("runner-a"), RunnerId::from("runner-b"));
    let first = ok(add::call_on(&app, 1, 2).await, "route first");
    let second = ok(add::call_on(&app, 3, 4).await, "route second");
    let picked = ok(
        orch.get_invocations_to_start(&runner_a, 1, None).await,
        "pick",
    );
    assert_eq!(picked.len(), 1);
    assert_eq!(picked[0].invocation_id, *first.invocation_id());
    let report = orch
        .finish_many_and_start(
            &runner_a,
            vec![end(first.invocation_id(), "3")],
            1,
            Some("host:1"),
        )
        .await;
    assert!(report.pick_error.is_none(), "{:?}", report.pick_error);
    let finished = report
        .ends
        .into_iter()
        .next()
        .expect("one end")
        .into_result();
    assert_eq!(ok(finished, "first finished"), InvocationStatus::Success);
    assert_eq!(report.next.len(), 1);
    assert_eq!(report.next[0].invocation_id, *second.invocation_id());
    let status = ok(orch.get_status(second.invocation_id()).await, "status");
    assert_eq!(status.status, InvocationStatus::Running);
    assert_eq!(status.owner.as_deref(), Some("runner-a"));
    // ending the first again is refused, and changes nothing; the pick still happens
    let third = ok(add::call_on(&app, 5, 6).await, "route third");
    let report = orch
        .finish_many_and_start(&runner_a, vec![end(first.invocation_id(), "99")], 1, None)
        .await;
    assert!(report.pick_error.is_none(), "{:?}", report.pick_error);
    let finished = report
        .ends
        .into_iter()
        .next()
        .expect("one end")
        .into_result();
    let err = PynencError::from(finished.expect_err("the first is already final"));
    assert!(matches!(err, PynencError::StatusTransition { .. }), "{err}");
    assert_eq!(report.next.len(), 1);
    assert_eq!(report.next[0].invocation_id, *third.invocation_id());
    assert_eq!(ok(first.result().await, "first result"), 3);
    // nothing left to pick: the end is recorded and no next comes back
    for (inv, value) in [(&second, "7"), (&third, "11")] {
        let report = orch
            .finish_many_and_start(&runner_a, vec![end(inv.invocation_id(), value)], 1, None)
            .await;
        let finished = report
            .ends
            .into_iter()
            .next()
            .expect("one end")
            .into_result();
        assert_eq!(ok(finished, "finished"), InvocationStatus::Success);
        assert!(report.next.is_empty());
    }
    assert_eq!(ok(second.result().await, "second result"), 7);
    assert_eq!(ok(third.result().await, "third result"), 11);

    // several ends in one step take the next invocations of the slots they free
    let calls: Vec<_> = [(1, 1), (2, 2), (3, 3), (4, 4)].to_vec();
    let group = ok(add::parallelize_on(&app, calls).await, "route four");
    let ids: Vec<InvocationId> = group
        .invocations()
        .iter()
        .map(|i| *i.invocation_id())
        .collect();
    let started = ok(
        orch.get_invocations_to_start(&runner_b, 2, None).await,
        "start two",
    );
    assert_eq!(started.len(), 2);
    let ends = vec![
        end(&ids[0], "2"),
        end(&ids[1], "4"),
        // ending the first twice: refused, and the rest stands
        end(&ids[0], "0"),
    ];
    let report = orch
        .finish_many_and_start(&runner_b, ends, 2, Some("host:2"))
        .await;
    let finished = report.ends;
    assert_eq!(finished.len(), 3);
    assert!(
        matches!(finished[0], EndOutcome::Recorded(InvocationStatus::Success)),
        "{:?}",
        finished[0]
    );
    assert!(
        matches!(finished[1], EndOutcome::Recorded(InvocationStatus::Success)),
        "{:?}",
        finished[1]
    );
    assert!(
        matches!(
            finished[2].clone().into_result().map_err(PynencError::from),
            Err(PynencError::StatusTransition { .. })
        ),
        "{:?}",
        finished[2]
    );
    assert!(
        report.pick_error.is_none(),
        "next two: {:?}",
        report.pick_error
    );
    let next_ids: Vec<InvocationId> = report.next.iter().map(|r| r.invocation_id).collect();
    assert_eq!(next_ids, vec![ids[2], ids[3]]);
    for id in &ids[2..] {
        let status = ok(orch.get_status(id).await, "status");
        assert_eq!(status.status, InvocationStatus::Running);
        assert_eq!(status.owner.as_deref(), Some("runner-b"));
    }
    let ends = vec![end(&ids[2], "6"), end(&ids[3], "8")];
    let report = orch.finish_many_and_start(&runner_b, ends, 2, None).await;
    assert!(
        report
            .ends
            .iter()
            .all(|f| matches!(f, EndOutcome::Recorded(_))),
        "{:?}",
        report.ends
    );
    assert!(
        report.pick_error.is_none() && report.next.is_empty(),
        "nothing left"
    );
    assert_eq!(ok(group.results().await, "results"), vec![2, 4, 6, 8]);
    assert!(check_histories(&app).await >= 7);
}

/// Bad input: an argument over `max_argument_bytes` is refused with its name and size.
pub async fn bad_oversized_argument(f: &dyn BackendFactory) {
    let app = new_app(f, "bad5", &[("max_argument_bytes", json!(1000))]);
    let err = byte_len::call_on(&app, "y".repeat(5000))
        .await
        .expect_err("too big");
    let text = err.to_string();
    assert!(
        text.contains("argument 'data'") && text.contains("5002 bytes") && text.contains("1000"),
        "{text}"
    );
    assert!(
        ok(app.state_backend().list_invocation_ids().await, "list").is_empty(),
        "nothing routed"
    );
}

/// Recovery: work claimed by a runner whose heartbeat expired, and work stuck
/// `PENDING` too long, is re-routed and runs; a live runner's work is left alone.
pub async fn s21_recovery_of_lost_work(f: &dyn BackendFactory) {
    let app = new_app(
        f,
        "s21",
        &[
            ("runner.runner_dead_after_seconds", json!(0.4)),
            ("runner.recovery_interval_seconds", json!(0.1)),
            ("runner.heartbeat_interval_seconds", json!(0.1)),
            ("orchestrator.max_pending_seconds", json!(0.6)),
        ],
    );
    let orch = app.orchestrator().clone();
    let coordination = app.coordination().clone();
    let (dead, slow) = (RunnerId::from("dead-runner"), RunnerId::from("slow-runner"));
    let lost = ok(add::call_on(&app, 1, 1).await, "lost");
    let stuck = ok(add::call_on(&app, 2, 2).await, "stuck");
    let alive = ok(add::call_on(&app, 3, 3).await, "alive");
    // a runner that dies after starting `lost`
    let picked = ok(orch.get_invocations_to_run(&dead, 1).await, "pick");
    assert_eq!(picked[0].invocation_id, *lost.invocation_id());
    ok(coordination.heartbeat(&dead).await, "beat");
    ok(
        orch.set_status(lost.invocation_id(), InvocationStatus::Running, &dead, None)
            .await,
        "run",
    );
    // a live runner that never starts `stuck`, and one that is running `alive`
    let picked = ok(orch.get_invocations_to_run(&slow, 2).await, "pick");
    assert_eq!(picked.len(), 2);
    ok(
        orch.set_status(
            alive.invocation_id(),
            InvocationStatus::Running,
            &slow,
            None,
        )
        .await,
        "run",
    );
    let beat_coordination = coordination.clone();
    let beat_runner = slow.clone();
    let beating = tokio::spawn(async move {
        loop {
            let _ = beat_coordination.heartbeat(&beat_runner).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let runner = start_runner(&app, 2);
    assert_eq!(ok(lost.result().await, "lost"), 2);
    assert_eq!(ok(stuck.result().await, "stuck"), 4);
    let st = statuses(&lost).await;
    assert!(st.contains(&InvocationStatus::RunningRecovery), "{st:?}");
    let st = statuses(&stuck).await;
    assert!(st.contains(&InvocationStatus::PendingRecovery), "{st:?}");
    // the live runner's invocation is still its own
    let rec = ok(orch.get_status(alive.invocation_id()).await, "status");
    assert_eq!(rec.status, InvocationStatus::Running);
    assert_eq!(rec.owner.as_deref(), Some("slow-runner"));
    ok(
        orch.finish(
            alive.invocation_id(),
            &slow,
            pynenc::model::RunOutcome::Success("6".into()),
        )
        .await,
        "finish",
    );
    beating.abort();
    assert_eq!(ok(alive.result().await, "alive"), 6);
    finish(&app, runner).await;
}

/// Work taken back from a stopped runner runs before work queued after it.
pub async fn s22_rerouted_work_runs_first(f: &dyn BackendFactory) {
    let app = new_app(f, "s22", &[("runner.shutdown_grace_seconds", json!(0.0))]);
    let group = unique("front");
    let runner = start_runner(&app, 1);
    let first = ok(
        filler::call_on(&app, group.clone(), "first".into(), 400).await,
        "first",
    );
    let running = wait_for_status(&first, InvocationStatus::Running, Duration::from_secs(10)).await;
    assert!(running, "never ran");
    let mut queued = Vec::new();
    for i in 0..3 {
        queued.push(ok(
            filler::call_on(&app, group.clone(), format!("q{i}"), 0).await,
            "queued",
        ));
    }
    ok(runner.stop().await, "stop");
    let runner = start_runner(&app, 1);
    ok(first.result().await, "first");
    for q in &queued {
        ok(q.result().await, "queued");
    }
    let order: Vec<String> = tasks::events_of(&group)
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(
        order,
        vec!["first", "first", "q0", "q1", "q2"],
        "the re-routed invocation runs first"
    );
    finish(&app, runner).await;
}
