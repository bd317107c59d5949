//! The registry of listeners (`pynenc_listeners`): which stores of an app
//! hear its channel, so that a committing group notifies only when a
//! listener of another store may be waiting for it.
//!
//! A process alone with its app (a service running its own runner) needs
//! no `NOTIFY`: its writer wakes its own waiters after each commit, and
//! the server's delivery of every notification to the process's own
//! listener, which drops it, cost about a third of a millisecond per call
//! → result. So a group's notifications run only when another listener
//! is registered ([`GUARDED_NOTIFY`], sent with the `COMMIT`).
//!
//! The handshake that no commit can slip past: a listener first `LISTEN`s,
//! then registers in a transaction under the app's advisory lock
//! ([`register`]), and only then counts as hearing. Groups hold the same
//! lock, so a group either committed before the registration — the store
//! of the new listener reads after it, and sees what the group wrote — or
//! sees the registered row and notifies a listener that is already
//! listening. Every listener's ping (once a second) and every registration
//! remove the rows of server processes that are gone (a store whose
//! process ended without removing its own, a `pynenc` command): such a row
//! only costs notifications nobody hears. A listener checks its own row at
//! every ping and registers again if it was removed, then wakes every
//! waiter of its store (what was committed meanwhile was not announced).

use pynenc_model::Timestamp;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Notifies channel `$1` with payload `$2` when a listener of another
/// store of app `$3` is registered (`$4`: the server process of this
/// store's listener, 0 while it has none). Sent under the app's lock, with
/// the `COMMIT` (a prepared statement: planned once per connection).
pub(crate) const GUARDED_NOTIFY: &str = "SELECT pg_notify($1, $2) \
     WHERE EXISTS (SELECT 1 FROM pynenc_listeners WHERE app = $3 AND pid <> $4)";

/// Removes the rows of app `app` whose server processes are gone.
fn forget_gone(app: i32) -> String {
    format!(
        "DELETE FROM pynenc_listeners WHERE app = {app} \
         AND pid NOT IN (SELECT pid FROM pg_stat_activity)"
    )
}

/// Registers the listener connected by `client` for app `app` (whose
/// advisory lock is `lock_key`), removing the rows of server processes
/// that are gone; returns the listener's server process id.
pub(crate) async fn register(
    client: &Client,
    app: i32,
    lock_key: i64,
) -> Result<i32, tokio_postgres::Error> {
    let now = Timestamp::now().as_micros();
    let sql = format!(
        "BEGIN; SELECT pg_advisory_xact_lock({lock_key}); {}; \
         INSERT INTO pynenc_listeners (app, pid, since_us) \
             VALUES ({app}, pg_backend_pid(), {now}) \
             ON CONFLICT (app, pid) DO UPDATE SET since_us = excluded.since_us \
             RETURNING pid; \
         COMMIT",
        forget_gone(app)
    );
    let messages = client.simple_query(&sql).await?;
    // the last row is the INSERT's (the lock's row comes first)
    let pid = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse::<i32>().ok()),
            _ => None,
        })
        .last();
    Ok(pid.unwrap_or(0))
}

/// Removes the rows of app `app` whose server processes are gone, and
/// says whether the listener connected by `client` is registered (at every
/// ping, which also checks that the connection answers).
pub(crate) async fn ping(client: &Client, app: i32) -> Result<bool, tokio_postgres::Error> {
    let sql = format!(
        "{}; SELECT 1 FROM pynenc_listeners WHERE app = {app} AND pid = pg_backend_pid()",
        forget_gone(app)
    );
    let messages = client.simple_query(&sql).await?;
    Ok(messages
        .iter()
        .any(|m| matches!(m, SimpleQueryMessage::Row(_))))
}

/// Removes the row of the listener connected by `client` (its store is
/// gone; a row left behind goes at the next ping of another listener).
pub(crate) async fn unregister(client: &Client, app: i32) -> Result<(), tokio_postgres::Error> {
    let sql = format!("DELETE FROM pynenc_listeners WHERE app = {app} AND pid = pg_backend_pid()");
    client.batch_execute(&sql).await
}
