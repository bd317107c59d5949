//! The SQLite backend: broker, orchestrator and state backend in one database
//! file, shared by every process of an app on one machine.
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
//! - **Atomic steps.** Every [`AtomicStore::atomic`] section runs inside one
//!   `BEGIN IMMEDIATE` transaction on a blocking thread
//!   (`tokio::task::spawn_blocking`): it commits when the closure returns
//!   `Ok` and rolls back every write when it returns an error. Inside one
//!   process, write sections are queued in front of a single write
//!   connection and committed in groups (group commit): the sections waiting
//!   when the writer is free run in one transaction, each inside its own
//!   savepoint, so a failing section is rolled back alone while the others
//!   share the cost of one commit. Between processes, a group waits for the
//!   lock (short sleeps, 50 µs doubling to 2 ms) for up to `busy_timeout_ms`,
//!   then fails with an error saying how long the database stayed locked.
//! - **Apps are isolated.** Every row belongs to one app (a small integer
//!   standing for the `app_id`, see the `apps` table); two apps can share one
//!   file, and purging one leaves the other intact.
//! - **Versioned schema.** The library creates its tables when they are
//!   missing and records its schema version in `pynenc_meta`. A file written
//!   with another schema version, newer or older, is refused before anything
//!   is written to it, with both versions in the error: older files are not
//!   migrated (pynenc's data is transient work state), delete the file or
//!   point `sqlite.sqlite_path` at another one.
//! - **Few, small, ordered index entries.** Invocations are rows with an
//!   integer key (`rid`) given in creation order; everything attached to an
//!   invocation (record, outcome, history) is keyed by that integer, and the
//!   ids this backend creates are time-ordered (see
//!   [`StoreTxn::new_invocation_id`]), so the rows a burst of work touches
//!   sit on a few neighbouring pages instead of being scattered over the
//!   file. Statuses are small integers, and the runner ids, actors and
//!   execution contexts of the history are interned in `names`. Each
//!   question of the hot path (registration and running concurrency, due
//!   scheduled invocations, final invocations to purge, claims to recover,
//!   blocking candidates) has a partial index that holds exactly the rows it
//!   asks for.
//! - **Fewer statements per step.** Within one section the backend remembers
//!   the key, status, running key and wait flag of every invocation it has
//!   read or written, so a transition reads the row once.
//!
//! # Wake-up latency
//!
//! SQLite cannot notify other processes, so this backend polls, adaptively:
//!
//! - A runner with nothing to do checks for queued or due work after
//!   `poll_min_ms` (default 1 ms), doubling the pause up to `poll_max_ms`
//!   (default 50 ms) while the database stays idle. Work queued by another
//!   process is therefore seen within at most `poll_max_ms` (plus one cheap
//!   index lookup), and within about `poll_min_ms` while work keeps coming.
//! - `result()` waits the same way: the waited invocations are re-checked
//!   after `poll_min_ms`, backing off to `poll_max_ms`.
//! - Inside one process nothing polls: work queued and invocations finished
//!   through the same [`SqliteStore`] wake the waiting runners and `result()`
//!   callers right after the commit.
//!
//! Both checks are read-only transactions, so they never take the write lock.
//!
//! # Schema (version 2)
//!
//! | table | key | content |
//! |---|---|---|
//! | `pynenc_meta` | `key` | `schema_version` |
//! | `apps` | `app` | the `app_id` of each app number |
//! | `names` | `name_id` | interned runner ids, actors and execution contexts |
//! | `invocations` | `rid` (unique `app, invocation_id`) | status (code), owner, times, concurrency keys, retries, waited flag |
//! | `records` | `rid` | the invocation record as JSON (arguments included) |
//! | `outcomes` | `rid` | result and error (JSON) |
//! | `history` | `seq` (indexed by `rid`) | one row per status transition |
//! | `queue` | `app, seq` | the broker's FIFO of invocation ids |
//! | `controlled` | `seq` | invocations parked by running concurrency, per running key |
//! | `edges` | `seq` | call graph edges of unfinished invocations (cycle control) |
//! | `heartbeats` | `app, runner_id` | the last heartbeat of each runner |
//! | `leases` | `app, name` | leases (one holder at a time) |
//!
//! Status codes: 0 `SCHEDULED`, 1 `REGISTERED`, 2 `CONCURRENCY_CONTROLLED`,
//! 3 `CONCURRENCY_CONTROLLED_FINAL`, 4 `REROUTED`, 5 `PENDING`,
//! 6 `PENDING_RECOVERY`, 7 `RUNNING`, 8 `PAUSED`, 9 `RESUMED`,
//! 10 `RUNNING_RECOVERY`, 11 `KILLED`, 12 `RETRY`, 13 `SUCCESS`, 14 `FAILED`.
//!
//! Large values (the record with its arguments, the result) live in their
//! own tables, so status updates never rewrite them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, Semaphore};

use crate::conf::PynencConfig;
use crate::exceptions::{PynencError, Result, TaskError};
use crate::invocation::InvocationRecord;
use crate::state_backend::{HistoryEntry, HistoryStep, InvocationOutcome};
use crate::status::{InvocationStatus, StatusRecord};
use crate::store::{AtomicStore, FinalWaiters, StoreTxn, WorkSignal};

/// The schema version this library writes and understands.
pub const SCHEMA_VERSION: i64 = 2;

/// How many pages the write-ahead log may grow by before a commit copies it
/// back into the database (SQLite's default is 1000; a larger log makes the
/// copies rarer and lets pages rewritten meanwhile be copied once).
pub const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// How many read-only connections (for the polling waits) a store keeps at most.
const READ_CONNECTIONS: usize = 4;

/// The first and the longest pause between two attempts to take the write lock.
const LOCK_PAUSE_MIN: Duration = Duration::from_micros(50);
const LOCK_PAUSE_MAX: Duration = Duration::from_millis(2);

/// The most names (runner ids, actors, contexts) a store remembers.
const NAME_CACHE_MAX: usize = 10_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pynenc_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS apps (
    app INTEGER PRIMARY KEY,
    app_id TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS names (
    name_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS invocations (
    rid INTEGER PRIMARY KEY,
    app INTEGER NOT NULL,
    invocation_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    owner TEXT,
    status_at_us INTEGER NOT NULL,
    created_at_us INTEGER NOT NULL,
    due_at_us INTEGER NOT NULL,
    registration_key TEXT,
    running_key TEXT,
    retries INTEGER NOT NULL DEFAULT 0,
    waited INTEGER NOT NULL DEFAULT 0,
    final_at_us INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS invocations_id ON invocations (app, invocation_id);
CREATE INDEX IF NOT EXISTS invocations_registration
    ON invocations (app, registration_key, created_at_us)
    WHERE registration_key IS NOT NULL AND status = 1;
CREATE INDEX IF NOT EXISTS invocations_running
    ON invocations (app, running_key)
    WHERE running_key IS NOT NULL AND status IN (5, 7, 8, 9);
CREATE INDEX IF NOT EXISTS invocations_scheduled
    ON invocations (app, due_at_us)
    WHERE status = 0;
CREATE INDEX IF NOT EXISTS invocations_final
    ON invocations (app, final_at_us)
    WHERE final_at_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS invocations_owned
    ON invocations (app, status_at_us)
    WHERE status IN (5, 7, 8, 9);
CREATE INDEX IF NOT EXISTS invocations_blocking
    ON invocations (app, created_at_us)
    WHERE waited = 1 AND status IN (1, 4, 12);
CREATE TABLE IF NOT EXISTS records (
    rid INTEGER PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outcomes (
    rid INTEGER PRIMARY KEY,
    result TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    status INTEGER NOT NULL,
    owner INTEGER,
    actor INTEGER NOT NULL,
    timestamp_us INTEGER NOT NULL,
    execution_context INTEGER
);
CREATE INDEX IF NOT EXISTS history_rid ON history (rid);
CREATE TABLE IF NOT EXISTS queue (
    app INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    invocation_id TEXT NOT NULL,
    PRIMARY KEY (app, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS controlled (
    seq INTEGER PRIMARY KEY,
    app INTEGER NOT NULL,
    running_key TEXT NOT NULL,
    invocation_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS controlled_key ON controlled (app, running_key);
CREATE TABLE IF NOT EXISTS edges (
    seq INTEGER PRIMARY KEY,
    app INTEGER NOT NULL,
    caller_invocation_id TEXT NOT NULL,
    caller_call_id TEXT NOT NULL,
    callee_call_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS edges_call ON edges (app, caller_call_id, callee_call_id);
CREATE INDEX IF NOT EXISTS edges_invocation ON edges (app, caller_invocation_id);
CREATE TABLE IF NOT EXISTS heartbeats (
    app INTEGER NOT NULL,
    runner_id TEXT NOT NULL,
    beat_us INTEGER NOT NULL,
    PRIMARY KEY (app, runner_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    app INTEGER NOT NULL,
    name TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_us INTEGER NOT NULL,
    PRIMARY KEY (app, name)
) WITHOUT ROWID;
";

/// Deletes every row of an app (`?1`), children first.
const PURGE_APP: &[&str] = &[
    "DELETE FROM records WHERE rid IN (SELECT rid FROM invocations WHERE app = ?1)",
    "DELETE FROM outcomes WHERE rid IN (SELECT rid FROM invocations WHERE app = ?1)",
    "DELETE FROM history WHERE rid IN (SELECT rid FROM invocations WHERE app = ?1)",
    "DELETE FROM invocations WHERE app = ?1",
    "DELETE FROM queue WHERE app = ?1",
    "DELETE FROM controlled WHERE app = ?1",
    "DELETE FROM edges WHERE app = ?1",
    "DELETE FROM heartbeats WHERE app = ?1",
    "DELETE FROM leases WHERE app = ?1",
];

/// The statuses by their stable code in the schema (see the module
/// documentation): a status's code is its position here.
const STATUS_CODES: [InvocationStatus; 15] = {
    use InvocationStatus::*;
    [
        Scheduled,
        Registered,
        ConcurrencyControlled,
        ConcurrencyControlledFinal,
        Rerouted,
        Pending,
        PendingRecovery,
        Running,
        Paused,
        Resumed,
        RunningRecovery,
        Killed,
        Retry,
        Success,
        Failed,
    ]
};

/// The stable code of a status in the schema.
fn status_code(status: InvocationStatus) -> i64 {
    STATUS_CODES
        .iter()
        .position(|s| *s == status)
        .map_or(-1, |i| i as i64)
}

/// The status of a code, if it is one.
fn status_from_code(code: i64) -> Option<InvocationStatus> {
    usize::try_from(code)
        .ok()
        .and_then(|i| STATUS_CODES.get(i).copied())
}

/// Checks the integrity of the SQLite database at `path` (`PRAGMA
/// integrity_check`): returns `"ok"` or SQLite's list of problems. It opens
/// its own read-only connection, so it can run while other processes use the
/// file.
pub fn integrity_check(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let fail = |e: rusqlite::Error, op: &str| describe(&shown, Duration::ZERO, e, op, "");
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(e, "opening the file"))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| fail(e, "setting busy_timeout"))?;
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(|e| fail(e, "PRAGMA integrity_check"))?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| fail(e, "PRAGMA integrity_check"))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| fail(e, "PRAGMA integrity_check"))?;
    Ok(lines.join("\n"))
}

/// Where a store is and how it waits: shared by its connections and transactions.
struct Ctx {
    path: PathBuf,
    shown: String,
    app_id: String,
    /// The app's number in the `apps` table.
    app: i64,
    busy_timeout: Duration,
}

/// What a failed statement was about, rendered only when it fails.
#[derive(Clone, Copy)]
enum Key<'k> {
    None,
    Of(&'static str, &'k str),
}

impl Key<'_> {
    fn render(self) -> String {
        match self {
            Key::None => String::new(),
            Key::Of(what, value) => format!("{what} {value}"),
        }
    }
}

fn inv(id: &str) -> Key<'_> {
    Key::Of("invocation", id)
}

impl Ctx {
    /// A state backend error for a failed SQLite call during `op` (on `key`, if any).
    fn err(&self, e: rusqlite::Error, op: &str, key: Key<'_>) -> PynencError {
        describe(&self.shown, self.busy_timeout, e, op, &key.render())
    }

    fn not_found(&self, invocation_id: &str) -> PynencError {
        PynencError::InvocationNotFound {
            invocation_id: invocation_id.to_string(),
            message: format!(
                "in the SQLite database {} (app '{}')",
                self.shown, self.app_id
            ),
        }
    }

    fn corrupt(
        &self,
        invocation_id: &str,
        what: &str,
        detail: impl std::fmt::Display,
    ) -> PynencError {
        PynencError::backend(format!(
            "SQLite database {}: invocation {invocation_id} (app '{}') has an unreadable {what}: {detail}",
            self.shown, self.app_id
        ))
    }
}

fn describe(
    path: &str,
    busy_timeout: Duration,
    e: rusqlite::Error,
    op: &str,
    key: &str,
) -> PynencError {
    let on = if key.is_empty() {
        op.to_string()
    } else {
        format!("{op} ({key})")
    };
    let message = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            format!("SQLite database {path}: file is not a database ({on}: {e})")
        }
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => format!(
            "SQLite database {path} stayed locked for {} ms (busy_timeout_ms) during {on}: \
             another connection holds a write transaction ({e})",
            busy_timeout.as_millis()
        ),
        Some(ErrorCode::ReadOnly) => format!(
            "SQLite database {path} is read-only ({on}: {e}); pynenc needs write access to the \
             file and to its directory (for the -wal and -shm files)"
        ),
        Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => format!(
            "cannot open SQLite database {path} ({on}: {e}); check that its directory exists \
             and that the file and the directory are writable"
        ),
        Some(ErrorCode::DiskFull) => {
            format!("SQLite database {path}: the disk is full ({on}: {e})")
        }
        _ => format!("SQLite database {path}: {on} failed: {e}"),
    };
    PynencError::StateBackend { message }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
    )
}

