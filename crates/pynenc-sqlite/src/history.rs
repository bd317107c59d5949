//! History, outcomes and the claims recovery looks at, as SQL.

use pynenc_model::{
    HistoryEntry, HistoryStep, InvocationId, InvocationOutcome, RunnerId, TaskError, Timestamp,
};
use pynenc_store::{OwnedClaim, Result};
use rusqlite::params;

use crate::codes::{owned_running, status_code};
use crate::error::{inv, Key};
use crate::txn::{limit, SqliteTxn};

impl SqliteTxn<'_> {
    /// See [`pynenc_store::StoreTxn::append_history`].
    pub(crate) fn sql_append_history(&mut self, entry: HistoryStep<'_>) -> Result<()> {
        let rid = self.rid_or_not_found(entry.invocation_id)?;
        let owner = self.opt_name_id(entry.owner.map(RunnerId::as_str))?;
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
                entry.timestamp.as_micros(),
                context
            ],
        )?;
        Ok(())
    }

    /// See [`pynenc_store::StoreTxn::get_history`].
    pub(crate) fn sql_get_history(&mut self, id: &InvocationId) -> Result<Vec<HistoryEntry>> {
        let rid = self.rid_or_not_found(id)?;
        let op = "reading history";
        let key = inv(id);
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
                invocation_id: *id,
                status: self.parse_status(id.as_str(), status)?,
                owner: owner.map(RunnerId::from),
                actor: RunnerId::from(actor.unwrap_or_default()),
                timestamp: Timestamp::from_micros(timestamp_us),
                execution_context,
            });
        }
        Ok(out)
    }

    /// See [`pynenc_store::StoreTxn::get_outcome`].
    pub(crate) fn sql_get_outcome(
        &mut self,
        id: &InvocationId,
    ) -> Result<Option<InvocationOutcome>> {
        let row: Option<(i64, Option<String>, Option<String>)> = self.opt_row(
            "SELECT i.status, o.result, o.error FROM invocations AS i
                 LEFT JOIN outcomes AS o ON o.rid = i.rid
                 WHERE i.app = ?1 AND i.invocation_id = ?2",
            "reading an outcome",
            inv(id),
            params![self.app(), id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        row.map(|(status, result, error)| {
            let error = error
                .map(|j| {
                    serde_json::from_str::<TaskError>(&j)
                        .map_err(|e| self.ctx.corrupt_by(id.as_str(), "error", e))
                })
                .transpose()?;
            Ok(InvocationOutcome {
                status: self.parse_status(id.as_str(), status)?,
                result,
                error,
            })
        })
        .transpose()
    }

    /// See [`pynenc_store::StoreTxn::owned_claims_before`].
    pub(crate) fn sql_owned_claims_before(
        &mut self,
        before: Timestamp,
        max: usize,
    ) -> Result<Vec<OwnedClaim>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let op = "finding claimed invocations";
        let mut stmt = self.stmt(
            concat!(
                "SELECT invocation_id, status, owner, status_at_us FROM invocations
                 WHERE app = ?1 AND ",
                owned_running!(),
                " AND status_at_us < ?2 ORDER BY status_at_us, rid LIMIT ?3"
            ),
            op,
            Key::None,
        )?;
        let rows = stmt
            .query_map(params![self.app(), before.as_micros(), limit(max)], |r| {
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
            out.push(OwnedClaim {
                invocation_id: self.parse_id(&id)?,
                status: self.status_record(&id, status, owner)?,
                since: Timestamp::from_micros(at),
            });
        }
        Ok(out)
    }
}
