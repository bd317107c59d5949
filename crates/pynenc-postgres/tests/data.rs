//! The data store's primitives on a real server started by the test
//! process (skipped with a message when the server binaries are missing; a
//! failure with `PYNENC_REQUIRE_POSTGRES=1`): references as a set, a put of
//! a stored value, the sweep's order, removals, the purge and app isolation,
//! checked against the rows of the tables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use pynenc_model::{DataRef, DataUsage, InvocationId, Timestamp};
use pynenc_store::AtomicStore;
use pynenc_testservers::postgres::{test_database, TestDatabase};

fn at(us: i64) -> Timestamp {
    Timestamp::from_micros(us)
}

/// The rows of the data tables, per app: `app_id|values|refs` lines.
fn rows(db: &TestDatabase) -> String {
    db.psql(
        "SELECT a.app_id, \
             (SELECT COUNT(*) FROM pynenc_data d WHERE d.app = a.app), \
             (SELECT COUNT(*) FROM pynenc_data_refs r WHERE r.app = a.app) \
         FROM pynenc_apps a ORDER BY a.app_id",
    )
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_references_sweep_order_and_purge() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "data");
    let other = open(&db, "data-other");
    let (a, b, c) = (
        "\"a\"".to_string(),
        "\"bb\"".to_string(),
        "\"c\"".to_string(),
    );
    let (ra, rb, rc) = (DataRef::of(&a), DataRef::of(&b), DataRef::of(&c));
    let (i1, i2, i3) = (
        InvocationId::time_ordered(),
        InvocationId::time_ordered(),
        InvocationId::time_ordered(),
    );

    // a claim of a missing value adds nothing; puts and claims add
    // references as a set, and a second put keeps the first text
    let (a2, b2, c2) = (a.clone(), b.clone(), c.clone());
    let missing = store
        .atomic(move |t| {
            let missing = t.claim_data(&ra, &[i1], at(10))?;
            t.put_data(&ra, &a2, &[i1, i1], at(30))?;
            t.put_data(&rb, &b2, &[i2], at(20))?;
            t.put_data(&rb, "\"not b\"", &[i1, i2], at(25))?;
            t.put_data(&rc, &c2, &[], at(40))?;
            Ok(missing)
        })
        .await
        .unwrap();
    assert!(!missing);
    let claimed = store
        .atomic(move |t| t.claim_data(&rc, &[i3, i3], at(5)))
        .await
        .unwrap();
    assert!(claimed);
    let (usage, b_text, refs_b, refs_c) = store
        .atomic(move |t| {
            Ok((
                t.data_usage()?,
                t.get_data(&rb)?,
                t.data_references(&rb)?,
                t.data_references(&rc)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        usage,
        DataUsage {
            values: 3,
            bytes: (a.len() + b.len() + c.len()) as u64,
            references: 4,
        }
    );
    assert_eq!(b_text.as_deref(), Some(b.as_str()), "the first put's text");
    let mut expected = vec![i1, i2];
    expected.sort();
    assert_eq!(refs_b, expected);
    assert_eq!(refs_c, vec![i3]);

    // oldest claim first (c was claimed at 5, b put again at 25), limited,
    // only those claimed before `before`
    let (all, two, none, early) = store
        .atomic(|t| {
            Ok((
                t.unclaimed_data(at(100), 10)?,
                t.unclaimed_data(at(100), 2)?,
                t.unclaimed_data(at(100), 0)?,
                t.unclaimed_data(at(25), 10)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(all, vec![rc, rb, ra]);
    assert_eq!(two, vec![rc, rb]);
    assert!(none.is_empty());
    assert_eq!(early, vec![rc]);

    // forgetting references and removing values (twice: no effect)
    for _ in 0..2 {
        store
            .atomic(move |t| {
                t.forget_data_references(&rb, &[i2, i3])?;
                t.delete_data(&rc)
            })
            .await
            .unwrap();
    }
    let (refs_b, c_text, usage) = store
        .atomic(move |t| Ok((t.data_references(&rb)?, t.get_data(&rc)?, t.data_usage()?)))
        .await
        .unwrap();
    assert_eq!(refs_b, vec![i1]);
    assert_eq!(c_text, None);
    assert_eq!(usage.references, 2);
    assert_eq!(rows(&db), "data|2|2\ndata-other|0|0");

    // another app stores the same value apart; a purge removes only the
    // purged app's values and references
    let a3 = a.clone();
    other
        .atomic(move |t| t.put_data(&ra, &a3, &[i1], at(1)))
        .await
        .unwrap();
    assert_eq!(rows(&db), "data|2|2\ndata-other|1|1");
    store.atomic(|t| t.purge()).await.unwrap();
    assert_eq!(rows(&db), "data|0|0\ndata-other|1|1");
    let (mine, theirs) = (
        store.atomic(move |t| t.get_data(&ra)).await.unwrap(),
        other.atomic(move |t| t.get_data(&ra)).await.unwrap(),
    );
    assert_eq!(mine, None);
    assert_eq!(theirs, Some(a));
    assert_eq!(
        store.atomic(|t| t.data_usage()).await.unwrap(),
        DataUsage::default()
    );
}