/// A SQL `LIMIT` for `max`.
fn limit(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}

/// A pause between `base / 2` and `base * 3 / 2`, so that competing processes drift apart.
fn jittered(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base / 2 + base.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

/// Opens one connection on the store's file and prepares it.
fn connect(ctx: &Ctx, busy_timeout: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&ctx.path, flags)
        .map_err(|e| ctx.err(e, "opening the file", Key::None))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| ctx.err(e, "setting busy_timeout", Key::None))?;
    conn.set_prepared_statement_cache_capacity(128);
    let pragmas: [(&str, rusqlite::types::Value); 5] = [
        ("synchronous", "NORMAL".to_string().into()),
        // the savepoint journal of a group commit stays in memory
        ("temp_store", "MEMORY".to_string().into()),
        // map the file instead of copying pages through read()
        ("mmap_size", (1_i64 << 30).into()),
        // 8 MiB of page cache: enough for the pages a burst of work touches,
        // and small, because a commit after a b-tree rebalance scans the
        // whole cache (SQLite re-keys pages through a page number beyond the
        // end of the file, and truncates the cache back at the commit)
        ("cache_size", (-8_192_i64).into()),
        ("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.into()),
    ];
    for (name, value) in pragmas {
        conn.pragma_update(None, name, value)
            .map_err(|e| ctx.err(e, &format!("setting PRAGMA {name}"), Key::None))?;
    }
    Ok(conn)
}

/// The schema version recorded in the file, if it has one.
fn read_schema_version(ctx: &Ctx, conn: &Connection) -> Result<Option<i64>> {
    let has_meta: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pynenc_meta')",
            [],
            |row| row.get(0),
        )
        .map_err(|e| ctx.err(e, "reading the schema", Key::None))?;
    if !has_meta {
        return Ok(None);
    }
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM pynenc_meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(|e| ctx.err(e, "reading the schema version", Key::None))?;
    match value {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            PynencError::backend(format!(
                "SQLite database {}: pynenc_meta.schema_version is '{v}', not a number",
                ctx.shown
            ))
        }),
    }
}

fn check_version(ctx: &Ctx, version: Option<i64>) -> Result<()> {
    match version {
        Some(v) if v > SCHEMA_VERSION => Err(PynencError::backend(format!(
            "SQLite database {} has pynenc schema version {v}, newer than version {SCHEMA_VERSION} \
             supported by this pynenc library; upgrade pynenc or use another file (nothing was written)",
            ctx.shown
        ))),
        Some(v) if v < SCHEMA_VERSION => Err(PynencError::backend(format!(
            "SQLite database {} has pynenc schema version {v}, older than version {SCHEMA_VERSION} \
             used by this pynenc library, and is not migrated: delete the file (with its -wal and \
             -shm files) once no process uses it, or set sqlite.sqlite_path to another file \
             (nothing was written)",
            ctx.shown
        ))),
        _ => Ok(()),
    }
}

/// Checks the path before SQLite sees it, for clearer errors.
fn check_path(ctx: &Ctx) -> Result<()> {
    let shown = &ctx.shown;
    if shown.is_empty() || shown == ":memory:" {
        return Err(PynencError::backend(format!(
            "SQLite database path '{shown}' is not supported: pynenc needs a database file \
             that all its connections and processes share"
        )));
    }
    if ctx.path.is_dir() {
        return Err(PynencError::backend(format!(
            "cannot open SQLite database {shown}: it is a directory, not a database file"
        )));
    }
    if let Some(parent) = ctx.path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            return Err(PynencError::backend(format!(
                "cannot open SQLite database {shown}: the directory {} does not exist",
                parent.display()
            )));
        }
        if !parent.is_dir() {
            return Err(PynencError::backend(format!(
                "cannot open SQLite database {shown}: {} is not a directory",
                parent.display()
            )));
        }
    }
    Ok(())
}

/// Creates (or checks) the schema on a fresh connection and returns the app's number.
fn init_schema(ctx: &Ctx, conn: &Connection) -> Result<i64> {
    // read first: a file we must refuse is left exactly as it was
    check_version(ctx, read_schema_version(ctx, conn)?)?;
    // SQLite silently falls back to read-only when it may not write the file
    let read_only = conn
        .is_readonly(rusqlite::DatabaseName::Main)
        .map_err(|e| ctx.err(e, "checking write access", Key::None))?;
    if read_only {
        return Err(PynencError::backend(format!(
            "SQLite database {} is read-only: pynenc needs write access to the file and to \
             its directory (for the -wal and -shm files)",
            ctx.shown
        )));
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| ctx.err(e, "setting journal_mode=WAL", Key::None))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(PynencError::backend(format!(
            "SQLite database {}: could not switch to WAL mode (journal_mode is '{mode}'); \
             is the file or its directory read-only?",
            ctx.shown
        )));
    }
    begin_immediate(ctx, conn)?;
    let created = (|| {
        // another process may have created or upgraded it meanwhile
        let version = read_schema_version(ctx, conn)?;
        check_version(ctx, version)?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| ctx.err(e, "creating the schema", Key::None))?;
        if version.is_none() {
            conn.execute(
                "INSERT OR REPLACE INTO pynenc_meta (key, value) VALUES ('schema_version', ?1)",
                params![SCHEMA_VERSION.to_string()],
            )
            .map_err(|e| ctx.err(e, "recording the schema version", Key::None))?;
        }
        let key = Key::Of("app", &ctx.app_id);
        conn.execute(
            "INSERT OR IGNORE INTO apps (app_id) VALUES (?1)",
            params![ctx.app_id],
        )
        .map_err(|e| ctx.err(e, "registering the app", key))?;
        conn.query_row(
            "SELECT app FROM apps WHERE app_id = ?1",
            params![ctx.app_id],
            |r| r.get::<_, i64>(0),
        )
        .map_err(|e| ctx.err(e, "registering the app", key))
    })();
    finish_txn(ctx, conn, created)
}

/// Takes the write lock, waiting up to the busy timeout in short jittered pauses.
fn begin_immediate(ctx: &Ctx, conn: &Connection) -> Result<()> {
    let start = Instant::now();
    let mut pause = LOCK_PAUSE_MIN;
    loop {
        let attempt = conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]).map(|_| ()));
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if is_busy(&e) => {
                let waited = start.elapsed();
                if waited >= ctx.busy_timeout {
                    return Err(PynencError::backend(format!(
                        "SQLite database {} stayed locked for {} ms (busy_timeout_ms = {}): another \
                         process holds a write transaction; raise sqlite.busy_timeout_ms or find the \
                         long transaction ({e})",
                        ctx.shown,
                        waited.as_millis(),
                        ctx.busy_timeout.as_millis()
                    )));
                }
                std::thread::sleep(jittered(pause).min(ctx.busy_timeout - waited));
                pause = (pause * 2).min(LOCK_PAUSE_MAX);
            }
            Err(e) => return Err(ctx.err(e, "BEGIN IMMEDIATE", Key::None)),
        }
    }
}

/// Runs one of the fixed transaction-control statements (cached).
fn control(ctx: &Ctx, conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]).map(|_| ()))
        .map_err(|e| ctx.err(e, sql, Key::None))
}

/// Commits on `Ok`, rolls back on `Err` (or when the commit fails).
fn finish_txn<R>(ctx: &Ctx, conn: &Connection, out: Result<R>) -> Result<R> {
    let out = match out {
        Ok(v) => control(ctx, conn, "COMMIT").map(|()| v),
        Err(e) => Err(e),
    };
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    out
}

/// What a committed section asks the store to announce to this process.
#[derive(Default)]
struct Effects {
    enqueued: bool,
    finals: Vec<String>,
    purged: bool,
    /// Names interned (or looked up) by the section: remembered once committed.
    names: Vec<(String, i64)>,
}

impl Effects {
    fn merge(&mut self, other: Effects) {
        self.enqueued |= other.enqueued;
        self.purged |= other.purged;
        self.finals.extend(other.finals);
        self.names.extend(other.names);
    }
}

type AnyValue = Box<dyn std::any::Any + Send>;

/// One atomic section waiting for the writer.
struct WriteJob {
    run: JobFn,
    reply: tokio::sync::oneshot::Sender<Result<AnyValue>>,
}

/// The sections waiting for the writer, and whether a writer is draining them.
#[derive(Default)]
struct WriteQueue {
    jobs: Vec<WriteJob>,
    draining: bool,
}

/// The most sections committed together.
const MAX_GROUP: usize = 256;

struct Inner {
    ctx: Ctx,
    poll_min: Duration,
    poll_max: Duration,
    /// The one write connection (used by the draining writer only).
    writer: Mutex<Option<Connection>>,
    /// Sections waiting to be written, committed in groups.
    write_queue: Mutex<WriteQueue>,
    /// Idle read-only connections.
    readers: Mutex<Vec<Connection>>,
    read_gate: Arc<Semaphore>,
    work: WorkSignal,
    final_waiters: FinalWaiters<Notify>,
    /// Committed rows of `names` (they are never changed or deleted).
    names: Mutex<FxHashMap<String, i64>>,
}

impl Inner {
    /// Drains the write queue on this (blocking) thread: each round takes the
    /// waiting sections and commits them in ONE transaction, each inside its
    /// own savepoint, so a section that fails is rolled back alone (group
    /// commit: the cost of a commit is shared by everyone waiting).
    fn drain_writes(&self) {
        loop {
            let batch: Vec<WriteJob> = {
                let mut q = self.write_queue.lock();
                if q.jobs.is_empty() {
                    q.draining = false;
                    return;
                }
                let n = q.jobs.len().min(MAX_GROUP);
                q.jobs.drain(..n).collect()
            };
            self.write_group(batch);
        }
    }

