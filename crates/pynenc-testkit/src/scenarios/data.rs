//! The data store: large values kept once per content digest, their
//! references, the sweep, and large arguments and results passed through it.

use std::collections::HashSet;

use pynenc::model::{DataClaim, DataRef, DataUsage};
use pynenc::{InvocationId, Timestamp};
use pynenc_operate::Operate;

use crate::tasks::*;
use crate::{new_app, ok, start_runner, BackendFactory};

use super::finish;

fn claim(data: DataRef, ids: &[InvocationId]) -> DataClaim {
    DataClaim {
        data,
        referenced_by: ids.to_vec(),
    }
}

fn value(fill: char, len: usize) -> String {
    format!("\"{}\"", fill.to_string().repeat(len))
}

/// The data store's primitives: claims of missing and stored values, one
/// copy per digest (also with concurrent writers), references as a set,
/// the sweep (values still referred to or claimed within the grace period
/// stay; the others go, with their bytes), the app's purge, app isolation.
pub async fn d01_data_store_values(f: &dyn BackendFactory) {
    let app = new_app(f, "d01", &[]);
    let other = new_app(f, "d01-other", &[]);
    let ds = app.data_store().clone();
    assert_eq!(ok(ds.data_usage().await, "usage"), DataUsage::default());

    let a = value('a', 5000);
    let ra = DataRef::of(&a);
    let (id1, id2) = (InvocationId::time_ordered(), InvocationId::time_ordered());
    let missing = ok(ds.claim_values(&[claim(ra, &[id1])]).await, "claim");
    assert_eq!(missing, vec![false], "nothing is stored yet");
    assert_eq!(ok(ds.get_value(&ra).await, "get"), None);
    ok(
        ds.put_values(&[(claim(ra, &[id1]), a.clone())]).await,
        "put",
    );
    let found = ok(
        ds.claim_values(&[claim(ra, &[id2]), claim(ra, &[id1])])
            .await,
        "claim",
    );
    assert_eq!(found, vec![true, true]);
    assert_eq!(ok(ds.get_value(&ra).await, "get"), Some(a.clone()));
    // stored once, references a set: id1 twice counts once
    ok(
        ds.put_values(&[(claim(ra, &[id1]), a.clone())]).await,
        "put again",
    );
    let usage = ok(ds.data_usage().await, "usage");
    assert_eq!(
        usage,
        DataUsage {
            values: 1,
            bytes: a.len() as u64,
            references: 2
        }
    );

    // concurrent writers of the same content store it once
    let b = value('b', 70_000);
    let rb = DataRef::of(&b);
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let ds = ds.clone();
            let b = b.clone();
            tokio::spawn(async move {
                let id = InvocationId::time_ordered();
                ds.put_values(&[(claim(rb, &[id]), b)]).await
            })
        })
        .collect();
    for w in writers {
        ok(ok(w.await, "writer task"), "concurrent put");
    }
    let usage = ok(ds.data_usage().await, "usage");
    assert_eq!((usage.values, usage.bytes), (2, (a.len() + b.len()) as u64));
    assert_eq!(usage.references, 10);
    assert_eq!(ok(ds.get_value(&rb).await, "get"), Some(b.clone()));

    // another app on the same backend sees none of it
    assert_eq!(ok(other.data_store().get_value(&ra).await, "other"), None);
    assert_eq!(ok(other.data_store().data_usage().await, "other").values, 0);

    // within the grace period nothing goes, even with no invocation behind it
    let long_ago = Timestamp::from_micros(Timestamp::now().as_micros() - 3_600_000_000);
    let sweep = ok(ds.sweep_values(long_ago).await, "sweep in grace");
    assert_eq!((sweep.examined, sweep.removed), (0, 0));

    // a value an existing invocation refers to stays; its dead references go
    let runner = start_runner(&app, 2);
    let inv = ok(add::call_on(&app, 1, 2).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 3);
    let live = *inv.invocation_id();
    let c = value('c', 3000);
    let rc = DataRef::of(&c);
    ok(
        ds.put_values(&[(claim(rc, &[live, id1]), c.clone())]).await,
        "put c",
    );
    let sweep = ok(ds.sweep_values(Timestamp::now()).await, "sweep");
    assert_eq!(sweep.examined, 3, "{sweep:?}");
    assert_eq!(sweep.removed, 2, "a and b have no invocation behind them");
    assert_eq!(sweep.bytes_freed, (a.len() + b.len()) as u64);
    assert_eq!(ok(ds.get_value(&ra).await, "a"), None);
    assert_eq!(ok(ds.get_value(&rc).await, "c"), Some(c.clone()));
    let usage = ok(ds.data_usage().await, "usage");
    assert_eq!(
        usage,
        DataUsage {
            values: 1,
            bytes: c.len() as u64,
            references: 1
        },
        "the dead reference of c was forgotten"
    );

    // once its invocation is deleted, the value goes too
    let deleted = ok(app.orchestrator().delete_final(&[live]).await, "delete");
    assert_eq!(deleted, 1);
    let sweep = ok(ds.sweep_values(Timestamp::now()).await, "sweep");
    assert_eq!((sweep.removed, sweep.bytes_freed), (1, c.len() as u64));
    assert_eq!(ok(ds.data_usage().await, "usage"), DataUsage::default());

    // the app's purge removes its values; the other app's stay
    let d = value('d', 2000);
    let rd = DataRef::of(&d);
    ok(
        ds.put_values(&[(claim(rd, &[id1]), d.clone())]).await,
        "put d",
    );
    ok(
        other
            .data_store()
            .put_values(&[(claim(rd, &[id2]), d.clone())])
            .await,
        "other put d",
    );
    ok(runner.stop().await, "stop");
    ok(app.state_backend().purge().await, "purge");
    assert_eq!(ok(ds.data_usage().await, "usage"), DataUsage::default());
    assert_eq!(ok(ds.get_value(&rd).await, "d"), None);
    assert_eq!(
        ok(other.data_store().get_value(&rd).await, "other d"),
        Some(d)
    );
    let distinct: HashSet<_> = [ra, rb, rc, rd].into_iter().collect();
    assert_eq!(distinct.len(), 4);
}

