//! The SQLite store's own machinery on real files: schema and versions,
//! group commit, indexes, polling waits, errors.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pynenc_model::InvocationStatus::*;
use pynenc_model::{
    Arguments, Call, CallId, ConcurrencySpec, HistoryEntry, InvocationId, InvocationOutcome,
    InvocationRecord, InvocationStatus, RouteRequest, RunOutcome, RunnerId, Serializer,
    StatusRecord, TaskError, Timestamp,
};
use pynenc_store::{
    AtomicStore, Broker, Coordination, Orchestrator, OwnedClaim, Result, StateBackend, StoreError,
    StoreTxn, TxnBackend,
};
use rusqlite::Connection;

use crate::codes::{status_code, status_from_code};
use crate::{integrity_check, SqliteOptions, SqliteStore, SCHEMA_VERSION};

const MS: Duration = Duration::from_millis(1);

fn open_with(
    path: impl AsRef<Path>,
    app_id: &str,
    busy_timeout: Duration,
    poll_min: Duration,
    poll_max: Duration,
) -> Result<Arc<SqliteStore>> {
    let options = SqliteOptions {
        path: path.as_ref().to_path_buf(),
        busy_timeout,
        poll_min,
        poll_max,
    };
    SqliteStore::open(&options, app_id)
}

fn open_app(path: &Path, app_id: &str) -> Arc<SqliteStore> {
    open_with(path, app_id, Duration::from_secs(10), MS, 20 * MS).unwrap()
}

/// A test invocation id named by up to 16 characters.
fn iid(name: &str) -> InvocationId {
    let v = name.bytes().fold(0u128, |v, b| (v << 8) | u128::from(b));
    InvocationId::from_u128(v)
}

fn ids(names: &[&str]) -> Vec<InvocationId> {
    names.iter().map(|n| iid(n)).collect()
}

fn cid(name: &str) -> CallId {
    CallId::from(name)
}

fn calls(names: &[&str]) -> Vec<CallId> {
    names.iter().map(|n| cid(n)).collect()
}

fn r(name: &str) -> RunnerId {
    RunnerId::from(name)
}

fn ts(us: i64) -> Timestamp {
    Timestamp::from_micros(us)
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// Runs `f` in one section of a store on a fresh file.
async fn in_fresh_store(f: impl Fn(&mut dyn StoreTxn) -> Result<()> + Send + 'static) {
    let (_dir, store) = fresh();
    store.atomic(f).await.unwrap();
}

/// Opens `path` expecting a refusal: a state backend error naming the
/// path, and the file left as it was. Returns the message.
fn refused_untouched(path: &Path) -> String {
    let before = std::fs::read(path).unwrap();
    let err = open_with(path, "app", MS * 100, MS, MS * 50).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Backend { .. }), "{msg}");
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
        invocation_id: iid(id),
        call: Call::new(
            "tests.task",
            Arguments::new().with(Serializer::Json, "id", id).unwrap(),
        ),
        parent_invocation_id: None,
        created_at: ts(created_at_us),
        scheduled_at: None,
        concurrency,
        rerun_of: None,
    })
}

fn st(status: InvocationStatus, owner: Option<&str>) -> StatusRecord {
    StatusRecord {
        status,
        owner: owner.map(RunnerId::from),
    }
}

fn plain(id: &str, created_at_us: i64) -> Arc<InvocationRecord> {
    record(id, created_at_us, ConcurrencySpec::default())
}

fn entry(id: &str, status: InvocationStatus, at: i64) -> HistoryEntry {
    HistoryEntry {
        invocation_id: iid(id),
        status,
        owner: None,
        actor: "tester".into(),
        timestamp: ts(at),
        execution_context: Some(format!("ctx-{at}")),
    }
}

fn request(task_id: &str, x: i64) -> RouteRequest {
    let arguments = Arguments::new().with(Serializer::Json, "x", &x).unwrap();
    RouteRequest::new(Call::new(task_id, arguments), "external".into())
}