    /// Runs one section on `conn`, catching a panic as an error.
    fn run_section(&self, conn: &Connection, job_run: JobFn) -> (Result<AnyValue>, Effects) {
        let mut txn = SqliteTxn::new(conn, &self.ctx, &self.names);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job_run(&mut txn)))
            .unwrap_or_else(|_| {
                Err(PynencError::backend(format!(
                    "SQLite database {}: a database section panicked; it was rolled back",
                    self.ctx.shown
                )))
            });
        (out, txn.effects)
    }

    fn write_group(&self, batch: Vec<WriteJob>) {
        let conn = match self.writer.lock().take() {
            Some(c) => Ok(c),
            // the write connection never waits in SQLite's busy handler: begin_immediate waits
            None => connect(&self.ctx, Duration::ZERO),
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
                return;
            }
        };
        let mut results: Vec<(
            tokio::sync::oneshot::Sender<Result<AnyValue>>,
            Result<AnyValue>,
        )> = Vec::with_capacity(batch.len());
        let mut effects = Effects::default();
        let ctx = &self.ctx;
        match begin_immediate(ctx, &conn) {
            Err(e) => {
                for job in batch {
                    results.push((job.reply, Err(e.clone())));
                }
            }
            Ok(()) if batch.len() == 1 => {
                // alone in the transaction: no savepoint needed, an error rolls back everything
                let job = batch.into_iter().next().expect("one job");
                let (out, section_effects) = self.run_section(&conn, job.run);
                let out = finish_txn(ctx, &conn, out);
                if out.is_ok() {
                    effects = section_effects;
                }
                results.push((job.reply, out));
            }
            Ok(()) => {
                for job in batch {
                    if conn.is_autocommit() {
                        // SQLite rolled the whole transaction back after an I/O,
                        // disk-full or memory error: run nothing more outside it
                        let e = PynencError::backend(format!(
                            "SQLite database {}: the transaction was rolled back by an earlier \
                             error in the same group; nothing of this section was written",
                            ctx.shown
                        ));
                        results.push((job.reply, Err(e)));
                        continue;
                    }
                    let out = match control(ctx, &conn, "SAVEPOINT section") {
                        Err(e) => Err(e),
                        Ok(()) => {
                            let (out, section_effects) = self.run_section(&conn, job.run);
                            let closed = if out.is_ok() {
                                effects.merge(section_effects);
                                control(ctx, &conn, "RELEASE section")
                            } else {
                                control(ctx, &conn, "ROLLBACK TO section")
                                    .and_then(|()| control(ctx, &conn, "RELEASE section"))
                            };
                            closed.and(out)
                        }
                    };
                    results.push((job.reply, out));
                }
                if let Err(e) = finish_txn(ctx, &conn, Ok(())) {
                    effects = Effects::default();
                    for r in results.iter_mut() {
                        if r.1.is_ok() {
                            r.1 = Err(e.clone());
                        }
                    }
                }
            }
        }
        if conn.is_autocommit() {
            *self.writer.lock() = Some(conn);
        }
        self.announce(effects);
        for (reply, out) in results {
            let _ = reply.send(out);
        }
    }

    fn run_read<R>(&self, f: impl FnOnce(&mut SqliteTxn<'_>) -> Result<R>) -> Result<R> {
        let conn = match self.readers.lock().pop() {
            Some(c) => c,
            None => connect(&self.ctx, self.ctx.busy_timeout)?,
        };
        let out = match control(&self.ctx, &conn, "BEGIN") {
            Err(e) => Err(e),
            Ok(()) => {
                let mut txn = SqliteTxn::new(&conn, &self.ctx, &self.names);
                let out = f(&mut txn);
                finish_txn(&self.ctx, &conn, out)
            }
        };
        if conn.is_autocommit() {
            self.readers.lock().push(conn);
        }
        out
    }

    /// Wakes this process's runners and `result()` waiters after a commit.
    fn announce(&self, effects: Effects) {
        if !effects.names.is_empty() {
            let mut names = self.names.lock();
            if names.len() + effects.names.len() > NAME_CACHE_MAX {
                names.clear();
            }
            names.extend(effects.names);
        }
        if effects.enqueued {
            self.work.bump();
        }
        if effects.purged || !effects.finals.is_empty() {
            // a woken wait re-reads what it still waits for
            if effects.purged {
                self.final_waiters
                    .take_all()
                    .iter()
                    .for_each(|n| n.notify_one());
            } else {
                for id in &effects.finals {
                    self.final_waiters
                        .take(id)
                        .iter()
                        .for_each(|n| n.notify_one());
                }
            }
        }
    }

    async fn read<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut SqliteTxn<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let permit = self
            .read_gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PynencError::backend("the SQLite store is closed"))?;
        let inner = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.run_read(f)
        })
        .await
        .map_err(|e| join_error(&self.ctx, e))?
    }
}

type JobFn = Box<dyn FnOnce(&mut dyn StoreTxn) -> Result<AnyValue> + Send>;

fn join_error(ctx: &Ctx, e: tokio::task::JoinError) -> PynencError {
    PynencError::backend(format!(
        "SQLite database {}: a database section did not complete ({}); its transaction was rolled back",
        ctx.shown,
        if e.is_panic() { "it panicked" } else { "it was cancelled" }
    ))
}

/// Unregisters a `wait_final` waiter when it ends (or is dropped).
struct FinalWait {
    inner: Arc<Inner>,
    ids: Vec<String>,
    notify: Arc<Notify>,
}

impl FinalWait {
    fn register(inner: &Arc<Inner>, ids: &[String]) -> FinalWait {
        let notify = Arc::new(Notify::new());
        inner
            .final_waiters
            .add(ids.iter().map(String::as_str), &notify);
        FinalWait {
            inner: inner.clone(),
            ids: ids.to_vec(),
            notify,
        }
    }
}

impl Drop for FinalWait {
    fn drop(&mut self) {
        self.inner
            .final_waiters
            .remove(self.ids.iter().map(String::as_str), &self.notify);
    }
}

/// The SQLite store of one app: an [`AtomicStore`] over one database file.
///
/// Open it with [`SqliteStore::open`] (from the app's configuration) or
/// [`SqliteStore::open_path`]; wrap it in [`crate::store::TxnBackend`] to get
/// the broker, orchestrator and state backend of an app.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.ctx.shown)
            .field("app_id", &self.inner.ctx.app_id)
            .finish()
    }
}

impl SqliteStore {
    /// Opens the store described by `conf`: `sqlite.sqlite_path`,
    /// `sqlite.busy_timeout_ms`, `sqlite.poll_min_ms`, `sqlite.poll_max_ms`,
    /// scoped to `app_id`.
    pub fn open(conf: &PynencConfig) -> Result<Arc<SqliteStore>> {
        SqliteStore::open_path(
            &conf.sqlite.sqlite_path,
            &conf.app_id,
            Duration::from_millis(conf.sqlite.busy_timeout_ms),
            Duration::from_millis(conf.sqlite.poll_min_ms),
            Duration::from_millis(conf.sqlite.poll_max_ms),
        )
    }

    /// Opens (creating if needed) the database file at `path` for the app
    /// `app_id`. `busy_timeout` bounds how long a step waits for a database
    /// locked by another process; `poll_min` and `poll_max` bound the pauses
    /// of the polling waits (see the module documentation).
    ///
    /// Errors (all [`PynencError::StateBackend`], naming the path): the path
    /// is a directory or its directory does not exist, the file is not a
    /// SQLite database, it was written with another schema version (newer or
    /// older), or it cannot be written.
    pub fn open_path(
        path: impl AsRef<Path>,
        app_id: &str,
        busy_timeout: Duration,
        poll_min: Duration,
        poll_max: Duration,
    ) -> Result<Arc<SqliteStore>> {
        let path = path.as_ref().to_path_buf();
        let mut ctx = Ctx {
            shown: path.display().to_string(),
            path,
            app_id: app_id.to_string(),
            app: 0,
            busy_timeout,
        };
        check_path(&ctx)?;
        let conn = connect(&ctx, Duration::ZERO)?;
        ctx.app = init_schema(&ctx, &conn)?;
        let poll_min = poll_min.max(Duration::from_micros(100));
        Ok(Arc::new(SqliteStore {
            inner: Arc::new(Inner {
                ctx,
                poll_min,
                poll_max: poll_max.max(poll_min),
                writer: Mutex::new(Some(conn)),
                readers: Mutex::new(Vec::new()),
                write_queue: Mutex::new(WriteQueue::default()),
                read_gate: Arc::new(Semaphore::new(READ_CONNECTIONS)),
                work: WorkSignal::default(),
                final_waiters: FinalWaiters::default(),
                names: Mutex::new(FxHashMap::default()),
            }),
        }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.ctx.path
    }

    /// The app whose rows this store reads and writes.
    pub fn app_id(&self) -> &str {
        &self.inner.ctx.app_id
    }
}

impl AtomicStore for SqliteStore {
    fn atomic<R, F>(&self, f: F) -> impl Future<Output = Result<R>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn StoreTxn) -> Result<R> + Send + 'static,
    {
        let inner = self.inner.clone();
        async move {
            // one writer per process: sections queue here and are committed in groups
            let (reply, answer) = tokio::sync::oneshot::channel();
            let job = WriteJob {
                run: Box::new(move |t: &mut dyn StoreTxn| f(t).map(|v| Box::new(v) as AnyValue)),
                reply,
            };
            let start_writer = {
                let mut q = inner.write_queue.lock();
                q.jobs.push(job);
                !std::mem::replace(&mut q.draining, true)
            };
            if start_writer {
                let writer = inner.clone();
                let drained = tokio::task::spawn_blocking(move || writer.drain_writes());
                drop(drained);
            }
            let value = answer.await.map_err(|_| {
                PynencError::backend(format!(
                    "SQLite database {}: the writer stopped before answering; the section was rolled back",
                    inner.ctx.shown
                ))
            })??;
            value
                .downcast::<R>()
                .map(|b| *b)
                .map_err(|_| PynencError::backend("SQLite writer returned a value of another type"))
        }
    }

    fn work_epoch(&self) -> u64 {
        self.inner.work.epoch()
    }

    fn wait_for_work(&self, epoch: u64, timeout: Duration) -> impl Future<Output = ()> + Send {
        let inner = self.inner.clone();
        async move {
            let moved = inner.work.moved_since(epoch);
            tokio::pin!(moved);
            if futures::FutureExt::now_or_never(moved.as_mut()).is_some() {
                return;
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let mut poll = inner.poll_min;
            loop {
                let has_work = inner
                    .read(|t| t.has_work(crate::util::now_us()))
                    .await
                    .unwrap_or(false);
                if has_work {
                    return;
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return;
                }
                tokio::select! {
                    _ = moved.as_mut() => return,
                    _ = tokio::time::sleep(poll.min(deadline - now)) => {}
                }
                poll = (poll * 2).min(inner.poll_max);
            }
        }
    }

    /// Waits for a group without re-reading it: one pass over the ids, then
    /// only the final statuses recorded in the history since the last look
    /// (a sequence watermark), woken at once by commits of this process and
    /// by adaptive polling for other processes. A full re-check every two
    /// seconds guards against ids purged meanwhile.
    fn wait_final(&self, ids: &[String]) -> impl Future<Output = Result<()>> + Send {
        let inner = self.inner.clone();
        let ids = ids.to_vec();
        async move {
            let wait = FinalWait::register(&inner, &ids);
            let full_check = |ids: Vec<String>| {
                let inner = inner.clone();
                async move {
                    inner
                        .read(move |t| {
                            let mark = t.history_max_seq()?;
                            let mut left = std::collections::HashSet::new();
                            for id in ids {
                                match t.status_code_of(&id)? {
                                    Some(s) if s.is_final() => {}
                                    Some(_) => {
                                        left.insert(id);
                                    }
                                    None => {
                                        return Err(PynencError::InvocationNotFound {
                                            invocation_id: id,
                                            message: "while waiting for its result".into(),
                                        })
                                    }
                                }
                            }
                            Ok((left, mark))
                        })
                        .await
                }
            };
            let (mut pending, mut mark) = full_check(ids).await?;
            let mut poll = inner.poll_min;
            let mut last_full = tokio::time::Instant::now();
            while !pending.is_empty() {
                tokio::select! {
                    _ = wait.notify.notified() => {
                        poll = inner.poll_min;
                        if pending.len() > 1 {
                            // a group: let a few more commits land before looking
                            tokio::time::sleep(poll).await;
                        }
                    }
                    _ = tokio::time::sleep(poll) => poll = (poll * 2).min(inner.poll_max),
                }
                if last_full.elapsed() >= Duration::from_secs(2) {
                    last_full = tokio::time::Instant::now();
                    (pending, mark) = full_check(pending.into_iter().collect()).await?;
                    continue;
                }
                let (finals, new_mark) = inner.read(move |t| t.finals_since(mark)).await?;
                mark = new_mark;
                for id in finals {
                    pending.remove(&id);
                }
            }
            Ok(())
        }
    }

    fn poll_interval_min(&self) -> Duration {
        self.inner.poll_min
    }

    fn poll_interval_max(&self) -> Duration {
        self.inner.poll_max
    }
}

/// `rid, status, owner, running_key, waited` of an invocation.
type RowColumns = (i64, i64, Option<String>, Option<String>, bool);

/// What a section knows about an invocation it has read or written.
struct Row {
    rid: i64,
    status: StatusRecord,
    running_key: Option<String>,
    waited: bool,
}

/// One transaction's view of the store: the primitives of [`StoreTxn`] as SQL.
struct SqliteTxn<'a> {
    conn: &'a Connection,
    ctx: &'a Ctx,
    /// The store's committed names.
    names: &'a Mutex<FxHashMap<String, i64>>,
    /// Names this section interned or looked up.
    local_names: FxHashMap<String, i64>,
    /// Invocations this section has read or written (valid until it ends:
    /// nobody else writes meanwhile).
    rows: FxHashMap<String, Row>,
    effects: Effects,
}

impl<'a> SqliteTxn<'a> {
    fn new(conn: &'a Connection, ctx: &'a Ctx, names: &'a Mutex<FxHashMap<String, i64>>) -> Self {
        SqliteTxn {
            conn,
            ctx,
            names,
            local_names: FxHashMap::default(),
            rows: FxHashMap::default(),
            effects: Effects::default(),
        }
    }

