//! The end of a run takes the row its pick-up left in the process, checked
//! by its commit; and a pick parked by a runner runs in the transaction
//! that queued its work. On a server the test starts (skipped with a
//! message when the server binaries are missing; a failure with
//! `PYNENC_REQUIRE_POSTGRES=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{InvocationId, InvocationStatus, RunOutcome, RunnerId, Timestamp};
use pynenc_postgres::PostgresStore;
use pynenc_store::{engine, AtomicStore, EndOutcome, RunEnd};
use pynenc_testservers::postgres::test_database;

/// Ends the run of `id` by the tests' runner with a success (one step).
async fn end(store: &PostgresStore, id: InvocationId) -> EndOutcome {
    end_by(store, id, "runner-1").await
}

/// Ends the run of `id` by `by` with a success (one step).
async fn end_by(store: &PostgresStore, id: InvocationId, by: &'static str) -> EndOutcome {
    let ends = vec![RunEnd::new(id, RunOutcome::Success("1".to_string()))];
    let report = store
        .atomic(move |t| {
            let by = RunnerId::from(by);
            engine::finish_many_and_start(t, &by, ends.clone(), 0, None, Timestamp::now())
        })
        .await
        .expect("end");
    report.ends.into_iter().next().expect("one end")
}

/// The status and owner of `id` in the database.
async fn stored(client: &tokio_postgres::Client, id: InvocationId) -> (i16, Option<String>) {
    let row = client
        .query_one(
            "SELECT status, owner FROM pynenc_invocations WHERE invocation_id = $1",
            &[&id.as_str()],
        )
        .await
        .expect("read the row");
    (row.get(0), row.get(1))
}

/// Makes runner-2 the owner of `id`, as another process would.
async fn take_over(client: &tokio_postgres::Client, id: InvocationId) {
    client
        .execute(
            "UPDATE pynenc_invocations SET owner = 'runner-2' WHERE invocation_id = $1",
            &[&id.as_str()],
        )
        .await
        .expect("change the owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_takes_the_row_its_pick_up_left_unless_another_process_changed_it() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "seen");
    let client = client(&db.url()).await;
    let (kept, moved) = (
        insert_new(&store, "tests.kept").await,
        insert_new(&store, "tests.moved").await,
    );
    start(&store, kept).await;
    start(&store, moved).await;
    // another process takes `moved` over (as a recovery and a pick-up by
    // runner-2 would): the row this process saw is no more
    take_over(&client, moved).await;

    let ended = end(&store, kept).await;
    assert!(
        matches!(ended, EndOutcome::Recorded(InvocationStatus::Success)),
        "an unchanged row ends: {ended:?}"
    );
    assert_eq!(stored(&client, kept).await.0, 13, "SUCCESS stored");

    // refused by the row this process saw, which the check finds changed:
    // the group runs again on the row read, and runner-2 ends its run
    let taken_over = end_by(&store, moved, "runner-2").await;
    assert!(
        matches!(taken_over, EndOutcome::Recorded(InvocationStatus::Success)),
        "the end by the run's owner now is recorded: {taken_over:?}"
    );
    assert_eq!(stored(&client, moved).await.0, 13, "SUCCESS stored");
    // the same for a run whose end this process goes on to write: its
    // commit fails the check, and the group runs again on the row read
    let changed = insert_new(&store, "tests.changed").await;
    start(&store, changed).await;
    take_over(&client, changed).await;
    let refused = end(&store, changed).await;
    assert!(
        matches!(refused, EndOutcome::NotRecorded(_)),
        "the end of a run another runner owns now is refused, as the row read says: {refused:?}"
    );
    assert_eq!(
        stored(&client, changed).await,
        (7, Some("runner-2".to_string())),
        "the row another process changed is untouched (RUNNING, its owner)"
    );
    // the check's failure cost a second run of the group, nothing else:
    // the store goes on
    let next = insert_new(&store, "tests.next").await;
    start(&store, next).await;
    assert!(matches!(
        end(&store, next).await,
        EndOutcome::Recorded(InvocationStatus::Success)
    ));
}

/// Parks a pick of up to 4 for `runner` on `store` at its current work
/// epoch, and waits until it is parked (again, when the epoch moved
/// meanwhile — a listener's reconnection moves it — and the pick ran at
/// once, finding nothing).
async fn park(
    store: &Arc<PostgresStore>,
    runner: &'static str,
) -> tokio::task::JoinHandle<Option<Vec<InvocationId>>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let epoch = store.work_epoch();
        let parked = store.clone();
        let handle = tokio::spawn(async move {
            let picked = parked
                .atomic_when_work(Some(epoch), Duration::from_secs(10), move |t| {
                    let runner = RunnerId::from(runner);
                    engine::pick_and_start(t, &runner, 4, None, Timestamp::now())
                })
                .await
                .expect("the parked pick");
            picked.map(|records| records.iter().map(|r| r.invocation_id).collect())
        });
        while store.parked_picks() == 0 && !handle.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the pick was not parked"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if store.parked_picks() > 0 {
            return handle;
        }
        let ran = handle.await.expect("join");
        assert_eq!(ran, Some(Vec::new()), "nothing was queued to pick");
    }
}

