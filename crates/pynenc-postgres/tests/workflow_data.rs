//! The data of workflow invocations on a real server started by the test
//! process (skipped with a message when the server binaries are missing; a
//! failure with `PYNENC_REQUIRE_POSTGRES=1`): a value per key, the first
//! `if_absent` put kept and a plain put overwriting, nothing for unknown
//! keys or invocations, deleted with the invocation and by the app purge
//! (of that app only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use pynenc_model::{InvocationId, InvocationStatus, Timestamp};
use pynenc_postgres::PostgresStore;
use pynenc_store::{engine, AtomicStore, StoreError};
use pynenc_testservers::postgres::{test_database, TestDatabase};

/// Stores a new invocation (one step); its id.
async fn insert(store: &PostgresStore) -> InvocationId {
    insert_new(store, "tests.workflow").await
}

/// Puts `key` = `value` of `id` in one step; the value the key holds after.
async fn put(
    store: &PostgresStore,
    id: InvocationId,
    key: &str,
    value: &str,
    if_absent: bool,
) -> Result<String, StoreError> {
    let (key, value) = (key.to_string(), value.to_string());
    store
        .atomic(move |t| t.put_workflow_data(&id, &key, &value, if_absent))
        .await
}

/// The value of `key` of `id`, read in one step.
async fn get(store: &PostgresStore, id: InvocationId, key: &str) -> Option<String> {
    let key = key.to_string();
    store
        .atomic(move |t| t.get_workflow_data(&id, &key))
        .await
        .expect("get")
}

/// Rows of `pynenc_workflow_data` per app id, as `app:count`.
fn rows_per_app(db: &TestDatabase) -> Vec<String> {
    db.psql(
        "SELECT a.app_id || ':' || COUNT(d.key) FROM pynenc_apps AS a \
         LEFT JOIN pynenc_workflow_data AS d ON d.app = a.app \
         GROUP BY a.app_id ORDER BY a.app_id",
    )
    .lines()
    .map(|l| l.trim().to_string())
    .collect()
}

/// Rows of `pynenc_workflow_data` of invocation `id`.
fn rows_of(db: &TestDatabase, id: InvocationId) -> String {
    db.psql(&format!(
        "SELECT COUNT(*) FROM pynenc_workflow_data WHERE invocation_id = '{id}'"
    ))
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_data_is_kept_per_key_and_forgotten_with_its_invocation() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "wfdata");
    let other = open(&db, "wfdata-other");
    let id = insert(&store).await;

    // nothing set yet
    assert_eq!(get(&store, id, "a").await, None);

    // the first if_absent put wins, a second one returns the kept value
    assert_eq!(put(&store, id, "a", "1", true).await.unwrap(), "1");
    assert_eq!(put(&store, id, "a", "2", true).await.unwrap(), "1");
    assert_eq!(get(&store, id, "a").await.as_deref(), Some("1"));
    // a plain put overwrites
    assert_eq!(put(&store, id, "a", "3", false).await.unwrap(), "3");
    assert_eq!(get(&store, id, "a").await.as_deref(), Some("3"));
    // a plain put of a new key, and an empty value
    assert_eq!(put(&store, id, "b", "", false).await.unwrap(), "");
    assert_eq!(get(&store, id, "b").await.as_deref(), Some(""));
    assert_eq!(get(&store, id, "c").await, None);
    assert_eq!(rows_of(&db, id), "2");

    // in one step, with the invocation inserted in that step (its row
    // still held): the step sees its own writes
    let (record, status) = new_invocation("tests.workflow");
    let fresh = record.invocation_id;
    let seen = store
        .atomic(move |t| {
            t.insert_invocation(&record, &status)?;
            let first = t.put_workflow_data(&fresh, "k", "x", true)?;
            let kept = t.put_workflow_data(&fresh, "k", "y", true)?;
            let before = t.get_workflow_data(&fresh, "k")?;
            let set = t.put_workflow_data(&fresh, "k", "z", false)?;
            let after = t.get_workflow_data(&fresh, "k")?;
            Ok((first, kept, before, set, after))
        })
        .await
        .unwrap();
    assert_eq!(
        seen,
        (
            "x".to_string(),
            "x".to_string(),
            Some("x".to_string()),
            "z".to_string(),
            Some("z".to_string())
        )
    );
    assert_eq!(get(&store, fresh, "k").await.as_deref(), Some("z"));

    // the same invocation id and key in another app: apart
    assert!(matches!(
        put(&other, id, "a", "other", false).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(get(&other, id, "a").await, None);

    // an unknown invocation: nothing, and nothing can be set
    let unknown = InvocationId::time_ordered();
    for if_absent in [false, true] {
        let e = put(&store, unknown, "a", "1", if_absent)
            .await
            .expect_err("no such invocation");
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    }
    assert_eq!(get(&store, unknown, "a").await, None);
    assert_eq!(rows_of(&db, unknown), "0");

    // the invocation becomes final and is deleted: its data goes with it
    store
        .atomic(move |t| {
            engine::transition(
                t,
                &id,
                InvocationStatus::Cancelled,
                &runner(),
                None,
                Timestamp::now(),
            )
        })
        .await
        .unwrap();
    let deleted = store
        .atomic(move |t| engine::delete_final(t, &[id]))
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(get(&store, id, "a").await, None);
    assert_eq!(get(&store, id, "b").await, None);
    assert_eq!(rows_of(&db, id), "0");
    assert!(matches!(
        put(&store, id, "a", "1", false).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(get(&store, fresh, "k").await.as_deref(), Some("z"));

    // the app purge forgets the rest of this app's, not another app's
    let kept = insert(&other).await;
    put(&other, kept, "a", "1", false).await.unwrap();
    put(&other, kept, "b", "2", true).await.unwrap();
    assert_eq!(rows_per_app(&db), vec!["wfdata:1", "wfdata-other:2"]);
    store.atomic(|t| t.purge()).await.unwrap();
    assert_eq!(rows_per_app(&db), vec!["wfdata:0", "wfdata-other:2"]);
    assert_eq!(get(&store, fresh, "k").await, None);
    assert_eq!(get(&other, kept, "a").await.as_deref(), Some("1"));
    assert_eq!(get(&other, kept, "b").await.as_deref(), Some("2"));
}
