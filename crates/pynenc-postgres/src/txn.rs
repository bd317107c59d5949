//! [`PgTxn`]: one step's view of the store inside a group transaction, and
//! the statement helpers the primitives are written with.
//!
//! The steps of a group run one after the other in one transaction, under
//! the app's advisory lock, so nobody else writes meanwhile: what a step
//! read or wrote stays true for the steps after it. The group therefore
//! keeps one view of the invocations it touched ([`Row`], and the records
//! it read), and holds the writes that only the group's own later reads
//! can see (see [`crate::pending`]) until a statement reads
//! their table or the group commits, when they go in one round trip.

use std::cell::Cell;
use std::sync::Arc;

use std::future::Future;

use pynenc_model::{
    InvocationId, InvocationOutcome, InvocationRecord, InvocationStatus, RunnerId, StatusRecord,
    TaskError,
};
use pynenc_store::codes::status_from_code;
use pynenc_store::{Result, StoreError};
use rustc_hash::FxHashMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::{SimpleQueryMessage, Statement};

use crate::combined;
use crate::error::{is_connection_lost, Ctx};
use crate::pending::{Pending, Write};
use crate::statements::Conn;

/// Parameters of a statement.
pub(crate) type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// What a step knows about an invocation it has read or written.
#[derive(Clone)]
pub(crate) struct Row {
    pub(crate) status: StatusRecord,
    pub(crate) task: String,
    pub(crate) running_key: Option<String>,
    pub(crate) waited: bool,
    /// The kind of the stored error, if any.
    pub(crate) error_kind: Option<String>,
    /// Whether a cancel was asked (its columns are cleared when it ends).
    pub(crate) cancel_asked: bool,
}

/// What a committed group asks the store to announce.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) enqueued: bool,
    pub(crate) finals: Vec<InvocationId>,
    /// Invocations whose status changed (or that were deleted).
    pub(crate) changed: Vec<InvocationId>,
    pub(crate) purged: bool,
    /// The whole outcomes of invocations made final, where the group wrote
    /// all of it (see [`Group::outcomes`]).
    pub(crate) outcomes: Vec<(InvocationId, InvocationOutcome)>,
}

impl Effects {
    /// Whether there is nothing to announce.
    pub(crate) fn is_empty(&self) -> bool {
        !self.enqueued && !self.purged && self.finals.is_empty() && self.changed.is_empty()
    }
}

