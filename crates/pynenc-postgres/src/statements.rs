//! [`Conn`]: a connection of the store's own (the writer's or a query
//! reader's), the runtime that drives it, and the statements prepared on
//! it.
//!
//! A prepared statement runs with a generic plan, made for the table sizes
//! the server sees when it is made, and kept for as long as the connection
//! lives unless the server analyzes the table again. Made on an empty or
//! nearly empty invocations table — a new database, the first second of a
//! burst — the plan of a lookup by id may walk a whole index: there, a
//! scan of the index by task (whose last column is the id) costs the
//! planner the same as the primary key's one-row lookup, and it takes the
//! former. On a table of a thousand invocations that lookup took 80 µs
//! instead of 8, and the table grows by thousands a second before the
//! server's first analysis, a minute later. So once a second a connection
//! looks at the invocations table's size and prepares its one-row
//! statements (see `one_row.rs`) again when the table has doubled since
//! they were prepared: a handful of times in the life of a database, each
//! costing one round trip per statement. The forms over arrays keep their
//! plans: only the primary key serves their join well, whatever the size,
//! and a statement prepared again is planned for its first five runs with
//! the real lengths of its arrays, which in a burst of thousands cost more
//! than it saved (a burn-down of 100,000 lost 10 % with them).

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio_postgres::{Client, SimpleQueryMessage, Statement};
use tracing::debug;

use crate::one_row::one_row;

/// How often a connection looks at the size of the invocations table.
pub(crate) const PLAN_CHECK: Duration = Duration::from_secs(1);

/// The invocations table's size on disk, in bytes (0 when it is missing:
/// nothing here may fail inside a transaction).
const TABLE_SIZE: &str = "SELECT COALESCE(pg_relation_size(to_regclass('pynenc_invocations')), 0)";

/// The most statements built at run time a connection keeps prepared
/// (the combinations of held writes a workload makes are far fewer).
const BUILT_KEPT: usize = 256;

/// One page: the size below which a table counts as empty.
const PAGE: i64 = 8192;

