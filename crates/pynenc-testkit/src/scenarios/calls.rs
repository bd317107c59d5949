//! Calls and their results: argument forms, `parallelize`, large arguments, dev mode, scheduled calls.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use pynenc::{Arguments, InvocationStatus, PynencError};
use serde_json::json;

use crate::tasks::*;
use crate::{new_app, ok, start_runner, statuses, unique, BackendFactory};

use super::finish;

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
    let created: Vec<_> = doubled_records(&app, 20)
        .await
        .iter()
        .map(|r| r.created_at)
        .collect();
    for chunk in created.chunks(7) {
        assert!(
            chunk.iter().all(|c| *c == chunk[0]),
            "one batch is routed in one step: {created:?}"
        );
    }
    // several batches in flight at once: results and creation in call order
    let records = doubled_records(&app, 70).await;
    for (i, rec) in records.iter().enumerate() {
        assert_eq!(
            rec.call.arguments.get("x").map(ToString::to_string),
            Some(i.to_string()),
            "the group's invocations are in call order"
        );
    }
    let created: Vec<_> = records.iter().map(|r| r.created_at).collect();
    assert!(
        created.windows(2).all(|w| w[0] <= w[1]),
        "batches are routed in call order: {created:?}"
    );
    finish(&app, runner).await;
}

/// `double` of 0..n by `parallelize` (batches of 7): checks the results,
/// in order, and returns the stored records of the group's invocations.
async fn doubled_records(app: &pynenc::Pynenc, n: i64) -> Vec<pynenc::InvocationRecord> {
    let group = ok(
        double::parallelize_on(app, (0..n).map(|i| (i,))).await,
        "double",
    );
    assert_eq!(
        ok(group.results().await, "results"),
        (0..n).map(|i| i * 2).collect::<Vec<_>>()
    );
    let mut out = Vec::new();
    for inv in group.invocations() {
        out.push(ok(
            app.state_backend()
                .get_invocation(inv.invocation_id())
                .await,
            "record",
        ));
    }
    out
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

/// 14. A 20 MB argument round-trips.
pub async fn s14_large_argument(f: &dyn BackendFactory) {
    let app = new_app(f, "s14", &[]);
    let runner = start_runner(&app, 2);
    let data = "x".repeat(20 * 1024 * 1024);
    let inv = ok(byte_len::call_on(&app, data).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 20 * 1024 * 1024);
    finish(&app, runner).await;
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
