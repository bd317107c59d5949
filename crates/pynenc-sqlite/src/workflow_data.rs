//! The data of workflows (table `workflow_data`: per invocation row, key →
//! value), deleted with the invocation.

use pynenc_model::InvocationId;
use pynenc_store::Result;
use rusqlite::params;

use crate::error::inv;
use crate::txn::SqliteTxn;

impl SqliteTxn<'_> {
    /// Sets `key` of the workflow `id` (with `if_absent`, only when unset);
    /// the value it holds after.
    pub(crate) fn write_workflow_data(
        &mut self,
        id: &InvocationId,
        key: &str,
        value: &str,
        if_absent: bool,
    ) -> Result<String> {
        let rid = {
            let ctx = self.ctx;
            self.row(id)?.ok_or_else(|| ctx.not_found(id))?.rid
        };
        let op = "writing workflow data";
        if if_absent {
            self.exec(
                "INSERT INTO workflow_data (rid, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (rid, key) DO NOTHING",
                op,
                inv(id),
                params![rid, key, value],
            )?;
            let kept: Option<String> = self.opt_row(
                "SELECT value FROM workflow_data WHERE rid = ?1 AND key = ?2",
                op,
                inv(id),
                params![rid, key],
                |r| r.get(0),
            )?;
            return Ok(kept.unwrap_or_else(|| value.to_string()));
        }
        self.exec(
            "INSERT INTO workflow_data (rid, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (rid, key) DO UPDATE SET value = excluded.value",
            op,
            inv(id),
            params![rid, key, value],
        )?;
        Ok(value.to_string())
    }

    /// The value of `key` of the workflow `id` (none for an unknown one).
    pub(crate) fn read_workflow_data(
        &mut self,
        id: &InvocationId,
        key: &str,
    ) -> Result<Option<String>> {
        let Some(rid) = self.row(id)?.map(|r| r.rid) else {
            return Ok(None);
        };
        self.opt_row(
            "SELECT value FROM workflow_data WHERE rid = ?1 AND key = ?2",
            "reading workflow data",
            inv(id),
            params![rid, key],
            |r| r.get(0),
        )
    }
}
