//! The data store's primitives (`data.rs`) on real files: one copy per
//! digest, references as a set, the sweep's order, the app's purge, rows
//! that cannot be read, and the schema version that added the tables.

use pynenc_model::{DataRef, DataUsage};

use super::*;

fn text(fill: char, len: usize) -> String {
    format!("\"{}\"", fill.to_string().repeat(len))
}

#[tokio::test]
async fn values_are_stored_once_with_a_set_of_references() {
    let (_dir, store) = fresh();
    let a = text('a', 10_000);
    let ra = DataRef::of(&a);
    let got = store
        .atomic(move |t| {
            let ids = ids(&["x", "y"]);
            let missing = t.claim_data(&ra, &ids[..1], ts(10))?;
            let before = t.get_data(&ra)?;
            t.put_data(&ra, &text('a', 10_000), &ids[..1], ts(20))?;
            // the same digest again: the text stays, the references grow
            t.put_data(&ra, "not the same text", &ids, ts(30))?;
            let found = t.claim_data(&ra, &[ids[0], ids[0]], ts(40))?;
            let mut refs = t.data_references(&ra)?;
            refs.sort();
            Ok((
                missing,
                before,
                found,
                t.get_data(&ra)?,
                refs,
                t.data_usage()?,
            ))
        })
        .await
        .unwrap();
    let (missing, before, found, stored, refs, usage) = got;
    assert!(!missing, "nothing was stored");
    assert_eq!(before, None);
    assert!(found);
    assert_eq!(stored, Some(a.clone()));
    let mut expected = ids(&["x", "y"]);
    expected.sort();
    assert_eq!(refs, expected);
    assert_eq!(
        usage,
        DataUsage {
            values: 1,
            bytes: a.len() as u64,
            references: 2
        }
    );
}