    fn stmt(&self, sql: &str, op: &str, key: Key<'_>) -> Result<rusqlite::CachedStatement<'a>> {
        self.conn
            .prepare_cached(sql)
            .map_err(|e| self.ctx.err(e, op, key))
    }

    fn app(&self) -> i64 {
        self.ctx.app
    }

    fn parse_status(&self, invocation_id: &str, code: i64) -> Result<InvocationStatus> {
        status_from_code(code).ok_or_else(|| {
            self.ctx.corrupt(
                invocation_id,
                "status",
                format!("unknown status code {code}"),
            )
        })
    }

    /// The section's view of an invocation, read on first use.
    fn row(&mut self, invocation_id: &str) -> Result<Option<&mut Row>> {
        if !self.rows.contains_key(invocation_id) {
            let op = "reading an invocation";
            let key = inv(invocation_id);
            let found: Option<RowColumns> = self.opt_row(
                "SELECT rid, status, owner, running_key, waited FROM invocations
                     WHERE app = ?1 AND invocation_id = ?2",
                op,
                key,
                params![self.app(), invocation_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?;
            let Some((rid, code, owner, running_key, waited)) = found else {
                return Ok(None);
            };
            let status = StatusRecord {
                status: self.parse_status(invocation_id, code)?,
                owner: owner.map(Arc::<str>::from),
            };
            self.rows.insert(
                invocation_id.to_string(),
                Row {
                    rid,
                    status,
                    running_key,
                    waited,
                },
            );
        }
        Ok(self.rows.get_mut(invocation_id))
    }

    /// The invocation's `rid`, if it exists.
    fn rid(&mut self, invocation_id: &str) -> Result<Option<i64>> {
        Ok(self.row(invocation_id)?.map(|r| r.rid))
    }

    /// The invocation's `rid`, or a not-found error.
    fn rid_or_not_found(&mut self, invocation_id: &str) -> Result<i64> {
        self.rid(invocation_id)?
            .ok_or_else(|| self.ctx.not_found(invocation_id))
    }

    /// The status of an invocation, read without caching (for read-only checks).
    fn status_code_of(&mut self, invocation_id: &str) -> Result<Option<InvocationStatus>> {
        let op = "reading a status";
        let key = inv(invocation_id);
        let code: Option<i64> = self.opt_row(
            "SELECT status FROM invocations WHERE app = ?1 AND invocation_id = ?2",
            op,
            key,
            params![self.app(), invocation_id],
            |r| r.get(0),
        )?;
        code.map(|c| self.parse_status(invocation_id, c))
            .transpose()
    }

    /// The `names` row of `name`, created if needed.
    fn name_id(&mut self, name: &str) -> Result<i64> {
        if let Some(id) = self.local_names.get(name) {
            return Ok(*id);
        }
        if let Some(id) = self.names.lock().get(name) {
            return Ok(*id);
        }
        let op = "interning a name";
        let key = Key::Of("name", name);
        let found: Option<i64> = self.opt_row(
            "SELECT name_id FROM names WHERE name = ?1",
            op,
            key,
            params![name],
            |r| r.get(0),
        )?;
        let id = match found {
            Some(id) => id,
            None => self
                .stmt(
                    "INSERT INTO names (name) VALUES (?1) RETURNING name_id",
                    op,
                    key,
                )?
                .query_row(params![name], |r| r.get(0))
                .map_err(|e| self.ctx.err(e, op, key))?,
        };
        self.local_names.insert(name.to_string(), id);
        self.effects.names.push((name.to_string(), id));
        Ok(id)
    }

    fn opt_name_id(&mut self, name: Option<&str>) -> Result<Option<i64>> {
        name.map(|n| self.name_id(n)).transpose()
    }

    /// The newest history sequence number.
    fn history_max_seq(&mut self) -> Result<i64> {
        let op = "reading the history watermark";
        self.stmt("SELECT COALESCE(MAX(seq), 0) FROM history", op, Key::None)?
            .query_row([], |r| r.get(0))
            .map_err(|e| self.ctx.err(e, op, Key::None))
    }

    /// Invocations of this app that became final after history `seq`, and the new watermark.
    fn finals_since(&mut self, seq: i64) -> Result<(Vec<String>, i64)> {
        let ids = self.ids(
            // a range of the rowid: only the rows written since the watermark
            "SELECT i.invocation_id FROM history AS h NOT INDEXED
             JOIN invocations AS i ON i.rid = h.rid
             WHERE h.seq > ?1 AND h.status IN (3, 13, 14) AND i.app = ?2",
            "reading recent final statuses",
            Key::None,
            params![seq, self.app()],
        )?;
        Ok((ids, self.history_max_seq()?))
    }

    /// Whether anything is queued or a scheduled invocation is due.
    fn has_work(&mut self, now_us: i64) -> Result<bool> {
        let op = "checking for work";
        self.stmt(
            "SELECT EXISTS (SELECT 1 FROM queue WHERE app = ?1)
                 OR EXISTS (SELECT 1 FROM invocations
                            WHERE app = ?1 AND status = 0 AND due_at_us <= ?2)",
            op,
            Key::None,
        )?
        .query_row(params![self.app(), now_us], |r| r.get(0))
        .map_err(|e| self.ctx.err(e, op, Key::None))
    }

    fn ids(
        &self,
        sql: &str,
        op: &str,
        key: Key<'_>,
        args: impl rusqlite::Params,
    ) -> Result<Vec<String>> {
        let mut stmt = self.stmt(sql, op, key)?;
        let rows = stmt
            .query_map(args, |r| r.get::<_, String>(0))
            .map_err(|e| self.ctx.err(e, op, key))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.ctx.err(e, op, key))
    }

    /// Runs a statement returning `(seq, id)` rows; the ids in `seq` order.
    fn seq_ids(
        &self,
        sql: &str,
        op: &str,
        key: Key<'_>,
        args: impl rusqlite::Params,
    ) -> Result<Vec<String>> {
        let mut stmt = self.stmt(sql, op, key)?;
        let rows = stmt
            .query_map(args, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.ctx.err(e, op, key))?;
        let mut rows = rows
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.ctx.err(e, op, key))?;
        rows.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(rows.into_iter().map(|(_, id)| id).collect())
    }

    /// The one row `sql` finds, if any, mapped by `f`.
    fn opt_row<T>(
        &self,
        sql: &str,
        op: &str,
        key: Key<'_>,
        args: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        self.stmt(sql, op, key)?
            .query_row(args, f)
            .optional()
            .map_err(|e| self.ctx.err(e, op, key))
    }

    fn exec(
        &self,
        sql: &str,
        op: &str,
        key: Key<'_>,
        args: impl rusqlite::Params,
    ) -> Result<usize> {
        self.stmt(sql, op, key)?
            .execute(args)
            .map_err(|e| self.ctx.err(e, op, key))
    }
}

impl StoreTxn for SqliteTxn<'_> {
    fn insert_invocation(
        &mut self,
        record: &Arc<InvocationRecord>,
        status: &StatusRecord,
    ) -> Result<()> {
        let id = record.invocation_id.as_str();
        let op = "inserting an invocation";
        let key = inv(id);
        let json = serde_json::to_string(&**record).map_err(|e| {
            PynencError::serialization("serialize", format!("invocation record {id}"), e)
        })?;
        // an existing id keeps its rid (and so its history), like a replace of its row
        let rid: i64 = self
            .stmt(
                "INSERT INTO invocations (app, invocation_id, status, owner, status_at_us,
                     created_at_us, due_at_us, registration_key, running_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8)
                 ON CONFLICT (app, invocation_id) DO UPDATE SET
                     status = excluded.status, owner = excluded.owner,
                     status_at_us = excluded.status_at_us, created_at_us = excluded.created_at_us,
                     due_at_us = excluded.due_at_us, registration_key = excluded.registration_key,
                     running_key = excluded.running_key, retries = 0, waited = 0,
                     final_at_us = NULL
                 RETURNING rid",
                op,
                key,
            )?
            .query_row(
                params![
                    self.app(),
                    id,
                    status_code(status.status),
                    status.owner,
                    record.created_at_us,
                    record.scheduled_at_us.unwrap_or(0),
                    record.concurrency.registration_key,
                    record.concurrency.running_key,
                ],
                |r| r.get(0),
            )
            .map_err(|e| self.ctx.err(e, op, key))?;
        self.exec(
            "INSERT OR REPLACE INTO records (rid, record) VALUES (?1, ?2)",
            op,
            key,
            params![rid, json],
        )?;
        self.rows.insert(
            id.to_string(),
            Row {
                rid,
                status: status.clone(),
                running_key: record.concurrency.running_key.clone(),
                waited: false,
            },
        );
        Ok(())
    }

    fn get_invocation(&mut self, invocation_id: &str) -> Result<Option<Arc<InvocationRecord>>> {
        let op = "reading an invocation";
        let key = inv(invocation_id);
        let json: Option<String> = match self.rows.get(invocation_id) {
            Some(row) => self.opt_row(
                "SELECT record FROM records WHERE rid = ?1",
                op,
                key,
                params![row.rid],
                |r| r.get(0),
            )?,
            None => self.opt_row(
                "SELECT r.record FROM invocations AS i JOIN records AS r ON r.rid = i.rid
                 WHERE i.app = ?1 AND i.invocation_id = ?2",
                op,
                key,
                params![self.app(), invocation_id],
                |r| r.get(0),
            )?,
        };
        json.map(|j| {
            serde_json::from_str::<InvocationRecord>(&j)
                .map(Arc::new)
                .map_err(|e| self.ctx.corrupt(invocation_id, "record", e))
        })
        .transpose()
    }

    fn get_status(&mut self, invocation_id: &str) -> Result<Option<StatusRecord>> {
        Ok(self.row(invocation_id)?.map(|r| r.status.clone()))
    }

    fn running_key_of(&mut self, invocation_id: &str) -> Result<Option<String>> {
        Ok(self.row(invocation_id)?.and_then(|r| r.running_key.clone()))
    }

    /// Time-ordered ids: 14 hexadecimal digits of the creation time in
    /// microseconds, then 18 random ones (72 random bits). Invocations
    /// created together have neighbouring keys in the `invocation_id` index.
    fn new_invocation_id(&mut self) -> String {
        let now = u64::try_from(crate::util::now_us()).unwrap_or(0) & ((1 << 56) - 1);
        let random = uuid::Uuid::new_v4().as_u128();
        // the top 48 and the low 24 bits of a v4 UUID are random
        format!(
            "{now:014x}{:012x}{:06x}",
            (random >> 80) as u64,
            (random as u64) & 0xff_ffff
        )
    }

    fn put_status(
        &mut self,
        invocation_id: &str,
        status: &StatusRecord,
        now_us: i64,
    ) -> Result<()> {
        let rid = self.rid_or_not_found(invocation_id)?;
        let final_at = status.status.is_final().then_some(now_us);
        self.exec(
            "UPDATE invocations
             SET status = ?2, owner = ?3, status_at_us = ?4, final_at_us = COALESCE(?5, final_at_us)
             WHERE rid = ?1",
            "writing a status",
            inv(invocation_id),
            params![
                rid,
                status_code(status.status),
                status.owner,
                now_us,
                final_at
            ],
        )?;
        if let Some(row) = self.rows.get_mut(invocation_id) {
            row.status = status.clone();
        }
        Ok(())
    }

    fn append_history(&mut self, entry: HistoryStep<'_>) -> Result<()> {
        let rid = self.rid_or_not_found(entry.invocation_id)?;
        let owner = self.opt_name_id(entry.owner)?;
        let actor = self.name_id(entry.actor)?;
        let context = self.opt_name_id(entry.execution_context)?;
        self.exec(
            "INSERT INTO history (rid, status, owner, actor, timestamp_us, execution_context)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            "appending history",
            inv(entry.invocation_id),
            params![
                rid,
                status_code(entry.status),
                owner,
                actor,
                entry.timestamp_us,
                context
            ],
        )?;
        Ok(())
    }