/// Opens a store of app `app` on `path`, queues one invocation ("a") and
/// closes it.
async fn one_queued_invocation(path: &Path) {
    let store = open_app(path, "app");
    store
        .atomic(|t| {
            t.insert_invocation(&plain("a", 1), &st(Registered, None))?;
            t.enqueue(&iid("a"))
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn open_creates_schema_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pynenc.db");
    one_queued_invocation(&path).await;

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

    let options = SqliteOptions {
        poll_min: 3 * MS,
        poll_max: 30 * MS,
        ..SqliteOptions::new(&path)
    };
    let store = SqliteStore::open(&options, "app").unwrap();
    assert_eq!(store.poll_interval_min(), 3 * MS);
    assert_eq!(store.poll_interval_max(), 30 * MS);
    assert_eq!(store.app_id(), "app");
    let (status, queued) = store
        .atomic(|t| Ok((t.get_status(&iid("a"))?, t.queue_len()?)))
        .await
        .unwrap();
    assert_eq!(status, Some(st(Registered, None)));
    assert_eq!(queued, 1);
    let rec = store
        .atomic(|t| t.get_invocation(&iid("a")))
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
                t.enqueue(&iid("same-id"))?;
                t.add_waits(None, &ids(&["same-id"]))?;
                t.add_edge(&iid("same-id"), &cid("c1"), &cid("c2"))?;
                t.park_controlled("rk", &iid("same-id"))?;
                t.put_heartbeat(&r("runner"), ts(5))?;
                t.try_lease("lease", &r("runner"), ts(5), us(100))
                    .map(|_| ())
            })
            .await
            .unwrap();
    }
    a.atomic(|t| t.put_status(&iid("same-id"), &st(Pending, Some("r")), ts(2)))
        .await
        .unwrap();
    let status_b = b.atomic(|t| t.get_status(&iid("same-id"))).await.unwrap();
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
                t.callees_of(&cid("c1"))?,
                t.get_heartbeat(&r("runner"))?,
                t.blocking_candidates(10)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(left_a, (vec![], 0, vec![], None, vec![]));
    // the lease of a is gone: another holder takes it
    assert!(a
        .atomic(|t| t.try_lease("lease", &r("other"), ts(6), us(100)))
        .await
        .unwrap());

    let left_b = b
        .atomic(|t| {
            Ok((
                t.list_invocation_ids()?,
                t.queue_len()?,
                t.callees_of(&cid("c1"))?,
                t.get_heartbeat(&r("runner"))?,
                t.blocking_candidates(10)?,
                t.get_history(&iid("same-id"))?.len(),
                t.try_lease("lease", &r("other"), ts(6), us(100))?,
                t.take_controlled("rk")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        left_b,
        (
            ids(&["same-id"]),
            1_usize,
            calls(&["c2"]),
            Some(ts(5)),
            ids(&["same-id"]),
            1_usize,
            false,
            ids(&["same-id"])
        )
    );
}

/// The indexes of a file whose condition names statuses (their SQL), by name.
fn status_index_sql(path: &Path) -> Vec<(String, String)> {
    let raw = Connection::open(path).unwrap();
    let mut stmt = raw
        .prepare(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index'
             AND name IN ('invocations_running', 'invocations_owned', 'invocations_blocking')
             ORDER BY name",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<(String, String)>>>()
        .unwrap();
    rows
}

#[tokio::test]
async fn a_version_6_file_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6.db");
    one_queued_invocation(&path).await;
    // the file as version 6 left it: the conditions as IN lists
    raw_database(
        &path,
        "DROP INDEX invocations_running;
         DROP INDEX invocations_owned;
         DROP INDEX invocations_blocking;
         CREATE INDEX invocations_running ON invocations (app, running_key)
             WHERE running_key IS NOT NULL AND status IN (5, 7, 8, 9);
         CREATE INDEX invocations_owned ON invocations (app, status_at_us)
             WHERE status IN (5, 7, 8, 9);
         CREATE INDEX invocations_blocking ON invocations (app, created_at_us)
             WHERE waited = 1 AND status IN (1, 4, 12);
         UPDATE pynenc_meta SET value = '6' WHERE key = 'schema_version';
         -- version 6 kept the counts of a runner's hands (3 RUNNING here)
         INSERT INTO status_counts (app, task, status, n) SELECT app, task, 7, 3 FROM invocations;",
    );
    assert!(status_index_sql(&path)
        .iter()
        .all(|(_, sql)| sql.contains(" IN (")));

    let store = open_app(&path, "app");
    let (status, queued) = store
        .atomic(|t| Ok((t.get_status(&iid("a"))?, t.queue_len()?)))
        .await
        .unwrap();
    assert_eq!(status, Some(st(Registered, None)), "the work stays");
    assert_eq!(queued, 1);
    let counts = store.atomic(|t| t.count_by_status(&[])).await.unwrap();
    let counts: Vec<(InvocationStatus, u64)> = counts.iter().map(|c| (c.status, c.count)).collect();
    assert_eq!(
        counts,
        vec![(Registered, 1)],
        "the kept RUNNING counter is gone"
    );
    drop(store);
    let indexes = status_index_sql(&path);
    assert_eq!(indexes.len(), 3, "{indexes:?}");
    for (name, sql) in &indexes {
        assert!(!sql.contains(" IN ("), "{name} still uses IN: {sql}");
        assert!(sql.contains(" OR "), "{name}: {sql}");
    }
    let version: String = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT value FROM pynenc_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION.to_string());
}

/// The status conditions of the partial indexes and of the queries using
/// them are written alike, without `IN` (see `sql/schema.sql`).
#[test]
fn partial_index_conditions_are_spelled_like_the_queries() {
    let schema = include_str!("sql/schema.sql");
    assert_eq!(schema.matches(crate::codes::owned_running!()).count(), 2);
    assert_eq!(schema.matches(crate::codes::available!()).count(), 1);
    // the statements, without their comments
    let sql: String = schema
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(sql.contains("CREATE INDEX"), "the schema was read");
    assert!(!sql.contains(" IN ("), "an IN list in the schema");
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
    use pynenc_model::status::ALL_STATUSES;
    let mut seen = HashSet::new();
    for s in ALL_STATUSES {
        let code = status_code(s);
        assert!(seen.insert(code), "{s} shares code {code}");
        assert_eq!(status_from_code(code), Some(s));
        // the literal code lists in SCHEMA and the queries
        assert_eq!([5, 7, 8, 9].contains(&code), s.is_owned_running(), "{s}");
        assert_eq!([1, 4, 12].contains(&code), s.is_available_for_run(), "{s}");
        assert_eq!([3, 13, 14, 15].contains(&code), s.is_final(), "{s}");
        assert_eq!(
            crate::codes::FINAL_CODES.contains(&code),
            s.is_final(),
            "{s}"
        );
        assert_eq!(code == crate::codes::FAILED_CODE, s == Failed);
        assert_eq!(code == 0, s == Scheduled);
        assert_eq!(code == 1, s == Registered);
    }
    assert_eq!(status_from_code(15), Some(Cancelled));
    assert_eq!(status_from_code(16), None);
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
        let id = id.as_str();
        assert_eq!(id.len(), 32, "{id}");
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{id}"
        );
    }
    // the time prefix never goes backwards
    for pair in ids.windows(2) {
        assert!(pair[0].as_str()[..14] <= pair[1].as_str()[..14], "{pair:?}");
    }
    let now = Timestamp::now().as_micros();
    let stamped = i64::from_str_radix(&ids[0].as_str()[..14], 16).unwrap();
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
            t.put_status(&iid("missing"), &st(Pending, Some("r")), ts(2))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
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
    let history = store.atomic(|t| t.get_history(&iid("a"))).await.unwrap();
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
            assert_eq!(t.running_key_of(&iid("a"))?.as_deref(), Some("R"));
            assert_eq!(t.running_key_of(&iid("missing"))?, None);
            t.put_status(&iid("a"), &st(Pending, Some("r")), ts(2))?;
            assert_eq!(t.get_status(&iid("a"))?, Some(st(Pending, Some("r"))));
            assert!(t.running_key_in_use("R")?);
            t.add_waits(None, &ids(&["a"]))?;
            t.put_status(&iid("a"), &st(Killed, None), ts(3))?;
            t.put_status(&iid("a"), &st(Rerouted, None), ts(4))?;
            assert_eq!(t.blocking_candidates(5)?, ids(&["a"]));
            t.release_waited(&iid("a"))?;
            assert_eq!(t.blocking_candidates(5)?, Vec::<InvocationId>::new());
            t.delete_invocation(&iid("a"))?;
            assert_eq!(t.get_status(&iid("a"))?, None);
            assert_eq!(t.running_key_of(&iid("a"))?, None);
            assert!(t
                .put_status(&iid("a"), &st(Pending, Some("r")), ts(5))
                .is_err());
            Ok(())
        })
        .await
        .unwrap();
    // and the next section reads what the last one committed
    let (status, waited) = store
        .atomic(|t| {
            t.insert_invocation(&plain("b", 1), &st(Registered, None))?;
            t.add_waits(None, &ids(&["b"]))?;
            Ok(())
        })
        .await
        .and(
            store
                .atomic(|t| Ok((t.get_status(&iid("b"))?, t.blocking_candidates(5)?)))
                .await,
        )
        .unwrap();
    assert_eq!(status, Some(st(Registered, None)));
    assert_eq!(waited, ids(&["b"]));
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
    let err = open_with(dir.path(), "app", MS, MS, MS).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Backend { .. }), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("is a directory"), "{msg}");
    // a directory that does not exist
    let path = dir.path().join("missing").join("pynenc.db");
    let err = open_with(&path, "app", MS, MS, MS).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
    // a file used as a directory
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let path = file.join("pynenc.db");
    let msg = open_with(&path, "app", MS, MS, MS).unwrap_err().to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("not a directory"), "{msg}");
    // an in-memory database cannot be shared by connections
    let msg = open_with(":memory:", "app", MS, MS, MS)
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
    drop(open_with(&path, "app", MS * 100, MS, MS * 50).unwrap());
    if !make_read_only(&path) {
        undo_read_only(&path);
        eprintln!("skipped: cannot make a file read-only here (root without chattr)");
        return;
    }
    let result = open_with(&path, "app", MS * 100, MS, MS * 50);
    undo_read_only(&path);
    let err = result.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Backend { .. }), "{msg}");
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
    let store = open_with(&path, "app", 100 * MS, MS, 10 * MS).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let err = store.atomic(|t| t.enqueue(&iid("x"))).await.unwrap_err();
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
    store.atomic(|t| t.enqueue(&iid("x"))).await.unwrap();
    release.join().unwrap();
    assert_eq!(store.atomic(|t| t.queue_len()).await.unwrap(), 1);
}