/// Stores and queues a new invocation of `task` (one step); its id.
async fn queue_new(store: &PostgresStore, task: &str) -> InvocationId {
    let (record, status) = new_invocation(task);
    let id = record.invocation_id;
    store
        .atomic(move |t| {
            t.insert_invocation(&record, &status)?;
            t.enqueue(&id)
        })
        .await
        .expect("queue");
    id
}

/// Whether the invocation's row was last written by the transaction that
/// stored its record (its record is written once, when it is routed).
async fn picked_where_routed(client: &tokio_postgres::Client, id: InvocationId) -> bool {
    client
        .query_one(
            "SELECT i.xmin::text = r.xmin::text FROM pynenc_invocations AS i \
             JOIN pynenc_records AS r USING (app, invocation_id) WHERE invocation_id = $1",
            &[&id.as_str()],
        )
        .await
        .expect("read the transactions")
        .get(0)
}

/// How many queue positions were ever handed out.
async fn queue_positions(client: &tokio_postgres::Client) -> i64 {
    let row = client
        .query_one("SELECT last_value, is_called FROM pynenc_queue_seq", &[])
        .await
        .expect("read the queue's sequence");
    if row.get::<_, bool>(1) {
        row.get(0)
    } else {
        0
    }
}

/// The status codes in the history of `id`, in order, and whether its
/// status time is the last entry's.
async fn history(client: &tokio_postgres::Client, id: InvocationId) -> (Vec<i64>, bool) {
    let row = client
        .query_one(
            "SELECT history, status_at_us FROM pynenc_invocations WHERE invocation_id = $1",
            &[&id.as_str()],
        )
        .await
        .expect("read the history");
    let lines: Vec<serde_json::Value> = row
        .get::<_, &str>(0)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a history line is JSON"))
        .collect();
    let codes = lines
        .iter()
        .map(|l| l[0].as_i64().expect("a code"))
        .collect();
    let last_at = lines.last().and_then(|l| l[3].as_i64());
    (codes, last_at == Some(row.get::<_, i64>(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_pick_runs_in_the_transaction_that_queued_its_work() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "parked");
    let other = open(&db, "parked");
    until_hearing(&store).await;
    until_hearing(&other).await;
    let client = client(&db.url()).await;

    // parked by a runner of this process after a pick that found the
    // queue empty (so the store knows it drained): picked in the routing
    // transaction, from what it queued
    let found = store
        .atomic(|t| engine::pick_and_start(t, &runner(), 4, None, Timestamp::now()))
        .await
        .expect("a pick of the empty queue");
    assert!(found.is_empty());
    let here = park(&store, "runner-1").await;
    let routed = queue_new(&store, "tests.here").await;
    assert_eq!(here.await.expect("join"), Some(vec![routed]));
    assert_eq!(
        stored(&client, routed).await,
        (7, Some("runner-1".to_string()))
    );
    assert!(
        picked_where_routed(&client, routed).await,
        "routed and picked in one transaction"
    );
    assert_eq!(store.parked_picks(), 0);
    assert_eq!(
        queue_positions(&client).await,
        0,
        "taken from the group's own appends: the queue was never written"
    );
    assert_eq!(
        history(&client, routed).await,
        (vec![5, 7], true),
        "PENDING and RUNNING (the test stored no entry for the insert) in one insert, \
         its status time the last one's"
    );

    // parked in another process: woken by its notification, picked apart
    let there = park(&other, "runner-2").await;
    let routed = queue_new(&store, "tests.there").await;
    assert_eq!(there.await.expect("join"), Some(vec![routed]));
    assert_eq!(
        stored(&client, routed).await,
        (7, Some("runner-2".to_string()))
    );
    assert!(
        !picked_where_routed(&client, routed).await,
        "another process's pick is a transaction of its own"
    );
    assert_eq!(
        queue_positions(&client).await,
        1,
        "queued for the other process"
    );
    assert_eq!(history(&client, routed).await, (vec![5, 7], true));
    assert_eq!(other.parked_picks(), 0, "taken back by its runner");

    // no work within the wait: nothing picked, nothing left parked
    let epoch = store.work_epoch();
    let none = store
        .atomic_when_work(Some(epoch), Duration::from_millis(100), |t| {
            engine::pick_and_start(t, &runner(), 4, None, Timestamp::now())
        })
        .await
        .expect("a parked pick that times out");
    assert!(none.is_none(), "no work came");
    assert_eq!(store.parked_picks(), 0);
}