    fn get_history(&mut self, invocation_id: &str) -> Result<Vec<HistoryEntry>> {
        let rid = self.rid_or_not_found(invocation_id)?;
        let op = "reading history";
        let key = inv(invocation_id);
        let mut stmt = self.stmt(
            "SELECT h.status, o.name, a.name, h.timestamp_us, c.name FROM history AS h
             LEFT JOIN names AS o ON o.name_id = h.owner
             LEFT JOIN names AS a ON a.name_id = h.actor
             LEFT JOIN names AS c ON c.name_id = h.execution_context
             WHERE h.rid = ?1 ORDER BY h.seq",
            op,
            key,
        )?;
        let rows = stmt
            .query_map(params![rid], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .map_err(|e| self.ctx.err(e, op, key))?;
        let mut out = Vec::new();
        for row in rows {
            let (status, owner, actor, timestamp_us, execution_context) =
                row.map_err(|e| self.ctx.err(e, op, key))?;
            out.push(HistoryEntry {
                invocation_id: invocation_id.to_string(),
                status: self.parse_status(invocation_id, status)?,
                owner,
                actor: actor.unwrap_or_default(),
                timestamp_us,
                execution_context,
            });
        }
        Ok(out)
    }

    fn get_retries(&mut self, invocation_id: &str) -> Result<u32> {
        let op = "reading retries";
        let key = inv(invocation_id);
        let n: Option<i64> = self.opt_row(
            "SELECT retries FROM invocations WHERE app = ?1 AND invocation_id = ?2",
            op,
            key,
            params![self.app(), invocation_id],
            |r| r.get(0),
        )?;
        let n = n.ok_or_else(|| self.ctx.not_found(invocation_id))?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    fn increment_retries(&mut self, invocation_id: &str) -> Result<u32> {
        let op = "counting a retry";
        let key = inv(invocation_id);
        let n: Option<i64> = self.opt_row(
            "UPDATE invocations SET retries = retries + 1
                 WHERE app = ?1 AND invocation_id = ?2 RETURNING retries",
            op,
            key,
            params![self.app(), invocation_id],
            |r| r.get(0),
        )?;
        let n = n.ok_or_else(|| self.ctx.not_found(invocation_id))?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    fn set_result(&mut self, invocation_id: &str, result: String) -> Result<()> {
        let rid = self.rid_or_not_found(invocation_id)?;
        self.exec(
            "INSERT INTO outcomes (rid, result) VALUES (?1, ?2)
             ON CONFLICT (rid) DO UPDATE SET result = excluded.result",
            "storing a result",
            inv(invocation_id),
            params![rid, result],
        )?;
        Ok(())
    }

    fn set_error(&mut self, invocation_id: &str, error: &TaskError) -> Result<()> {
        let rid = self.rid_or_not_found(invocation_id)?;
        let json = serde_json::to_string(error).map_err(|e| {
            PynencError::serialization(
                "serialize",
                format!("error of invocation {invocation_id}"),
                e,
            )
        })?;
        self.exec(
            "INSERT INTO outcomes (rid, error) VALUES (?1, ?2)
             ON CONFLICT (rid) DO UPDATE SET error = excluded.error",
            "storing an error",
            inv(invocation_id),
            params![rid, json],
        )?;
        Ok(())
    }

    fn get_outcome(&mut self, invocation_id: &str) -> Result<Option<InvocationOutcome>> {
        let op = "reading an outcome";
        let key = inv(invocation_id);
        let row: Option<(i64, Option<String>, Option<String>)> = self.opt_row(
            "SELECT i.status, o.result, o.error FROM invocations AS i
                 LEFT JOIN outcomes AS o ON o.rid = i.rid
                 WHERE i.app = ?1 AND i.invocation_id = ?2",
            op,
            key,
            params![self.app(), invocation_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        row.map(|(status, result, error)| {
            let error = error
                .map(|j| {
                    serde_json::from_str::<TaskError>(&j)
                        .map_err(|e| self.ctx.corrupt(invocation_id, "error", e))
                })
                .transpose()?;
            Ok(InvocationOutcome {
                status: self.parse_status(invocation_id, status)?,
                result,
                error,
            })
        })
        .transpose()
    }

    fn list_invocation_ids(&mut self) -> Result<Vec<String>> {
        self.ids(
            "SELECT invocation_id FROM invocations WHERE app = ?1 ORDER BY rid",
            "listing invocations",
            Key::None,
            params![self.app()],
        )
    }

    fn find_registered(&mut self, registration_key: &str) -> Result<Option<String>> {
        Ok(self
            .ids(
                "SELECT invocation_id FROM invocations
                 WHERE app = ?1 AND registration_key = ?2 AND status = 1
                 ORDER BY created_at_us, rid LIMIT 1",
                "looking up a registration key",
                Key::Of("key", registration_key),
                params![self.app(), registration_key],
            )?
            .into_iter()
            .next())
    }

    fn running_key_in_use(&mut self, running_key: &str) -> Result<bool> {
        let op = "looking up a running key";
        let key = Key::Of("key", running_key);
        self.stmt(
            "SELECT EXISTS (SELECT 1 FROM invocations WHERE app = ?1 AND running_key = ?2
                 AND status IN (5, 7, 8, 9))",
            op,
            key,
        )?
        .query_row(params![self.app(), running_key], |r| r.get(0))
        .map_err(|e| self.ctx.err(e, op, key))
    }

    fn park_controlled(&mut self, running_key: &str, invocation_id: &str) -> Result<()> {
        self.exec(
            "INSERT INTO controlled (app, running_key, invocation_id) VALUES (?1, ?2, ?3)",
            "parking an invocation",
            inv(invocation_id),
            params![self.app(), running_key, invocation_id],
        )?;
        Ok(())
    }

    fn take_controlled(&mut self, running_key: &str) -> Result<Vec<String>> {
        self.seq_ids(
            "DELETE FROM controlled WHERE app = ?1 AND running_key = ?2
             RETURNING seq, invocation_id",
            "taking parked invocations",
            Key::Of("key", running_key),
            params![self.app(), running_key],
        )
    }

    fn enqueue(&mut self, invocation_id: &str) -> Result<()> {
        self.exec(
            "INSERT INTO queue (app, seq, invocation_id)
             VALUES (?1, COALESCE((SELECT seq FROM queue WHERE app = ?1 ORDER BY seq DESC LIMIT 1), 0) + 1, ?2)",
            "queueing",
            inv(invocation_id),
            params![self.app(), invocation_id],
        )?;
        self.effects.enqueued = true;
        Ok(())
    }

    fn enqueue_front(&mut self, invocation_id: &str) -> Result<()> {
        self.exec(
            "INSERT INTO queue (app, seq, invocation_id)
             VALUES (?1, COALESCE((SELECT seq FROM queue WHERE app = ?1 ORDER BY seq ASC LIMIT 1), 0) - 1, ?2)",
            "queueing at the head",
            inv(invocation_id),
            params![self.app(), invocation_id],
        )?;
        self.effects.enqueued = true;
        Ok(())
    }

    fn dequeue(&mut self, max: usize) -> Result<Vec<String>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.seq_ids(
            "DELETE FROM queue WHERE app = ?1 AND seq IN
                 (SELECT seq FROM queue WHERE app = ?1 ORDER BY seq LIMIT ?2)
             RETURNING seq, invocation_id",
            "taking from the queue",
            Key::None,
            params![self.app(), limit(max)],
        )
    }

    fn queue_len(&mut self) -> Result<usize> {
        let op = "counting the queue";
        let n: i64 = self
            .stmt("SELECT COUNT(*) FROM queue WHERE app = ?1", op, Key::None)?
            .query_row(params![self.app()], |r| r.get(0))
            .map_err(|e| self.ctx.err(e, op, Key::None))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Marks the waited invocations (who waits is not needed by any question
    /// of the store, so it is not recorded).
    fn add_waits(&mut self, _waiter: Option<&str>, waited: &[String]) -> Result<()> {
        for id in waited {
            let Some(row) = self.row(id)? else {
                continue;
            };
            if row.waited {
                continue;
            }
            row.waited = true;
            let rid = row.rid;
            self.exec(
                "UPDATE invocations SET waited = 1 WHERE rid = ?1",
                "recording a wait",
                inv(id),
                params![rid],
            )?;
        }
        Ok(())
    }

    fn blocking_candidates(&mut self, max: usize) -> Result<Vec<String>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.ids(
            "SELECT invocation_id FROM invocations
             WHERE app = ?1 AND waited = 1 AND status IN (1, 4, 12)
             ORDER BY created_at_us, rid LIMIT ?2",
            "finding waited invocations",
            Key::None,
            params![self.app(), limit(max)],
        )
    }

    fn release_waited(&mut self, waited: &str) -> Result<()> {
        let Some(row) = self.row(waited)? else {
            return Ok(());
        };
        if !row.waited {
            return Ok(());
        }
        row.waited = false;
        let rid = row.rid;
        self.exec(
            "UPDATE invocations SET waited = 0 WHERE rid = ?1",
            "releasing waits",
            inv(waited),
            params![rid],
        )?;
        Ok(())
    }

    fn add_edge(
        &mut self,
        caller_invocation_id: &str,
        caller_call_id: &str,
        callee_call_id: &str,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO edges (app, caller_invocation_id, caller_call_id, callee_call_id)
             VALUES (?1, ?2, ?3, ?4)",
            "recording a call edge",
            inv(caller_invocation_id),
            params![
                self.app(),
                caller_invocation_id,
                caller_call_id,
                callee_call_id
            ],
        )?;
        Ok(())
    }

    fn callees_of(&mut self, call_id: &str) -> Result<Vec<String>> {
        self.ids(
            "SELECT DISTINCT callee_call_id FROM edges WHERE app = ?1 AND caller_call_id = ?2",
            "reading call edges",
            Key::Of("call", call_id),
            params![self.app(), call_id],
        )
    }

    fn remove_edges_of(&mut self, caller_invocation_id: &str) -> Result<()> {
        self.exec(
            "DELETE FROM edges WHERE app = ?1 AND caller_invocation_id = ?2",
            "removing call edges",
            inv(caller_invocation_id),
            params![self.app(), caller_invocation_id],
        )?;
        Ok(())
    }

    fn due_scheduled(&mut self, now_us: i64, max: usize) -> Result<Vec<String>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.ids(
            "SELECT invocation_id FROM invocations
             WHERE app = ?1 AND status = 0 AND due_at_us <= ?2
             ORDER BY due_at_us, rid LIMIT ?3",
            "finding due scheduled invocations",
            Key::None,
            params![self.app(), now_us, limit(max)],
        )
    }

    fn final_before(&mut self, before_us: i64, max: usize) -> Result<Vec<String>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.ids(
            "SELECT invocation_id FROM invocations
             WHERE app = ?1 AND final_at_us < ?2
             ORDER BY final_at_us, rid LIMIT ?3",
            "finding final invocations",
            Key::None,
            params![self.app(), before_us, limit(max)],
        )
    }

    fn delete_invocation(&mut self, invocation_id: &str) -> Result<()> {
        let Some(rid) = self.rid(invocation_id)? else {
            return Ok(());
        };
        let op = "deleting an invocation";
        let key = inv(invocation_id);
        for sql in [
            "DELETE FROM records WHERE rid = ?1",
            "DELETE FROM outcomes WHERE rid = ?1",
            "DELETE FROM history WHERE rid = ?1",
            "DELETE FROM invocations WHERE rid = ?1",
        ] {
            self.exec(sql, op, key, params![rid])?;
        }
        self.exec(
            "DELETE FROM edges WHERE app = ?1 AND caller_invocation_id = ?2",
            op,
            key,
            params![self.app(), invocation_id],
        )?;
        self.rows.remove(invocation_id);
        self.effects.finals.push(invocation_id.to_string());
        Ok(())
    }

    fn purge(&mut self) -> Result<()> {
        let key = Key::Of("app", &self.ctx.app_id);
        for sql in PURGE_APP {
            self.exec(sql, "purging the app", key, params![self.app()])?;
        }
        self.rows.clear();
        self.effects.purged = true;
        Ok(())
    }

    fn put_heartbeat(&mut self, runner_id: &str, now_us: i64) -> Result<()> {
        self.exec(
            "INSERT INTO heartbeats (app, runner_id, beat_us) VALUES (?1, ?2, ?3)
             ON CONFLICT (app, runner_id) DO UPDATE SET beat_us = excluded.beat_us",
            "recording a heartbeat",
            Key::Of("runner", runner_id),
            params![self.app(), runner_id, now_us],
        )?;
        Ok(())
    }

    fn get_heartbeat(&mut self, runner_id: &str) -> Result<Option<i64>> {
        let op = "reading a heartbeat";
        let key = Key::Of("runner", runner_id);
        self.opt_row(
            "SELECT beat_us FROM heartbeats WHERE app = ?1 AND runner_id = ?2",
            op,
            key,
            params![self.app(), runner_id],
            |r| r.get(0),
        )
    }

    fn remove_heartbeat(&mut self, runner_id: &str) -> Result<()> {
        self.exec(
            "DELETE FROM heartbeats WHERE app = ?1 AND runner_id = ?2",
            "removing a heartbeat",
            Key::Of("runner", runner_id),
            params![self.app(), runner_id],
        )?;
        Ok(())
    }

    fn owned_claims_before(
        &mut self,
        before_us: i64,
        max: usize,
    ) -> Result<Vec<(String, StatusRecord, i64)>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let op = "finding claimed invocations";
        let mut stmt = self.stmt(
            "SELECT invocation_id, status, owner, status_at_us FROM invocations
             WHERE app = ?1 AND status IN (5, 7, 8, 9) AND status_at_us < ?2
             ORDER BY status_at_us, rid LIMIT ?3",
            op,
            Key::None,
        )?;
        let rows = stmt
            .query_map(params![self.app(), before_us, limit(max)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(|e| self.ctx.err(e, op, Key::None))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, status, owner, at) = row.map_err(|e| self.ctx.err(e, op, Key::None))?;
            let status = self.parse_status(&id, status)?;
            out.push((
                id,
                StatusRecord {
                    status,
                    owner: owner.map(Arc::from),
                },
                at,
            ));
        }
        Ok(out)
    }

