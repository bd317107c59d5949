//! The PostgreSQL backend of pynenc: broker, orchestrator and state backend
//! in a PostgreSQL database, shared by every process of an app on any
//! number of machines.
//!
//! ```no_run
//! use pynenc_postgres::{PostgresOptions, PostgresStore};
//!
//! let store = PostgresStore::open(
//!     &PostgresOptions::new("postgres://pynenc@127.0.0.1/jobs"),
//!     "my-app",
//! )?;
//! # Ok::<(), pynenc_store::StoreError>(())
//! ```
//!
//! # How it works
//!
//! - **Every rule from the engine.** The store implements the primitives
//!   of [`pynenc_store::StoreTxn`]; routing, pick-up, the ends of runs,
//!   cancels, recovery and purges are the engine's functions, run in one
//!   transaction each, exactly as on SQLite and in memory.
//! - **One step at a time per app, many steps per transaction.** A write
//!   transaction first takes the app's advisory lock
//!   (`pg_advisory_xact_lock`), so the steps of one app are serialised
//!   across every process and machine without row locks, deadlocks or
//!   serialisation failures, while apps in one database never wait for
//!   each other. Inside one process the steps queue in front of one
//!   writer connection and the steps waiting when it is free commit
//!   together (group commit): one `BEGIN`, one lock, one `COMMIT` for up
//!   to [`MAX_GROUP`] steps. A step that fails rolls the group back and
//!   the others run again without it; its error goes to its caller alone.
//! - **Statements prepared once per connection**, and the section's view
//!   of every invocation it read or wrote kept in memory, so a transition
//!   reads the row once. Plans made before the server has statistics of
//!   a new table can read every row of the app for each id of a batch:
//!   when the writer finds the invocations table doubled, the tables never
//!   analyzed are analyzed on a connection of their own, and the plans
//!   made again (autovacuum keeps the statistics after that).
//! - **Wake-ups by `LISTEN`/`NOTIFY`.** A committing group notifies the
//!   app's channel with what it changed (work queued, invocations that
//!   became final or changed status); a listener connection in every
//!   process wakes the runners waiting for work and the callers waiting for
//!   results, so nothing polls on the hot path. A group notifies only
//!   when a listener of another store of the app is registered
//!   (`pynenc_listeners`): a process alone with its app (a service running
//!   its own runner) sends no `NOTIFY`, whose delivery to its own listener
//!   cost a third of a millisecond per call → result, and wakes its own
//!   waiters itself. A listener registers under the app's lock after its
//!   `LISTEN` and before it counts as hearing, so every commit either
//!   comes before the registration (and the reads that follow it see it)
//!   or sees the registration and notifies; rows of ended processes go
//!   when a listener registers, and a listener whose row was deleted
//!   registers again at its next ping and wakes every waiter. The listener asks its
//!   connection for a reply after every second in which it heard nothing,
//!   so a connection that died silently is found within seconds; after reconnecting it wakes every
//!   waiter to look again (what was announced meanwhile is lost). A wait
//!   re-reads what it waits for every [`SAFETY_RECHECK`] while the listener
//!   does not hear (starting, reconnecting), and every [`HEARD_RECHECK`]
//!   while it does.
//! - **Survives a server restart.** A step whose connection is lost before
//!   its transaction committed is rolled back by the server and runs again
//!   on a new connection (steps are `Fn`), for up to `retry_for`; a
//!   connection lost during `COMMIT` is settled by asking the server
//!   whether the transaction committed (`txid_status`), so a step is never
//!   applied twice. A group that read nothing before its commit (a routed
//!   call) sends `BEGIN`, its writes and `COMMIT` in one round trip, with
//!   its writer's next commit number (`pynenc_commits`): lost before its
//!   transaction's id arrived, it is settled by that number, read back
//!   under the app's lock (see `commit_counter.rs`).
//! - **What waits for the disk.** A routed call, the end of a run, a
//!   cancel — every commit that anybody is told about — waits until the
//!   server has flushed it (`synchronous_commit` as the server sets it). A
//!   group made only of pick-ups, none of which ended an invocation
//!   (concurrency control), commits with `synchronous_commit = off`:
//!   if the server crashes before flushing it (a crash, not a restart,
//!   which flushes), the invocations it took are back in the queue and run
//!   again, as when a runner dies; the next commit that waits flushes it
//!   anyway.
//! - **A drained queue is believed.** A group that found the queue drained
//!   tells the next groups of its process, whose pick-ups then answer
//!   without reading it until work may have been queued: until the
//!   process queues something or hears another one do so (`NOTIFY`), for
//!   250 ms at most, and only while its listener is connected. A group
//!   that began with the queue believed drained and queued work itself
//!   picks that work from what it holds: its queue appends are never
//!   written, and a new row picked in the group it was routed in is
//!   inserted once, with its last status.
//! - **A call made and run in one process is one transaction.** A thread
//!   runner that found nothing parks its next pick in the store
//!   ([`pynenc_store::Orchestrator::start_when_work`]); the writer's next
//!   group that queues work runs the parked picks after its own steps,
//!   before its commit. A pick parked when work comes from another process
//!   is taken back by its runner and sent on its own.
//! - **The end of a run reads nothing first.** Every committed group
//!   leaves the rows of the running invocations it saw in the process; an
//!   end whose rows are all there takes them without a read, and the
//!   group's first statement checks that each still has the columns taken
//!   (the transaction aborts when one changed — another process recovered
//!   the run, asked a cancel, registered a wait — and the group runs again,
//!   reading). An end then costs one round trip: `BEGIN`, the check, the
//!   writes and `COMMIT` at once.
//! - **Versioned schema.** The library creates its tables (all named
//!   `pynenc_*`) when they are missing and records its schema version in
//!   `pynenc_meta`. A database of version 7 is upgraded in place when a
//!   store opens it (one transaction under the schema lock: the new task
//!   index is built beside the old one, which holds back writes meanwhile,
//!   then replaces it; a lock not had within 30 s fails the opening and
//!   leaves version 7 as it was). Processes of the older version still
//!   running keep working on it, but their listings by task may then read
//!   the whole app. A database of another version, newer or older, is
//!   refused before anything is written to it, with both versions in the
//!   error.
//! - **Apps are isolated.** Every row carries the app's number (the
//!   `pynenc_apps` table); two apps can share a database, and purging one
//!   leaves the other intact.
//!
//! # Schema (version 8)
//!
//! Every text column has the collation `C`: ids, task names and keys
//! compare byte by byte, as in the other backends, whatever the database's
//! collation (a linguistic one costs every index comparison; with the
//! default of this machine's `initdb`, `C.UTF-8`, the burn-down ran 5–6 %
//! slower). An invocation's outcome and history live in its row, written
//! by the statement that writes its status (version 5 kept them in tables
//! of their own: every status change also inserted a history row, every
//! end an outcome row); its record, written once, has a table of its own,
//! so that no status write copies it. A database of version 7 is upgraded
//! in place, an older one refused (recreate it). A history grows
//! with its invocation's status changes and every write of the row copies
//! it: an invocation with thousands of them (a workflow paused and resumed
//! again and again) makes each of its writes larger (PostgreSQL stores a
//! row above about 2 kB compressed, out of line).
//!
//! | table | key | content |
//! |---|---|---|
//! | `pynenc_meta` | `key` | `schema_version` |
//! | `pynenc_apps` | `app` | the `app_id` of each app number |
//! | `pynenc_invocations` | `app, invocation_id` | task, status (code), owner, times, concurrency keys, retries, waited flag, parent, call id, error kind, cancel request; the result and the error (JSON; a success after a retry keeps the retry's error); the history, one line per entry in the order written (a JSON array: status code, owner, actor, timestamp, execution context), each entry read as dated no earlier than the one before (a step reads the clock before its group waits for the app's lock) |
//! | `pynenc_records` | `app, invocation_id` | the invocation record as JSON (arguments included) |
//! | `pynenc_reuses` | `app, invocation_id, seq` | the calls registration concurrency folded into an invocation ([`pynenc_model::Reuses`]): `seq` numbers them from 1 (the total is the largest), a [`pynenc_model::ReuseRecord::to_text`] each; the latest [`pynenc_model::REUSES_KEPT`] kept, deleted with the invocation |
//! | `pynenc_workflow_data` | `app, invocation_id, key` | the data of workflow invocations ([`pynenc_store::StoreTxn::put_workflow_data`]): a text value per key, deleted with the invocation |
//! | `pynenc_status_counts`, `pynenc_failed_counts` | `app, task, status/kind` | counters kept by the steps |
//! | `pynenc_task_totals` | `app, task, counter` | the task totals ([`pynenc_model::TaskTotals`]): one row per [`pynenc_model::TotalKey::code`], only growing; kept when invocations are deleted, forgotten by the app purge |
//! | `pynenc_waits` | `app, waited, waiter` | which invocation waits on which |
//! | `pynenc_queue` | `app, seq` | the broker's FIFO |
//! | `pynenc_controlled` | `seq` | invocations parked by running concurrency |
//! | `pynenc_edges` | `seq` | call graph edges (cycle control) |
//! | `pynenc_heartbeats`, `pynenc_runners`, `pynenc_leases` | `app, …` | runners and leases |
//! | `pynenc_triggers` | `app, name` | the triggers runners declared (a JSON record each) |
//! | `pynenc_data` | `app, digest` | the data store's values by SHA-256 (`bytea`): length, text, claim time (indexed for the sweep) |
//! | `pynenc_data_refs` | `app, digest, invocation_id` | the invocations that refer to each value |
//! | `pynenc_commits` | `app, writer` | each writer's last commit number of a group sent in one round trip, and when (see the restart below) |
//! | `pynenc_listeners` | `app, pid` | the server process of each store's listener connection, and since when (see the wake-ups above) |
//!
//! Status codes are those of [`pynenc_store::codes`]. Each question of the
//! hot path (registration and running concurrency, due scheduled
//! invocations, ends to purge, claims to recover, blocking candidates, the
//! listings) has a partial index holding exactly the rows it asks for.
//! Every status change writes a new version of the invocation's row and an
//! entry in each index whose condition the row meets, so the listing by
//! task (`pynenc_invocations_task`: task, status, id) leaves out the
//! invocations in a runner's hands (PENDING, RUNNING, PAUSED, RESUMED): a
//! run's status writes add no entry to it, and a listing by task selects
//! those apart, where `pynenc_invocations_owned` (as many as the runners
//! hold) may serve, and merges them in id order. Version 7 indexed every status there: the
//! burn-down's server time was 11 % higher (see the README).

