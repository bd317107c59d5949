//! The primitives of [`StoreTxn`] as SQL statements in the group transaction.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use pynenc_model::{
    CallId, HistoryEntry, HistoryStep, InvocationId, InvocationOutcome, InvocationRecord,
    InvocationStatus, ReuseRecord, RunnerId, RunnerInfo, SerializationError, StatusRecord,
    TaskError, Timestamp, TriggerRecord,
};
use pynenc_store::codes::FINAL_CODES;
use pynenc_store::{OwnedClaim, Result, StoreTxn};

use crate::pending::{code, HistoryLine};
use crate::queue_head::{FRONT_POSITION, QUEUE_HEAD};
use crate::txn::{tables, PgTxn};

/// Deletes every row of an app (`$APP`).
const PURGE_APP: &str = include_str!("sql/purge_app.sql");

/// Puts an invocation at the front of the queue (see [`FRONT_POSITION`]).
static ENQUEUE_FRONT: LazyLock<String> = LazyLock::new(|| {
    format!("INSERT INTO pynenc_queue (app, seq, invocation_id) SELECT $1, {FRONT_POSITION}, $2")
});

/// Deletes the queue entries at the positions of `h` (a CTE of `seq`s),
/// as the CTE `q` of what was taken.
const TAKE_HEAD: &str = "q AS (DELETE FROM pynenc_queue AS d USING h \
     WHERE d.app = $1 AND d.seq = h.seq RETURNING d.seq, d.invocation_id)";

/// The columns read of what `q` took (its status row and record, then its
/// position), with their `FROM`.
const TAKEN_ROWS: &str = "q.invocation_id, i.status, i.owner, i.running_key, i.waited, i.task, \
     i.error_kind, i.cancel_owner IS NOT NULL, r.record, q.seq \
     FROM q \
     LEFT JOIN pynenc_invocations AS i ON i.app = $1 AND i.invocation_id = q.invocation_id \
     LEFT JOIN pynenc_records AS r ON r.app = $1 AND r.invocation_id = q.invocation_id";

/// Takes the head of the queue (see [`QUEUE_HEAD`]) and reads the rows and
/// records of what it took; the last column is the position.
static DEQUEUE: LazyLock<String> = LazyLock::new(|| {
    format!("WITH h AS MATERIALIZED ({QUEUE_HEAD}), {TAKE_HEAD} SELECT {TAKEN_ROWS} ORDER BY q.seq")
});

/// The waited invocations available for a run, oldest first; when there are
/// none, takes the head of the queue instead (as [`DEQUEUE`]).
static BLOCKING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH b AS (SELECT invocation_id, status, owner, running_key, waited, task, \
                 error_kind, cancel_owner IS NOT NULL AS asked, created_at_us \
                 FROM pynenc_invocations \
                 WHERE app = $1 AND waited AND status IN (1, 4, 12) \
                 ORDER BY created_at_us, invocation_id LIMIT $2), \
             h AS MATERIALIZED (SELECT seq FROM ({QUEUE_HEAD}) AS hh \
                 WHERE NOT EXISTS (SELECT 1 FROM b)), \
             {TAKE_HEAD} \
             SELECT TRUE, b.invocation_id, b.status, b.owner, b.running_key, b.waited, b.task, \
                 b.error_kind, b.asked, r.record, b.created_at_us \
             FROM b \
             LEFT JOIN pynenc_records AS r \
                 ON r.app = $1 AND r.invocation_id = b.invocation_id \
             UNION ALL \
             SELECT FALSE, {TAKEN_ROWS}"
    )
});

/// A SQL `LIMIT` for `max`.
fn limit(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}

