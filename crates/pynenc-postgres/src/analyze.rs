//! Statistics for the planner while the tables grow: [`Analyzer`].
//!
//! PostgreSQL analyzes a table on its own (autovacuum) a minute or more
//! after it has grown by a tenth; until then the planner knows nothing of
//! its rows. A generic plan made then for a join of taken ids to the
//! invocations (a pick's rows and records, a batch of status writes) may
//! read every row of the app for each id: with an app the planner believes
//! to hold two rows, a scan of the app's rows with the ids as a filter
//! costs it less than a lookup of each id. Seen on a database being filled
//! with 1,000,000 invocations: picks of 778 ids took 2.4 s each (8.6
//! million rows filtered out), and the first 100,000 invocations ran at
//! 1,500/s. So when the writer's connection finds the invocations table
//! doubled (it looks once a second, see `statements.rs`), the tables that
//! such joins read and that were never analyzed (or analyzed empty) are
//! analyzed on a connection of their own, in a thread of their own, at
//! most once every [`MIN_GAP`]: the plans of every connection are then
//! made again with the tables' statistics (a plan PostgreSQL caches is
//! dropped when its tables are analyzed). Once a table has statistics,
//! the planner scales them to its current size, and autovacuum keeps them:
//! analyzing again at every doubling cost a burn-down 8 % (two or three
//! analyses of a growing table, and every plan made again after each). A
//! table analyzed while empty (the queue, often drained) is analyzed again
//! at the next doubling the gap allows; a doubling found within the gap is
//! not kept for later.
//!
//! A role that does not own the tables cannot analyze them: the server
//! answers with a warning, and nothing else changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::conn::{connect, spawn_with_runtime, Server};
use crate::error::describe;

/// The tables whose statistics the joins of the steps depend on, of those
/// never analyzed (or analyzed empty): their names, comma-separated (empty
/// when there are none).
const UNKNOWN: &str = "SELECT COALESCE(string_agg(relname, ', '), '') FROM pg_class \
     WHERE oid IN (to_regclass('pynenc_invocations'), to_regclass('pynenc_records'), \
         to_regclass('pynenc_queue')) \
     AND reltuples <= 0";

/// The shortest time between two analyses started by one store.
pub(crate) const MIN_GAP: Duration = Duration::from_secs(5);

/// Starts the analysis of the tables when they have grown (see the module
/// documentation); one analysis at a time.
pub(crate) struct Analyzer {
    server: Server,
    shown: String,
    /// Whether an analysis is running.
    busy: Arc<AtomicBool>,
    /// When the last one started.
    last: Option<Instant>,
    /// The shortest time between two ([`MIN_GAP`]).
    gap: Duration,
}

impl Analyzer {
    pub(crate) fn new(server: Server, shown: String) -> Analyzer {
        Analyzer {
            server,
            shown,
            busy: Arc::default(),
            last: None,
            gap: MIN_GAP,
        }
    }

    /// The tables have grown: analyzes them in a thread of its own unless
    /// an analysis runs or started less than [`MIN_GAP`] ago. Never fails:
    /// a failure is logged, and autovacuum analyzes the tables later.
    pub(crate) fn grown(&mut self) {
        if self.last.is_some_and(|t| t.elapsed() < self.gap)
            || self.busy.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.last = Some(Instant::now());
        let (server, shown) = (self.server.clone(), self.shown.clone());
        // free again however the analysis ends: done, failed, panicked or
        // never started
        let free = Free(self.busy.clone());
        let spawned = spawn_with_runtime(
            "pynenc-pg-analyze",
            "could not start a runtime to analyze the PostgreSQL tables",
            move || async move {
                let _free = free;
                analyze(&server, &shown).await;
            },
        );
        // a thread that did not start dropped the guard with its task
        if let Err(e) = spawned {
            warn!(error = %e, "could not start a thread to analyze the PostgreSQL tables");
        }
    }

    /// Whether an analysis is running (for tests).
    #[cfg(test)]
    pub(crate) fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }
}

/// Clears an analyzer's busy flag when dropped.
struct Free(Arc<AtomicBool>);

impl Drop for Free {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Connects to `server` and analyzes the tables; the outcome is logged.
async fn analyze(server: &Server, shown: &str) {
    let started = Instant::now();
    let done = async {
        let client = connect(server, shown).await.map_err(|e| e.to_string())?;
        let tables: String = client
            .query_one(UNKNOWN, &[])
            .await
            .map_err(|e| describe(&e))?
            .get(0);
        if !tables.is_empty() {
            client
                .batch_execute(&format!("ANALYZE {tables}"))
                .await
                .map_err(|e| describe(&e))?;
        }
        Ok::<_, String>(tables)
    }
    .await;
    match done {
        Ok(tables) => debug!(
            postgres = %shown,
            tables = %tables,
            took_ms = started.elapsed().as_millis() as u64,
            "the invocations table has grown: the tables never analyzed are"
        ),
        Err(e) => warn!(
            postgres = %shown,
            error = %e,
            "could not analyze the pynenc tables (autovacuum will, later)"
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// How many times the tables were analyzed by a command (autovacuum's
    /// analyses are counted apart).
    fn analyzed(db: &pynenc_testservers::postgres::TestDatabase) -> Vec<String> {
        db.psql(
            "SELECT relname || '=' || analyze_count FROM pg_stat_user_tables \
             WHERE relname IN ('pynenc_invocations', 'pynenc_records', 'pynenc_queue') \
             ORDER BY relname",
        )
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
    }

    /// Waits until the analysis started ends (at most 10 s).
    fn until_done(analyzer: &Analyzer) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while analyzer.busy() {
            assert!(
                Instant::now() < deadline,
                "the analysis did not end in 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A growth analyzes the three tables in a thread of its own while
    /// they have no statistics; another within the gap does not; a table
    /// analyzed with rows is not analyzed again; a failure to connect
    /// fails nothing.
    #[test]
    fn tables_without_statistics_are_analyzed_when_grown() {
        let Some(db) = pynenc_testservers::postgres::test_database() else {
            return;
        };
        let options = crate::PostgresOptions::new(db.url());
        drop(crate::PostgresStore::open(&options, "analyzed").expect("open the store"));
        db.psql(
            "INSERT INTO pynenc_invocations \
                 (app, invocation_id, task, status, status_at_us, created_at_us, due_at_us, call_id) \
             SELECT 1, md5(i::text), 'tests.task', 13, i, i, i, 'c' FROM generate_series(1, 500) AS i",
        );
        let server = Server::of(&options).expect("server");
        let mut analyzer = Analyzer::new(server, "test".into());
        let until = |expected: [&str; 3]| {
            // the statistics are reported a little later
            let deadline = Instant::now() + Duration::from_secs(10);
            while analyzed(&db) != expected {
                assert!(Instant::now() < deadline, "{:?}", analyzed(&db));
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        analyzer.grown();
        until_done(&analyzer);
        until(["pynenc_invocations=1", "pynenc_queue=1", "pynenc_records=1"]);
        analyzer.grown();
        assert!(!analyzer.busy(), "nothing started within the gap");

        // past the gap: the empty tables again, not the one with rows
        analyzer.gap = Duration::ZERO;
        analyzer.grown();
        until_done(&analyzer);
        until(["pynenc_invocations=1", "pynenc_queue=2", "pynenc_records=2"]);

        // a server that is not there: logged, nothing fails
        let gone = crate::PostgresOptions::new("postgres://nobody@127.0.0.1:1/none");
        let mut failing = Analyzer::new(Server::of(&gone).expect("server"), "gone".into());
        failing.grown();
        until_done(&failing);
    }
}