    fn try_lease(&mut self, name: &str, holder: &str, now_us: i64, ttl_us: i64) -> Result<bool> {
        let changed = self.exec(
            "INSERT INTO leases (app, name, holder, expires_us) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (app, name) DO UPDATE
                 SET holder = excluded.holder, expires_us = excluded.expires_us
                 WHERE leases.holder = excluded.holder OR leases.expires_us <= ?5",
            "taking a lease",
            Key::Of("lease", name),
            params![
                self.app(),
                name,
                holder,
                now_us.saturating_add(ttl_us),
                now_us
            ],
        )?;
        Ok(changed > 0)
    }

    fn on_final(&mut self, invocation_id: &str) {
        self.effects.finals.push(invocation_id.to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::arguments::Arguments;
    use crate::broker::Broker;
    use crate::call::Call;
    use crate::orchestrator::{ConcurrencySpec, Orchestrator, RouteRequest, RunOutcome};
    use crate::serializer::Serializer;
    use crate::state_backend::StateBackend;
    use crate::status::InvocationStatus::*;
    use crate::store::TxnBackend;

    const MS: Duration = Duration::from_millis(1);

    fn open_app(path: &Path, app_id: &str) -> Arc<SqliteStore> {
        SqliteStore::open_path(path, app_id, Duration::from_secs(10), MS, 20 * MS).unwrap()
    }

    /// Runs `f` in one section of a store on a fresh file.
    async fn in_fresh_store(f: impl FnOnce(&mut dyn StoreTxn) -> Result<()> + Send + 'static) {
        let (_dir, store) = fresh();
        store.atomic(f).await.unwrap();
    }

    /// Opens `path` expecting a refusal: a state backend error naming the
    /// path, and the file left as it was. Returns the message.
    fn refused_untouched(path: &Path) -> String {
        let before = std::fs::read(path).unwrap();
        let err = SqliteStore::open_path(path, "app", MS * 100, MS, MS * 50).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PynencError::StateBackend { .. }), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert_eq!(std::fs::read(path).unwrap(), before, "the file was changed");
        msg
    }

    /// A database file made by `sql` alone, as another program would leave it.
    fn raw_database(path: &Path, sql: &str) {
        Connection::open(path).unwrap().execute_batch(sql).unwrap();
    }

    /// A store of app `app` on a fresh file (kept while the directory lives).
    fn fresh() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = open_app(&dir.path().join("p.db"), "app");
        (dir, store)
    }

    fn record(id: &str, created_at_us: i64, concurrency: ConcurrencySpec) -> Arc<InvocationRecord> {
        Arc::new(InvocationRecord {
            invocation_id: id.to_string(),
            call: Call::new(
                "tests.task",
                Arguments::new().with(Serializer::Json, "id", id).unwrap(),
            ),
            parent_invocation_id: None,
            created_at_us,
            scheduled_at_us: None,
            concurrency,
        })
    }

    fn st(status: InvocationStatus, owner: Option<&str>) -> StatusRecord {
        StatusRecord {
            status,
            owner: owner.map(Arc::from),
        }
    }

