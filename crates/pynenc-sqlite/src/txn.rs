//! [`SqliteTxn`]: one transaction's view of the store, and the statement
//! helpers the primitives are written with.

use std::cell::RefCell;

use parking_lot::Mutex;
use pynenc_model::{InvocationId, InvocationStatus, RunnerId, StatusRecord, Timestamp};
use pynenc_store::{Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use rustc_hash::FxHashMap;

use crate::codes::{history_final, status_from_code};
use crate::counts::CountDeltas;
use crate::error::{inv, Ctx, Key};
use crate::status_write::StatusWrite;
use crate::writer::Effects;

/// `rid, status, owner, running_key, waited, task, error_kind` of an
/// invocation, and whether a cancel was asked.
type RowColumns = (
    i64,
    i64,
    Option<String>,
    Option<String>,
    bool,
    i64,
    Option<i64>,
    bool,
);

/// What a section knows about an invocation it has read or written.
pub(crate) struct Row {
    pub(crate) rid: i64,
    pub(crate) status: StatusRecord,
    pub(crate) running_key: Option<String>,
    pub(crate) waited: bool,
    /// The task (`names.name_id`).
    pub(crate) task: i64,
    /// The kind of the stored error (`names.name_id`), if any.
    pub(crate) error_kind: Option<i64>,
    /// Whether a cancel was asked (its columns are cleared when it ends).
    pub(crate) cancel_asked: bool,
}

/// A SQL `LIMIT` for `max`.
pub(crate) fn limit(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}

/// One transaction's view of the store: the primitives of
/// [`pynenc_store::StoreTxn`] as SQL (see `primitives.rs`).
pub(crate) struct SqliteTxn<'a> {
    pub(crate) conn: &'a Connection,
    pub(crate) ctx: &'a Ctx,
    /// The store's committed names.
    names: &'a Mutex<FxHashMap<String, i64>>,
    /// Names this section interned or looked up.
    local_names: FxHashMap<String, i64>,
    /// Invocations this section has read or written (valid until it ends:
    /// nobody else writes meanwhile).
    pub(crate) rows: FxHashMap<InvocationId, Row>,
    pub(crate) effects: Effects,
    /// Count changes not written yet (see `counts.rs`).
    pub(crate) deltas: CountDeltas,
    /// Status writes not sent yet, by `rid` (see `status_write.rs`).
    pub(crate) held_status: RefCell<FxHashMap<i64, StatusWrite>>,
}

impl<'a> SqliteTxn<'a> {
    pub(crate) fn new(
        conn: &'a Connection,
        ctx: &'a Ctx,
        names: &'a Mutex<FxHashMap<String, i64>>,
    ) -> Self {
        SqliteTxn {
            conn,
            ctx,
            names,
            local_names: FxHashMap::default(),
            rows: FxHashMap::default(),
            effects: Effects::default(),
            deltas: CountDeltas::default(),
            held_status: RefCell::default(),
        }
    }