/// What the steps of one group transaction share.
#[derive(Default)]
pub(crate) struct Group {
    pub(crate) rows: FxHashMap<InvocationId, Row>,
    /// Records the group stored or has parsed.
    pub(crate) records: FxHashMap<InvocationId, Arc<InvocationRecord>>,
    /// Records read with their rows (a pick-up reads both at once), as
    /// JSON until a step asks for one (an end never does).
    pub(crate) record_texts: FxHashMap<InvocationId, String>,
    pub(crate) pending: Pending,
    pub(crate) effects: Effects,
    /// The result or error the group wrote for an invocation that had no
    /// earlier error (so the row's `result` and `error` hold this and
    /// nothing else): when it becomes final, its whole outcome is known
    /// without a read (see [`pynenc_store::KnownOutcomes`]).
    pub(crate) outcomes: FxHashMap<InvocationId, (Option<String>, Option<TaskError>)>,
    /// The connection was lost: the group must run again.
    pub(crate) lost: Cell<bool>,
    /// Rows taken from [`crate::seen_rows::SeenRows`] and not checked yet.
    pub(crate) assumed: Vec<(InvocationId, Row)>,
    /// A check of rows taken found one changed: the group must run again
    /// (reading them).
    pub(crate) stale: Cell<bool>,
    /// Whether the transaction has begun (sent with the group's first statement).
    pub(crate) begun: bool,
    /// Whether a statement that may write was sent (held writes, or a
    /// statement that is not a plain `SELECT`).
    pub(crate) wrote: bool,
    /// A read-only transaction on committed data without the app's lock
    /// (the query readers), instead of a step's.
    pub(crate) read_only: bool,
    /// The transaction's id, once it has begun.
    pub(crate) xid: Option<i64>,
    /// The call edges leaving the calls the group has read them for
    /// (those it added included).
    pub(crate) callees: FxHashMap<pynenc_model::CallId, Vec<pynenc_model::CallId>>,
    /// A read of the queue's head found fewer than it asked for (or the
    /// group began with the queue known drained, see
    /// [`crate::queue_head::QueueKnown`]), and the group queued nothing
    /// since: under the app's lock the queue stays empty, so a pick-up
    /// answers without a round trip.
    pub(crate) queue_drained: bool,
    /// Whether the group read the queue's head.
    pub(crate) queue_read: bool,
    /// The group began with the queue known drained (see
    /// `queue_head.rs`) and has sent none of its queue appends: the queue
    /// holds what the group appended and nothing else, so a pick-up takes
    /// from its held appends, which are then never written (a call routed
    /// and picked in one group — a runner's parked pick — reads and writes
    /// no queue).
    pub(crate) own_queue: bool,
    /// The store's work epoch when the group began.
    pub(crate) epoch: u64,
    /// The running section said its writes are redone if a crash loses
    /// them (`StoreTxn::redone_if_lost`).
    pub(crate) section_redone: bool,
    /// Every section so far said so: the commit need not wait for the
    /// disk (`synchronous_commit = off` for this transaction).
    pub(crate) all_redone: bool,
    /// Ids taken from the queue ahead of the step's `dequeue` (`Some`
    /// and empty: the queue was found empty).
    pub(crate) taken: Option<Vec<InvocationId>>,
}

/// Tables whose held writes a statement needs sent first.
pub(crate) mod tables {
    /// `pynenc_invocations` (inserts, status writes, history entries,
    /// results and errors).
    pub(crate) const INVOCATIONS: u8 = 1;
    /// The counters: counts by status, failures by kind, task totals.
    pub(crate) const COUNTS: u8 = 4;
    /// `pynenc_edges`.
    pub(crate) const EDGES: u8 = 16;
    /// `pynenc_queue` (appends).
    pub(crate) const QUEUE: u8 = 32;
    /// `pynenc_waits` (removals).
    pub(crate) const WAITS: u8 = 64;
    /// None of them.
    pub(crate) const NONE: u8 = 0;
    /// All of them.
    pub(crate) const ALL: u8 = INVOCATIONS | COUNTS | EDGES | QUEUE | WAITS;
}

/// One step's view of the store: the primitives of
/// [`pynenc_store::StoreTxn`] as SQL (see `primitives.rs`).
pub(crate) struct PgTxn<'a> {
    pub(crate) conn: &'a Conn,
    pub(crate) ctx: &'a Ctx,
    pub(crate) g: &'a mut Group,
}

impl<'a> PgTxn<'a> {
    pub(crate) fn app(&self) -> i32 {
        self.ctx.app
    }

    /// The store error for a failed statement (and a lost connection noted).
    pub(crate) fn fail(&self, e: tokio_postgres::Error, op: &str) -> StoreError {
        if is_connection_lost(&e) {
            self.g.lost.set(true);
        }
        self.ctx.err(e, op)
    }

    /// Notes that `sql` may write, unless it is a plain `SELECT`.
    fn note_writes(&mut self, sql: &str) {
        if !sql.trim_start().starts_with("SELECT") {
            self.g.wrote = true;
        }
    }

