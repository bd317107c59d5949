//! The reuses of invocations on a real server started by the test process
//! (skipped with a message when the server binaries are missing; a failure
//! with `PYNENC_REQUIRE_POSTGRES=1`): the engine's routing records the calls
//! registration concurrency folds into an invocation (also when the
//! invocation is new in the same step), the latest 20 are kept with the
//! total, deleting the invocation forgets them, and so does the app purge
//! (of that app only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use pynenc_model::{
    concurrency_key, Arguments, Call, ConcurrencyControl, ConcurrencySpec, InvocationId,
    ReuseRecord, Reuses, RouteOutcome, RouteRequest, RunOutcome, RunnerId, Serializer, Timestamp,
    REUSES_KEPT,
};
use pynenc_postgres::PostgresStore;
use pynenc_store::{engine, AtomicStore, StoreError};
use pynenc_testservers::postgres::{test_database, TestDatabase};

const TASK: &str = "tests.keyed";

/// A call of [`TASK`] with `k` and `note`, registration concurrency keyed
/// on `k` alone.
fn keyed(k: u32, note: u32) -> RouteRequest {
    let args = Arguments::new()
        .with(Serializer::Json, "k", &k)
        .and_then(|a| a.with(Serializer::Json, "note", &note))
        .expect("serialize");
    let call = Call::new(TASK, args);
    let mut req = RouteRequest::new(call, RunnerId::from("caller"));
    req.concurrency = ConcurrencySpec {
        registration_key: concurrency_key(ConcurrencyControl::Keys, &req.call, &["k"]),
        ..ConcurrencySpec::default()
    };
    req
}

/// Routes a call with key `k` per note, in one step at `now`; whether each
/// made a new invocation, and the invocations.
async fn route(
    store: &PostgresStore,
    k: u32,
    notes: &[u32],
    now: Timestamp,
) -> Vec<(bool, InvocationId)> {
    let notes = notes.to_vec();
    let outcomes = store
        .atomic(move |t| {
            let requests = notes.iter().map(|n| keyed(k, *n)).collect();
            engine::route(t, requests, Serializer::Json, now)
        })
        .await
        .unwrap();
    outcomes
        .iter()
        .map(|o| (matches!(o, RouteOutcome::New(_)), o.record().invocation_id))
        .collect()
}

async fn reuses(store: &PostgresStore, id: InvocationId) -> Reuses {
    store.atomic(move |t| t.reuses_of(&id)).await.unwrap()
}

/// Rows of `pynenc_reuses` per app id, as `app:count`.
fn rows_per_app(db: &TestDatabase) -> Vec<String> {
    db.psql(
        "SELECT a.app_id || ':' || COUNT(r.seq) FROM pynenc_apps AS a \
         LEFT JOIN pynenc_reuses AS r ON r.app = a.app GROUP BY a.app_id ORDER BY a.app_id",
    )
    .lines()
    .map(|l| l.trim().to_string())
    .collect()
}

