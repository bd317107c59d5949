//! The calls registration concurrency folded into an invocation (table
//! `reuses`: per invocation row, numbered from 1, the latest
//! [`REUSES_KEPT`] kept; the total is the largest number).

use pynenc_model::{InvocationId, ReuseRecord, Reuses, REUSES_KEPT};
use pynenc_store::Result;
use rusqlite::params;

use crate::error::{inv, Key};
use crate::txn::SqliteTxn;

impl SqliteTxn<'_> {
    /// Records one more reuse of `id`, dropping those beyond the latest
    /// [`REUSES_KEPT`].
    pub(crate) fn write_reuse(&mut self, id: &InvocationId, reuse: &ReuseRecord) -> Result<()> {
        let rid = {
            let ctx = self.ctx;
            self.row(id)?.ok_or_else(|| ctx.not_found(id))?.rid
        };
        let op = "recording a reuse";
        let seq: i64 = self
            .opt_row(
                "INSERT INTO reuses (rid, seq, note)
             VALUES (?1, COALESCE((SELECT MAX(seq) FROM reuses WHERE rid = ?1), 0) + 1, ?2)
             RETURNING seq",
                op,
                inv(id),
                params![rid, reuse.to_text()],
                |r| r.get(0),
            )?
            .unwrap_or(0);
        let kept = i64::try_from(REUSES_KEPT).unwrap_or(i64::MAX);
        if seq > kept {
            self.exec(
                "DELETE FROM reuses WHERE rid = ?1 AND seq <= ?2",
                op,
                inv(id),
                params![rid, seq - kept],
            )?;
        }
        Ok(())
    }

    /// The reuses of `id` (none for an unknown invocation).
    pub(crate) fn read_reuses(&mut self, id: &InvocationId) -> Result<Reuses> {
        let Some(rid) = self.row(id)?.map(|r| r.rid) else {
            return Ok(Reuses::default());
        };
        let op = "reading reuses";
        let mut stmt = self.stmt(
            "SELECT seq, note FROM reuses WHERE rid = ?1 ORDER BY seq",
            op,
            inv(id),
        )?;
        let rows = stmt
            .query_map(params![rid], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.ctx.err(e, op, Key::None))?;
        let mut out = Reuses::default();
        for row in rows {
            let (seq, note) = row.map_err(|e| self.ctx.err(e, op, inv(id)))?;
            out.total = u64::try_from(seq).unwrap_or(0);
            // a note this version cannot read is left out
            out.latest.extend(ReuseRecord::from_text(&note));
        }
        Ok(out)
    }
}
