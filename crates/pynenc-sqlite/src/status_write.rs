//! Status writes sent late: the status steps of one invocation in a
//! section (a pick-up writes `PENDING` then `RUNNING`) become one `UPDATE`
//! of its row, so the indexes on the status columns change once.
//!
//! Writes wait in the section, one per invocation, until a statement that
//! names the `invocations` table is prepared (every read or write of the
//! rows goes through [`SqliteTxn::stmt`], which sends them first) or the
//! section ends. Reads of the section's own row cache see the new status
//! at once; the read that fills the cache (`SqliteTxn::row`) reads a row
//! that is not cached, so not held, and sends nothing.

use std::collections::hash_map::Entry;

use pynenc_model::InvocationId;
use pynenc_store::Result;
use rusqlite::ToSql;

use crate::error::inv;
use crate::txn::SqliteTxn;

/// The columns one or more status writes of an invocation change.
pub(crate) struct StatusWrite {
    pub(crate) id: InvocationId,
    pub(crate) rid: i64,
    /// The status code and when it was set (always written).
    pub(crate) code: i64,
    pub(crate) at: i64,
    /// The owner, when it changed.
    pub(crate) owner: Option<Option<String>>,
    /// The end time, when it changed (it was or became final).
    pub(crate) final_at: Option<Option<i64>>,
    /// Whether the cancel request columns are cleared (it ended with one).
    pub(crate) clear_cancel: bool,
}

impl StatusWrite {
    /// Adds a later write of the same invocation.
    fn merge(&mut self, later: StatusWrite) {
        self.code = later.code;
        self.at = later.at;
        if later.owner.is_some() {
            self.owner = later.owner;
        }
        if later.final_at.is_some() {
            self.final_at = later.final_at;
        }
        self.clear_cancel |= later.clear_cancel;
    }

    /// The statement: only the columns that change are named, so an index
    /// on a column that keeps its value (the owner while it runs, the end
    /// time while it is not final) is not rewritten.
    fn sql(&self) -> &'static str {
        match (
            self.owner.is_some(),
            self.final_at.is_some(),
            self.clear_cancel,
        ) {
            (false, false, _) => {
                "UPDATE invocations SET status = ?2, status_at_us = ?3 WHERE rid = ?1"
            }
            (true, false, _) => {
                "UPDATE invocations SET status = ?2, status_at_us = ?3, owner = ?4 WHERE rid = ?1"
            }
            (false, true, false) => {
                "UPDATE invocations SET status = ?2, status_at_us = ?3, final_at_us = ?4
                 WHERE rid = ?1"
            }
            (true, true, false) => {
                "UPDATE invocations SET status = ?2, status_at_us = ?3, final_at_us = ?4,
                     owner = ?5
                 WHERE rid = ?1"
            }
            (false, true, true) => {
                "UPDATE invocations SET status = ?2, status_at_us = ?3, final_at_us = ?4,
                     cancel_owner = NULL, cancel_error = NULL
                 WHERE rid = ?1"
            }
            (true, true, true) => {
                "UPDATE invocations SET status = ?2, status_at_us = ?3, final_at_us = ?4,
                     cancel_owner = NULL, cancel_error = NULL, owner = ?5
                 WHERE rid = ?1"
            }
        }
    }
}

impl SqliteTxn<'_> {
    /// Holds `write` back, merged with the invocation's write held already.
    pub(crate) fn defer_status(&mut self, write: StatusWrite) {
        match self.held_status.get_mut().entry(write.rid) {
            Entry::Occupied(mut held) => held.get_mut().merge(write),
            Entry::Vacant(slot) => {
                slot.insert(write);
            }
        }
    }

    /// Sends the held status writes (before a statement on the rows, and
    /// when the section ends).
    pub(crate) fn flush_status(&self) -> Result<()> {
        if self.held_status.borrow().is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut *self.held_status.borrow_mut());
        for (_, w) in held {
            self.send_status(w)?;
        }
        Ok(())
    }

    fn send_status(&self, w: StatusWrite) -> Result<()> {
        let op = "writing a status";
        let owner = w.owner.as_ref().map(|o| o.as_deref());
        let final_at = w.final_at.flatten();
        let mut args: Vec<&dyn ToSql> = vec![&w.rid, &w.code, &w.at];
        if w.final_at.is_some() {
            args.push(&final_at);
        }
        if let Some(owner) = &owner {
            args.push(owner);
        }
        self.conn
            .prepare_cached(w.sql())
            .and_then(|mut stmt| stmt.execute(args.as_slice()))
            .map_err(|e| self.ctx.err(e, op, inv(&w.id)))?;
        Ok(())
    }
}