#[tokio::test]
async fn an_error_rolls_back_the_whole_section() {
    let (_dir, store) = fresh();
    let err = store
        .atomic(|t| {
            t.insert_invocation(&plain("a", 1), &st(Registered, None))?;
            t.enqueue(&iid("a"))?;
            t.put_status(&iid("missing"), &st(Pending, Some("r")), ts(2))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let (listed, queued) = store
        .atomic(|t| Ok((t.list_invocation_ids()?, t.queue_len()?)))
        .await
        .unwrap();
    assert!(listed.is_empty());
    assert_eq!(queued, 0);
    // the store is usable afterwards
    store.atomic(|t| t.enqueue(&iid("b"))).await.unwrap();
    assert_eq!(store.atomic(|t| t.dequeue(5)).await.unwrap(), ids(&["b"]));
}

#[tokio::test]
async fn queue_is_fifo() {
    let (_dir, store) = fresh();
    let out = store
        .atomic(|t| {
            for id in ["a", "b", "c", "d", "a"] {
                t.enqueue(&iid(id))?;
            }
            let none = t.dequeue(0)?;
            let first = t.dequeue(2)?;
            let len = t.queue_len()?;
            t.enqueue(&iid("e"))?;
            let rest = t.dequeue(usize::MAX)?;
            Ok((none, first, len, rest, t.queue_len()?))
        })
        .await
        .unwrap();
    assert_eq!(
        out,
        (vec![], ids(&["a", "b"]), 3, ids(&["c", "d", "a", "e"]), 0)
    );
}

#[tokio::test]
async fn enqueue_front_goes_before_queued_work() {
    let (_dir, store) = fresh();
    let out = store
        .atomic(|t| {
            t.enqueue(&iid("a"))?;
            t.enqueue(&iid("b"))?;
            t.enqueue_front(&iid("urgent"))?;
            t.enqueue_front(&iid("more-urgent"))?;
            t.enqueue(&iid("c"))?;
            t.dequeue(usize::MAX)
        })
        .await
        .unwrap();
    assert_eq!(out, ids(&["more-urgent", "urgent", "a", "b", "c"]));
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
            assert_eq!(t.find_registered("K")?, Some(iid("older")));
            assert_eq!(t.find_registered("other")?, None);
            assert!(!t.running_key_in_use("R")?);

            t.put_status(&iid("older"), &st(Pending, Some("r")), ts(20))?;
            assert_eq!(t.find_registered("K")?, Some(iid("newer")));
            assert!(t.running_key_in_use("R")?);
            for s in [Running, Paused, Resumed] {
                t.put_status(&iid("older"), &st(s, Some("r")), ts(21))?;
                assert!(t.running_key_in_use("R")?, "{s}");
            }
            t.put_status(&iid("older"), &st(Success, Some("r")), ts(22))?;
            assert!(!t.running_key_in_use("R")?);

            t.put_status(&iid("newer"), &st(Pending, Some("r")), ts(23))?;
            assert_eq!(t.find_registered("K")?, None);
            t.put_status(&iid("newer"), &st(Killed, None), ts(24))?;
            assert!(!t.running_key_in_use("R")?);
            t.put_status(&iid("newer"), &st(Rerouted, None), ts(25))?;
            assert_eq!(t.find_registered("K")?, None, "REROUTED is not REGISTERED");

            t.put_status(&iid("sched"), &st(Registered, None), ts(26))?;
            assert_eq!(t.find_registered("K")?, Some(iid("sched")));
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
                t.park_controlled("R", &iid(id))?;
            }
            t.park_controlled("other", &iid("z"))?;
            Ok((
                t.take_controlled("R")?,
                t.take_controlled("R")?,
                t.take_controlled("other")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(out, (ids(&["c", "a", "b"]), vec![], ids(&["z"])));
}

#[tokio::test]
async fn scheduled_and_final_indexes() {
    in_fresh_store(|t| {
        for (id, at) in [("s1", 100), ("s2", 50), ("s3", 200)] {
            let mut rec = (*plain(id, 1)).clone();
            rec.scheduled_at = Some(ts(at));
            t.insert_invocation(&Arc::new(rec), &st(Scheduled, None))?;
        }
        assert_eq!(t.due_scheduled(ts(150), 10)?, ids(&["s2", "s1"]));
        assert_eq!(t.due_scheduled(ts(150), 1)?, ids(&["s2"]));
        assert_eq!(t.due_scheduled(ts(49), 10)?, Vec::<InvocationId>::new());
        t.put_status(&iid("s2"), &st(Registered, None), ts(60))?;
        assert_eq!(t.due_scheduled(ts(1000), 10)?, ids(&["s1", "s3"]));

        for id in ["x", "y", "z"] {
            t.insert_invocation(&plain(id, 1), &st(Registered, None))?;
            t.put_status(&iid(id), &st(Pending, Some("r")), ts(2))?;
            t.put_status(&iid(id), &st(Running, Some("r")), ts(3))?;
        }
        t.put_status(&iid("y"), &st(Success, Some("r")), ts(2000))?;
        t.put_status(&iid("x"), &st(Failed, Some("r")), ts(1000))?;
        assert_eq!(t.final_before(&[], ts(1500), 10)?, ids(&["x"]));
        assert_eq!(
            t.final_before(&[], ts(1000), 10)?,
            Vec::<InvocationId>::new()
        );
        assert_eq!(t.final_before(&[], ts(5000), 10)?, ids(&["x", "y"]));
        assert_eq!(t.final_before(&[], ts(5000), 1)?, ids(&["x"]));
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn call_edges() {
    in_fresh_store(|t| {
        t.add_edge(&iid("inv1"), &cid("A"), &cid("B"))?;
        t.add_edge(&iid("inv2"), &cid("A"), &cid("B"))?;
        t.add_edge(&iid("inv1"), &cid("A"), &cid("C"))?;
        t.add_edge(&iid("inv3"), &cid("B"), &cid("C"))?;
        let mut callees = t.callees_of(&cid("A"))?;
        callees.sort();
        assert_eq!(callees, calls(&["B", "C"]));
        t.remove_edges_of(&iid("inv1"))?;
        assert_eq!(
            t.callees_of(&cid("A"))?,
            calls(&["B"]),
            "inv2's edge A->B stays"
        );
        t.remove_edges_of(&iid("inv2"))?;
        assert_eq!(t.callees_of(&cid("A"))?, Vec::<CallId>::new());
        assert_eq!(t.callees_of(&cid("B"))?, calls(&["C"]));
        assert_eq!(t.callees_of(&cid("nobody"))?, Vec::<CallId>::new());
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
        t.add_waits(Some(&iid("parent")), &ids(&["w1", "w2", "w3", "missing"]))?;
        t.add_waits(None, &ids(&["w1"]))?;
        assert_eq!(t.blocking_candidates(10)?, ids(&["w2", "w3", "w1"]));
        assert_eq!(t.blocking_candidates(1)?, ids(&["w2"]));
        assert_eq!(t.blocking_candidates(0)?, Vec::<InvocationId>::new());
        t.put_status(&iid("w3"), &st(Pending, Some("r")), ts(40))?;
        assert_eq!(t.blocking_candidates(10)?, ids(&["w2", "w1"]));
        t.put_status(&iid("w3"), &st(Killed, None), ts(41))?;
        t.put_status(&iid("w3"), &st(Rerouted, None), ts(42))?;
        assert_eq!(t.blocking_candidates(10)?, ids(&["w2", "w3", "w1"]));
        t.release_waited(&iid("w2"))?;
        t.release_waited(&iid("missing"))?;
        assert_eq!(t.blocking_candidates(10)?, ids(&["w3", "w1"]));
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn outcome_history_and_retries_round_trip() {
    in_fresh_store(|t| {
        t.insert_invocation(&plain("a", 1), &st(Registered, None))?;
        assert_eq!(
            t.get_outcome(&iid("a"))?,
            Some(InvocationOutcome {
                status: Registered,
                result: None,
                error: None
            })
        );
        assert_eq!(t.get_outcome(&iid("missing"))?, None);
        assert_eq!(t.get_status(&iid("missing"))?, None);
        assert!(t.get_invocation(&iid("missing"))?.is_none());

        let error = TaskError::new("ValueError", "bad \"value\"\nline two");
        t.set_error(&iid("a"), &error)?;
        t.set_result(&iid("a"), "{\"v\": [1, 2]}".into())?;
        t.put_status(&iid("a"), &st(Pending, Some("r")), ts(5))?;
        let out = t.get_outcome(&iid("a"))?.unwrap();
        assert_eq!(out.status, Pending);
        assert_eq!(out.result.as_deref(), Some("{\"v\": [1, 2]}"));
        assert_eq!(out.error, Some(error));

        for (i, s) in [Registered, Pending, Running, Success].into_iter().enumerate() {
            let mut e = entry("a", s, 100 - i as i64);
            e.owner = (i > 0).then(|| r("r"));
            t.append_history(e.as_step())?;
        }
        let history = t.get_history(&iid("a"))?;
        let statuses: Vec<_> = history.iter().map(|h| h.status).collect();
        assert_eq!(statuses, vec![Registered, Pending, Running, Success]);
        assert_eq!(history[3], {
            let mut e = entry("a", Success, 97);
            e.owner = Some("r".into());
            e
        });

        assert_eq!(t.get_retries(&iid("a"))?, 0);
        assert_eq!(t.increment_retries(&iid("a"))?, 1);
        assert_eq!(t.increment_retries(&iid("a"))?, 2);
        assert_eq!(t.get_retries(&iid("a"))?, 2);

        for err in [
            t.get_history(&iid("missing")).unwrap_err(),
            t.append_history(entry("missing", Registered, 1).as_step()).unwrap_err(),
            t.get_retries(&iid("missing")).unwrap_err(),
            t.increment_retries(&iid("missing")).unwrap_err(),
            t.set_result(&iid("missing"), "1".into()).unwrap_err(),
            t.set_error(&iid("missing"), &TaskError::new("E", "m")).unwrap_err(),
            t.put_status(&iid("missing"), &st(Pending, Some("r")), ts(1)).unwrap_err(),
        ] {
            assert!(
                matches!(&err, StoreError::NotFound { invocation_id, .. } if *invocation_id == iid("missing")),
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
                t.set_result(&iid(id), "1".into())?;
                t.add_waits(Some(&iid("p")), &ids(&[id]))?;
                t.add_edge(&iid(id), &cid(&format!("call-{id}")), &cid("callee"))?;
            }
            t.delete_invocation(&iid("a"))?;
            t.delete_invocation(&iid("a"))?;
            t.delete_invocation(&iid("never"))?;
            assert_eq!(t.get_status(&iid("a"))?, None);
            assert!(t.get_invocation(&iid("a"))?.is_none());
            assert_eq!(t.get_outcome(&iid("a"))?, None);
            assert!(t.get_history(&iid("a")).is_err());
            assert_eq!(t.callees_of(&cid("call-a"))?, Vec::<CallId>::new());
            assert_eq!(t.blocking_candidates(10)?, ids(&["b"]));
            assert_eq!(t.list_invocation_ids()?, ids(&["b"]));
            assert_eq!(t.callees_of(&cid("call-b"))?, calls(&["callee"]));
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
        assert_eq!(t.get_heartbeat(&r("r1"))?, None);
        t.put_heartbeat(&r("r1"), ts(10))?;
        t.put_heartbeat(&r("r1"), ts(20))?;
        assert_eq!(t.get_heartbeat(&r("r1"))?, Some(ts(20)));
        t.remove_heartbeat(&r("r1"))?;
        assert_eq!(t.get_heartbeat(&r("r1"))?, None);

        assert!(t.try_lease("recovery", &r("h1"), ts(100), us(50))?);
        assert!(!t.try_lease("recovery", &r("h2"), ts(120), us(50))?);
        assert!(
            t.try_lease("recovery", &r("h1"), ts(140), us(50))?,
            "the holder renews"
        );
        assert!(!t.try_lease("recovery", &r("h2"), ts(189), us(50))?);
        assert!(
            t.try_lease("recovery", &r("h2"), ts(190), us(50))?,
            "expired: taken over"
        );
        assert!(!t.try_lease("recovery", &r("h1"), ts(200), us(50))?);

        for (id, created) in [("p", 1), ("q", 2), ("reg", 3)] {
            t.insert_invocation(&plain(id, created), &st(Registered, None))?;
        }
        t.put_status(&iid("q"), &st(Pending, Some("r1")), ts(50))?;
        t.put_status(&iid("p"), &st(Pending, Some("r2")), ts(60))?;
        t.put_status(&iid("p"), &st(Running, Some("r2")), ts(70))?;
        assert_eq!(
            t.owned_claims_before(ts(100), 10)?,
            vec![
                OwnedClaim {
                    invocation_id: iid("q"),
                    status: st(Pending, Some("r1")),
                    since: ts(50),
                },
                OwnedClaim {
                    invocation_id: iid("p"),
                    status: st(Running, Some("r2")),
                    since: ts(70),
                },
            ]
        );
        assert_eq!(t.owned_claims_before(ts(60), 10)?.len(), 1);
        assert_eq!(t.owned_claims_before(ts(100), 1)?.len(), 1);
        t.put_status(&iid("p"), &st(Success, Some("r2")), ts(80))?;
        assert_eq!(t.owned_claims_before(ts(100), 10)?.len(), 1);
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
    let id = routed[0].record().invocation_id;
    assert_eq!(backend.get_status(&id).await.unwrap().status, Registered);

    let picked = backend
        .get_invocations_to_run(&r("runner-1"), 4)
        .await
        .unwrap();
    assert_eq!(picked.len(), 1);
    assert_eq!(picked[0].invocation_id, id);
    assert_eq!(picked[0].call, routed[0].record().call);
    assert!(backend
        .get_invocations_to_run(&r("runner-2"), 4)
        .await
        .unwrap()
        .is_empty());

    // a waiter in this process is woken by the finish
    let waiter = {
        let backend = backend.clone();
        let ids = vec![id];
        tokio::spawn(async move { backend.wait_final(&ids).await })
    };
    backend
        .set_status(&id, Running, &r("runner-1"), None)
        .await
        .unwrap();
    assert!(backend
        .set_status(&id, Success, &r("runner-2"), None)
        .await
        .is_err());
    let to = backend
        .finish(&id, &r("runner-1"), RunOutcome::Success("42".into()))
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
    pynenc_model::replay_history(
        history
            .iter()
            .map(|h| (h.status, h.owner.as_deref(), h.actor.as_str())),
    )
    .unwrap();

    // a missing invocation is an error, not a hang
    let err = backend.wait_final(&ids(&["missing"])).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
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
    let id = routed[0].record().invocation_id;

    // b waits for a result that a produces
    let waiter = {
        let b = b.clone();
        let ids = vec![id];
        tokio::spawn(async move { b.wait_final(&ids).await })
    };
    let picked = a.get_invocations_to_run(&r("ra"), 1).await.unwrap();
    assert_eq!(picked.len(), 1);
    a.set_status(&id, Running, &r("ra"), None).await.unwrap();
    a.finish(
        &id,
        &r("ra"),
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
                let batch = backend
                    .get_invocations_to_run(&r(&runner), 3)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    break;
                }
                mine.extend(batch.iter().map(|r| r.invocation_id));
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
            assert!(seen.insert(id), "{id} picked twice");
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
    let id = routed[0].record().invocation_id;
    let picked = backend.get_invocations_to_run(&r("r"), 1).await.unwrap();
    let back: String = Serializer::Json
        .deserialize(picked[0].call.arguments.get("data").unwrap(), "data")
        .unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back == big);
    backend
        .set_status(&id, Running, &r("r"), None)
        .await
        .unwrap();
    backend
        .finish(&id, &r("r"), RunOutcome::Success(format!("\"{big}\"")))
        .await
        .unwrap();
    let outcome = backend.get_outcomes(&[id]).await.unwrap().remove(0);
    assert_eq!(outcome.result.map(|r| r.len()), Some(big.len() + 2));
}

mod data_values;
mod final_watch;
mod held_writes;
mod status_waits;
