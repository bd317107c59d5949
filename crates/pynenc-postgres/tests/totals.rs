//! The task totals on a real server started by the test process (skipped
//! with a message when the server binaries are missing; a failure with
//! `PYNENC_REQUIRE_POSTGRES=1`): the engine's routing, pick-ups and ends of
//! runs count them in their own steps (a read in the same step sees its
//! held additions), deleting invocations keeps them, the app purge forgets
//! them and leaves another app's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::time::Duration;

use pynenc_model::{
    Arguments, Call, InvocationId, RouteRequest, RunOutcome, RunnerId, Serializer, TaskCounter,
    TaskError, TaskId, TaskTotals, Timestamp, RUN_TIME_BUCKETS,
};
use pynenc_postgres::PostgresStore;
use pynenc_store::{engine, AtomicStore, StoreError};
use pynenc_testservers::postgres::test_database;

const A: &str = "tests.a";
const B: &str = "tests.b";

/// Routes one call of `task` per `n`; the new invocations' ids.
async fn route(store: &PostgresStore, task: &'static str, ns: &[u32]) -> Vec<InvocationId> {
    let ns = ns.to_vec();
    let outcomes = store
        .atomic(move |t| {
            let requests = ns
                .iter()
                .map(|n| {
                    let args = Arguments::new()
                        .with(Serializer::Json, "n", n)
                        .expect("serialize");
                    RouteRequest::new(Call::new(task, args), RunnerId::from("caller"))
                })
                .collect();
            engine::route(t, requests, Serializer::Json, Timestamp::now())
        })
        .await
        .unwrap();
    outcomes.iter().map(|o| o.record().invocation_id).collect()
}

/// Picks up to `max` invocations and starts them; their ids.
async fn start(store: &PostgresStore, max: usize) -> Vec<InvocationId> {
    let picked = store
        .atomic(move |t| engine::pick_and_start(t, &runner(), max, None, Timestamp::now()))
        .await
        .unwrap();
    picked.iter().map(|r| r.invocation_id).collect()
}

/// Ends the run of `id` with `outcome`, measured at `ran_for` µs if given,
/// and reads the totals of every task in the same step.
async fn finish(
    store: &PostgresStore,
    id: InvocationId,
    outcome: RunOutcome,
    ran_for: Option<u64>,
) -> Vec<TaskTotals> {
    store
        .atomic(move |t| {
            let ran_for = ran_for.map(Duration::from_micros);
            engine::finish(
                t,
                &id,
                &runner(),
                outcome.clone(),
                ran_for,
                Timestamp::now(),
            )?;
            t.task_totals(&[])
        })
        .await
        .unwrap()
}

async fn totals(store: &PostgresStore, tasks: &[&str]) -> Vec<TaskTotals> {
    let tasks: Vec<TaskId> = tasks.iter().map(|t| TaskId::from(*t)).collect();
    store.atomic(move |t| t.task_totals(&tasks)).await.unwrap()
}

/// The counters in the order of [`TaskCounter::ALL`] and the run times of
/// one task's totals.
fn expected(task: &str, counts: [u64; 6], runs: &[(usize, u64)], sum_us: u64) -> TaskTotals {
    let mut t = TaskTotals::new(TaskId::from(task));
    t.counts = counts;
    let mut buckets = [0; RUN_TIME_BUCKETS];
    for (bucket, n) in runs {
        buckets[*bucket] = *n;
    }
    t.run_times.buckets = buckets;
    t.run_times.sum_us = sum_us;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_are_counted_kept_by_deletes_and_forgotten_by_the_purge() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "totals");
    let other = open(&db, "totals-other");
    route(&other, A, &[1]).await;

    let a = route(&store, A, &[1, 2, 3]).await;
    let b = route(&store, B, &[1, 2]).await;
    let routed = totals(&store, &[]).await;
    assert_eq!(routed.len(), 2);
    assert_eq!(routed[0].task_id.as_str(), A);
    assert_eq!(routed[0].get(TaskCounter::Routed), 3);
    assert_eq!(routed[1].get(TaskCounter::Routed), 2);
    assert_eq!(routed[1].get(TaskCounter::Started), 0);

    let mut started = start(&store, 10).await;
    started.sort();
    let mut all: Vec<InvocationId> = a.iter().chain(&b).copied().collect();
    all.sort();
    assert_eq!(started, all, "every routed invocation runs");

    // a: a success (bucket 0), a failure (bucket 1), a retry (bucket 3)
    // that runs again and succeeds (bucket 0); b: two successes, one
    // measured (bucket 7), one not
    let error = TaskError::new("ValueError", "bad");
    finish(&store, a[0], RunOutcome::Success("1".into()), Some(500)).await;
    finish(&store, a[1], RunOutcome::Failed(error), Some(2_000)).await;
    let retry = RunOutcome::Retry(TaskError::retry("again"));
    let seen = finish(&store, a[2], retry, Some(30_000)).await;
    assert_eq!(
        seen[0].get(TaskCounter::Retried),
        1,
        "read in the same step"
    );
    assert_eq!(seen[0].run_times.count(), 3, "read in the same step");
    assert_eq!(start(&store, 10).await, vec![a[2]]);
    finish(&store, a[2], RunOutcome::Success("3".into()), Some(1_000)).await;
    finish(
        &store,
        b[0],
        RunOutcome::Success("1".into()),
        Some(7_000_000),
    )
    .await;
    let end = finish(&store, b[1], RunOutcome::Success("2".into()), None).await;

    let want_a = expected(A, [3, 4, 2, 1, 1, 0], &[(0, 2), (1, 1), (3, 1)], 33_500);
    let want_b = expected(B, [2, 2, 2, 0, 0, 0], &[(7, 1)], 7_000_000);
    assert_eq!(end, vec![want_a.clone(), want_b.clone()]);
    assert_eq!(totals(&store, &[]).await, end, "as committed");
    assert_eq!(totals(&store, &[B]).await, vec![want_b.clone()]);
    assert_eq!(totals(&store, &[B, A, "tests.none"]).await, end);
    assert_eq!(totals(&store, &["tests.none"]).await, vec![]);

    // a run time of an invocation that is not there
    let missing = InvocationId::time_ordered();
    let e = store
        .atomic(move |t| t.add_run_time(&missing, 10))
        .await
        .expect_err("no such invocation");
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");

    // deleting every invocation keeps the totals
    let deleted = store
        .atomic(move |t| {
            let ids = t.list_invocation_ids()?;
            engine::delete_final(t, &ids)
        })
        .await
        .unwrap();
    assert_eq!(deleted, 5);
    assert!(store
        .atomic(|t| t.count_by_status(&[]))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(totals(&store, &[]).await, vec![want_a, want_b]);

    // the app purge forgets them, and only this app's
    store.atomic(|t| t.purge()).await.unwrap();
    assert_eq!(totals(&store, &[]).await, vec![]);
    let kept = totals(&other, &[]).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].get(TaskCounter::Routed), 1);
    let rows = db.psql(
        "SELECT a.app_id || ':' || COUNT(t.n) FROM pynenc_apps AS a \
         LEFT JOIN pynenc_task_totals AS t ON t.app = a.app GROUP BY a.app_id ORDER BY a.app_id",
    );
    let rows: Vec<&str> = rows.lines().map(str::trim).collect();
    assert_eq!(rows, vec!["totals:0", "totals-other:1"]);
}