/// The size of the large argument of [`d02_large_argument_to_many_subtasks`].
const BIG: usize = 20 * 1024 * 1024;

/// A 20 MB argument given to 1,000 sub-tasks (a [`pynenc::Shared`], so
/// the caller serializes it once): stored once (one value of 20 MB with
/// 1,000 references), each record carries only a reference,
/// every sub-task sees the right value, a runner of another app object
/// fetches it once, and purging the invocations frees it.
pub async fn d02_large_argument_to_many_subtasks(f: &dyn BackendFactory) {
    let settings = [("data_store.grace_seconds", serde_json::json!(0))];
    let app = new_app(f, "d02", &settings);
    let runner_app = new_app(f, "d02", &settings);
    let bytes_before = f.stored_bytes();
    let big = pynenc::Shared::new(big_value(BIG));
    let items = (0..1000u32).map(|i| (big.clone(), BIG, i));
    let group = ok(check_big::parallelize_on(&app, items).await, "parallelize");
    drop(big);
    let usage = ok(app.data_store().data_usage().await, "usage");
    assert_eq!(usage.values, 1, "stored once: {usage:?}");
    assert_eq!(usage.bytes, BIG as u64 + 2, "the JSON text of the value");
    assert_eq!(usage.references, 1000);
    if let (Some(before), Some(after)) = (bytes_before, f.stored_bytes()) {
        let grew = after.saturating_sub(before);
        println!("{}: the backend grew {:.1} MB", f.name(), grew as f64 / 1e6);
        assert!(
            grew < 100_000_000,
            "the backend grew {grew} bytes for one 20 MB value given to 1,000 calls"
        );
    }
    for inv in group.invocations().iter().take(3) {
        let record = inv.record().expect("distributed");
        let data = record.call.arguments.get("data").unwrap_or_default();
        assert!(DataRef::parse(data).is_some(), "a reference: {data:.80}");
        assert!(record.call.arguments.size_bytes() < 300);
    }

    let runner = start_runner(&runner_app, 4);
    let results = ok(group.results().await, "results");
    assert_eq!(results.len(), 1000);
    for (k, (i, len, right)) in results.into_iter().enumerate() {
        assert_eq!((i as usize, len, right), (k, BIG, true), "sub-task {k}");
    }
    let stats = runner_app.data_cache_stats();
    assert_eq!(stats.fetches, 1, "fetched once by the runner: {stats:?}");
    assert_eq!(stats.hits, 999, "{stats:?}");
    ok(runner.stop().await, "stop");

    let purged = ok(
        app.control()
            .purge_matching(&pynenc::model::InvocationQuery {
                task_ids: vec![pynenc::TaskId::from(check_big::task().task_id())],
                ..pynenc::model::InvocationQuery::new()
            })
            .await,
        "purge",
    );
    assert_eq!(purged, 1000);
    let usage = ok(app.data_store().data_usage().await, "usage");
    assert_eq!(usage, DataUsage::default(), "the purge freed the value");
}

