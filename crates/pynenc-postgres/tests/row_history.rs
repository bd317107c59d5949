//! An invocation's history, result and error live in its row (schema 6):
//! whichever held write carries them — the insert of the row, a status
//! write of the same group, or an update of their own when the group wrote
//! no status — another process reads every entry in the order written and
//! the whole outcome; a history the library cannot read is named, and the
//! other invocations still read. On a server the test starts (skipped with
//! a message when the server binaries are missing; a failure with
//! `PYNENC_REQUIRE_POSTGRES=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use pynenc_model::{
    HistoryEntry, HistoryStep, InvocationId, InvocationStatus, RunnerId, TaskError, Timestamp,
};
use pynenc_postgres::PostgresStore;
use pynenc_store::{engine, AtomicStore};
use pynenc_testservers::postgres::test_database;

/// A context with what JSON escapes: a line break, quotes, a backslash.
const AWKWARD: &str = "line one\nline \"two\" \\ ☃";

async fn history(store: &PostgresStore, id: InvocationId) -> Vec<HistoryEntry> {
    store
        .read(move |t| t.get_history(&id))
        .await
        .expect("read the history")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_outcome_are_read_whole_whichever_write_carried_them() {
    use InvocationStatus::*;
    let Some(db) = test_database() else { return };
    let store = open(&db, "rows");
    let other = open(&db, "rows");
    let caller = RunnerId::from("caller-1");
    let (record, registered) = new_invocation("tests.row");
    let id = record.invocation_id;

    // one group: the insert, its first entry and a status write, all held
    let by = caller.clone();
    store
        .atomic(move |t| {
            t.insert_invocation(&record, &registered)?;
            t.append_history(HistoryStep {
                invocation_id: &id,
                status: Registered,
                owner: None,
                actor: &by,
                timestamp: Timestamp::now(),
                execution_context: Some(AWKWARD),
            })?;
            engine::transition(t, &id, Pending, &runner(), None, Timestamp::now())?;
            Ok(())
        })
        .await
        .expect("insert and hand out");

    // a group reads its own held entries
    let seen = store
        .atomic(move |t| {
            engine::transition(t, &id, Running, &runner(), Some("host:1"), Timestamp::now())?;
            t.get_history(&id)
        })
        .await
        .expect("run and read");
    assert_eq!(
        seen.iter().map(|e| e.status).collect::<Vec<_>>(),
        [Registered, Pending, Running],
        "the group's own entries, in order"
    );

    // an error and an entry without a status write, then the retry
    store
        .atomic(move |t| {
            t.set_error(&id, &TaskError::retry("once more"))?;
            t.append_history(HistoryStep {
                invocation_id: &id,
                status: Running,
                owner: Some(&runner()),
                actor: &runner(),
                timestamp: Timestamp::now(),
                execution_context: None,
            })
        })
        .await
        .expect("an error alone");
    store
        .atomic(move |t| {
            engine::transition(t, &id, Retry, &runner(), None, Timestamp::now())?;
            engine::transition(t, &id, Pending, &runner(), None, Timestamp::now())?;
            engine::transition(t, &id, Running, &runner(), None, Timestamp::now())?;
            Ok(())
        })
        .await
        .expect("the retry");
    // a result alone, then the end
    store
        .atomic(move |t| t.set_result(&id, "\"done\"".to_string()))
        .await
        .expect("a result alone");
    store
        .atomic(move |t| {
            engine::transition(t, &id, Success, &runner(), None, Timestamp::now())?;
            Ok(())
        })
        .await
        .expect("the end");

    let read = history(&other, id).await;
    assert_eq!(
        read.iter().map(|e| e.status).collect::<Vec<_>>(),
        [Registered, Pending, Running, Running, Retry, Pending, Running, Success],
        "every entry, in the order written"
    );
    assert_eq!(read[0].actor, caller);
    assert_eq!(read[0].owner, None);
    assert_eq!(read[0].execution_context.as_deref(), Some(AWKWARD));
    assert_eq!(read[2].owner, Some(runner()));
    assert_eq!(read[2].execution_context.as_deref(), Some("host:1"));
    assert!(read.iter().all(|e| e.invocation_id == id));
    assert!(
        read.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
        "dated in order"
    );
    let outcome = other
        .read(move |t| t.get_outcome(&id))
        .await
        .expect("read the outcome")
        .expect("the invocation exists");
    assert_eq!(outcome.status, Success);
    assert_eq!(outcome.result.as_deref(), Some("\"done\""));
    assert_eq!(
        outcome.error.map(|e| e.message),
        Some("once more".to_string()),
        "a success after a retry keeps the retry's error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_that_cannot_be_read_is_named_and_the_others_still_read() {
    use InvocationStatus::*;
    let Some(db) = test_database() else { return };
    let store = open(&db, "rows");
    let (bad, good) = (
        insert_new(&store, "tests.bad").await,
        insert_new(&store, "tests.good").await,
    );
    for id in [bad, good] {
        store
            .atomic(move |t| {
                engine::transition(t, &id, Pending, &runner(), None, Timestamp::now())?;
                Ok(())
            })
            .await
            .expect("hand out");
    }
    let raw = client(&db.url()).await;
    raw.execute(
        "UPDATE pynenc_invocations SET history = history || 'not a history line' || chr(10) \
         WHERE invocation_id = $1",
        &[&bad.as_str()],
    )
    .await
    .expect("spoil one history");

    let err = store
        .read(move |t| t.get_history(&bad))
        .await
        .expect_err("a spoiled history is an error");
    let message = err.to_string();
    assert!(
        message.contains(bad.as_str()) && message.contains("history"),
        "the error names the invocation and what of it: {message}"
    );
    assert_eq!(
        history(&store, good).await.len(),
        1,
        "the other invocation reads"
    );
    // and the store goes on writing
    store
        .atomic(move |t| {
            engine::transition(t, &good, Running, &runner(), None, Timestamp::now())?;
            Ok(())
        })
        .await
        .expect("the next step");
    assert_eq!(history(&store, good).await.len(), 2);
}