#![deny(missing_docs)]

mod analyze;
mod combined;
mod commit_counter;
mod conn;
mod data;
mod error;
mod listener;
mod listener_registry;
mod notify;
mod one_row;
mod parked;
mod pending;
mod primitives;
mod queries;
mod queue_head;
mod readers;
mod reuses;
mod rows;
mod runners;
mod schema;
mod seen_rows;
mod statements;
mod store;
#[cfg(feature = "tls")]
mod tls;
mod triggers;
mod txn;
mod workflow_data;
mod writer;

use std::time::Duration;

pub use schema::SCHEMA_VERSION;
pub use store::PostgresStore;
pub use writer::MAX_GROUP;

/// How often a wait re-reads what it waits for without a notification
/// while the process's listener does not hear the app's channel (it is
/// connecting, or reconnecting: notifications sent meanwhile are lost).
pub const SAFETY_RECHECK: Duration = Duration::from_secs(1);

/// How often a wait re-reads what it waits for without a notification
/// while the listener hears: only a guard, since every change a wait looks
/// for is announced and a listener that reconnects wakes every wait. A
/// wait for many invocations re-reads them all, so this is kept long.
pub const HEARD_RECHECK: Duration = Duration::from_secs(30);

/// How long the listener goes without a notification before it asks its
/// connection for a reply (a connection that died without closing is
/// found by the reply not coming).
pub(crate) const LISTENER_PING: Duration = Duration::from_secs(1);