    /// Sends, in ONE round trip: `BEGIN` with the app's lock when the group
    /// has not begun, the check of the rows it took from what the process
    /// saw (see [`crate::seen_rows`]), the held writes of the tables in
    /// `mask`, then `last`
    /// (requests sent back to back are answered in order, so `last` sees
    /// the writes). A held write that fails aborts the transaction: `last`
    /// then fails too, and the write's error is returned.
    pub(crate) fn pipeline<'s, T>(
        &'s mut self,
        mask: u8,
        op: &str,
        last: impl Future<Output = std::result::Result<T, tokio_postgres::Error>> + 's,
    ) -> Result<T> {
        if mask & tables::QUEUE != 0 {
            // the appends go (or the queue is read): it is the server's again
            self.g.own_queue = false;
        }
        let writes = if mask != tables::NONE && self.g.pending.holds(mask) {
            self.g.pending.take(mask)
        } else {
            Vec::new()
        };
        if !writes.is_empty() {
            self.g.wrote = true;
        }
        let stages = combined::stages(writes);
        let prepared: Vec<(Statement, &[Write])> = stages
            .iter()
            .map(|parts| combined::prepared(self.conn, parts).map(|s| (s, parts.as_slice())))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.fail(e, "preparing held writes"))?;
        let check = self.take_check()?;
        let begin = (!self.g.begun).then(|| {
            if self.g.read_only {
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_string()
            } else {
                format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({}), txid_current()",
                    self.ctx.lock_key
                )
            }
        });
        let client = &self.conn.client;
        let app = self.ctx.app;
        let check_params = check.as_ref().map(|c| (&c.statement, c.params(&app)));
        let sent = async {
            let begin = async {
                match &begin {
                    Some(sql) => Some(client.simple_query(sql).await),
                    None => None,
                }
            };
            let checked = async {
                match &check_params {
                    Some((stmt, params)) => client.execute(*stmt, params).await.map(|_| ()),
                    None => Ok(()),
                }
            };
            let writes = futures::future::join_all(
                prepared
                    .iter()
                    .map(|(stmt, parts)| combined::send(client, stmt, app, parts)),
            );
            futures::join!(begin, checked, writes, last)
        };
        let (began, checked, written, out) = self.conn.rt.block_on(sent);
        if let Some(began) = began {
            let messages = began.map_err(|e| self.fail(e, "beginning a transaction"))?;
            self.g.begun = true;
            self.g.xid = messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(1).and_then(|x| x.parse::<i64>().ok()),
                _ => None,
            });
        }
        if let Err(e) = checked {
            let e = self.fail(e, "checking the rows this process saw");
            if !self.g.lost.get() {
                self.g.stale.set(true);
            }
            return Err(e);
        }
        for w in written {
            w.map_err(|e| self.fail(e, "sending held writes"))?;
        }
        out.map_err(|e| self.fail(e, op))
    }

    /// Rows of a prepared statement, sent with the held writes of the
    /// tables in `reads` (see [`PgTxn::pipeline`]).
    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
        op: &str,
        reads: u8,
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.query_over(sql, usize::MAX, params, op, reads)
    }

    /// [`PgTxn::query`] of a statement over arrays of `rows` elements (one
    /// element: its one-row form, see `one_row.rs`).
    pub(crate) fn query_over(
        &mut self,
        sql: &'static str,
        rows: usize,
        params: Params<'_>,
        op: &str,
        reads: u8,
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.note_writes(sql);
        self.rows_of(sql, rows, params, op, reads)
    }

    /// Rows of a prepared statement over arrays of `rows` elements.
    fn rows_of(
        &mut self,
        sql: &'static str,
        rows: usize,
        params: Params<'_>,
        op: &str,
        reads: u8,
    ) -> Result<Vec<tokio_postgres::Row>> {
        let stmt = self.statement(sql, rows, op)?;
        let client = &self.conn.client;
        self.pipeline(reads, op, async move { client.query(&stmt, params).await })
    }

    /// The statement for `sql` over arrays of `rows` elements.
    fn statement(&mut self, sql: &'static str, rows: usize, op: &str) -> Result<Statement> {
        self.conn
            .prepared_for(sql, rows)
            .map_err(|e| self.fail(e, op))
    }

    /// [`PgTxn::query`] of a statement that writes only what it returns
    /// (`DELETE … RETURNING`): one that returns no row wrote nothing.
    pub(crate) fn query_taking(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
        op: &str,
        reads: u8,
    ) -> Result<Vec<tokio_postgres::Row>> {
        let rows = self.rows_of(sql, usize::MAX, params, op, reads)?;
        if !rows.is_empty() {
            self.g.wrote = true;
        }
        Ok(rows)
    }

    /// The first row of a prepared statement, if any (see [`PgTxn::query`]).
    pub(crate) fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
        op: &str,
        reads: u8,
    ) -> Result<Option<tokio_postgres::Row>> {
        Ok(self.query(sql, params, op, reads)?.into_iter().next())
    }

    /// Runs a prepared statement; the number of rows it changed.
    pub(crate) fn exec(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
        op: &str,
        reads: u8,
    ) -> Result<u64> {
        self.exec_over(sql, usize::MAX, params, op, reads)
    }

    /// [`PgTxn::exec`] of a statement over arrays of `rows` elements (see
    /// [`PgTxn::query_over`]).
    pub(crate) fn exec_over(
        &mut self,
        sql: &'static str,
        rows: usize,
        params: Params<'_>,
        op: &str,
        reads: u8,
    ) -> Result<u64> {
        self.note_writes(sql);
        let stmt = self.statement(sql, rows, op)?;
        let client = &self.conn.client;
        let last = async move { client.execute(&stmt, params).await };
        self.pipeline(reads, op, last)
    }

    /// Rows of a statement built at run time (prepared for this use only).
    pub(crate) fn query_built(
        &mut self,
        sql: &str,
        params: Params<'_>,
        op: &str,
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.note_writes(sql);
        let stmt = self.conn.prepared_once(sql).map_err(|e| self.fail(e, op))?;
        let client = &self.conn.client;
        let last = async move { client.query(&stmt, params).await };
        self.pipeline(tables::ALL, op, last)
    }

    /// Invocation ids in the first column of a statement's rows.
    pub(crate) fn ids(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
        op: &str,
        reads: u8,
    ) -> Result<Vec<InvocationId>> {
        let rows = self.query(sql, params, op, reads)?;
        rows.iter().map(|r| self.parse_id(r.get(0))).collect()
    }

    /// The invocation id in the first column of a statement's first row.
    pub(crate) fn first_id(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
        op: &str,
        reads: u8,
    ) -> Result<Option<InvocationId>> {
        self.query_opt(sql, params, op, reads)?
            .map(|r| self.parse_id(r.get(0)))
            .transpose()
    }

    pub(crate) fn parse_status(&self, id: &str, code: i16) -> Result<InvocationStatus> {
        status_from_code(i64::from(code)).ok_or_else(|| {
            self.ctx
                .corrupt(id, "status", format!("unknown status code {code}"))
        })
    }

    /// An invocation id read from the database.
    pub(crate) fn parse_id(&self, text: &str) -> Result<InvocationId> {
        InvocationId::parse(text)
            .map_err(|e| StoreError::bad_id(format!("PostgreSQL database {}", self.ctx.shown), e))
    }

    /// A status and its owner read from the database.
    pub(crate) fn status_record(
        &self,
        id: &str,
        code: i16,
        owner: Option<String>,
    ) -> Result<StatusRecord> {
        Ok(StatusRecord {
            status: self.parse_status(id, code)?,
            owner: owner.map(RunnerId::from),
        })
    }

    /// A record stored as JSON.
    pub(crate) fn parse_record(&self, id: &str, json: &str) -> Result<Arc<InvocationRecord>> {
        InvocationRecord::from_json(json)
            .map(Arc::new)
            .map_err(|e| self.ctx.corrupt(id, "record", e))
    }
}
