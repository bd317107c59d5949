//! The SQLite backend of pynenc: broker, orchestrator and state backend in
//! one database file, shared by every process of an app on one machine.
//!
//! ```no_run
//! use pynenc_sqlite::{SqliteOptions, SqliteStore};
//!
//! let store = SqliteStore::open(&SqliteOptions::new("pynenc.db"), "my-app")?;
//! # Ok::<(), pynenc_store::StoreError>(())
//! ```
//!
//! # How it works
//!
//! - **One file, WAL mode.** The database is opened with
//!   `journal_mode=WAL` and `synchronous=NORMAL`: readers never block the
//!   writer, and a commit costs one append to the write-ahead log (no
//!   `fsync`; a power loss may lose the last commits, never corrupt the
//!   file). Temporary data (the savepoint journal) stays in memory, and the
//!   log is checkpointed back into the database every
//!   [`WAL_AUTOCHECKPOINT_PAGES`] pages.
//! - **Atomic steps.** Every [`pynenc_store::AtomicStore::atomic`] section runs inside one
//!   `BEGIN IMMEDIATE` transaction on a blocking thread
//!   (`tokio::task::spawn_blocking`): it commits when the closure returns
//!   `Ok` and rolls back every write when it returns an error. Inside one
//!   process, write sections are queued in front of a single write
//!   connection and committed in groups (group commit): the sections waiting
//!   when the writer is free run in one transaction, each inside its own
//!   savepoint, so a failing section is rolled back alone while the others
//!   share the cost of one commit. Between processes, a group waits for the
//!   lock (short sleeps, 50 µs doubling to 2 ms) for up to `busy_timeout`,
//!   then fails with an error saying how long the database stayed locked.
//! - **Apps are isolated.** Every row belongs to one app (a small integer
//!   standing for the `app_id`, see the `apps` table); two apps can share one
//!   file, and purging one leaves the other intact.
//! - **Versioned schema.** The library creates its tables when they are
//!   missing and records its schema version in `pynenc_meta`. A file written
//!   with another schema version, newer or older, is refused before anything
//!   is written to it, with both versions in the error: older files are not
//!   migrated (pynenc's data is transient work state), delete the file or
//!   point the store at another one. The one exception is version 6, which
//!   differs only in how three partial indexes state their condition and
//!   in counting the statuses of a runner's hands in `status_counts`: a
//!   store opening it rebuilds the indexes and drops those counters in the
//!   transaction that creates the schema, and records version 7 (processes
//!   of the older build then refuse the file).
//! - **Few, small, ordered index entries.** Invocations are rows with an
//!   integer key (`rid`) given in creation order; everything attached to an
//!   invocation (record, outcome, history) is keyed by that integer, and the
//!   ids this backend creates are time-ordered (see
//!   [`pynenc_store::StoreTxn::new_invocation_id`]), so the rows a burst of work touches
//!   sit on a few neighbouring pages instead of being scattered over the
//!   file. Statuses are small integers, and the task ids, error kinds, and
//!   the runner ids, actors and execution contexts of the history are
//!   interned in `names`. Each
//!   question of the hot path (registration and running concurrency, due
//!   scheduled invocations, final invocations to purge, claims to recover,
//!   blocking candidates) has a partial index that holds exactly the rows it
//!   asks for.
//! - **Fewer statements per step.** Within one section the backend remembers
//!   the key, task, status, error kind, running key and wait flag of every
//!   invocation it has read or written, so a transition reads the row once.
//!
//! # Wake-up latency
//!
//! SQLite cannot notify other processes, so this backend polls, adaptively:
//!
//! - A runner with nothing to do checks for queued or due work after
//!   `poll_min` (default 1 ms), doubling the pause up to `poll_max`
//!   (default 50 ms) while the database stays idle. Work queued by another
//!   process is therefore seen within at most `poll_max` (plus one cheap
//!   index lookup), and within about `poll_min` while work keeps coming.
//! - `result()` waits, and the pauses of invocations waiting for others,
//!   share one watch per store: while any wait is registered, one task
//!   reads the final statuses recorded since its last look (`poll_min`,
//!   doubling up to `poll_max` while nothing it finds is waited for) and
//!   hands each to the waits for it — one read per pause for the whole
//!   process, however many invocations wait. Each wait re-reads its own
//!   statuses only every two seconds (ids purged meanwhile).
//! - Inside one process nothing polls: work queued and invocations finished
//!   through the same [`SqliteStore`] wake the waiting runners and `result()`
//!   callers right after the commit.
//!
//! Both checks are read-only transactions, so they never take the write lock.
//!
//! # Schema (version 5)
//!
//! The tables are created from `sql/schema.sql`, included at build time.
//!
//! | table | key | content |
//! |---|---|---|
//! | `pynenc_meta` | `key` | `schema_version` |
//! | `apps` | `app` | the `app_id` of each app number |
//! | `names` | `name_id` | interned task ids, error kinds, runner ids, actors and execution contexts |
//! | `invocations` | `rid` (unique `app, invocation_id`) | task, status (code), owner, times, concurrency keys, retries, waited flag, parent, call hash, error kind, cancel request |
//! | `records` | `rid` | the invocation record as JSON (arguments included) |
//! | `outcomes` | `rid` | result and error (JSON) |
//! | `history` | `seq` (indexed by `rid`) | one row per status transition |
//! | `status_counts` | `app, task, status` | how many invocations of a task are in a status (not `PENDING`, `RUNNING`, `PAUSED`, `RESUMED`: those are counted from `invocations_owned` when read) |
//! | `failed_counts` | `app, task, kind` | how many `FAILED` invocations of a task failed with an error kind |
//! | `waits` | `waited, waiter` (`rid`s; indexed by `waiter`) | which invocation waits on which |
//! | `queue` | `app, seq` | the broker's FIFO of invocation ids |
//! | `controlled` | `seq` | invocations parked by running concurrency, per running key |
//! | `edges` | `seq` | call graph edges of unfinished invocations (cycle control) |
//! | `heartbeats` | `app, runner_id` | the last heartbeat of each runner |
//! | `runners` | `app, runner_id` | what each runner said of itself (kind, host, pid, start, slots, running ids) |
//! | `leases` | `app, name` | leases (one holder at a time) |
//! | `triggers` | `app, name` | the triggers runners declared (a JSON record each) |
//! | `data_values` | `dv` (unique `app, digest`; indexed by `app, claimed_at_us`) | the data store's values: SHA-256 digest (64 hex digits), length, last claim time |
//! | `data_texts` | `dv` | the text of each stored value |
//! | `data_references` | `dv, invocation_id` | the invocations that refer to each value (a set) |
//!
//! Status codes: 0 `SCHEDULED`, 1 `REGISTERED`, 2 `CONCURRENCY_CONTROLLED`,
//! 3 `CONCURRENCY_CONTROLLED_FINAL`, 4 `REROUTED`, 5 `PENDING`,
//! 6 `PENDING_RECOVERY`, 7 `RUNNING`, 8 `PAUSED`, 9 `RESUMED`,
//! 10 `RUNNING_RECOVERY`, 11 `KILLED`, 12 `RETRY`, 13 `SUCCESS`, 14 `FAILED`,
//! 15 `CANCELLED`.
//!
//! The query API reads indexes kept by the same primitives that change
//! statuses, in the same transaction:
//!
//! - **Listings** read, in `invocation_id` (creation) order, one range per
//!   task of `invocations_open` (not final yet: an entry written when the
//!   invocation is created and removed when it ends) and per task and final
//!   status of `invocations_ended` (written once, when it ends), merged by
//!   one `UNION ALL … ORDER BY` statement; children come from
//!   `invocations_parent`, everything from `invocations_id`. A run writes
//!   three entries of these indexes in all, and `put_status` names only the
//!   columns that change, so an index on a column that keeps its value is
//!   not rewritten.
//! - **Counts** per task and status and of `FAILED` per error kind are
//!   counters: each section adds up its changes and writes them before it
//!   ends (one statement per counter it changed), so counting never reads
//!   the invocations.
//! - **Ends to purge** come from `invocations_final` (status, end time);
//!   **registration scopes** from `invocations_registration` (every
//!   invocation of a key that is not final) and `invocations_success`;
//!   **cancel requests** are a column, cleared by the status that ends the
//!   invocation (named in that update only when a request was made), with
//!   a partial index for the requests of a runner.
//!
//! Large values (the record with its arguments, the result) live in their
//! own tables, so status updates never rewrite them. The status steps of
//! one invocation in a section (a pick-up's `PENDING` then `RUNNING`) are
//! sent as one update of its row, before the next statement on the rows or
//! when the section ends.
//!
//! **Stored values** (the data store) are rows of `data_values`, one per app
//! and content digest, with their text apart in `data_texts`, so a claim
//! (which sets the claim time and adds rows to `data_references`) never
//! rewrites the text; the sweep reads `data_values_claim`, oldest claim
//! first. The purge of an app removes its values with the rest.