/// How long the listener waits for that reply before it reconnects.
pub(crate) const LISTENER_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How to open a PostgreSQL store.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The connection URL (`postgres://user:password@host:port/database`,
    /// or the `key=value` form); the database must exist.
    pub url: String,
    /// How long to wait for a connection (default 5 s).
    pub connect_timeout: Duration,
    /// How long a step keeps trying while the server cannot be reached
    /// (default 60 s); after that it fails with an error naming the server.
    pub retry_for: Duration,
    /// For a URL with `sslmode=require`: a PEM file of the certificate
    /// authorities to trust (`None`: the system's trust store). The
    /// server's certificate is always verified for the URL's host.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// How many connections answer queries (listings, counts, the
    /// monitor) apart from the steps, on committed data and without the
    /// app's lock (default 2; 0: through the writer, after the steps
    /// waiting before them). Made on first use.
    pub pool_size: usize,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &conn::redact(&self.url))
            .field("connect_timeout", &self.connect_timeout)
            .field("retry_for", &self.retry_for)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl PostgresOptions {
    /// The default connection timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default time a step keeps trying while the server is unreachable.
    pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(60);
    /// The default number of query readers.
    pub const DEFAULT_POOL_SIZE: usize = 2;

    /// The options for the database at `url`, with the default timings.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            retry_for: Self::DEFAULT_RETRY_FOR,
            tls_ca_file: None,
            pool_size: Self::DEFAULT_POOL_SIZE,
        }
    }
}
