//! The query readers: sections that only read (the query API) are answered
//! on committed data without the app's advisory lock, so they do not wait
//! for the app's steps; with `pool_size = 0` they go through the steps'
//! connection and wait like any step. On a real server started by the test
//! process (skipped with a message when the server binaries are missing; a
//! failure with `PYNENC_REQUIRE_POSTGRES=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::time::Duration;

use pynenc_model::InvocationId;
use pynenc_postgres::PostgresStore;
use pynenc_store::AtomicStore;
use pynenc_testservers::postgres::test_database;

/// Stores one invocation of `tests.task` (a step through the writer).
async fn insert_one(store: &PostgresStore) {
    let (record, status) = new_invocation("tests.task");
    store
        .atomic(move |t| t.insert_invocation(&record, &status))
        .await
        .expect("insert");
}

/// A connection of the test holding the app's lock until it is dropped
/// (its transaction rolled back).
async fn hold_lock(url: &str, key: i64) -> tokio_postgres::Client {
    let client = client(url).await;
    client
        .batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({key})"))
        .await
        .expect("take the app's lock");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_do_not_wait_for_the_steps() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "readers");
    insert_one(&store).await;
    let holder = hold_lock(&db.url(), store.lock_key()).await;

    // a step waits for the lock...
    let step = tokio::spawn({
        let store = store.clone();
        async move { insert_one(&store).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !step.is_finished(),
        "the step did not wait for the app's lock"
    );
    // ...a query does not: it sees what was committed
    let counts = tokio::time::timeout(
        Duration::from_secs(5),
        store.read(|t| t.count_by_status(&[])),
    )
    .await
    .expect("a query waited for the app's lock")
    .expect("counts");
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 1, "{counts:?}");
    // a query that fails on the reader fails as itself (not retried as another error)
    let none = store
        .read(|t| t.get_status(&InvocationId::random()))
        .await
        .expect("an unknown id is no error");
    assert!(none.is_none());

    drop(holder);
    tokio::time::timeout(Duration::from_secs(10), step)
        .await
        .expect("the step ran once the lock was free")
        .expect("step");
    let counts = store
        .read(|t| t.count_by_status(&[]))
        .await
        .expect("counts");
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_readers_queries_go_through_the_steps() {
    let Some(db) = test_database() else { return };
    let options = pynenc_postgres::PostgresOptions {
        pool_size: 0,
        ..options(&db.url())
    };
    let store = PostgresStore::open(&options, "no-readers").expect("open");
    insert_one(&store).await;
    let holder = hold_lock(&db.url(), store.lock_key()).await;
    let query = tokio::spawn({
        let store = store.clone();
        async move { store.read(|t| t.count_by_status(&[])).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !query.is_finished(),
        "with no reader a query waits for the lock"
    );
    drop(holder);
    let counts = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("answered once the lock was free")
        .expect("task")
        .expect("counts");
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 1);
}