#![deny(missing_docs)]

mod codes;
mod counts;
mod data;
mod error;
mod final_watch;
mod history;
mod listing;
mod primitives;
mod queries;
mod queue;
mod reuses;
mod rows;
mod runners;
mod schema;
mod status_write;
mod store;
mod triggers;
mod txn;
mod waits;
mod workflow_data;
mod writer;

#[cfg(test)]
mod query_tests;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use schema::{integrity_check, SCHEMA_VERSION, WAL_AUTOCHECKPOINT_PAGES};
pub use store::SqliteStore;

/// How to open a SQLite store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// The database file (created when missing; its directory must exist).
    pub path: PathBuf,
    /// How long a step waits for a database locked by another process (default 5 s).
    pub busy_timeout: Duration,
    /// The shortest pause of the polling waits (default 1 ms).
    pub poll_min: Duration,
    /// The longest pause of the polling waits (default 50 ms).
    pub poll_max: Duration,
}

impl SqliteOptions {
    /// The default busy timeout.
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default shortest polling pause.
    pub const DEFAULT_POLL_MIN: Duration = Duration::from_millis(1);
    /// The default longest polling pause.
    pub const DEFAULT_POLL_MAX: Duration = Duration::from_millis(50);

    /// The options for the file at `path`, with the default timings.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            busy_timeout: Self::DEFAULT_BUSY_TIMEOUT,
            poll_min: Self::DEFAULT_POLL_MIN,
            poll_max: Self::DEFAULT_POLL_MAX,
        }
    }
}
