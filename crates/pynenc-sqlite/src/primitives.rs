//! The primitives of [`StoreTxn`] as SQL statements on one transaction.

use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{
    CallId, HistoryEntry, HistoryStep, InvocationId, InvocationOutcome, InvocationRecord,
    InvocationStatus, ReuseRecord, RunnerId, RunnerInfo, SerializationError, StatusRecord,
    TaskError, Timestamp, TriggerRecord,
};
use pynenc_store::{OwnedClaim, Result, StoreTxn};
use rusqlite::params;

use crate::codes::{available, owned_running};
use crate::error::{inv, Key};
use crate::txn::{limit, SqliteTxn};

/// Deletes every row of an app (`?1`), children first.
const PURGE_APP: &str = include_str!("sql/purge_app.sql");

impl StoreTxn for SqliteTxn<'_> {
    fn insert_invocation(
        &mut self,
        record: &Arc<InvocationRecord>,
        status: &StatusRecord,
    ) -> Result<()> {
        self.insert_row(record, status)
    }

    fn get_invocation(&mut self, id: &InvocationId) -> Result<Option<Arc<InvocationRecord>>> {
        let op = "reading an invocation";
        let key = inv(id);
        let json: Option<String> = match self.rows.get(id) {
            Some(row) => self.opt_row(
                "SELECT record FROM records WHERE rid = ?1",
                op,
                key,
                params![row.rid],
                |r| r.get(0),
            )?,
            None => self.opt_row(
                "SELECT r.record FROM invocations AS i JOIN records AS r ON r.rid = i.rid
                 WHERE i.app = ?1 AND i.invocation_id = ?2",
                op,
                key,
                params![self.app(), id.as_str()],
                |r| r.get(0),
            )?,
        };
        json.map(|j| {
            InvocationRecord::from_json(&j)
                .map(Arc::new)
                .map_err(|e| self.ctx.corrupt_by(id.as_str(), "record", e))
        })
        .transpose()
    }

    fn get_status(&mut self, id: &InvocationId) -> Result<Option<StatusRecord>> {
        Ok(self.row(id)?.map(|r| r.status.clone()))
    }

    fn running_key_of(&mut self, id: &InvocationId) -> Result<Option<String>> {
        Ok(self.row(id)?.and_then(|r| r.running_key.clone()))
    }

    /// Time-ordered ids: invocations created together have neighbouring
    /// keys in the `invocation_id` index.
    fn new_invocation_id(&mut self) -> InvocationId {
        InvocationId::time_ordered()
    }

    fn put_status(
        &mut self,
        id: &InvocationId,
        status: &StatusRecord,
        now: Timestamp,
    ) -> Result<()> {
        self.effects.changed.push(*id);
        self.write_status(id, status, now)
    }

    fn append_history(&mut self, entry: HistoryStep<'_>) -> Result<()> {
        self.sql_append_history(entry)
    }

    fn get_history(&mut self, id: &InvocationId) -> Result<Vec<HistoryEntry>> {
        self.sql_get_history(id)
    }

    fn get_retries(&mut self, id: &InvocationId) -> Result<u32> {
        let n: Option<i64> = self.opt_row(
            "SELECT retries FROM invocations WHERE app = ?1 AND invocation_id = ?2",
            "reading retries",
            inv(id),
            params![self.app(), id.as_str()],
            |r| r.get(0),
        )?;
        let n = n.ok_or_else(|| self.ctx.not_found(id))?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    fn put_workflow_data(
        &mut self,
        id: &InvocationId,
        key: &str,
        value: &str,
        if_absent: bool,
    ) -> Result<String> {
        self.write_workflow_data(id, key, value, if_absent)
    }

    fn get_workflow_data(&mut self, id: &InvocationId, key: &str) -> Result<Option<String>> {
        self.read_workflow_data(id, key)
    }

    fn add_reuse(&mut self, id: &InvocationId, reuse: &ReuseRecord) -> Result<()> {
        self.write_reuse(id, reuse)
    }

    fn add_run_time(&mut self, id: &InvocationId, micros: u64) -> Result<()> {
        SqliteTxn::add_run_time(self, id, micros)
    }

    fn increment_retries(&mut self, id: &InvocationId) -> Result<u32> {
        let n: Option<i64> = self.opt_row(
            "UPDATE invocations SET retries = retries + 1
                 WHERE app = ?1 AND invocation_id = ?2 RETURNING retries",
            "counting a retry",
            inv(id),
            params![self.app(), id.as_str()],
            |r| r.get(0),
        )?;
        let n = n.ok_or_else(|| self.ctx.not_found(id))?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    fn set_result(&mut self, id: &InvocationId, result: String) -> Result<()> {
        let rid = self.rid_or_not_found(id)?;
        self.exec(
            "INSERT INTO outcomes (rid, result) VALUES (?1, ?2)
             ON CONFLICT (rid) DO UPDATE SET result = excluded.result",
            "storing a result",
            inv(id),
            params![rid, result],
        )?;
        Ok(())
    }

    fn set_error(&mut self, id: &InvocationId, error: &TaskError) -> Result<()> {
        let rid = self.rid_or_not_found(id)?;
        let json = serde_json::to_string(error).map_err(|e| {
            SerializationError::serialize(format_args!("error of invocation {id}"), e)
        })?;
        self.exec(
            "INSERT INTO outcomes (rid, error) VALUES (?1, ?2)
             ON CONFLICT (rid) DO UPDATE SET error = excluded.error",
            "storing an error",
            inv(id),
            params![rid, json],
        )?;
        self.set_error_kind(id, &error.kind)
    }

    fn get_outcome(&mut self, id: &InvocationId) -> Result<Option<InvocationOutcome>> {
        self.sql_get_outcome(id)
    }

    fn list_invocation_ids(&mut self) -> Result<Vec<InvocationId>> {
        self.ids(
            "SELECT invocation_id FROM invocations WHERE app = ?1 ORDER BY rid",
            "listing invocations",
            Key::None,
            params![self.app()],
        )
    }

    fn find_registered(&mut self, registration_key: &str) -> Result<Option<InvocationId>> {
        Ok(self
            .ids(
                "SELECT invocation_id FROM invocations
                 WHERE app = ?1 AND registration_key = ?2 AND final_at_us IS NULL AND status = 1
                 ORDER BY created_at_us, rid LIMIT 1",
                "looking up a registration key",
                Key::Of("key", registration_key),
                params![self.app(), registration_key],
            )?
            .into_iter()
            .next())
    }

    fn running_key_in_use(&mut self, running_key: &str) -> Result<bool> {
        let op = "looking up a running key";
        let key = Key::Of("key", running_key);
        self.stmt(
            concat!(
                "SELECT EXISTS (SELECT 1 FROM invocations WHERE app = ?1 AND running_key = ?2 AND ",
                owned_running!(),
                ")"
            ),
            op,
            key,
        )?
        .query_row(params![self.app(), running_key], |r| r.get(0))
        .map_err(|e| self.ctx.err(e, op, key))
    }

    fn park_controlled(&mut self, running_key: &str, id: &InvocationId) -> Result<()> {
        self.sql_park_controlled(running_key, id)
    }

    fn take_controlled(&mut self, running_key: &str) -> Result<Vec<InvocationId>> {
        self.sql_take_controlled(running_key)
    }

    fn enqueue(&mut self, id: &InvocationId) -> Result<()> {
        self.sql_enqueue(id)
    }

    fn enqueue_front(&mut self, id: &InvocationId) -> Result<()> {
        self.sql_enqueue_front(id)
    }

    fn dequeue(&mut self, max: usize) -> Result<Vec<InvocationId>> {
        self.sql_dequeue(max)
    }

    fn queue_len(&mut self) -> Result<usize> {
        self.sql_queue_len()
    }

    /// Marks the waited invocations (blocking control) and records who
    /// waits on them (external waiters, `None`, are not recorded).
    fn add_waits(&mut self, waiter: Option<&InvocationId>, waited: &[InvocationId]) -> Result<()> {
        let waiter_rid = match waiter {
            Some(w) => self.rid(w)?,
            None => None,
        };
        for id in waited {
            let Some(row) = self.row(id)? else {
                continue;
            };
            let rid = row.rid;
            if !row.waited {
                row.waited = true;
                self.exec(
                    "UPDATE invocations SET waited = 1 WHERE rid = ?1",
                    "recording a wait",
                    inv(id),
                    params![rid],
                )?;
            }
            if let Some(w) = waiter_rid {
                self.exec(
                    "INSERT OR IGNORE INTO waits (waited, waiter) VALUES (?1, ?2)",
                    "recording a wait",
                    inv(id),
                    params![rid, w],
                )?;
            }
        }
        Ok(())
    }

    fn blocking_candidates(&mut self, max: usize) -> Result<Vec<InvocationId>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.ids(
            concat!(
                "SELECT invocation_id FROM invocations WHERE app = ?1 AND waited = 1 AND ",
                available!(),
                " ORDER BY created_at_us, rid LIMIT ?2"
            ),
            "finding waited invocations",
            Key::None,
            params![self.app(), limit(max)],
        )
    }

    fn release_waited(&mut self, waited: &InvocationId) -> Result<()> {
        let Some(row) = self.row(waited)? else {
            return Ok(());
        };
        if !row.waited {
            return Ok(());
        }
        row.waited = false;
        let rid = row.rid;
        let op = "releasing waits";
        self.exec(
            "UPDATE invocations SET waited = 0 WHERE rid = ?1",
            op,
            inv(waited),
            params![rid],
        )?;
        self.exec(
            "DELETE FROM waits WHERE waited = ?1",
            op,
            inv(waited),
            params![rid],
        )?;
        Ok(())
    }

    fn add_edge(
        &mut self,
        caller_invocation_id: &InvocationId,
        caller_call_id: &CallId,
        callee_call_id: &CallId,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO edges (app, caller_invocation_id, caller_call_id, callee_call_id)
             VALUES (?1, ?2, ?3, ?4)",
            "recording a call edge",
            inv(caller_invocation_id),
            params![
                self.app(),
                caller_invocation_id.as_str(),
                caller_call_id.as_str(),
                callee_call_id.as_str()
            ],
        )?;
        Ok(())
    }

    fn callees_of(&mut self, call_id: &CallId) -> Result<Vec<CallId>> {
        self.texts(
            "SELECT DISTINCT callee_call_id FROM edges WHERE app = ?1 AND caller_call_id = ?2",
            "reading call edges",
            Key::Of("call", call_id),
            params![self.app(), call_id.as_str()],
            |id| CallId::from(id),
        )
    }

    fn remove_edges_of(&mut self, caller_invocation_id: &InvocationId) -> Result<()> {
        self.exec(
            "DELETE FROM edges WHERE app = ?1 AND caller_invocation_id = ?2",
            "removing call edges",
            inv(caller_invocation_id),
            params![self.app(), caller_invocation_id.as_str()],
        )?;
        Ok(())
    }

    fn due_scheduled(&mut self, now: Timestamp, max: usize) -> Result<Vec<InvocationId>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.ids(
            "SELECT invocation_id FROM invocations
             WHERE app = ?1 AND status = 0 AND due_at_us <= ?2
             ORDER BY due_at_us, rid LIMIT ?3",
            "finding due scheduled invocations",
            Key::None,
            params![self.app(), now.as_micros(), limit(max)],
        )
    }

    fn final_before(
        &mut self,
        statuses: &[InvocationStatus],
        before: Timestamp,
        max: usize,
    ) -> Result<Vec<InvocationId>> {
        self.finals_before(statuses, before, max)
    }

    fn delete_invocation(&mut self, id: &InvocationId) -> Result<()> {
        self.delete_row(id)
    }

    fn purge(&mut self) -> Result<()> {
        let key = Key::Of("app", &self.ctx.app_id);
        let op = "purging the app";
        let fail = |e| self.ctx.err(e, op, key);
        self.flush_status()?;
        // SQLite's own parser splits the file into statements
        let mut batch = rusqlite::Batch::new(self.conn, PURGE_APP);
        while let Some(mut statement) = batch.next().map_err(fail)? {
            statement.execute(params![self.app()]).map_err(fail)?;
        }
        self.rows.clear();
        self.deltas.clear();
        self.effects.purged = true;
        Ok(())
    }

    fn find_active(&mut self, registration_key: &str) -> Result<Option<InvocationId>> {
        Ok(self
            .ids(
                "SELECT invocation_id FROM invocations
                 WHERE app = ?1 AND registration_key = ?2 AND final_at_us IS NULL AND status <> 0
                 ORDER BY created_at_us, rid LIMIT 1",
                "looking up a registration key",
                Key::Of("key", registration_key),
                params![self.app(), registration_key],
            )?
            .into_iter()
            .next())
    }

    fn find_success_since(
        &mut self,
        registration_key: &str,
        since: Timestamp,
    ) -> Result<Option<InvocationId>> {
        Ok(self
            .ids(
                "SELECT invocation_id FROM invocations
                 WHERE app = ?1 AND registration_key = ?2 AND status = 13 AND final_at_us >= ?3
                 ORDER BY final_at_us DESC, rid DESC LIMIT 1",
                "looking up a registration key",
                Key::Of("key", registration_key),
                params![self.app(), registration_key, since.as_micros()],
            )?
            .into_iter()
            .next())
    }

    fn request_cancel(
        &mut self,
        id: &InvocationId,
        owner: &RunnerId,
        error: &TaskError,
    ) -> Result<()> {
        self.ask_cancel(id, owner, error)
    }

    fn cancel_requested(&mut self, id: &InvocationId) -> Result<Option<TaskError>> {
        self.cancel_asked(id)
    }

    fn cancel_requests_of(&mut self, runner: &RunnerId) -> Result<Vec<InvocationId>> {
        self.cancels_of(runner)
    }

    fn put_runner(&mut self, info: &RunnerInfo, now: Timestamp) -> Result<()> {
        self.write_runner(info, now)
    }

    fn put_trigger(&mut self, trigger: &TriggerRecord) -> Result<()> {
        self.write_trigger(trigger)
    }

    fn put_heartbeat(&mut self, runner_id: &RunnerId, now: Timestamp) -> Result<()> {
        self.beat(runner_id, now)
    }

    fn get_heartbeat(&mut self, runner_id: &RunnerId) -> Result<Option<Timestamp>> {
        self.last_beat(runner_id)
    }

    fn remove_heartbeat(&mut self, runner_id: &RunnerId) -> Result<()> {
        self.forget_runner(runner_id)
    }

    fn owned_claims_before(&mut self, before: Timestamp, max: usize) -> Result<Vec<OwnedClaim>> {
        self.sql_owned_claims_before(before, max)
    }

    fn try_lease(
        &mut self,
        name: &str,
        holder: &RunnerId,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<bool> {
        self.take_lease(name, holder, now, ttl)
    }

    fn on_final(&mut self, id: &InvocationId) {
        self.effects.finals.push(*id);
    }
}
