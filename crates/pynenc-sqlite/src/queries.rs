//! The reads of the query API ([`QueryTxn`]): listings, counts, the
//! queue, the waits, the runners and the leases.

use pynenc_model::{
    ErrorKindCount, InvocationId, InvocationQuery, InvocationSummary, LeaseHolder, Reuses,
    RunnerInfo, StatusCount, TaskId, TaskTotals, Timestamp, TriggerRecord, WaitGraph,
};
use pynenc_store::{QueryTxn, Result};
use rusqlite::params;

use crate::codes::available;
use crate::error::{inv, Key};
use crate::txn::SqliteTxn;

impl QueryTxn for SqliteTxn<'_> {
    fn list_invocations(&mut self, query: &InvocationQuery) -> Result<Vec<InvocationSummary>> {
        self.list(query)
    }

    fn count_by_status(&mut self, task_ids: &[TaskId]) -> Result<Vec<StatusCount>> {
        self.count_by_status_of(task_ids)
    }

    fn failed_by_kind(&mut self, task_ids: &[TaskId]) -> Result<Vec<ErrorKindCount>> {
        self.failed_by_kind_of(task_ids)
    }

    fn reuses_of(&mut self, id: &InvocationId) -> Result<Reuses> {
        self.read_reuses(id)
    }

    fn task_totals(&mut self, task_ids: &[TaskId]) -> Result<Vec<TaskTotals>> {
        self.task_totals_of(task_ids)
    }

    /// The first row of the queue whose invocation is still available for
    /// a run (rows of invocations taken meanwhile are skipped).
    fn queue_oldest(&mut self) -> Result<Option<(InvocationId, Timestamp)>> {
        let found: Option<(String, i64)> = self.opt_row(
            concat!(
                "SELECT q.invocation_id, i.created_at_us FROM queue AS q
                 JOIN invocations AS i ON i.app = q.app AND i.invocation_id = q.invocation_id
                 WHERE q.app = ?1 AND ",
                // (the queue has no column `status`)
                available!(),
                " ORDER BY q.seq LIMIT 1"
            ),
            "reading the queue",
            Key::None,
            params![self.app()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        found
            .map(|(id, at)| Ok((self.parse_id(&id)?, Timestamp::from_micros(at))))
            .transpose()
    }

    /// The waits recorded between invocations that are not final: an
    /// invocation that became final waits on nothing and is waited by
    /// nobody.
    fn waits_of(&mut self, id: &InvocationId) -> Result<WaitGraph> {
        let found: Option<(i64, bool)> = self.opt_row(
            "SELECT rid, final_at_us IS NOT NULL FROM invocations
             WHERE app = ?1 AND invocation_id = ?2",
            "reading waits",
            inv(id),
            params![self.app(), id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let Some((rid, false)) = found else {
            return Ok(WaitGraph::default());
        };
        let waiting_on = self.ids(
            "SELECT i.invocation_id FROM waits AS w JOIN invocations AS i ON i.rid = w.waited
             WHERE w.waiter = ?1 AND i.final_at_us IS NULL ORDER BY w.waited",
            "reading waits",
            inv(id),
            params![rid],
        )?;
        let waited_by = self.ids(
            "SELECT i.invocation_id FROM waits AS w JOIN invocations AS i ON i.rid = w.waiter
             WHERE w.waited = ?1 AND i.final_at_us IS NULL ORDER BY w.waiter",
            "reading waits",
            inv(id),
            params![rid],
        )?;
        Ok(WaitGraph {
            waiting_on,
            waited_by,
        })
    }

    fn list_runners(&mut self) -> Result<Vec<RunnerInfo>> {
        self.runners()
    }

    fn list_triggers(&mut self) -> Result<Vec<TriggerRecord>> {
        self.triggers()
    }

    fn get_lease(&mut self, name: &str) -> Result<Option<LeaseHolder>> {
        self.lease(name)
    }

    fn app_ids(&mut self) -> Result<Vec<String>> {
        self.apps()
    }
}
