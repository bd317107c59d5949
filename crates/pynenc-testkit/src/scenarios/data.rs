//! The data store: large values kept once per content digest, their
//! references, the sweep, and large arguments and results passed through it.

use std::collections::HashSet;

use pynenc::model::{DataClaim, DataRef, DataUsage};
use pynenc::{InvocationId, Timestamp};

use crate::tasks::*;
use crate::{new_app, ok, start_runner, BackendFactory};

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