#[tokio::test]
async fn unclaimed_values_come_oldest_claim_first() {
    let (_dir, store) = fresh();
    let values: Vec<String> = (0..5).map(|n| text('v', 100 + n)).collect();
    let refs: Vec<DataRef> = values.iter().map(|v| DataRef::of(v)).collect();
    let (rs, vs) = (refs.clone(), values.clone());
    let got = store
        .atomic(move |t| {
            // claim times 50, 40, 30, 20, 10: the last one put is the oldest
            for (n, (r, v)) in rs.iter().zip(&vs).enumerate() {
                let at = 50 - 10 * i64::try_from(n).unwrap_or(0);
                t.put_data(r, v, &ids(&["x"]), ts(at))?;
            }
            // claimed again: no longer the oldest
            t.claim_data(&rs[4], &[], ts(60))?;
            Ok((
                t.unclaimed_data(ts(50), 10)?,
                t.unclaimed_data(ts(50), 2)?,
                t.unclaimed_data(ts(20), 10)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(got.0, vec![refs[3], refs[2], refs[1]], "claim time < 50");
    assert_eq!(got.1, vec![refs[3], refs[2]], "the limit");
    assert_eq!(got.2, Vec::<DataRef>::new(), "nothing claimed before 20");
    assert_eq!(got.0[0].len(), values[3].len() as u64);
}

#[tokio::test]
async fn forgetting_and_deleting_update_the_usage() {
    let (_dir, store) = fresh();
    let (a, b) = (text('a', 300), text('b', 700));
    let (ra, rb) = (DataRef::of(&a), DataRef::of(&b));
    let got = store
        .atomic(move |t| {
            t.put_data(&ra, &a, &ids(&["x", "y", "z"]), ts(1))?;
            t.put_data(&rb, &b, &ids(&["x"]), ts(1))?;
            t.forget_data_references(&ra, &ids(&["x", "y", "w"]))?;
            let after_forget = (t.data_references(&ra)?, t.data_usage()?);
            t.delete_data(&rb)?;
            // a value that is not stored: nothing happens
            t.delete_data(&rb)?;
            t.forget_data_references(&rb, &ids(&["x"]))?;
            Ok((
                after_forget,
                t.get_data(&rb)?,
                t.data_references(&rb)?,
                t.data_usage()?,
            ))
        })
        .await
        .unwrap();
    let ((refs, usage), b_text, b_refs, end) = got;
    assert_eq!(refs, ids(&["z"]));
    assert_eq!(
        usage,
        DataUsage {
            values: 2,
            bytes: 1004,
            references: 2
        }
    );
    assert_eq!((b_text, b_refs), (None, vec![]));
    assert_eq!(
        end,
        DataUsage {
            values: 1,
            bytes: 302,
            references: 1
        }
    );
}

#[tokio::test]
async fn the_purge_removes_only_the_apps_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let (a, b) = (open_app(&path, "a"), open_app(&path, "b"));
    let v = text('v', 2000);
    let rv = DataRef::of(&v);
    for store in [&a, &b] {
        let v = v.clone();
        store
            .atomic(move |t| t.put_data(&rv, &v, &ids(&["x", "y"]), ts(1)))
            .await
            .unwrap();
    }
    a.atomic(|t| t.purge()).await.unwrap();
    let usage = |s: &Arc<SqliteStore>| {
        let s = s.clone();
        async move { s.atomic(|t| t.data_usage()).await.unwrap() }
    };
    assert_eq!(usage(&a).await, DataUsage::default());
    let kept = b
        .atomic(move |t| Ok((t.get_data(&rv)?, t.data_references(&rv)?.len())))
        .await
        .unwrap();
    assert_eq!(kept, (Some(v.clone()), 2));
    assert_eq!(
        usage(&b).await,
        DataUsage {
            values: 1,
            bytes: v.len() as u64,
            references: 2
        }
    );
    let conn = Connection::open(&path).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM data_values) + (SELECT COUNT(*) FROM data_texts)
                 + (SELECT COUNT(*) FROM data_references)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        rows, 4,
        "the other app's value, its text and its 2 references"
    );
}

#[tokio::test]
async fn a_value_row_that_cannot_be_read_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store = open_app(&path, "app");
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO data_values (app, digest, len, claimed_at_us)
             SELECT app, 'not hex', 3, 1 FROM apps WHERE app_id = 'app'",
            [],
        )
        .unwrap();
    let err = store
        .atomic(|t| t.unclaimed_data(ts(10), 10))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("data_values") && msg.contains("not hex"),
        "{msg}"
    );
}

#[test]
fn a_version_3_file_without_the_data_tables_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    drop(open_app(&path, "app"));
    // what the library of schema version 3 left: no data store tables
    raw_database(
        &path,
        "DROP TABLE data_references; DROP TABLE data_texts; DROP TABLE data_values;
         UPDATE pynenc_meta SET value = '3' WHERE key = 'schema_version';",
    );
    let msg = refused_untouched(&path);
    assert!(msg.contains("version 3"), "{msg}");
    assert!(msg.contains(&format!("version {SCHEMA_VERSION}")), "{msg}");
    assert!(msg.contains("delete the file"), "{msg}");
}

#[tokio::test]
async fn a_20_mb_value_round_trips_and_claims_leave_its_text_alone() {
    let (_dir, store) = fresh();
    let big = text('z', 20_000_000);
    let rb = DataRef::of(&big);
    let stored = big.clone();
    store
        .atomic(move |t| t.put_data(&rb, &stored, &ids(&["x"]), ts(1)))
        .await
        .unwrap();
    let claims = std::time::Instant::now();
    for n in 0..20 {
        let claimed = store
            .atomic(move |t| t.claim_data(&rb, &ids(&["y"]), ts(2 + n)))
            .await
            .unwrap();
        assert!(claimed);
    }
    eprintln!("20 claims of a 20 MB value: {:?}", claims.elapsed());
    let (back, usage) = store
        .atomic(move |t| Ok((t.get_data(&rb)?, t.data_usage()?)))
        .await
        .unwrap();
    assert_eq!(back.as_deref().map(str::len), Some(big.len()));
    assert!(back == Some(big), "the text changed");
    assert_eq!(
        (usage.values, usage.bytes, usage.references),
        (1, 20_000_002, 2)
    );
}
