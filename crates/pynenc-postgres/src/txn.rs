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

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use futures::future::BoxFuture;
use pynenc_model::{InvocationId, InvocationRecord, InvocationStatus, RunnerId, StatusRecord};
use pynenc_store::codes::status_from_code;
use pynenc_store::{Result, StoreError};
use rustc_hash::FxHashMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::error::{is_connection_lost, Ctx};
use crate::pending::Pending;

/// Parameters of a statement.
pub(crate) type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// The writer's connection: its client, the runtime that drives it, and
/// the statements prepared on it.
pub(crate) struct Conn {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) client: Client,
    prepared: RefCell<FxHashMap<&'static str, Statement>>,
}

impl Conn {
    pub(crate) fn new(rt: tokio::runtime::Runtime, client: Client) -> Conn {
        Conn {
            rt,
            client,
            prepared: RefCell::default(),
        }
    }

    /// Uses a new client (the old connection is gone): statements are
    /// prepared again on it.
    pub(crate) fn replace_client(&mut self, client: Client) {
        self.client = client;
        self.prepared.get_mut().clear();
    }

    /// The statement for `sql`, prepared on first use.
    pub(crate) fn prepared(
        &self,
        sql: &'static str,
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.prepared.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = self.rt.block_on(self.client.prepare(sql))?;
        self.prepared.borrow_mut().insert(sql, s.clone());
        Ok(s)
    }
}

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
}

/// What the steps of one group transaction share.
#[derive(Default)]
pub(crate) struct Group {
    pub(crate) rows: FxHashMap<InvocationId, Row>,
    /// Records read with their rows (a pick-up reads both at once).
    pub(crate) records: FxHashMap<InvocationId, Arc<InvocationRecord>>,
    pub(crate) pending: Pending,
    pub(crate) effects: Effects,
    /// The connection was lost: the group must run again.
    pub(crate) lost: Cell<bool>,
}

/// Tables whose held writes a statement needs sent first.
pub(crate) mod tables {
    /// `pynenc_invocations` (status writes).
    pub(crate) const INVOCATIONS: u8 = 1;
    /// `pynenc_history`.
    pub(crate) const HISTORY: u8 = 2;
    /// The counters.
    pub(crate) const COUNTS: u8 = 4;
    /// `pynenc_outcomes`.
    pub(crate) const OUTCOMES: u8 = 8;
    /// `pynenc_edges`.
    pub(crate) const EDGES: u8 = 16;
    /// `pynenc_queue` (appends).
    pub(crate) const QUEUE: u8 = 32;
    /// None of them.
    pub(crate) const NONE: u8 = 0;
    /// All of them.
    pub(crate) const ALL: u8 = 63;
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

    /// Runs a future of the connection to its end.
    pub(crate) fn block<T>(&self, fut: impl std::future::Future<Output = T>) -> T {
        self.conn.rt.block_on(fut)
    }

    /// Rows of a prepared statement, after sending the held writes of the
    /// tables in `reads`.
    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
        op: &str,
        reads: u8,
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.flush(reads)?;
        let stmt = self.conn.prepared(sql).map_err(|e| self.fail(e, op))?;
        self.block(self.conn.client.query(&stmt, params))
            .map_err(|e| self.fail(e, op))
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
        self.flush(reads)?;
        let stmt = self.conn.prepared(sql).map_err(|e| self.fail(e, op))?;
        self.block(self.conn.client.execute(&stmt, params))
            .map_err(|e| self.fail(e, op))
    }

    /// Rows of a statement built at run time (prepared for this use only).
    pub(crate) fn query_built(
        &mut self,
        sql: &str,
        params: Params<'_>,
        op: &str,
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.flush(tables::ALL)?;
        self.block(self.conn.client.query(sql, params))
            .map_err(|e| self.fail(e, op))
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

    /// Sends the held writes of the tables in `mask` (all in one round trip).
    pub(crate) fn flush(&mut self, mask: u8) -> Result<()> {
        if mask == tables::NONE || !self.g.pending.holds(mask) {
            return Ok(());
        }
        let writes = self.g.pending.take(mask);
        let app = self.app();
        let prepared: Vec<(Statement, &crate::pending::Write)> = writes
            .iter()
            .map(|w| self.conn.prepared(w.sql()).map(|s| (s, w)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.fail(e, "preparing held writes"))?;
        let mut futures: Vec<BoxFuture<'_, std::result::Result<u64, tokio_postgres::Error>>> =
            Vec::with_capacity(prepared.len());
        for (stmt, w) in &prepared {
            futures.push(w.send(&self.conn.client, stmt, app));
        }
        let results = self.block(futures::future::join_all(futures));
        for r in results {
            r.map_err(|e| self.fail(e, "sending held writes"))?;
        }
        Ok(())
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