    fn plain(id: &str, created_at_us: i64) -> Arc<InvocationRecord> {
        record(id, created_at_us, ConcurrencySpec::default())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn entry(id: &str, status: InvocationStatus, at: i64) -> HistoryEntry {
        HistoryEntry {
            invocation_id: id.to_string(),
            status,
            owner: None,
            actor: "tester".into(),
            timestamp_us: at,
            execution_context: Some(format!("ctx-{at}")),
        }
    }

    fn request(task_id: &str, x: i64) -> RouteRequest {
        RouteRequest {
            call: Call::new(
                task_id,
                Arguments::new().with(Serializer::Json, "x", &x).unwrap(),
            ),
            parent_invocation_id: None,
            parent_call_id: None,
            concurrency: ConcurrencySpec::default(),
            scheduled_at_us: None,
            cycle_control: true,
            actor: "external".into(),
        }
    }

    #[tokio::test]
    async fn open_creates_schema_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pynenc.db");
        let store = open_app(&path, "app");
        store
            .atomic(|t| {
                t.insert_invocation(&plain("a", 1), &st(Registered, None))?;
                t.enqueue("a")
            })
            .await
            .unwrap();
        drop(store);

        let raw = Connection::open(&path).unwrap();
        let version: String = raw
            .query_row(
                "SELECT value FROM pynenc_meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_string());
        let mode: String = raw
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(raw);

        let mut conf = PynencConfig::default();
        conf.app_id = "app".into();
        conf.sqlite.sqlite_path = path.display().to_string();
        conf.sqlite.poll_min_ms = 3;
        conf.sqlite.poll_max_ms = 30;
        let store = SqliteStore::open(&conf).unwrap();
        assert_eq!(store.poll_interval_min(), 3 * MS);
        assert_eq!(store.poll_interval_max(), 30 * MS);
        assert_eq!(store.app_id(), "app");
        let (status, queued) = store
            .atomic(|t| Ok((t.get_status("a")?, t.queue_len()?)))
            .await
            .unwrap();
        assert_eq!(status, Some(st(Registered, None)));
        assert_eq!(queued, 1);
        let rec = store
            .atomic(|t| t.get_invocation("a"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*rec, *plain("a", 1));
    }

    #[tokio::test]
    async fn apps_are_isolated_and_purge_keeps_the_other_app() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let a = open_app(&path, "app-a");
        let b = open_app(&path, "app-b");
        for store in [&a, &b] {
            store
                .atomic(|t| {
                    t.insert_invocation(&plain("same-id", 1), &st(Registered, None))?;
                    t.append_history(entry("same-id", Registered, 1).as_step())?;
                    t.enqueue("same-id")?;
                    t.add_waits(None, &strings(&["same-id"]))?;
                    t.add_edge("same-id", "c1", "c2")?;
                    t.park_controlled("rk", "same-id")?;
                    t.put_heartbeat("runner", 5)?;
                    t.try_lease("lease", "runner", 5, 100).map(|_| ())
                })
                .await
                .unwrap();
        }
        a.atomic(|t| t.put_status("same-id", &st(Pending, Some("r")), 2))
            .await
            .unwrap();
        let status_b = b.atomic(|t| t.get_status("same-id")).await.unwrap();
        assert_eq!(
            status_b,
            Some(st(Registered, None)),
            "a's write leaked into b"
        );

        a.atomic(|t| t.purge()).await.unwrap();
        let left_a = a
            .atomic(|t| {
                Ok((
                    t.list_invocation_ids()?,
                    t.queue_len()?,
                    t.callees_of("c1")?,
                    t.get_heartbeat("runner")?,
                    t.blocking_candidates(10)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(left_a, (vec![], 0, vec![], None, vec![]));
        // the lease of a is gone: another holder takes it
        assert!(a
            .atomic(|t| t.try_lease("lease", "other", 6, 100))
            .await
            .unwrap());

        let left_b = b
            .atomic(|t| {
                Ok((
                    t.list_invocation_ids()?,
                    t.queue_len()?,
                    t.callees_of("c1")?,
                    t.get_heartbeat("runner")?,
                    t.blocking_candidates(10)?,
                    t.get_history("same-id")?.len(),
                    t.try_lease("lease", "other", 6, 100)?,
                    t.take_controlled("rk")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(
            left_b,
            (
                strings(&["same-id"]),
                1,
                strings(&["c2"]),
                Some(5),
                strings(&["same-id"]),
                1,
                false,
                strings(&["same-id"])
            )
        );
    }

    #[test]
    fn a_text_file_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "these are my notes, not a database\n".repeat(200)).unwrap();
        let msg = refused_untouched(&path);
        assert!(msg.contains("not a database"), "{msg}");
    }

    #[test]
    fn an_older_schema_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        raw_database(
            &path,
            "CREATE TABLE pynenc_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO pynenc_meta VALUES ('schema_version', '1');
             CREATE TABLE invocations (app_id TEXT, invocation_id TEXT);",
        );
        let msg = refused_untouched(&path);
        assert!(msg.contains("version 1"), "{msg}");
        assert!(msg.contains(&format!("version {SCHEMA_VERSION}")), "{msg}");
        assert!(msg.contains("delete the file"), "{msg}");
    }

    #[test]
    fn status_codes_are_stable_and_match_the_partial_indexes() {
        use crate::status::ALL_STATUSES;
        let mut seen = HashSet::new();
        for s in ALL_STATUSES {
            let code = status_code(s);
            assert!(seen.insert(code), "{s} shares code {code}");
            assert_eq!(status_from_code(code), Some(s));
            // the literal code lists in SCHEMA and the queries
            assert_eq!([5, 7, 8, 9].contains(&code), s.is_owned_running(), "{s}");
            assert_eq!([1, 4, 12].contains(&code), s.is_available_for_run(), "{s}");
            assert_eq!([3, 13, 14].contains(&code), s.is_final(), "{s}");
            assert_eq!(code == 0, s == Scheduled);
            assert_eq!(code == 1, s == Registered);
        }
        assert_eq!(status_from_code(15), None);
        assert_eq!(status_from_code(-1), None);
    }

    #[tokio::test]
    async fn new_ids_are_unique_and_in_creation_order() {
        let (_dir, store) = fresh();
        let ids = store
            .atomic(|t| {
                let mut ids = Vec::new();
                for _ in 0..2000 {
                    ids.push(t.new_invocation_id());
                }
                Ok(ids)
            })
            .await
            .unwrap();
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{id}"
            );
        }
        // the time prefix never goes backwards
        for pair in ids.windows(2) {
            assert!(pair[0][..14] <= pair[1][..14], "{pair:?}");
        }
        let now = crate::util::now_us();
        let stamped = i64::from_str_radix(&ids[0][..14], 16).unwrap();
        assert!((now - stamped).abs() < 60_000_000, "{stamped} vs {now}");
    }

    #[tokio::test]
    async fn integrity_check_of_a_used_file_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let store = open_app(&path, "app");
        let backend = TxnBackend::new(store.clone(), Serializer::Json);
        backend
            .route_calls((0..50).map(|i| request("tests.check", i)).collect())
            .await
            .unwrap();
        assert_eq!(integrity_check(&path).unwrap(), "ok");
        let err = integrity_check(dir.path().join("missing.db")).unwrap_err();
        assert!(err.to_string().contains("missing.db"), "{err}");
    }

    #[tokio::test]
    async fn names_of_a_rolled_back_section_are_forgotten() {
        let (_dir, store) = fresh();
        store
            .atomic(|t| t.insert_invocation(&plain("a", 1), &st(Registered, None)))
            .await
            .unwrap();
        // interns "ghost" (and "ghost-ctx"), then fails: the names are rolled back
        let err = store
            .atomic(|t| {
                let mut e = entry("a", Registered, 1);
                e.actor = "ghost".into();
                e.execution_context = Some("ghost-ctx".into());
                t.append_history(e.as_step())?;
                t.put_status("missing", &st(Pending, Some("r")), 2)
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, PynencError::InvocationNotFound { .. }),
            "{err}"
        );
        // other names may now take the rolled-back rows' numbers
        store
            .atomic(|t| {
                let mut e = entry("a", Registered, 2);
                e.actor = "other".into();
                e.execution_context = Some("other-ctx".into());
                t.append_history(e.as_step())
            })
            .await
            .unwrap();
        store
            .atomic(|t| {
                let mut e = entry("a", Pending, 3);
                e.actor = "ghost".into();
                e.owner = Some("other".into());
                e.execution_context = Some("ghost-ctx".into());
                t.append_history(e.as_step())
            })
            .await
            .unwrap();
        let history = store.atomic(|t| t.get_history("a")).await.unwrap();
        let got: Vec<_> = history
            .iter()
            .map(|h| {
                (
                    h.actor.as_str(),
                    h.owner.as_deref(),
                    h.execution_context.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("other", None, Some("other-ctx")),
                ("ghost", Some("other"), Some("ghost-ctx")),
            ]
        );
    }

    #[tokio::test]
    async fn a_section_sees_its_own_writes() {
        let (_dir, store) = fresh();
        store
            .atomic(|t| {
                let spec = ConcurrencySpec {
                    running_key: Some("R".into()),
                    ..ConcurrencySpec::default()
                };
                t.insert_invocation(&record("a", 1, spec), &st(Registered, None))?;
                assert_eq!(t.running_key_of("a")?.as_deref(), Some("R"));
                assert_eq!(t.running_key_of("missing")?, None);
                t.put_status("a", &st(Pending, Some("r")), 2)?;
                assert_eq!(t.get_status("a")?, Some(st(Pending, Some("r"))));
                assert!(t.running_key_in_use("R")?);
                t.add_waits(None, &strings(&["a"]))?;
                t.put_status("a", &st(Killed, None), 3)?;
                t.put_status("a", &st(Rerouted, None), 4)?;
                assert_eq!(t.blocking_candidates(5)?, strings(&["a"]));
                t.release_waited("a")?;
                assert_eq!(t.blocking_candidates(5)?, Vec::<String>::new());
                t.delete_invocation("a")?;
                assert_eq!(t.get_status("a")?, None);
                assert_eq!(t.running_key_of("a")?, None);
                assert!(t.put_status("a", &st(Pending, Some("r")), 5).is_err());
                Ok(())
            })
            .await
            .unwrap();
        // and the next section reads what the last one committed
        let (status, waited) = store
            .atomic(|t| {
                t.insert_invocation(&plain("b", 1), &st(Registered, None))?;
                t.add_waits(None, &strings(&["b"]))?;
                Ok(())
            })
            .await
            .and(
                store
                    .atomic(|t| Ok((t.get_status("b")?, t.blocking_candidates(5)?)))
                    .await,
            )
            .unwrap();
        assert_eq!(status, Some(st(Registered, None)));
        assert_eq!(waited, strings(&["b"]));
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.db");
        raw_database(
            &path,
            "CREATE TABLE pynenc_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO pynenc_meta VALUES ('schema_version', '99');",
        );
        let msg = refused_untouched(&path);
        assert!(msg.contains("version 99"), "{msg}");
        assert!(msg.contains(&format!("version {SCHEMA_VERSION}")), "{msg}");
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        assert!(!Path::new(&wal).exists(), "a WAL file was created");
        // the tables of a newer pynenc were not created either
        let raw = Connection::open(&path).unwrap();
        let tables: i64 = raw
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1);
    }

    #[test]
    fn unusable_paths_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        // a directory instead of a file
        let err = SqliteStore::open_path(dir.path(), "app", MS, MS, MS).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PynencError::StateBackend { .. }), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains("is a directory"), "{msg}");
        // a directory that does not exist
        let path = dir.path().join("missing").join("pynenc.db");
        let err = SqliteStore::open_path(&path, "app", MS, MS, MS).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
        // a file used as a directory
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let path = file.join("pynenc.db");
        let msg = SqliteStore::open_path(&path, "app", MS, MS, MS)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("not a directory"), "{msg}");
        // an in-memory database cannot be shared by connections
        let msg = SqliteStore::open_path(":memory:", "app", MS, MS, MS)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(":memory:"), "{msg}");
    }

    /// Makes `path` unwritable: `chmod 0444`, and `chattr +i` when running as
    /// root (root ignores file modes). Returns false when it cannot.
    fn make_read_only(path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let writable = || std::fs::OpenOptions::new().write(true).open(path).is_ok();
        if writable() {
            let _ = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .output();
        }
        !writable()
    }

    fn undo_read_only(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(path)
            .output();
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    }

    #[test]
    fn a_read_only_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.db");
        drop(SqliteStore::open_path(&path, "app", MS * 100, MS, MS * 50).unwrap());
        if !make_read_only(&path) {
            undo_read_only(&path);
            eprintln!("skipped: cannot make a file read-only here (root without chattr)");
            return;
        }
        let result = SqliteStore::open_path(&path, "app", MS * 100, MS, MS * 50);
        undo_read_only(&path);
        let err = result.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PynencError::StateBackend { .. }), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("read-only") || msg.contains("writable"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_locked_database_waits_then_says_how_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked.db");
        let store = SqliteStore::open_path(&path, "app", 100 * MS, MS, 10 * MS).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = Instant::now();
        let err = store.atomic(|t| t.enqueue("x")).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            started.elapsed() >= 100 * MS,
            "gave up after {:?}",
            started.elapsed()
        );
        assert!(msg.contains("stayed locked for"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        // the lock is released while the store waits: it goes through
        let release = std::thread::spawn(move || {
            std::thread::sleep(30 * MS);
            other.execute_batch("ROLLBACK").unwrap();
        });
        store.atomic(|t| t.enqueue("x")).await.unwrap();
        release.join().unwrap();
        assert_eq!(store.atomic(|t| t.queue_len()).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn an_error_rolls_back_the_whole_section() {
        let (_dir, store) = fresh();
        let err = store
            .atomic(|t| {
                t.insert_invocation(&plain("a", 1), &st(Registered, None))?;
                t.enqueue("a")?;
                t.put_status("missing", &st(Pending, Some("r")), 2)
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, PynencError::InvocationNotFound { .. }),
            "{err}"
        );
        let (ids, queued) = store
            .atomic(|t| Ok((t.list_invocation_ids()?, t.queue_len()?)))
            .await
            .unwrap();
        assert!(ids.is_empty());
        assert_eq!(queued, 0);
        // the store is usable afterwards
        store.atomic(|t| t.enqueue("b")).await.unwrap();
        assert_eq!(
            store.atomic(|t| t.dequeue(5)).await.unwrap(),
            strings(&["b"])
        );
    }

    #[tokio::test]
    async fn queue_is_fifo() {
        let (_dir, store) = fresh();
        let out = store
            .atomic(|t| {
                for id in ["a", "b", "c", "d", "a"] {
                    t.enqueue(id)?;
                }
                let none = t.dequeue(0)?;
                let first = t.dequeue(2)?;
                let len = t.queue_len()?;
                t.enqueue("e")?;
                let rest = t.dequeue(usize::MAX)?;
                Ok((none, first, len, rest, t.queue_len()?))
            })
            .await
            .unwrap();
        assert_eq!(
            out,
            (
                vec![],
                strings(&["a", "b"]),
                3,
                strings(&["c", "d", "a", "e"]),
                0
            )
        );
    }

    #[tokio::test]
    async fn enqueue_front_goes_before_queued_work() {
        let (_dir, store) = fresh();
        let out = store
            .atomic(|t| {
                t.enqueue("a")?;
                t.enqueue("b")?;
                t.enqueue_front("urgent")?;
                t.enqueue_front("more-urgent")?;
                t.enqueue("c")?;
                t.dequeue(usize::MAX)
            })
            .await
            .unwrap();
        assert_eq!(out, strings(&["more-urgent", "urgent", "a", "b", "c"]));
    }

    #[tokio::test]
    async fn concurrency_indexes_follow_put_status() {
        let (_dir, store) = fresh();
        store
            .atomic(|t| {
                let spec = ConcurrencySpec {
                    registration_key: Some("K".into()),
                    running_key: Some("R".into()),
                    ..ConcurrencySpec::default()
                };
                t.insert_invocation(&record("newer", 10, spec.clone()), &st(Registered, None))?;
                t.insert_invocation(&record("older", 5, spec.clone()), &st(Registered, None))?;
                t.insert_invocation(&record("sched", 1, spec), &st(Scheduled, None))?;
                assert_eq!(t.find_registered("K")?.as_deref(), Some("older"));
                assert_eq!(t.find_registered("other")?, None);
                assert!(!t.running_key_in_use("R")?);

                t.put_status("older", &st(Pending, Some("r")), 20)?;
                assert_eq!(t.find_registered("K")?.as_deref(), Some("newer"));
                assert!(t.running_key_in_use("R")?);
                for s in [Running, Paused, Resumed] {
                    t.put_status("older", &st(s, Some("r")), 21)?;
                    assert!(t.running_key_in_use("R")?, "{s}");
                }
                t.put_status("older", &st(Success, Some("r")), 22)?;
                assert!(!t.running_key_in_use("R")?);

                t.put_status("newer", &st(Pending, Some("r")), 23)?;
                assert_eq!(t.find_registered("K")?, None);
                t.put_status("newer", &st(Killed, None), 24)?;
                assert!(!t.running_key_in_use("R")?);
                t.put_status("newer", &st(Rerouted, None), 25)?;
                assert_eq!(t.find_registered("K")?, None, "REROUTED is not REGISTERED");

                t.put_status("sched", &st(Registered, None), 26)?;
                assert_eq!(t.find_registered("K")?.as_deref(), Some("sched"));
                Ok(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn controlled_invocations_come_back_in_park_order() {
        let (_dir, store) = fresh();
        let out = store
            .atomic(|t| {
                for id in ["c", "a", "b"] {
                    t.park_controlled("R", id)?;
                }
                t.park_controlled("other", "z")?;
                Ok((
                    t.take_controlled("R")?,
                    t.take_controlled("R")?,
                    t.take_controlled("other")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(out, (strings(&["c", "a", "b"]), vec![], strings(&["z"])));
    }

    #[tokio::test]
    async fn scheduled_and_final_indexes() {
        in_fresh_store(|t| {
            for (id, at) in [("s1", 100), ("s2", 50), ("s3", 200)] {
                let mut rec = (*plain(id, 1)).clone();
                rec.scheduled_at_us = Some(at);
                t.insert_invocation(&Arc::new(rec), &st(Scheduled, None))?;
            }
            assert_eq!(t.due_scheduled(150, 10)?, strings(&["s2", "s1"]));
            assert_eq!(t.due_scheduled(150, 1)?, strings(&["s2"]));
            assert_eq!(t.due_scheduled(49, 10)?, Vec::<String>::new());
            t.put_status("s2", &st(Registered, None), 60)?;
            assert_eq!(t.due_scheduled(1000, 10)?, strings(&["s1", "s3"]));

            for id in ["x", "y", "z"] {
                t.insert_invocation(&plain(id, 1), &st(Registered, None))?;
                t.put_status(id, &st(Pending, Some("r")), 2)?;
                t.put_status(id, &st(Running, Some("r")), 3)?;
            }
            t.put_status("y", &st(Success, Some("r")), 2000)?;
            t.put_status("x", &st(Failed, Some("r")), 1000)?;
            assert_eq!(t.final_before(1500, 10)?, strings(&["x"]));
            assert_eq!(t.final_before(1000, 10)?, Vec::<String>::new());
            assert_eq!(t.final_before(5000, 10)?, strings(&["x", "y"]));
            assert_eq!(t.final_before(5000, 1)?, strings(&["x"]));
            Ok(())
        })
        .await;
    }

    #[tokio::test]
    async fn call_edges() {
        in_fresh_store(|t| {
            t.add_edge("inv1", "A", "B")?;
            t.add_edge("inv2", "A", "B")?;
            t.add_edge("inv1", "A", "C")?;
            t.add_edge("inv3", "B", "C")?;
            let mut callees = t.callees_of("A")?;
            callees.sort();
            assert_eq!(callees, strings(&["B", "C"]));
            t.remove_edges_of("inv1")?;
            assert_eq!(
                t.callees_of("A")?,
                strings(&["B"]),
                "inv2's edge A->B stays"
            );
            t.remove_edges_of("inv2")?;
            assert_eq!(t.callees_of("A")?, Vec::<String>::new());
            assert_eq!(t.callees_of("B")?, strings(&["C"]));
            assert_eq!(t.callees_of("nobody")?, Vec::<String>::new());
            Ok(())
        })
        .await;
    }

    #[tokio::test]
    async fn blocking_candidates_are_available_waited_oldest_first() {
        in_fresh_store(|t| {
            for (id, created) in [("w1", 30), ("w2", 10), ("w3", 20), ("free", 1)] {
                t.insert_invocation(&plain(id, created), &st(Registered, None))?;
            }
            t.add_waits(Some("parent"), &strings(&["w1", "w2", "w3", "missing"]))?;
            t.add_waits(None, &strings(&["w1"]))?;
            assert_eq!(t.blocking_candidates(10)?, strings(&["w2", "w3", "w1"]));
            assert_eq!(t.blocking_candidates(1)?, strings(&["w2"]));
            assert_eq!(t.blocking_candidates(0)?, Vec::<String>::new());
            t.put_status("w3", &st(Pending, Some("r")), 40)?;
            assert_eq!(t.blocking_candidates(10)?, strings(&["w2", "w1"]));
            t.put_status("w3", &st(Killed, None), 41)?;
            t.put_status("w3", &st(Rerouted, None), 42)?;
            assert_eq!(t.blocking_candidates(10)?, strings(&["w2", "w3", "w1"]));
            t.release_waited("w2")?;
            t.release_waited("missing")?;
            assert_eq!(t.blocking_candidates(10)?, strings(&["w3", "w1"]));
            Ok(())
        })
        .await;
    }

    #[tokio::test]
    async fn outcome_history_and_retries_round_trip() {
        in_fresh_store(|t| {
            t.insert_invocation(&plain("a", 1), &st(Registered, None))?;
            assert_eq!(
                t.get_outcome("a")?,
                Some(InvocationOutcome {
                    status: Registered,
                    result: None,
                    error: None
                })
            );
            assert_eq!(t.get_outcome("missing")?, None);
            assert_eq!(t.get_status("missing")?, None);
            assert!(t.get_invocation("missing")?.is_none());

            let error = TaskError::new("ValueError", "bad \"value\"\nline two");
            t.set_error("a", &error)?;
            t.set_result("a", "{\"v\": [1, 2]}".into())?;
            t.put_status("a", &st(Pending, Some("r")), 5)?;
            let out = t.get_outcome("a")?.unwrap();
            assert_eq!(out.status, Pending);
            assert_eq!(out.result.as_deref(), Some("{\"v\": [1, 2]}"));
            assert_eq!(out.error, Some(error));

            for (i, s) in [Registered, Pending, Running, Success].into_iter().enumerate() {
                let mut e = entry("a", s, 100 - i as i64);
                e.owner = (i > 0).then(|| "r".to_string());
                t.append_history(e.as_step())?;
            }
            let history = t.get_history("a")?;
            let statuses: Vec<_> = history.iter().map(|h| h.status).collect();
            assert_eq!(statuses, vec![Registered, Pending, Running, Success]);
            assert_eq!(history[3], {
                let mut e = entry("a", Success, 97);
                e.owner = Some("r".into());
                e
            });

            assert_eq!(t.get_retries("a")?, 0);
            assert_eq!(t.increment_retries("a")?, 1);
            assert_eq!(t.increment_retries("a")?, 2);
            assert_eq!(t.get_retries("a")?, 2);

            for err in [
                t.get_history("missing").unwrap_err(),
                t.append_history(entry("missing", Registered, 1).as_step()).unwrap_err(),
                t.get_retries("missing").unwrap_err(),
                t.increment_retries("missing").unwrap_err(),
                t.set_result("missing", "1".into()).unwrap_err(),
                t.set_error("missing", &TaskError::new("E", "m")).unwrap_err(),
                t.put_status("missing", &st(Pending, Some("r")), 1).unwrap_err(),
            ] {
                assert!(
                    matches!(&err, PynencError::InvocationNotFound { invocation_id, .. } if invocation_id == "missing"),
                    "{err}"
                );
            }
            Ok(())
        })
        .await;
    }

    #[tokio::test]
    async fn delete_invocation_removes_everything_attached() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_app(&dir.path().join("p.db"), "app");
        store
            .atomic(|t| {
                for id in ["a", "b"] {
                    t.insert_invocation(&plain(id, 1), &st(Registered, None))?;
                    t.append_history(entry(id, Registered, 1).as_step())?;
                    t.set_result(id, "1".into())?;
                    t.add_waits(Some("p"), &strings(&[id]))?;
                    t.add_edge(id, &format!("call-{id}"), "callee")?;
                }
                t.delete_invocation("a")?;
                t.delete_invocation("a")?;
                t.delete_invocation("never")?;
                assert_eq!(t.get_status("a")?, None);
                assert!(t.get_invocation("a")?.is_none());
                assert_eq!(t.get_outcome("a")?, None);
                assert!(t.get_history("a").is_err());
                assert_eq!(t.callees_of("call-a")?, Vec::<String>::new());
                assert_eq!(t.blocking_candidates(10)?, strings(&["b"]));
                assert_eq!(t.list_invocation_ids()?, strings(&["b"]));
                assert_eq!(t.callees_of("call-b")?, strings(&["callee"]));
                Ok(())
            })
            .await
            .unwrap();
        let raw = Connection::open(dir.path().join("p.db")).unwrap();
        for table in ["records", "outcomes", "history", "edges"] {
            let n: i64 = raw
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 1, "{table}");
        }
    }

    #[tokio::test]
    async fn heartbeats_leases_and_owned_claims() {
        in_fresh_store(|t| {
            assert_eq!(t.get_heartbeat("r1")?, None);
            t.put_heartbeat("r1", 10)?;
            t.put_heartbeat("r1", 20)?;
            assert_eq!(t.get_heartbeat("r1")?, Some(20));
            t.remove_heartbeat("r1")?;
            assert_eq!(t.get_heartbeat("r1")?, None);

            assert!(t.try_lease("recovery", "h1", 100, 50)?);
            assert!(!t.try_lease("recovery", "h2", 120, 50)?);
            assert!(t.try_lease("recovery", "h1", 140, 50)?, "the holder renews");
            assert!(!t.try_lease("recovery", "h2", 189, 50)?);
            assert!(
                t.try_lease("recovery", "h2", 190, 50)?,
                "expired: taken over"
            );
            assert!(!t.try_lease("recovery", "h1", 200, 50)?);

            for (id, created) in [("p", 1), ("q", 2), ("reg", 3)] {
                t.insert_invocation(&plain(id, created), &st(Registered, None))?;
            }
            t.put_status("q", &st(Pending, Some("r1")), 50)?;
            t.put_status("p", &st(Pending, Some("r2")), 60)?;
            t.put_status("p", &st(Running, Some("r2")), 70)?;
            assert_eq!(
                t.owned_claims_before(100, 10)?,
                vec![
                    ("q".to_string(), st(Pending, Some("r1")), 50),
                    ("p".to_string(), st(Running, Some("r2")), 70),
                ]
            );
            assert_eq!(t.owned_claims_before(60, 10)?.len(), 1);
            assert_eq!(t.owned_claims_before(100, 1)?.len(), 1);
            t.put_status("p", &st(Success, Some("r2")), 80)?;
            assert_eq!(t.owned_claims_before(100, 10)?.len(), 1);
            Ok(())
        })
        .await;
    }

    #[tokio::test]
    async fn engine_routes_picks_runs_and_finishes() {
        let (_dir, store) = fresh();
        let backend = TxnBackend::new(store.clone(), Serializer::Json);
        let routed = backend
            .route_calls(vec![request("tests.add", 1)])
            .await
            .unwrap();
        let id = routed[0].record().invocation_id.clone();
        assert_eq!(backend.get_status(&id).await.unwrap().status, Registered);

        let picked = backend.get_invocations_to_run("runner-1", 4).await.unwrap();
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].invocation_id, id);
        assert_eq!(picked[0].call, routed[0].record().call);
        assert!(backend
            .get_invocations_to_run("runner-2", 4)
            .await
            .unwrap()
            .is_empty());

        // a waiter in this process is woken by the finish
        let waiter = {
            let backend = backend.clone();
            let ids = vec![id.clone()];
            tokio::spawn(async move { backend.wait_final(&ids).await })
        };
        backend
            .set_status(&id, Running, "runner-1", None)
            .await
            .unwrap();
        assert!(backend
            .set_status(&id, Success, "runner-2", None)
            .await
            .is_err());
        let to = backend
            .finish(&id, "runner-1", RunOutcome::Success("42".into()))
            .await
            .unwrap();
        assert_eq!(to, Success);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();

        let status = backend.get_status(&id).await.unwrap();
        assert_eq!(status, st(Success, Some("runner-1")));
        let outcome = backend
            .get_outcomes(std::slice::from_ref(&id))
            .await
            .unwrap();
        assert_eq!(outcome[0].result.as_deref(), Some("42"));
        let history = StateBackend::get_history(&backend, &id).await.unwrap();
        let steps: Vec<_> = history.iter().map(|h| h.status).collect();
        assert_eq!(steps, vec![Registered, Pending, Running, Success]);
        crate::status::replay_history(
            history
                .iter()
                .map(|h| (h.status, h.owner.as_deref(), h.actor.as_str())),
        )
        .unwrap();

        // a missing invocation is an error, not a hang
        let err = backend
            .wait_final(&strings(&["missing"]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PynencError::InvocationNotFound { .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn another_process_sees_work_and_finals_by_polling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let a = TxnBackend::new(open_app(&path, "app"), Serializer::Json);
        let b = TxnBackend::new(open_app(&path, "app"), Serializer::Json);

        // b idles until a queues something
        let epoch = b.work_epoch();
        let idle = {
            let b = b.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                b.wait_for_work(epoch, Duration::from_secs(5)).await;
                started.elapsed()
            })
        };
        tokio::time::sleep(50 * MS).await;
        let routed = a.route_calls(vec![request("tests.poll", 1)]).await.unwrap();
        let woke_after = idle.await.unwrap();
        assert!(
            woke_after < Duration::from_secs(1),
            "woke after {woke_after:?}"
        );
        let id = routed[0].record().invocation_id.clone();

        // b waits for a result that a produces
        let waiter = {
            let b = b.clone();
            let ids = vec![id.clone()];
            tokio::spawn(async move { b.wait_final(&ids).await })
        };
        let picked = a.get_invocations_to_run("ra", 1).await.unwrap();
        assert_eq!(picked.len(), 1);
        a.set_status(&id, Running, "ra", None).await.unwrap();
        a.finish(
            &id,
            "ra",
            RunOutcome::Failed(TaskError::new("Boom", "it broke")),
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let outcome = b.get_outcomes(&[id]).await.unwrap().remove(0);
        assert_eq!(outcome.status, Failed);
        assert_eq!(outcome.error, Some(TaskError::new("Boom", "it broke")));

        // an idle wait times out
        let started = Instant::now();
        b.wait_for_work(b.work_epoch(), 60 * MS).await;
        assert!(started.elapsed() >= 60 * MS);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_pickers_never_share_an_invocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let one = TxnBackend::new(open_app(&path, "app"), Serializer::Json);
        let two = TxnBackend::new(open_app(&path, "app"), Serializer::Json);
        let requests: Vec<_> = (0..200).map(|i| request("tests.pick", i)).collect();
        let routed = one.route_calls(requests).await.unwrap();
        assert_eq!(two.queue_len().await.unwrap(), 200);

        let mut pickers = Vec::new();
        for (n, backend) in [&one, &two, &one, &two].into_iter().enumerate() {
            let backend = backend.clone();
            pickers.push(tokio::spawn(async move {
                let runner = format!("runner-{n}");
                let mut mine = Vec::new();
                loop {
                    let batch = backend.get_invocations_to_run(&runner, 3).await.unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    mine.extend(batch.iter().map(|r| r.invocation_id.clone()));
                }
                (runner, mine)
            }));
        }
        let mut seen = HashSet::new();
        let mut per_runner = Vec::new();
        for p in pickers {
            let (runner, mine) = p.await.unwrap();
            per_runner.push(mine.len());
            for id in mine {
                assert_eq!(
                    one.get_status(&id).await.unwrap(),
                    st(Pending, Some(&runner))
                );
                assert!(seen.insert(id.clone()), "{id} picked twice");
            }
        }
        assert_eq!(seen.len(), 200, "per runner: {per_runner:?}");
        for r in &routed {
            assert!(seen.contains(&r.record().invocation_id));
        }
        assert_eq!(one.queue_len().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_20_mb_argument_round_trips() {
        let (_dir, store) = fresh();
        let backend = TxnBackend::new(store, Serializer::Json);
        let big: String = "0123456789abcdef".repeat(20 * 1024 * 1024 / 16);
        let mut req = request("tests.big", 0);
        req.call.arguments = Arguments::new()
            .with(Serializer::Json, "data", &big)
            .unwrap();
        let routed = backend.route_calls(vec![req]).await.unwrap();
        let id = routed[0].record().invocation_id.clone();
        let picked = backend.get_invocations_to_run("r", 1).await.unwrap();
        let back: String = Serializer::Json
            .deserialize(picked[0].call.arguments.get("data").unwrap(), "data")
            .unwrap();
        assert_eq!(back.len(), big.len());
        assert!(back == big);
        backend.set_status(&id, Running, "r", None).await.unwrap();
        backend
            .finish(&id, "r", RunOutcome::Success(format!("\"{big}\"")))
            .await
            .unwrap();
        let outcome = backend.get_outcomes(&[id]).await.unwrap().remove(0);
        assert_eq!(outcome.result.map(|r| r.len()), Some(big.len() + 2));
    }
}