/// The note a reuse's differing arguments carry.
fn note_of(reuse: &ReuseRecord) -> Option<&str> {
    assert_eq!(reuse.differing.len(), 1, "only the note differs");
    assert_eq!(reuse.differing[0].name, "note");
    reuse.differing[0].value.as_deref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuses_are_recorded_capped_and_forgotten_with_their_invocation() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "reuses");
    let other = open(&db, "reuses-other");

    // a new invocation and its first reuse in one step (the reuse of an
    // invocation not committed yet)
    let t0 = Timestamp::from_micros(1_000_000);
    let first = route(&store, 1, &[0, 1], t0).await;
    let id = first[0].1;
    assert_eq!(first, vec![(true, id), (false, id)]);
    let seen = reuses(&store, id).await;
    assert_eq!(seen.total, 1);
    assert_eq!(seen.latest.len(), 1);
    assert_eq!(seen.latest[0].at, t0);
    assert_eq!(seen.latest[0].caller, None);
    assert_eq!(note_of(&seen.latest[0]), Some("1"));

    // four more one step each, then twenty in one step: 25 in all
    for n in 2..=5 {
        let at = Timestamp::from_micros(1_000_000 + i64::from(n));
        assert_eq!(route(&store, 1, &[n], at).await, vec![(false, id)]);
    }
    let t1 = Timestamp::from_micros(2_000_000);
    let batch: Vec<u32> = (6..=25).collect();
    let routed = route(&store, 1, &batch, t1).await;
    assert!(routed.iter().all(|r| *r == (false, id)));
    // another key: a new invocation of its own
    let apart = route(&store, 2, &[0, 1], t1).await;
    assert!(apart[0].0 && apart[0].1 != id);

    let seen = reuses(&store, id).await;
    assert_eq!(seen.total, 25);
    assert_eq!(seen.latest.len(), REUSES_KEPT);
    let notes: Vec<Option<&str>> = seen.latest.iter().map(note_of).collect();
    let want: Vec<String> = (6..=25).map(|n: u32| n.to_string()).collect();
    assert_eq!(
        notes,
        want.iter().map(|n| Some(n.as_str())).collect::<Vec<_>>()
    );
    assert!(seen.latest.iter().all(|r| r.at == t1));
    let kept = db.psql(&format!(
        "SELECT MIN(seq) || ':' || MAX(seq) || ':' || COUNT(*) FROM pynenc_reuses \
         WHERE invocation_id = '{id}'"
    ));
    assert_eq!(kept.trim(), "6:25:20", "older rows dropped, seq kept");
    assert_eq!(reuses(&store, apart[0].1).await.total, 1);

    // a row this version cannot read is left out, and still counted
    db.psql(&format!(
        "INSERT INTO pynenc_reuses (app, invocation_id, seq, note) \
         SELECT app, '{id}', 26, 'not a reuse' FROM pynenc_apps WHERE app_id = 'reuses'"
    ));
    let unreadable = reuses(&store, id).await;
    assert_eq!(unreadable.total, 26);
    assert_eq!(unreadable.latest, seen.latest[1..].to_vec());

    // an unknown invocation: none, and no reuse can be added to it
    let unknown = InvocationId::time_ordered();
    assert_eq!(reuses(&store, unknown).await, Reuses::default());
    let record = seen.latest[0].clone();
    let e = store
        .atomic(move |t| t.add_reuse(&unknown, &record))
        .await
        .expect_err("no such invocation");
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    assert_eq!(reuses(&store, unknown).await, Reuses::default());

    // the invocation runs, ends and is deleted: its reuses go with it
    let picked = store
        .atomic(|t| engine::pick_and_start(t, &runner(), 10, None, Timestamp::now()))
        .await
        .unwrap();
    assert!(picked.iter().any(|r| r.invocation_id == id));
    store
        .atomic(move |t| {
            let outcome = RunOutcome::Success("1".into());
            engine::finish(t, &id, &runner(), outcome, None, Timestamp::now())
        })
        .await
        .unwrap();
    let deleted = store
        .atomic(move |t| engine::delete_final(t, &[id]))
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(reuses(&store, id).await, Reuses::default());
    let left = db.psql(&format!(
        "SELECT COUNT(*) FROM pynenc_reuses WHERE invocation_id = '{id}'"
    ));
    assert_eq!(left.trim(), "0");

    // the app purge forgets the rest of this app's, not another app's
    route(&other, 1, &[0, 1, 2], t1).await;
    assert_eq!(rows_per_app(&db), vec!["reuses:1", "reuses-other:2"]);
    store.atomic(|t| t.purge()).await.unwrap();
    assert_eq!(rows_per_app(&db), vec!["reuses:0", "reuses-other:2"]);
    assert_eq!(reuses(&store, apart[0].1).await, Reuses::default());
}
