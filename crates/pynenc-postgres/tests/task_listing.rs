//! Listings by task: the task index leaves out the invocations in a
//! runner's hands, which a listing by task reads apart and merges in id
//! order; and a schema of version 7 (whose task index held every
//! invocation) is upgraded in place. On a server the test starts (skipped
//! with a message when the server binaries are missing; a failure with
//! `PYNENC_REQUIRE_POSTGRES=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::collections::HashSet;

use pynenc_model::{
    Cursor, InvocationId, InvocationQuery, InvocationStatus, Order, RunOutcome, TaskId, Timestamp,
};
use pynenc_postgres::{PostgresStore, SCHEMA_VERSION};
use pynenc_store::{engine, AtomicStore, RunEnd};
use pynenc_testservers::postgres::test_database;

/// Ends the run of `id` with a success (one step).
async fn succeed(store: &PostgresStore, id: InvocationId) {
    let ends = vec![RunEnd::new(id, RunOutcome::Success("1".to_string()))];
    store
        .atomic(move |t| {
            engine::finish_many_and_start(t, &runner(), ends.clone(), 0, None, Timestamp::now())
        })
        .await
        .expect("end");
}

/// Every page of `query` (pages of `limit`), in the order read.
async fn read_all(store: &PostgresStore, mut query: InvocationQuery) -> Vec<InvocationId> {
    let mut seen = Vec::new();
    loop {
        let q = query.clone();
        let page = store
            .read(move |t| t.list_invocations(&q))
            .await
            .expect("list");
        seen.extend(page.iter().map(|s| s.invocation_id));
        if page.len() < query.limit {
            return seen;
        }
        query.after = page.last().map(|s| Cursor(s.invocation_id));
    }
}

fn by_task(statuses: &[InvocationStatus], order: Order) -> InvocationQuery {
    InvocationQuery {
        task_ids: vec![TaskId::from("tests.listed")],
        statuses: statuses.to_vec(),
        order,
        limit: 4,
        ..InvocationQuery::new()
    }
}

/// The ids of `ids` whose index `keep` accepts, in order.
fn which(ids: &[InvocationId], keep: impl Fn(usize) -> bool) -> Vec<InvocationId> {
    ids.iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, id)| *id)
        .collect()
}

/// Stores 15 invocations of `tests.listed` (a third left REGISTERED, a
/// third RUNNING, a third ended SUCCESS) and 3 of `tests.other` (RUNNING);
/// the ids of `tests.listed` in creation order.
async fn mixed(store: &PostgresStore) -> Vec<InvocationId> {
    let mut listed = Vec::new();
    for i in 0..15 {
        let id = insert_new(store, "tests.listed").await;
        let other = insert_new(store, "tests.other").await;
        if i % 5 == 0 {
            start(store, other).await;
        }
        listed.push(id);
    }
    for (i, id) in listed.iter().enumerate() {
        if i % 3 != 2 {
            start(store, *id).await;
        }
        if i % 3 == 1 {
            succeed(store, *id).await;
        }
    }
    listed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_by_task_merges_the_invocations_in_and_out_of_a_runners_hands() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "listing");
    let ids = mixed(&store).await;
    use InvocationStatus::{Registered, Running, Success};

    // no status asked: every invocation of the task, in id order both ways,
    // page after page, none twice
    let oldest = read_all(&store, by_task(&[], Order::OldestFirst)).await;
    assert_eq!(oldest, ids, "oldest first, all statuses");
    let newest = read_all(&store, by_task(&[], Order::NewestFirst)).await;
    let mut reversed = ids.clone();
    reversed.reverse();
    assert_eq!(newest, reversed, "newest first, all statuses");

    // statuses in a runner's hands only, settled only, and both
    let running = read_all(&store, by_task(&[Running], Order::OldestFirst)).await;
    assert_eq!(running, which(&ids, |i| i % 3 == 0), "RUNNING");
    let registered = read_all(&store, by_task(&[Registered], Order::OldestFirst)).await;
    assert_eq!(registered, which(&ids, |i| i % 3 == 2), "REGISTERED");
    let both = read_all(&store, by_task(&[Success, Running], Order::NewestFirst)).await;
    let mut expected = which(&ids, |i| i % 3 != 2);
    expected.reverse();
    assert_eq!(both, expected, "SUCCESS and RUNNING, newest first");

    // the other task's RUNNING invocations are not listed under this one
    let listed: HashSet<InvocationId> = oldest.into_iter().collect();
    let others = read_all(
        &store,
        InvocationQuery {
            task_ids: vec![TaskId::from("tests.other")],
            statuses: vec![Running],
            limit: 10,
            ..InvocationQuery::new()
        },
    )
    .await;
    assert_eq!(others.len(), 3, "{others:?}");
    assert!(others.iter().all(|id| !listed.contains(id)));

    // the task index holds the settled invocations only: the running ones
    // are reached through the index of owned invocations
    let client = client(&db.url()).await;
    let definition: String = client
        .query_one(
            "SELECT pg_get_indexdef('pynenc_invocations_task'::regclass)",
            &[],
        )
        .await
        .expect("index definition")
        .get(0);
    assert!(
        definition.contains("WHERE (status <> ALL (ARRAY[5, 7, 8, 9]))"),
        "{definition}"
    );
}

#[test]
fn a_schema_of_version_7_is_upgraded_in_place() {
    let Some(db) = test_database() else { return };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ids = rt.block_on(async {
        let store = open(&db, "upgraded");
        let ids = mixed(&store).await;
        drop(store);
        ids
    });
    // as version 7 left it: the task index over every invocation
    db.psql(
        "DROP INDEX pynenc_invocations_task; \
         CREATE INDEX pynenc_invocations_task \
         ON pynenc_invocations (app, task, status, invocation_id); \
         UPDATE pynenc_meta SET value = '7' WHERE key = 'schema_version'",
    );
    rt.block_on(async {
        let store = open(&db, "upgraded");
        let all = read_all(&store, by_task(&[], Order::OldestFirst)).await;
        assert_eq!(all, ids, "every invocation kept and listed");
    });
    let version = db.psql("SELECT value FROM pynenc_meta WHERE key = 'schema_version'");
    assert_eq!(version.trim(), SCHEMA_VERSION.to_string());
    let definition = db.psql("SELECT pg_get_indexdef('pynenc_invocations_task'::regclass)");
    assert!(
        definition.contains(
            "(app, task, status, invocation_id) WHERE (status <> ALL (ARRAY[5, 7, 8, 9]))"
        ),
        "{definition}"
    );
    let indexes = db.psql(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'pynenc_invocations' \
         AND indexname LIKE 'pynenc_invocations_task%'",
    );
    assert_eq!(indexes.trim(), "1", "the old index is gone");
}
