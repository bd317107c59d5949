//! The reuses of invocations (table `pynenc_reuses`): the calls
//! registration concurrency folded into an existing invocation, numbered
//! per invocation from 1 (`seq`), the latest [`REUSES_KEPT`] kept. The
//! total is the largest `seq`, which dropping older rows leaves as it is.
//!
//! Only these statements write the table, and never through the held
//! writes of [`crate::pending`]; they read no other table (whether the
//! invocation exists is asked of the group's view), so no held write needs
//! sending first. Deleting an invocation ([`PgTxn::delete_row`]) and the
//! app purge remove its rows.

use pynenc_model::{InvocationId, ReuseRecord, Reuses, REUSES_KEPT};
use pynenc_store::Result;

use crate::txn::{tables, PgTxn};

/// [`REUSES_KEPT`] as a statement parameter.
fn kept() -> i64 {
    i64::try_from(REUSES_KEPT).unwrap_or(i64::MAX)
}

/// Adds the next reuse of an invocation (`$1` app, `$2` invocation, `$3`
/// the record's text) and drops those that are no longer among the
/// latest `$4`. The `DELETE` sees the table as it was before the insert,
/// which it never needs to drop.
const ADD: &str = "WITH n AS (SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM pynenc_reuses \
        WHERE app = $1 AND invocation_id = $2), \
    added AS (INSERT INTO pynenc_reuses (app, invocation_id, seq, note) \
        SELECT $1, $2, n.seq, $3 FROM n) \
    DELETE FROM pynenc_reuses AS r USING n \
    WHERE r.app = $1 AND r.invocation_id = $2 AND r.seq <= n.seq - $4";

/// The latest `$3` reuses of an invocation, newest first.
const LATEST: &str = "SELECT seq, note FROM pynenc_reuses \
    WHERE app = $1 AND invocation_id = $2 ORDER BY seq DESC LIMIT $3";

impl PgTxn<'_> {
    /// Records one more reuse of invocation `id` (not found if it does
    /// not exist), in one statement.
    pub(crate) fn write_reuse(&mut self, id: &InvocationId, reuse: &ReuseRecord) -> Result<()> {
        if self.row(id)?.is_none() {
            return Err(self.ctx.not_found(id));
        }
        let app = self.app();
        let note = reuse.to_text();
        self.exec(
            ADD,
            &[&app, &id.as_str(), &note, &kept()],
            "recording a reuse",
            tables::NONE,
        )?;
        Ok(())
    }

    /// The reuses of invocation `id`: the total (the largest `seq`) and
    /// the latest, oldest first (rows this version cannot read are left
    /// out); none for an invocation that does not exist.
    pub(crate) fn read_reuses(&mut self, id: &InvocationId) -> Result<Reuses> {
        let app = self.app();
        let rows = self.query(
            LATEST,
            &[&app, &id.as_str(), &kept()],
            "reading reuses",
            tables::NONE,
        )?;
        let total = rows
            .first()
            .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0));
        let latest = rows
            .iter()
            .rev()
            .filter_map(|r| ReuseRecord::from_text(r.get(1)))
            .collect();
        Ok(Reuses { total, latest })
    }
}
