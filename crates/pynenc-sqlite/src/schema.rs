//! Opening a database file: connections, the schema and its version.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::error::{describe, is_busy, Ctx, Key};
use crate::writer::{begin_immediate, finish_txn};
use pynenc_store::Result;

/// The schema version this library writes and understands.
pub const SCHEMA_VERSION: i64 = 7;

/// The older version upgraded in place when a store opens it: version 7
/// writes the conditions of three partial indexes without `IN` (see
/// `sql/schema.sql`; the indexes are dropped here and built again by the
/// schema) and keeps no counters of the statuses of a runner's hands (see
/// `counts.rs`; dropped here).
const UPGRADED_FROM: i64 = 6;
const UPGRADE_FROM_6: &str = "DROP INDEX IF EXISTS invocations_running;
     DROP INDEX IF EXISTS invocations_owned;
     DROP INDEX IF EXISTS invocations_blocking;
     DELETE FROM status_counts WHERE status = 5 OR status = 7 OR status = 8 OR status = 9;";

/// How many pages the write-ahead log may grow by before a commit copies it
/// back into the database (SQLite's default is 1000; a larger log makes the
/// copies rarer and lets pages rewritten meanwhile be copied once).
pub const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// The tables and indexes.
const SCHEMA: &str = include_str!("sql/schema.sql");

/// Checks the integrity of the SQLite database at `path` (`PRAGMA
/// integrity_check`): returns `"ok"` or SQLite's list of problems. It opens
/// its own read-only connection, so it can run while other processes use the
/// file.
///
/// # Errors
///
/// The file cannot be opened or read.
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

/// Opens one connection on the store's file and prepares it.
pub(crate) fn connect(ctx: &Ctx, busy_timeout: Duration) -> Result<Connection> {
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
    // SQLite answers "busy" at once, without its busy handler, while the
    // last connection of another handle is closing the write-ahead log:
    // such a refusal is retried until the store's busy_timeout has passed
    // (also for the write connection, whose own busy handler never waits)
    let started = std::time::Instant::now();
    for (name, value) in pragmas {
        loop {
            match conn.pragma_update(None, name, &value) {
                Ok(()) => break,
                Err(e) if is_busy(&e) && started.elapsed() < ctx.busy_timeout => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(ctx.err(e, &format!("setting PRAGMA {name}"), Key::None)),
            }
        }
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
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ctx.fail(format!("pynenc_meta.schema_version is '{v}', not a number"))),
    }
}

fn check_version(ctx: &Ctx, version: Option<i64>) -> Result<()> {
    match version {
        Some(v) if v > SCHEMA_VERSION => Err(ctx.fail(format!(
            "the file has pynenc schema version {v}, newer than version {SCHEMA_VERSION} \
             supported by this pynenc library; upgrade pynenc or use another file (nothing was written)"
        ))),
        Some(v) if v < SCHEMA_VERSION && v != UPGRADED_FROM => Err(ctx.fail(format!(
            "the file has pynenc schema version {v}, older than version {SCHEMA_VERSION} \
             used by this pynenc library, and is not migrated: delete the file (with its -wal and \
             -shm files) once no process uses it, or set sqlite.sqlite_path to another file \
             (nothing was written)"
        ))),
        _ => Ok(()),
    }
}

/// Checks the path before SQLite sees it, for clearer errors.
pub(crate) fn check_path(ctx: &Ctx) -> Result<()> {
    let shown = &ctx.shown;
    if shown.is_empty() || shown == ":memory:" {
        return Err(ctx.fail(
            "this path is not supported: pynenc needs a database file that all its \
             connections and processes share",
        ));
    }
    if ctx.path.is_dir() {
        return Err(ctx.fail("cannot open it: it is a directory, not a database file"));
    }
    if let Some(parent) = ctx.path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            return Err(ctx.fail(format!(
                "cannot open it: the directory {} does not exist",
                parent.display()
            )));
        }
        if !parent.is_dir() {
            return Err(ctx.fail(format!(
                "cannot open it: {} is not a directory",
                parent.display()
            )));
        }
    }
    Ok(())
}

/// Creates (or checks) the schema on a fresh connection and returns the app's number.
pub(crate) fn init_schema(ctx: &Ctx, conn: &Connection) -> Result<i64> {
    // read first: a file we must refuse is left exactly as it was
    check_version(ctx, read_schema_version(ctx, conn)?)?;
    // SQLite silently falls back to read-only when it may not write the file
    let read_only = conn
        .is_readonly(rusqlite::DatabaseName::Main)
        .map_err(|e| ctx.err(e, "checking write access", Key::None))?;
    if read_only {
        return Err(ctx.fail(
            "the file is read-only: pynenc needs write access to the file and to \
             its directory (for the -wal and -shm files)",
        ));
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| ctx.err(e, "setting journal_mode=WAL", Key::None))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ctx.fail(format!(
            "could not switch to WAL mode (journal_mode is '{mode}'); \
             is the file or its directory read-only?"
        )));
    }
    begin_immediate(ctx, conn)?;
    let created = (|| {
        // another process may have created or upgraded it meanwhile
        let version = read_schema_version(ctx, conn)?;
        check_version(ctx, version)?;
        let upgrade = version == Some(UPGRADED_FROM);
        if upgrade {
            conn.execute_batch(UPGRADE_FROM_6)
                .map_err(|e| ctx.err(e, "upgrading the schema from version 6", Key::None))?;
        }
        conn.execute_batch(SCHEMA)
            .map_err(|e| ctx.err(e, "creating the schema", Key::None))?;
        if version.is_none() || upgrade {
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