    pub(crate) fn stmt(
        &self,
        sql: &str,
        op: &str,
        key: Key<'_>,
    ) -> Result<rusqlite::CachedStatement<'a>> {
        if !self.held_status.borrow().is_empty() && sql.contains("invocations") {
            // the rows as the section left them (`status_write.rs`)
            self.flush_status()?;
        }
        self.conn
            .prepare_cached(sql)
            .map_err(|e| self.ctx.err(e, op, key))
    }

    pub(crate) fn app(&self) -> i64 {
        self.ctx.app
    }

    pub(crate) fn parse_status(&self, id: &str, code: i64) -> Result<InvocationStatus> {
        status_from_code(code).ok_or_else(|| {
            self.ctx
                .corrupt(id, "status", format!("unknown status code {code}"))
        })
    }

    /// An invocation id read from the database.
    pub(crate) fn parse_id(&self, text: &str) -> Result<InvocationId> {
        InvocationId::parse(text).map_err(|e| self.bad_id(e))
    }

    /// The error for an invocation id in the database that cannot be read.
    pub(crate) fn bad_id(&self, e: pynenc_model::InvalidId) -> StoreError {
        StoreError::bad_id(format!("SQLite database {}", self.ctx.shown), e)
    }

    /// A status and its owner read from the database.
    pub(crate) fn status_record(
        &self,
        id: &str,
        code: i64,
        owner: Option<String>,
    ) -> Result<StatusRecord> {
        Ok(StatusRecord {
            status: self.parse_status(id, code)?,
            owner: owner.map(RunnerId::from),
        })
    }

    /// The section's view of an invocation, read on first use.
    pub(crate) fn row(&mut self, id: &InvocationId) -> Result<Option<&mut Row>> {
        if !self.rows.contains_key(id) {
            // a row not in the cache has no held status write, so this
            // read need not send one (`status_write.rs`)
            let op = "reading an invocation";
            let found: Option<RowColumns> = self
                .conn
                .prepare_cached(
                    "SELECT rid, status, owner, running_key, waited, task, error_kind,
                         cancel_owner IS NOT NULL
                         FROM invocations WHERE app = ?1 AND invocation_id = ?2",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![self.app(), id.as_str()], |r| r.try_into())
                        .optional()
                })
                .map_err(|e| self.ctx.err(e, op, inv(id)))?;
            let Some((rid, code, owner, running_key, waited, task, error_kind, cancel_asked)) =
                found
            else {
                return Ok(None);
            };
            let status = self.status_record(id.as_str(), code, owner)?;
            self.rows.insert(
                *id,
                Row {
                    rid,
                    status,
                    running_key,
                    waited,
                    task,
                    error_kind,
                    cancel_asked,
                },
            );
        }
        Ok(self.rows.get_mut(id))
    }

    /// The invocation's `rid`, if it exists.
    pub(crate) fn rid(&mut self, id: &InvocationId) -> Result<Option<i64>> {
        Ok(self.row(id)?.map(|r| r.rid))
    }

    /// The invocation's `rid`, or a not-found error.
    pub(crate) fn rid_or_not_found(&mut self, id: &InvocationId) -> Result<i64> {
        self.rid(id)?.ok_or_else(|| self.ctx.not_found(id))
    }

    /// The status of an invocation, read without caching (for read-only checks).
    pub(crate) fn status_code_of(&mut self, id: &InvocationId) -> Result<Option<InvocationStatus>> {
        let code: Option<i64> = self.opt_row(
            "SELECT status FROM invocations WHERE app = ?1 AND invocation_id = ?2",
            "reading a status",
            inv(id),
            params![self.app(), id.as_str()],
            |r| r.get(0),
        )?;
        code.map(|c| self.parse_status(id.as_str(), c)).transpose()
    }

    /// The `names` row of `name`, created if needed.
    pub(crate) fn name_id(&mut self, name: &str) -> Result<i64> {
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

    /// The `names` row of `name` if it exists (a read: nothing is interned).
    pub(crate) fn lookup_name_id(&mut self, name: &str) -> Result<Option<i64>> {
        if let Some(id) = self.local_names.get(name) {
            return Ok(Some(*id));
        }
        if let Some(id) = self.names.lock().get(name) {
            return Ok(Some(*id));
        }
        self.opt_row(
            "SELECT name_id FROM names WHERE name = ?1",
            "looking up a name",
            Key::Of("name", name),
            params![name],
            |r| r.get(0),
        )
    }

    /// The name of a `names` row.
    pub(crate) fn name_of(&self, name_id: i64) -> Result<String> {
        let found: Option<String> = self.opt_row(
            "SELECT name FROM names WHERE name_id = ?1",
            "reading a name",
            Key::None,
            params![name_id],
            |r| r.get(0),
        )?;
        found.ok_or_else(|| {
            StoreError::corrupt(
                format!("SQLite database {}: names", self.ctx.shown),
                format!("no name {name_id}, yet an invocation refers to it"),
            )
        })
    }

    pub(crate) fn opt_name_id(&mut self, name: Option<&str>) -> Result<Option<i64>> {
        name.map(|n| self.name_id(n)).transpose()
    }

    /// The newest history sequence number.
    pub(crate) fn history_max_seq(&mut self) -> Result<i64> {
        let op = "reading the history watermark";
        self.stmt("SELECT COALESCE(MAX(seq), 0) FROM history", op, Key::None)?
            .query_row([], |r| r.get(0))
            .map_err(|e| self.ctx.err(e, op, Key::None))
    }

    /// Invocations of this app that became final after history `seq`, and the new watermark.
    pub(crate) fn finals_since(&mut self, seq: i64) -> Result<(Vec<InvocationId>, i64)> {
        let ids = self.ids(
            // a range of the rowid: only the rows written since the watermark
            concat!(
                "SELECT i.invocation_id FROM history AS h NOT INDEXED
                 JOIN invocations AS i ON i.rid = h.rid
                 WHERE h.seq > ?1 AND ",
                history_final!(),
                " AND i.app = ?2"
            ),
            "reading recent final statuses",
            Key::None,
            params![seq, self.app()],
        )?;
        Ok((ids, self.history_max_seq()?))
    }

    /// Whether anything is queued or a scheduled invocation is due.
    pub(crate) fn has_work(&mut self, now: Timestamp) -> Result<bool> {
        let op = "checking for work";
        self.stmt(
            "SELECT EXISTS (SELECT 1 FROM queue WHERE app = ?1)
                 OR EXISTS (SELECT 1 FROM invocations
                            WHERE app = ?1 AND status = 0 AND due_at_us <= ?2)",
            op,
            Key::None,
        )?
        .query_row(params![self.app(), now.as_micros()], |r| r.get(0))
        .map_err(|e| self.ctx.err(e, op, Key::None))
    }

    /// The text of the first column of every row `sql` returns, mapped by `f`.
    pub(crate) fn texts<T>(
        &self,
        sql: &str,
        op: &str,
        key: Key<'_>,
        args: impl rusqlite::Params,
        f: impl Fn(&str) -> T,
    ) -> Result<Vec<T>> {
        let mut stmt = self.stmt(sql, op, key)?;
        let rows = stmt
            .query_map(args, |r| Ok(f(r.get_ref(0)?.as_str()?)))
            .map_err(|e| self.ctx.err(e, op, key))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.ctx.err(e, op, key))
    }

    /// The invocation ids in the first column of every row `sql` returns.
    pub(crate) fn ids(
        &self,
        sql: &str,
        op: &str,
        key: Key<'_>,
        args: impl rusqlite::Params,
    ) -> Result<Vec<InvocationId>> {
        self.texts(sql, op, key, args, InvocationId::parse)?
            .into_iter()
            .map(|id| id.map_err(|e| self.bad_id(e)))
            .collect()
    }

    /// Runs a statement returning `(seq, id)` rows; the ids in `seq` order.
    pub(crate) fn seq_ids(
        &self,
        sql: &str,
        op: &str,
        key: Key<'_>,
        args: impl rusqlite::Params,
    ) -> Result<Vec<InvocationId>> {
        let mut stmt = self.stmt(sql, op, key)?;
        let rows = stmt
            .query_map(args, |r| {
                let id = InvocationId::parse(r.get_ref(1)?.as_str()?);
                Ok((r.get::<_, i64>(0)?, id))
            })
            .map_err(|e| self.ctx.err(e, op, key))?;
        let mut ids = Vec::new();
        for row in rows {
            let (seq, id) = row.map_err(|e| self.ctx.err(e, op, key))?;
            ids.push((seq, id.map_err(|e| self.bad_id(e))?));
        }
        ids.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(ids.into_iter().map(|(_, id)| id).collect())
    }

    /// The one row `sql` finds, if any, mapped by `f`.
    pub(crate) fn opt_row<T>(
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

    /// Runs a statement; the number of rows it changed.
    pub(crate) fn exec(
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