/// A connection of the store's own: its client, the runtime that drives
/// it, and the statements prepared on it.
pub(crate) struct Conn {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) client: Client,
    /// By text, and whether in its one-row form (see `one_row.rs`).
    prepared: RefCell<FxHashMap<(&'static str, bool), Statement>>,
    /// Statements built at run time (see `combined.rs`), by the statements
    /// they are made of and whether each is in its one-row form.
    built: RefCell<FxHashMap<Vec<(&'static str, bool)>, Statement>>,
    /// The invocations table's size when the statements were prepared.
    planned_at: Cell<i64>,
    /// When the table's size was last looked at.
    looked: Cell<Instant>,
    /// Whether the table was found doubled since [`Conn::take_grown`].
    grown: Cell<bool>,
}

impl Conn {
    pub(crate) fn new(rt: tokio::runtime::Runtime, client: Client) -> Conn {
        Conn {
            rt,
            client,
            prepared: RefCell::default(),
            built: RefCell::default(),
            planned_at: Cell::new(0),
            looked: Cell::new(Instant::now()),
            grown: Cell::new(false),
        }
    }

    /// Uses a new client (the old connection is gone): statements are
    /// prepared again on it.
    pub(crate) fn replace_client(&mut self, client: Client) {
        self.client = client;
        self.prepared.get_mut().clear();
        self.built.get_mut().clear();
    }

    /// A statement built at run time, prepared for one use.
    pub(crate) fn prepared_once(
        &self,
        sql: &str,
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        self.rt.block_on(self.client.prepare(sql))
    }

    /// The statement for `sql`, prepared on first use.
    pub(crate) fn prepared(
        &self,
        sql: &'static str,
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        self.prepared_for(sql, usize::MAX)
    }

    /// The statement for `sql` over arrays of `rows` elements, prepared on
    /// first use: in its one-row form when `rows` is 1 (see `one_row.rs`).
    pub(crate) fn prepared_for(
        &self,
        sql: &'static str,
        rows: usize,
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        self.replan_if_due()?;
        let key = (sql, rows == 1);
        if let Some(s) = self.prepared.borrow().get(&key) {
            return Ok(s.clone());
        }
        let s = if key.1 {
            self.rt.block_on(self.client.prepare(&one_row(sql)))?
        } else {
            self.rt.block_on(self.client.prepare(sql))?
        };
        self.prepared.borrow_mut().insert(key, s.clone());
        Ok(s)
    }

    /// The statement made of the statements of `parts` (each in its
    /// one-row form where it says so), its text built by `build` and
    /// prepared on first use; one with a one-row part is prepared again
    /// like the others when the table has grown. At most [`BUILT_KEPT`]
    /// are kept.
    pub(crate) fn prepared_built(
        &self,
        parts: Vec<(&'static str, bool)>,
        build: impl FnOnce(&[(&'static str, bool)]) -> String,
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        self.replan_if_due()?;
        if let Some(s) = self.built.borrow().get(&parts) {
            return Ok(s.clone());
        }
        let s = self.rt.block_on(self.client.prepare(&build(&parts)))?;
        let mut built = self.built.borrow_mut();
        if built.len() >= BUILT_KEPT {
            built.clear();
        }
        built.insert(parts, s.clone());
        Ok(s)
    }

    /// [`Conn::replan_if_grown`] once every [`PLAN_CHECK`].
    fn replan_if_due(&self) -> std::result::Result<(), tokio_postgres::Error> {
        if self.looked.get().elapsed() >= PLAN_CHECK {
            self.replan_if_grown()?;
        }
        Ok(())
    }

    /// Forgets the prepared one-row statements when the invocations table has
    /// doubled since they were prepared (see the module documentation).
    fn replan_if_grown(&self) -> std::result::Result<(), tokio_postgres::Error> {
        self.looked.set(Instant::now());
        let size = table_size(&self.rt.block_on(self.client.simple_query(TABLE_SIZE))?);
        if size >= 2 * self.planned_at.get().max(PAGE) {
            debug!(
                bytes = size,
                was = self.planned_at.get(),
                "the invocations table has doubled: one-row statements are prepared again"
            );
            // only the one-row forms: a batch form's join is served well
            // by the primary key alone, whatever the table's size, and a
            // statement prepared again is planned for its first five runs
            // with its arrays' real lengths, which costs a batch dearly
            self.prepared
                .borrow_mut()
                .retain(|(_, one_row), _| !*one_row);
            self.built
                .borrow_mut()
                .retain(|parts, _| !parts.iter().any(|(_, one_row)| *one_row));
            self.planned_at.set(size);
            self.grown.set(true);
        }
        Ok(())
    }

    /// Whether the invocations table was found doubled since the last
    /// call (its statistics are then worth taking again: see
    /// [`crate::analyze`]).
    pub(crate) fn take_grown(&self) -> bool {
        self.grown.replace(false)
    }

    /// Makes the next statement look at the table's size (for tests).
    #[cfg(test)]
    pub(crate) fn look_now(&self) {
        self.looked.set(Instant::now() - PLAN_CHECK);
    }

    /// How many statements are prepared (for tests).
    #[cfg(test)]
    pub(crate) fn prepared_count(&self) -> usize {
        self.prepared.borrow().len()
    }
}

/// The one value of [`TABLE_SIZE`]'s answer.
fn table_size(messages: &[SimpleQueryMessage]) -> i64 {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOKUP: &str = "SELECT i.invocation_id, i.status FROM UNNEST($2::text[]) AS u(id) \
         JOIN pynenc_invocations AS i ON i.app = $1 AND i.invocation_id = u.id";

    /// The rows of `sql`'s answer, each its columns joined by `|`.
    fn rows(conn: &Conn, sql: &str) -> Vec<String> {
        let messages = conn.rt.block_on(conn.client.simple_query(sql)).expect(sql);
        messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect()
    }

    /// The names of the lookups prepared on the connection in their
    /// one-row form (or their form over arrays), oldest first.
    fn lookups(conn: &Conn, one_row: bool) -> Vec<String> {
        let form = if one_row { "NOT " } else { "" };
        rows(
            conn,
            &format!(
                "SELECT name FROM pg_prepared_statements \
                 WHERE statement LIKE '%JOIN pynenc_invocations AS i ON%' \
                 AND statement {form}LIKE '%UNNEST%' ORDER BY prepare_time"
            ),
        )
    }

    /// The plan of the prepared statement `name` for a lookup of one id.
    fn plan(conn: &Conn, name: &str) -> String {
        let app = rows(conn, "SELECT app FROM pynenc_apps WHERE app_id = 'replan'").join("");
        rows(conn, &format!("EXPLAIN EXECUTE {name}({app}, '{{x}}')")).join("\n")
    }

    /// A lookup of one id prepared on the empty table is prepared again once
    /// the table has grown (at the next look, a second later), and its new
    /// plan takes the primary key; the form over arrays is kept.
    #[test]
    fn statements_are_prepared_again_once_the_invocations_table_has_doubled() {
        let Some(db) = pynenc_testservers::postgres::test_database() else {
            return;
        };
        // opening a store creates the schema and the app
        let store = crate::PostgresStore::open(&crate::PostgresOptions::new(db.url()), "replan")
            .expect("open the store");
        drop(store);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (client, connection) = rt
            .block_on(tokio_postgres::connect(&db.url(), tokio_postgres::NoTls))
            .expect("connect");
        rt.spawn(connection);
        let conn = Conn::new(rt, client);
        // the generic plan from the first use on, as after a few uses
        rows(&conn, "SET plan_cache_mode = force_generic_plan");
        // held, so that the server keeps it once the connection forgets it
        let _first = conn.prepared_for(LOOKUP, 1).expect("prepare");
        conn.prepared_for(LOOKUP, 2)
            .expect("prepare the form over arrays");
        let names = lookups(&conn, true);
        assert_eq!(names.len(), 1);
        let empty_plan = plan(&conn, &names[0]);
        rows(
            &conn,
            "INSERT INTO pynenc_invocations \
                 (app, invocation_id, task, status, status_at_us, created_at_us, due_at_us, call_id) \
             SELECT (SELECT app FROM pynenc_apps WHERE app_id = 'replan'), md5(i::text), \
                 'tests.task', 13, i, i, i, 'c' \
             FROM generate_series(1, 5000) AS i",
        );
        conn.prepared_for(LOOKUP, 1).expect("prepare");
        assert_eq!(
            lookups(&conn, true).len(),
            1,
            "within a second, the statement is kept"
        );
        assert!(!conn.take_grown(), "not looked at yet");
        conn.look_now();
        conn.prepared_for(LOOKUP, 1).expect("prepare");
        conn.prepared_for(LOOKUP, 2)
            .expect("prepare the form over arrays");
        let names = lookups(&conn, true);
        assert_eq!(names.len(), 2, "prepared again on the grown table");
        assert!(conn.take_grown(), "the growth is told once");
        assert!(!conn.take_grown());
        assert_eq!(
            lookups(&conn, false).len(),
            1,
            "the form over arrays is kept"
        );
        assert_eq!(conn.prepared_count(), 2);
        let new_plan = plan(&conn, &names[1]);
        println!(
            "plan made on the empty table:\n{empty_plan}\nplan made on 5,000 rows:\n{new_plan}"
        );
        assert!(
            new_plan.contains("pynenc_invocations_pkey"),
            "the lookup takes the primary key: {new_plan}"
        );
        conn.look_now();
        conn.prepared_for(LOOKUP, 1).expect("prepare");
        assert_eq!(
            lookups(&conn, true).len(),
            2,
            "the table has not doubled again"
        );
    }
}
