//! The outcomes a process keeps when it ends an invocation that one of its
//! own waits waits for (read by that wait without a round trip) are the
//! ones the database holds — as another process reads them — and are kept
//! only when the process wrote them whole: an invocation that succeeded
//! after a retry keeps the retry's error in the database, so its outcome is
//! read there. On a server the test starts (skipped with a message when
//! the server binaries are missing; a failure with
//! `PYNENC_REQUIRE_POSTGRES=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use pynenc_model::{InvocationId, InvocationOutcome, InvocationStatus, TaskError, Timestamp};
use pynenc_store::{engine, AtomicStore};
use pynenc_testservers::postgres::test_database;

/// Moves `id` along `path`, each step one transition by the tests' runner.
async fn walk(
    store: &pynenc_postgres::PostgresStore,
    id: InvocationId,
    path: &'static [InvocationStatus],
) {
    store
        .atomic(move |t| {
            for to in path {
                engine::transition(t, &id, *to, &runner(), None, Timestamp::now())?;
            }
            Ok(())
        })
        .await
        .expect("transitions");
}

/// The outcomes of `ids` as the database holds them, read by `store`.
async fn stored(
    store: &pynenc_postgres::PostgresStore,
    ids: &[InvocationId],
) -> Vec<InvocationOutcome> {
    let ids = ids.to_vec();
    store
        .read(move |t| engine::outcomes(t, &ids))
        .await
        .expect("read the outcomes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_kept_for_a_wait_are_those_stored_and_only_whole_ones() {
    use InvocationStatus::*;
    let Some(db) = test_database() else { return };
    let store = open(&db, "known");
    let other = open(&db, "known");
    let (ok_id, failed_id, retried_id, unwaited_id) = (
        insert_new(&store, "tests.ok").await,
        insert_new(&store, "tests.failed").await,
        insert_new(&store, "tests.retried").await,
        insert_new(&store, "tests.unwaited").await,
    );
    for id in [ok_id, failed_id, retried_id, unwaited_id] {
        walk(&store, id, &[Pending, Running]).await;
    }
    // the retried one fails once and runs again
    store
        .atomic(move |t| {
            t.set_error(&retried_id, &TaskError::retry("once more"))?;
            engine::transition(t, &retried_id, Retry, &runner(), None, Timestamp::now())?;
            Ok(())
        })
        .await
        .expect("retry");
    walk(&store, retried_id, &[Pending, Running]).await;

    // a wait of this process, registered on its first poll
    let waited = [ok_id, failed_id, retried_id];
    let mut wait = Box::pin(store.wait_final(&waited));
    assert!(
        futures::poll!(&mut wait).is_pending(),
        "nothing is final yet"
    );
    store
        .atomic(move |t| {
            let now = Timestamp::now();
            for id in [ok_id, retried_id, unwaited_id] {
                t.set_result(&id, format!("\"result of {id}\""))?;
                engine::transition(t, &id, Success, &runner(), None, now)?;
            }
            t.set_error(&failed_id, &TaskError::new("ValueError", "bad input"))?;
            engine::transition(t, &failed_id, Failed, &runner(), None, now)?;
            Ok(())
        })
        .await
        .expect("the ends");
    wait.await.expect("the wait ends");

    let from_db = stored(&other, &[ok_id, failed_id, retried_id]).await;
    let known = store
        .known_outcomes(&[ok_id, failed_id])
        .expect("the outcomes written whole, for a wait of this process, are kept");
    assert_eq!(
        known,
        from_db[..2].to_vec(),
        "kept as the database holds them"
    );
    assert_eq!(
        known[0].result.as_deref(),
        Some(format!("\"result of {ok_id}\"").as_str())
    );
    assert_eq!(known[1].status, Failed);
    assert!(
        store.known_outcomes(&[ok_id]).is_none(),
        "a kept outcome is taken once"
    );
    assert!(
        store.known_outcomes(&[retried_id]).is_none(),
        "a success after a retry is not kept whole"
    );
    assert_eq!(
        from_db[2].error.as_ref().map(|e| e.message.as_str()),
        Some("once more"),
        "the database keeps the retry's error beside the result"
    );
    assert!(
        store.known_outcomes(&[unwaited_id]).is_none(),
        "an outcome nobody in the process waited for is not kept"
    );
    // the adapter reads what is not kept: the same outcomes either way
    assert_eq!(
        stored(&store, &[ok_id, failed_id, retried_id]).await,
        from_db
    );
}
