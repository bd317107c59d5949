//! The data of workflow invocations (table `pynenc_workflow_data`): a text
//! value per invocation and key, what a workflow sets and what it recorded
//! on its first run.
//!
//! Only these statements write the table, and never through the held
//! writes of [`crate::pending`]; they read no other table (whether the
//! invocation exists is asked of the group's view), so no held write needs
//! sending first. Steps of an app are serialised by its advisory lock, so
//! a key is never written by two steps at once. Deleting an invocation
//! ([`PgTxn::delete_row`]) and the app purge remove its rows.

use pynenc_model::InvocationId;
use pynenc_store::Result;

use crate::txn::{tables, PgTxn};

/// Sets key `$3` of invocation `$2` of app `$1` to `$4`, whatever it
/// held; the value it holds after.
const PUT: &str = "INSERT INTO pynenc_workflow_data (app, invocation_id, key, value) \
    VALUES ($1, $2, $3, $4) \
    ON CONFLICT (app, invocation_id, key) DO UPDATE SET value = excluded.value \
    RETURNING value";

/// Sets key `$3` of invocation `$2` of app `$1` to `$4` only when it has
/// no value; the value it holds after. The `SELECT` sees the table as it
/// was before the insert: it finds the kept value exactly when the insert
/// did nothing, so one row comes back either way.
const PUT_IF_ABSENT: &str = "WITH added AS (\
        INSERT INTO pynenc_workflow_data (app, invocation_id, key, value) \
        VALUES ($1, $2, $3, $4) \
        ON CONFLICT (app, invocation_id, key) DO NOTHING RETURNING value) \
    SELECT value FROM added \
    UNION ALL \
    SELECT value FROM pynenc_workflow_data \
    WHERE app = $1 AND invocation_id = $2 AND key = $3";

/// The value of key `$3` of invocation `$2` of app `$1` (read-only: it
/// also runs on the query readers).
const GET: &str = "SELECT value FROM pynenc_workflow_data \
    WHERE app = $1 AND invocation_id = $2 AND key = $3";

impl PgTxn<'_> {
    /// Sets `key` of invocation `id` to `value` (with `if_absent`, only
    /// when it has none) in one statement, and returns the value it holds
    /// after; not found if the invocation does not exist.
    pub(crate) fn write_workflow_data(
        &mut self,
        id: &InvocationId,
        key: &str,
        value: &str,
        if_absent: bool,
    ) -> Result<String> {
        if self.row(id)?.is_none() {
            return Err(self.ctx.not_found(id));
        }
        let app = self.app();
        let sql = if if_absent { PUT_IF_ABSENT } else { PUT };
        let found = self.query_opt(
            sql,
            &[&app, &id.as_str(), &key, &value],
            "writing workflow data",
            tables::NONE,
        )?;
        match found {
            Some(row) => Ok(row.get(0)),
            None => Err(self.ctx.fail(format_args!(
                "writing workflow data: key '{key}' of invocation {id} has no value once set"
            ))),
        }
    }

    /// The value of `key` of invocation `id`; none when it has none or
    /// the invocation does not exist.
    pub(crate) fn read_workflow_data(
        &mut self,
        id: &InvocationId,
        key: &str,
    ) -> Result<Option<String>> {
        let app = self.app();
        let found = self.query_opt(
            GET,
            &[&app, &id.as_str(), &key],
            "reading workflow data",
            tables::NONE,
        )?;
        Ok(found.map(|row| row.get(0)))
    }
}