/// Large results, `inline_arguments`, a task's own threshold, the same call
/// id stored or inline, a rerun claiming the stored value again, and
/// `max_argument_bytes` applying to stored values.
pub async fn d03_results_options_and_reruns(f: &dyn BackendFactory) {
    let app = new_app(f, "d03", &[]);
    let ds = app.data_store().clone();
    let runner = start_runner(&app, 2);

    // a large result is stored; the record holds its reference
    let inv = ok(big_result::call_on(&app, 200_000).await, "big result");
    let value = ok(inv.result().await, "result");
    assert!(is_big_value(&value, 200_000));
    let stored = ok(
        app.state_backend()
            .get_outcomes(&[*inv.invocation_id()])
            .await,
        "raw outcome",
    );
    let marker = stored[0].result.clone().unwrap_or_default();
    let data = DataRef::parse(&marker).expect("the stored result is a reference");
    assert_eq!(data.len(), 200_002);
    assert_eq!(ok(ds.data_usage().await, "usage").values, 1);

    // inline_arguments keeps a large value in the record
    let inline = ok(
        inline_len::call_on(&app, "x".repeat(100_000)).await,
        "inline",
    );
    assert_eq!(ok(inline.result().await, "inline"), 100_000);
    let arg = inline.record().and_then(|r| r.call.arguments.get("data"));
    assert_eq!(arg.map(str::len), Some(100_002), "kept in the record");
    assert_eq!(ok(ds.data_usage().await, "usage").values, 1);

    // a task's own threshold: 5 kB is stored for it, not for others
    let low = ok(
        low_threshold_len::call_on(&app, "y".repeat(5000)).await,
        "low",
    );
    assert_eq!(ok(low.result().await, "low"), 5000);
    assert!(low.record().is_some_and(|r| r.call.arguments.has_stored()));
    let plain = ok(byte_len::call_on(&app, "y".repeat(5000)).await, "plain");
    assert!(plain
        .record()
        .is_some_and(|r| !r.call.arguments.has_stored()));
    assert_eq!(ok(ds.data_usage().await, "usage").values, 2);

    // the call id is the same whether the value is stored or inline
    let off = new_app(
        f,
        "d03-off",
        &[("data_store.data_store_enabled", serde_json::json!(false))],
    );
    let inline_call = ok(
        low_threshold_len::call_on(&off, "y".repeat(5000)).await,
        "off",
    );
    assert!(inline_call
        .record()
        .is_some_and(|r| !r.call.arguments.has_stored()));
    assert_eq!(inline_call.call_id(), low.call_id());

    // a rerun claims the stored value for the new invocation
    let before = ok(ds.data_usage().await, "usage").references;
    let rerun = ok(app.control().rerun(low.invocation_id()).await, "rerun");
    let again = ok(app.invocation(&rerun.new).await, "rerun handle");
    assert_eq!(
        ok(again.result().await, "rerun result"),
        serde_json::json!(5000)
    );
    assert_eq!(ok(ds.data_usage().await, "usage").references, before + 1);

    // a record referring to a value the data store does not have (another
    // program's call): the invocation fails naming the argument and the
    // value, and the runner goes on
    let missing = DataRef::of("\"never stored\"");
    let mut args = pynenc::Arguments::new();
    args.insert_serialized("data", missing.marker());
    let call = pynenc::Call::new(byte_len::task().task_id(), args);
    let req = pynenc::model::RouteRequest::new(call, app.external_runner_id().clone());
    let routed = ok(app.orchestrator().route_calls(vec![req]).await, "route raw");
    let bad = match &routed[0] {
        pynenc::model::RouteOutcome::New(r) => r.invocation_id,
        other => panic!("expected a new invocation, got {other:?}"),
    };
    let err = ok(app.invocation(&bad).await, "handle")
        .result()
        .await
        .expect_err("the value is missing");
    let text = err.to_string();
    assert!(
        text.contains("argument 'data'") && text.contains("not in the data store"),
        "{text}"
    );
    assert_eq!(
        ok(add::call_on(&app, 2, 3).await, "after")
            .result()
            .await
            .ok(),
        Some(5)
    );

    // max_argument_bytes applies to the value, stored or not
    let strict = new_app(
        f,
        "d03-strict",
        &[("max_argument_bytes", serde_json::json!(100_000))],
    );
    let err = low_threshold_len::call_on(&strict, "z".repeat(200_000))
        .await
        .expect_err("over max_argument_bytes");
    assert!(err.to_string().contains("max_argument_bytes"), "{err}");
    assert_eq!(
        ok(strict.data_store().data_usage().await, "usage").values,
        0
    );
    finish(&app, runner).await;
}
