//! The commit counter of each writer (`pynenc_commits`): how a group that
//! sends `BEGIN`, its writes and `COMMIT` in one round trip is settled when
//! the connection is lost before any answer came.
//!
//! A group that read nothing before its commit (a routed call: only held
//! writes) would otherwise need a round trip of its own to learn its
//! transaction's id, the one thing that settles a `COMMIT` whose answer is
//! lost (`txid_status`). Instead it writes its writer's next number in the
//! same transaction ([`COUNT_COMMIT`]); after reconnecting, the writer
//! takes the app's lock — which the lost session holds until its
//! transaction ends — and reads its number back ([`settled`]): the group
//! committed exactly when the number is there. When the transaction's id
//! did arrive, it settles the group as before.
//!
//! A writer's row is one per process and store, updated in place; a writer
//! removes it when its store is gone, and rows not written for a day go
//! when a store opens ([`forget_old`]).

use tokio_postgres::{Client, SimpleQueryMessage};

/// Writes commit number `$3` of writer `$2` of app `$1`, at `$4` (µs).
pub(crate) const COUNT_COMMIT: &str = "INSERT INTO pynenc_commits (app, writer, seq, at_us) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (app, writer) DO UPDATE SET seq = excluded.seq, at_us = excluded.at_us";

/// How long a row stays after its writer's last commit of this kind (a
/// day: a settle asks within the writer's `retry_for`).
const KEPT_FOR_US: i64 = 86_400_000_000;

/// Removes the rows of app `app` not written for [`KEPT_FOR_US`] (writers
/// of processes that ended without removing theirs); a failure is logged.
pub(crate) async fn forget_old(client: &Client, app: i32) {
    let before = pynenc_model::Timestamp::now().as_micros() - KEPT_FOR_US;
    let forgot = client
        .execute(
            "DELETE FROM pynenc_commits WHERE app = $1 AND at_us < $2",
            &[&app, &before],
        )
        .await;
    if let Err(e) = forgot {
        tracing::debug!(error = %e, "old commit numbers stay until the next store opens");
    }
}

/// A number for a new writer: different for every writer of every process
/// (random, from the standard library's per-process hash keys).
pub(crate) fn new_writer_key() -> i64 {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let key = std::collections::hash_map::RandomState::new().hash_one((std::process::id(), now));
    i64::from_ne_bytes(key.to_ne_bytes())
}

/// Whether commit `seq` of writer `writer` (app `app`, whose advisory lock
/// is `lock_key`) committed, asked on `client`: under the app's lock, so a
/// lost session still running the group is waited for (2 s at most per
/// ask: an error then, to ask again).
pub(crate) async fn settled(
    client: &Client,
    app: i32,
    lock_key: i64,
    writer: i64,
    seq: i64,
) -> Result<bool, tokio_postgres::Error> {
    let sql = format!(
        "BEGIN; SET LOCAL lock_timeout = '2s'; SELECT pg_advisory_xact_lock({lock_key}); \
         SELECT seq FROM pynenc_commits WHERE app = {app} AND writer = {writer}"
    );
    let asked = client.simple_query(&sql).await;
    // ends the transaction (aborted or not); a lost connection fails `asked` too
    let _ = client.batch_execute("ROLLBACK").await;
    let found = asked?
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse::<i64>().ok()),
            _ => None,
        })
        .last();
    Ok(found.is_some_and(|n| n >= seq))
}

/// Removes the row of writer `writer` of app `app` (its store is gone).
pub(crate) async fn forget(
    client: &Client,
    app: i32,
    writer: i64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM pynenc_commits WHERE app = $1 AND writer = $2",
            &[&app, &writer],
        )
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A commit is settled by its number: there (or passed) is committed,
    /// missing is not; a session holding the app's lock is waited for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_is_settled_by_its_number_under_the_apps_lock() {
        let Some(db) = pynenc_testservers::postgres::test_database() else {
            return;
        };
        let asker = crate::pending::client_on_schema(&db.url(), "counted").await;
        let other = crate::pending::client_on_schema(&db.url(), "counted").await;
        let app: i32 = asker
            .query_one("SELECT app FROM pynenc_apps WHERE app_id = 'counted'", &[])
            .await
            .expect("the app's number")
            .get(0);
        let lock_key = crate::store::lock_key(app);
        let writer = new_writer_key();
        assert!(!settled(&asker, app, lock_key, writer, 1)
            .await
            .expect("ask"));
        other
            .execute(COUNT_COMMIT, &[&app, &writer, &5_i64, &1_i64])
            .await
            .expect("count");
        assert!(settled(&asker, app, lock_key, writer, 5)
            .await
            .expect("ask"));
        assert!(settled(&asker, app, lock_key, writer, 4)
            .await
            .expect("ask"));
        assert!(!settled(&asker, app, lock_key, writer, 6)
            .await
            .expect("ask"));
        assert!(!settled(&asker, app, lock_key, writer + 1, 5)
            .await
            .expect("ask"));
        // a session still in its transaction, holding the lock, commits
        // number 6 after 300 ms: the ask waits for it
        other
            .batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({lock_key})"))
            .await
            .expect("lock");
        other
            .execute(COUNT_COMMIT, &[&app, &writer, &6_i64, &2_i64])
            .await
            .expect("count");
        let started = Instant::now();
        let commit = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            other.batch_execute("COMMIT").await.expect("commit");
        };
        let (asked, ()) = tokio::join!(settled(&asker, app, lock_key, writer, 6), commit);
        assert!(asked.expect("ask"), "committed while the ask waited");
        assert!(started.elapsed() >= Duration::from_millis(250));
        // a session holding the lock for longer than the ask waits: an
        // error, to ask again
        other
            .batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({lock_key})"))
            .await
            .expect("lock");
        assert!(settled(&asker, app, lock_key, writer, 7).await.is_err());
        other.batch_execute("ROLLBACK").await.expect("rollback");
        assert!(!settled(&asker, app, lock_key, writer, 7)
            .await
            .expect("ask"));
        forget(&asker, app, writer).await.expect("forget");
        assert!(!settled(&asker, app, lock_key, writer, 1)
            .await
            .expect("ask"));
    }
}