impl StoreTxn for PgTxn<'_> {
    fn insert_invocation(
        &mut self,
        record: &Arc<InvocationRecord>,
        status: &StatusRecord,
    ) -> Result<()> {
        self.insert_row(record, status)
    }

    fn get_invocation(&mut self, id: &InvocationId) -> Result<Option<Arc<InvocationRecord>>> {
        if let Some(record) = self.g.records.get(id) {
            return Ok(Some(record.clone()));
        }
        if let Some(json) = self.g.record_texts.remove(id) {
            let record = self.parse_record(id.as_str(), &json)?;
            self.g.records.insert(*id, record.clone());
            return Ok(Some(record));
        }
        let app = self.app();
        let found = self.query_opt(
            "SELECT record FROM pynenc_records WHERE app = $1 AND invocation_id = $2",
            &[&app, &id.as_str()],
            "reading an invocation",
            tables::NONE,
        )?;
        let Some(row) = found else {
            return Ok(None);
        };
        let record = self.parse_record(id.as_str(), row.get(0))?;
        self.g.records.insert(*id, record.clone());
        Ok(Some(record))
    }

    fn get_status(&mut self, id: &InvocationId) -> Result<Option<StatusRecord>> {
        Ok(self.row(id)?.map(|r| r.status.clone()))
    }

    fn running_key_of(&mut self, id: &InvocationId) -> Result<Option<String>> {
        Ok(self.row(id)?.and_then(|r| r.running_key.clone()))
    }

    fn put_status(
        &mut self,
        id: &InvocationId,
        status: &StatusRecord,
        now: Timestamp,
    ) -> Result<()> {
        self.write_status(id, status, now)?;
        self.g.effects.changed.push(*id);
        Ok(())
    }

    fn append_history(&mut self, step: HistoryStep<'_>) -> Result<()> {
        let id = step.invocation_id;
        self.g.pending.history(&step).map_err(|e| {
            SerializationError::serialize(format_args!("history entry of invocation {id}"), e)
        })?;
        Ok(())
    }

    fn get_history(&mut self, id: &InvocationId) -> Result<Vec<HistoryEntry>> {
        let app = self.app();
        let found = self.query_opt(
            "SELECT history FROM pynenc_invocations WHERE app = $1 AND invocation_id = $2",
            &[&app, &id.as_str()],
            "reading a history",
            tables::INVOCATIONS,
        )?;
        let Some(found) = found else {
            return Ok(Vec::new());
        };
        // a step reads the clock before its group waits for the app's
        // lock, so a step of another writer that waited can carry a time a
        // few µs before the step it follows: the entries come in the order
        // they were written, each dated no earlier than the one before it
        let mut last = i64::MIN;
        found
            .get::<_, &str>(0)
            .lines()
            .map(|line| {
                let (code, owner, actor, at, context): HistoryLine<String> =
                    serde_json::from_str(line)
                        .map_err(|e| self.ctx.corrupt(id.as_str(), "history", e))?;
                last = last.max(at);
                Ok(HistoryEntry {
                    invocation_id: *id,
                    status: self.parse_status(id.as_str(), code)?,
                    owner: owner.map(RunnerId::from),
                    actor: RunnerId::from(actor),
                    timestamp: Timestamp::from_micros(last),
                    execution_context: context,
                })
            })
            .collect()
    }

    fn get_retries(&mut self, id: &InvocationId) -> Result<u32> {
        let app = self.app();
        let found = self.query_opt(
            "SELECT retries FROM pynenc_invocations WHERE app = $1 AND invocation_id = $2",
            &[&app, &id.as_str()],
            "reading retries",
            tables::INVOCATIONS,
        )?;
        let n: i32 = found.ok_or_else(|| self.ctx.not_found(id))?.get(0);
        Ok(u32::try_from(n).unwrap_or(0))
    }

    fn increment_retries(&mut self, id: &InvocationId) -> Result<u32> {
        let app = self.app();
        let found = self.query_opt(
            "UPDATE pynenc_invocations SET retries = retries + 1 \
             WHERE app = $1 AND invocation_id = $2 RETURNING retries",
            &[&app, &id.as_str()],
            "counting a retry",
            tables::INVOCATIONS,
        )?;
        let n: i32 = found.ok_or_else(|| self.ctx.not_found(id))?.get(0);
        Ok(u32::try_from(n).unwrap_or(0))
    }

    fn add_run_time(&mut self, id: &InvocationId, micros: u64) -> Result<()> {
        self.count_run_time(id, micros)
    }

    fn add_reuse(&mut self, id: &InvocationId, reuse: &ReuseRecord) -> Result<()> {
        self.write_reuse(id, reuse)
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

    fn set_result(&mut self, id: &InvocationId, result: String) -> Result<()> {
        let Some(row) = self.row(id)? else {
            return Err(self.ctx.not_found(id));
        };
        // after a retry the row keeps the error that caused it: not known whole
        if row.error_kind.is_none() {
            self.g.outcomes.insert(*id, (Some(result.clone()), None));
        } else {
            self.g.outcomes.remove(id);
        }
        self.g.pending.result(id, result);
        Ok(())
    }

    fn set_error(&mut self, id: &InvocationId, error: &TaskError) -> Result<()> {
        if self.row(id)?.is_none() {
            return Err(self.ctx.not_found(id));
        }
        let json = serde_json::to_string(error).map_err(|e| {
            SerializationError::serialize(format_args!("error of invocation {id}"), e)
        })?;
        self.g.pending.error(id, json);
        // a result is only ever written with a final SUCCESS: none before this
        self.g.outcomes.insert(*id, (None, Some(error.clone())));
        self.set_error_kind(id, &error.kind)
    }

    fn get_outcome(&mut self, id: &InvocationId) -> Result<Option<InvocationOutcome>> {
        // status, result and error are one row's: one statement
        Ok(self.outcomes_of(std::slice::from_ref(id))?.pop().flatten())
    }

    fn get_outcomes(&mut self, ids: &[InvocationId]) -> Result<Vec<Option<InvocationOutcome>>> {
        self.outcomes_of(ids)
    }

    fn list_invocation_ids(&mut self) -> Result<Vec<InvocationId>> {
        let app = self.app();
        self.ids(
            "SELECT invocation_id FROM pynenc_invocations WHERE app = $1 ORDER BY invocation_id",
            &[&app],
            "listing invocations",
            tables::INVOCATIONS,
        )
    }

    fn find_registered(&mut self, registration_key: &str) -> Result<Option<InvocationId>> {
        let app = self.app();
        self.first_id(
            "SELECT invocation_id FROM pynenc_invocations \
                 WHERE app = $1 AND registration_key = $2 AND final_at_us IS NULL \
                     AND status = 1 \
                 ORDER BY created_at_us, invocation_id LIMIT 1",
            &[&app, &registration_key],
            "looking up a registration key",
            tables::INVOCATIONS,
        )
    }

    fn running_key_in_use(&mut self, running_key: &str) -> Result<bool> {
        let app = self.app();
        let rows = self.query(
            "SELECT 1 FROM pynenc_invocations WHERE app = $1 AND running_key = $2 \
                 AND status IN (5, 7, 8, 9) LIMIT 1",
            &[&app, &running_key],
            "looking up a running key",
            tables::INVOCATIONS,
        )?;
        Ok(!rows.is_empty())
    }

    fn park_controlled(&mut self, running_key: &str, id: &InvocationId) -> Result<()> {
        let app = self.app();
        self.exec(
            "INSERT INTO pynenc_controlled (app, running_key, invocation_id) VALUES ($1, $2, $3)",
            &[&app, &running_key, &id.as_str()],
            "parking an invocation",
            tables::NONE,
        )?;
        Ok(())
    }

    fn take_controlled(&mut self, running_key: &str) -> Result<Vec<InvocationId>> {
        let app = self.app();
        let rows = self.query(
            "DELETE FROM pynenc_controlled WHERE app = $1 AND running_key = $2 \
             RETURNING seq, invocation_id",
            &[&app, &running_key],
            "taking parked invocations",
            tables::NONE,
        )?;
        let mut taken: Vec<(i64, &str)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        taken.sort_unstable_by_key(|(seq, _)| *seq);
        taken.into_iter().map(|(_, id)| self.parse_id(id)).collect()
    }

    fn enqueue(&mut self, id: &InvocationId) -> Result<()> {
        self.g.queue_drained = false;
        self.g.pending.enqueue(id);
        self.g.effects.enqueued = true;
        Ok(())
    }

    fn enqueue_front(&mut self, id: &InvocationId) -> Result<()> {
        self.g.queue_drained = false;
        let app = self.app();
        self.exec(
            &ENQUEUE_FRONT,
            &[&app, &id.as_str()],
            "queueing an invocation first",
            tables::QUEUE,
        )?;
        self.g.effects.enqueued = true;
        Ok(())
    }

    /// Takes the head of the queue and reads the rows and records of what
    /// it took, in one statement (the head is read first, then deleted by
    /// key: a plan that stays a few index lookups whatever the table's
    /// statistics say) (or hands over what
    /// [`StoreTxn::blocking_candidates`] took).
    fn dequeue(&mut self, max: usize) -> Result<Vec<InvocationId>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        if let Some(mut ids) = self.g.taken.take() {
            let rest = ids.split_off(max.min(ids.len()));
            self.g.taken = Some(rest);
            self.put_back_taken()?;
            return Ok(ids);
        }
        if self.g.queue_drained {
            return Ok(Vec::new());
        }
        if self.g.own_queue {
            return Ok(self.dequeue_own(max));
        }
        let app = self.app();
        let from = self.queue_from();
        let rows = self.query_taking(
            &DEQUEUE,
            &[&app, &limit(max), &from],
            "taking from the queue",
            tables::QUEUE,
        )?;
        let taken: Vec<i64> = rows.iter().map(|r| r.get(9)).collect();
        self.queue_read(max, &taken);
        self.take_rows(&rows)
    }

    fn queue_len(&mut self) -> Result<usize> {
        let app = self.app();
        let row = self.query_opt(
            "SELECT COUNT(*) FROM pynenc_queue WHERE app = $1",
            &[&app],
            "counting the queue",
            tables::QUEUE,
        )?;
        Ok(row.map_or(0, |r| usize::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }

    /// Marks the waited invocations (blocking control) and records who
    /// waits on them (external waiters, `None`, are not recorded).
    fn add_waits(&mut self, waiter: Option<&InvocationId>, waited: &[InvocationId]) -> Result<()> {
        self.read_rows(waited)?;
        let mut mark = Vec::new();
        let mut known = Vec::new();
        for id in waited {
            let Some(row) = self.g.rows.get_mut(id) else {
                continue;
            };
            if !row.waited {
                row.waited = true;
                mark.push(id.as_str());
            }
            known.push(id.as_str());
        }
        let app = self.app();
        if !mark.is_empty() {
            self.exec_over(
                "UPDATE pynenc_invocations AS i SET waited = TRUE \
                 FROM UNNEST($2::text[]) AS u(id) \
                 WHERE i.app = $1 AND i.invocation_id = u.id",
                mark.len(),
                &[&app, &mark],
                "recording a wait",
                tables::INVOCATIONS,
            )?;
        }
        if let (Some(w), false) = (waiter, known.is_empty()) {
            self.exec(
                "INSERT INTO pynenc_waits (app, waited, waiter) \
                 SELECT $1, u.id, $3 FROM UNNEST($2::text[]) AS u(id) ON CONFLICT DO NOTHING",
                &[&app, &known, &w.as_str()],
                "recording a wait",
                tables::WAITS,
            )?;
        }
        Ok(())
    }

    /// The waited invocations available for a run; when there are none,
    /// the same statement takes up to `max` from the head of the queue,
    /// for the [`StoreTxn::dequeue`] that follows (a pick-up then costs one
    /// round trip for both).
    fn blocking_candidates(&mut self, max: usize) -> Result<Vec<InvocationId>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.put_back_taken()?;
        // every available invocation, a waited one too, is queued
        if self.g.queue_drained {
            return Ok(Vec::new());
        }
        if self.g.own_queue {
            // what the group queued: none waited (it read their rows or
            // made them), or the queue is read as usual
            let rows = &self.g.rows;
            let waited = self
                .g
                .pending
                .enqueued()
                .iter()
                .any(|id| rows.get(id).is_none_or(|r| r.waited));
            if !waited {
                return Ok(Vec::new());
            }
        }
        // the held status writes matter only if they are of waited
        // invocations (marking one waited is written at once)
        let reads = if self.g.rows.values().any(|r| r.waited) {
            tables::INVOCATIONS | tables::QUEUE
        } else {
            tables::QUEUE
        };
        let app = self.app();
        let from = self.queue_from();
        let rows = self.query_taking(
            &BLOCKING,
            &[&app, &limit(max), &from],
            "finding waited invocations",
            reads,
        )?;
        // column 10 orders each part: creation time of the waited ones,
        // queue position of those taken
        let (mut waited, mut taken): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|r| r.get::<_, bool>(0));
        waited.sort_by(|a, b| {
            (a.get::<_, i64>(10), a.get::<_, &str>(1))
                .cmp(&(b.get::<_, i64>(10), b.get::<_, &str>(1)))
        });
        taken.sort_by_key(|r| r.get::<_, i64>(10));
        let positions: Vec<i64> = taken.iter().map(|r| r.get(10)).collect();
        if waited.is_empty() {
            self.queue_read(max, &positions);
        }
        let candidates = self.take_rows_at(&waited, 1)?;
        // the queue was read only when no waited invocation was found
        self.g.taken = if candidates.is_empty() {
            Some(self.take_rows_at(&taken, 1)?)
        } else {
            None
        };
        Ok(candidates)
    }

    fn release_waited(&mut self, waited: &InvocationId) -> Result<()> {
        let Some(row) = self.row(waited)? else {
            return Ok(());
        };
        if !row.waited {
            return Ok(());
        }
        row.waited = false;
        self.g.pending.release_waited(waited);
        Ok(())
    }

    fn add_edge(
        &mut self,
        caller_invocation_id: &InvocationId,
        caller_call_id: &CallId,
        callee_call_id: &CallId,
    ) -> Result<()> {
        self.g.pending.add_edge(
            caller_invocation_id,
            caller_call_id.as_str(),
            callee_call_id.as_str(),
        );
        if let Some(known) = self.g.callees.get_mut(caller_call_id) {
            known.push(callee_call_id.clone());
        }
        Ok(())
    }

    fn callees_of(&mut self, call_id: &CallId) -> Result<Vec<CallId>> {
        if !self.g.callees.contains_key(call_id) {
            self.prefetch_callees(std::slice::from_ref(call_id))?;
        }
        let mut callees = self.g.callees.get(call_id).cloned().unwrap_or_default();
        callees.sort_unstable();
        callees.dedup();
        Ok(callees)
    }

    fn remove_edges_of(&mut self, caller_invocation_id: &InvocationId) -> Result<()> {
        self.g.pending.remove_edges(caller_invocation_id);
        // which calls lose edges is not known here: read them again
        self.g.callees.clear();
        Ok(())
    }

    /// The edges leaving each of `call_ids`, in one statement.
    fn prefetch_callees(&mut self, call_ids: &[CallId]) -> Result<()> {
        let missing: Vec<&str> = call_ids
            .iter()
            .filter(|c| !self.g.callees.contains_key(*c))
            .map(CallId::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let app = self.app();
        let rows = self.query_over(
            "SELECT e.caller_call_id, e.callee_call_id \
             FROM (SELECT DISTINCT id FROM UNNEST($2::text[]) AS u(id)) AS u \
             JOIN pynenc_edges AS e ON e.app = $1 AND e.caller_call_id = u.id",
            missing.len(),
            &[&app, &missing],
            "reading call edges",
            tables::EDGES,
        )?;
        for id in &missing {
            self.g.callees.insert(CallId::from(*id), Vec::new());
        }
        for r in &rows {
            let from = CallId::from(r.get::<_, String>(0));
            self.g
                .callees
                .entry(from)
                .or_default()
                .push(CallId::from(r.get::<_, String>(1)));
        }
        Ok(())
    }

    fn due_scheduled(&mut self, now: Timestamp, max: usize) -> Result<Vec<InvocationId>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let app = self.app();
        self.ids(
            "SELECT invocation_id FROM pynenc_invocations \
             WHERE app = $1 AND status = 0 AND due_at_us <= $2 \
             ORDER BY due_at_us, invocation_id LIMIT $3",
            &[&app, &now.as_micros(), &limit(max)],
            "finding due scheduled invocations",
            tables::INVOCATIONS,
        )
    }

    fn final_before(
        &mut self,
        statuses: &[InvocationStatus],
        before: Timestamp,
        max: usize,
    ) -> Result<Vec<InvocationId>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let codes: Vec<i16> = if statuses.is_empty() {
            FINAL_CODES.iter().map(|c| *c as i16).collect()
        } else {
            statuses
                .iter()
                .filter(|s| s.is_final())
                .map(|s| code(*s))
                .collect()
        };
        let app = self.app();
        self.ids(
            "SELECT invocation_id FROM pynenc_invocations \
             WHERE app = $1 AND status = ANY($2::smallint[]) AND final_at_us IS NOT NULL \
                 AND final_at_us < $3 \
             ORDER BY final_at_us, invocation_id LIMIT $4",
            &[&app, &codes, &before.as_micros(), &limit(max)],
            "finding final invocations",
            tables::INVOCATIONS,
        )
    }

    fn delete_invocation(&mut self, id: &InvocationId) -> Result<()> {
        self.delete_row(id)
    }

    fn purge(&mut self) -> Result<()> {
        self.ctx.seen.clear();
        self.g.pending.clear();
        self.g.rows.clear();
        self.g.records.clear();
        self.g.record_texts.clear();
        self.g.callees.clear();
        let sql = PURGE_APP.replace("$APP", &self.app().to_string());
        let client = &self.conn.client;
        self.g.wrote = true;
        self.pipeline(tables::NONE, "purging the app", client.batch_execute(&sql))?;
        self.g.effects.purged = true;
        Ok(())
    }

    fn find_active(&mut self, registration_key: &str) -> Result<Option<InvocationId>> {
        let app = self.app();
        self.first_id(
            "SELECT invocation_id FROM pynenc_invocations \
                 WHERE app = $1 AND registration_key = $2 AND final_at_us IS NULL \
                     AND status <> 0 \
                 ORDER BY created_at_us, invocation_id LIMIT 1",
            &[&app, &registration_key],
            "looking up a registration key",
            tables::INVOCATIONS,
        )
    }

    fn find_success_since(
        &mut self,
        registration_key: &str,
        since: Timestamp,
    ) -> Result<Option<InvocationId>> {
        let app = self.app();
        self.first_id(
            "SELECT invocation_id FROM pynenc_invocations \
                 WHERE app = $1 AND registration_key = $2 AND status = 13 \
                     AND final_at_us >= $3 \
                 ORDER BY final_at_us DESC, invocation_id DESC LIMIT 1",
            &[&app, &registration_key, &since.as_micros()],
            "looking up a registration key",
            tables::INVOCATIONS,
        )
    }

    fn request_cancel(
        &mut self,
        id: &InvocationId,
        owner: &RunnerId,
        error: &TaskError,
    ) -> Result<()> {
        let json = serde_json::to_string(error).map_err(|e| {
            SerializationError::serialize(format_args!("cancel of invocation {id}"), e)
        })?;
        let ctx = self.ctx;
        let row = self.row(id)?.ok_or_else(|| ctx.not_found(id))?;
        row.cancel_asked = true;
        let app = self.app();
        self.exec(
            "UPDATE pynenc_invocations SET cancel_owner = $3, cancel_error = $4 \
             WHERE app = $1 AND invocation_id = $2",
            &[&app, &id.as_str(), &owner.as_str(), &json],
            "asking for a cancel",
            tables::INVOCATIONS,
        )?;
        Ok(())
    }

    fn cancel_requested(&mut self, id: &InvocationId) -> Result<Option<TaskError>> {
        match self.row(id)? {
            Some(row) if row.cancel_asked => {}
            _ => return Ok(None),
        }
        let app = self.app();
        let found = self.query_opt(
            "SELECT cancel_error FROM pynenc_invocations WHERE app = $1 AND invocation_id = $2",
            &[&app, &id.as_str()],
            "reading a cancel request",
            tables::INVOCATIONS,
        )?;
        found
            .and_then(|r| r.get::<_, Option<String>>(0))
            .map(|j| {
                serde_json::from_str::<TaskError>(&j)
                    .map_err(|e| self.ctx.corrupt(id.as_str(), "cancel request", e))
            })
            .transpose()
    }

    fn cancel_requests_of(&mut self, runner: &RunnerId) -> Result<Vec<InvocationId>> {
        let app = self.app();
        self.ids(
            "SELECT invocation_id FROM pynenc_invocations \
             WHERE app = $1 AND cancel_owner = $2 ORDER BY invocation_id",
            &[&app, &runner.as_str()],
            "reading cancel requests",
            tables::INVOCATIONS,
        )
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
        if max == 0 {
            return Ok(Vec::new());
        }
        let app = self.app();
        let rows = self.query(
            "SELECT invocation_id, status, owner, status_at_us FROM pynenc_invocations \
             WHERE app = $1 AND status IN (5, 7, 8, 9) AND status_at_us < $2 \
             ORDER BY status_at_us, invocation_id LIMIT $3",
            &[&app, &before.as_micros(), &limit(max)],
            "finding claimed invocations",
            tables::INVOCATIONS,
        )?;
        rows.iter()
            .map(|r| {
                let text: &str = r.get(0);
                Ok(OwnedClaim {
                    invocation_id: self.parse_id(text)?,
                    status: self.status_record(text, r.get(1), r.get(2))?,
                    since: Timestamp::from_micros(r.get(3)),
                })
            })
            .collect()
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
        self.g.effects.finals.push(*id);
        if let (Some((result, error)), Some(row)) =
            (self.g.outcomes.remove(id), self.g.rows.get(id))
        {
            let outcome = InvocationOutcome {
                status: row.status.status,
                result,
                error,
            };
            self.g.effects.outcomes.push((*id, outcome));
        }
    }

    fn prefetch(&mut self, ids: &[InvocationId]) -> Result<()> {
        self.prefetch_seen(ids)
    }

    fn redone_if_lost(&mut self) {
        self.g.section_redone = true;
    }
}
