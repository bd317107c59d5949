//! The invocation rows: reading them into the group's view, inserting
//! them, writing statuses (held, see [`crate::pending`]) with their
//! counters and task totals, deleting them (with their reuses and workflow
//! data; the totals stay).

use std::sync::Arc;

use pynenc_model::{
    run_time_bucket, InvocationId, InvocationOutcome, InvocationRecord, InvocationStatus,
    StatusRecord, TaskCounter, TaskError, Timestamp, TotalKey,
};
use pynenc_store::Result;

use crate::pending::{code, Extras, NewRow, StatusWrite};
use crate::txn::{tables, PgTxn, Row};

impl PgTxn<'_> {
    /// A row from its columns (status, owner, running key, waited, task,
    /// error kind, whether a cancel was asked), starting at `at`.
    fn row_from(&self, id: &str, r: &tokio_postgres::Row, at: usize) -> Result<Row> {
        Ok(Row {
            status: self.status_record(id, r.get(at), r.get(at + 1))?,
            running_key: r.get(at + 2),
            waited: r.get(at + 3),
            task: r.get(at + 4),
            error_kind: r.get(at + 5),
            cancel_asked: r.get(at + 6),
        })
    }

    /// The group's view of an invocation, read on first use.
    pub(crate) fn row(&mut self, id: &InvocationId) -> Result<Option<&mut Row>> {
        if !self.g.rows.contains_key(id) {
            // a row the group has not seen has no held writes: no flush
            let app = self.app();
            let found = self.query_opt(
                "SELECT status, owner, running_key, waited, task, error_kind, \
                     cancel_owner IS NOT NULL \
                 FROM pynenc_invocations WHERE app = $1 AND invocation_id = $2",
                &[&app, &id.as_str()],
                "reading an invocation",
                tables::NONE,
            )?;
            let Some(r) = found else {
                return Ok(None);
            };
            let row = self.row_from(id.as_str(), &r, 0)?;
            self.g.rows.insert(*id, row);
        }
        Ok(self.g.rows.get_mut(id))
    }

    /// Reads the rows (and records) of the invocations in `ids` the group
    /// has not seen, in one statement.
    pub(crate) fn read_rows(&mut self, ids: &[InvocationId]) -> Result<()> {
        let missing: Vec<&str> = ids
            .iter()
            .filter(|id| !self.g.rows.contains_key(id))
            .map(InvocationId::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let app = self.app();
        let rows = self.query_over(
            "SELECT i.invocation_id, i.status, i.owner, i.running_key, i.waited, i.task, \
                 i.error_kind, i.cancel_owner IS NOT NULL, r.record \
             FROM UNNEST($2::text[]) AS u(id) \
             JOIN pynenc_invocations AS i ON i.app = $1 AND i.invocation_id = u.id \
             LEFT JOIN pynenc_records AS r \
                 ON r.app = i.app AND r.invocation_id = i.invocation_id",
            missing.len(),
            &[&app, &missing],
            "reading invocations",
            tables::NONE,
        )?;
        self.take_rows(&rows)?;
        Ok(())
    }

    /// The ids of rows read as `invocation_id`, the columns of a row and
    /// the record (columns missing for an invocation that no longer
    /// exists); the group's view learns those it had not seen.
    pub(crate) fn take_rows(&mut self, rows: &[tokio_postgres::Row]) -> Result<Vec<InvocationId>> {
        self.take_rows_at(rows, 0)
    }

    /// [`PgTxn::take_rows`] of rows whose columns start at `at`.
    pub(crate) fn take_rows_at(
        &mut self,
        rows: &[tokio_postgres::Row],
        at: usize,
    ) -> Result<Vec<InvocationId>> {
        let mut ids = Vec::with_capacity(rows.len());
        for r in rows {
            let text: &str = r.get(at);
            let id = self.parse_id(text)?;
            ids.push(id);
            if self.g.rows.contains_key(&id) || r.get::<_, Option<i16>>(at + 1).is_none() {
                continue;
            }
            let row = self.row_from(text, r, at + 1)?;
            if let Some(json) = r.get::<_, Option<String>>(at + 8) {
                self.g.record_texts.insert(id, json);
            }
            self.g.rows.insert(id, row);
        }
        Ok(ids)
    }

    /// The status, result and error of each of `ids`, in one statement.
    pub(crate) fn outcomes_of(
        &mut self,
        ids: &[InvocationId],
    ) -> Result<Vec<Option<InvocationOutcome>>> {
        let texts: Vec<&str> = ids.iter().map(InvocationId::as_str).collect();
        let app = self.app();
        let rows = self.query_over(
            "SELECT i.invocation_id, i.status, i.result, i.error \
             FROM UNNEST($2::text[]) AS u(id) \
             JOIN pynenc_invocations AS i ON i.app = $1 AND i.invocation_id = u.id",
            texts.len(),
            &[&app, &texts],
            "reading outcomes",
            tables::INVOCATIONS,
        )?;
        let mut found = rustc_hash::FxHashMap::default();
        for r in &rows {
            let text: &str = r.get(0);
            let error = r
                .get::<_, Option<&str>>(3)
                .map(|j| {
                    serde_json::from_str::<TaskError>(j)
                        .map_err(|e| self.ctx.corrupt(text, "error", e))
                })
                .transpose()?;
            let outcome = InvocationOutcome {
                status: self.parse_status(text, r.get(1))?,
                result: r.get(2),
                error,
            };
            found.insert(text, outcome);
        }
        Ok(texts.iter().map(|t| found.remove(t)).collect())
    }

    /// Puts back at the head of the queue, in their order, the ids taken
    /// ahead of a [`pynenc_store::StoreTxn::dequeue`] that did not use them.
    pub(crate) fn put_back_taken(&mut self) -> Result<()> {
        let taken = self.g.taken.take().unwrap_or_default();
        for id in taken.iter().rev() {
            pynenc_store::StoreTxn::enqueue_front(self, id)?;
        }
        Ok(())
    }

    /// Deletes an invocation and everything attached to it, its reuses and
    /// workflow data included (its task's totals stay: only the counts by
    /// status lose it).
    pub(crate) fn delete_row(&mut self, id: &InvocationId) -> Result<()> {
        if self.row(id)?.is_none() {
            return Ok(());
        }
        let Some(row) = self.g.rows.remove(id) else {
            return Ok(());
        };
        self.ctx.seen.forget(id);
        self.g.records.remove(id);
        self.g.record_texts.remove(id);
        self.g.callees.clear();
        // a read after this group finds nothing
        self.g.outcomes.remove(id);
        self.g.effects.outcomes.retain(|(o, _)| o != id);
        self.g
            .pending
            .count(&row.task, row.status.status, row.error_kind.as_deref(), -1);
        // after the held writes, which may name it
        let app = self.app();
        let text = id.as_str();
        let statements = [
            "DELETE FROM pynenc_records WHERE app = $1 AND invocation_id = $2",
            "DELETE FROM pynenc_reuses WHERE app = $1 AND invocation_id = $2",
            "DELETE FROM pynenc_workflow_data WHERE app = $1 AND invocation_id = $2",
            "DELETE FROM pynenc_invocations WHERE app = $1 AND invocation_id = $2",
            "DELETE FROM pynenc_waits WHERE app = $1 AND (waiter = $2 OR waited = $2)",
            "DELETE FROM pynenc_edges WHERE app = $1 AND caller_invocation_id = $2",
        ];
        let op = "deleting an invocation";
        let prepared = statements
            .iter()
            .map(|sql| self.conn.prepared(sql))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.fail(e, op))?;
        let client = &self.conn.client;
        let deletes = async {
            let sent = prepared
                .iter()
                .map(|stmt| async move { client.execute(stmt, &[&app, &text]).await });
            futures::future::join_all(sent)
                .await
                .into_iter()
                .collect::<std::result::Result<Vec<u64>, _>>()
        };
        self.g.wrote = true;
        self.pipeline(tables::ALL, op, deletes)?;
        self.g.effects.finals.push(*id);
        self.g.effects.changed.push(*id);
        Ok(())
    }

    /// Stores a new invocation (held until its table is read, see [`Pending`]).
    pub(crate) fn insert_row(
        &mut self,
        record: &Arc<InvocationRecord>,
        status: &StatusRecord,
    ) -> Result<()> {
        let id = &record.invocation_id;
        let created = record.created_at.as_micros();
        let row = NewRow {
            id: *id,
            task: record.call.task_id.as_str().to_string(),
            code: code(status.status),
            owner: status.owner.as_ref().map(|o| o.as_str().to_string()),
            created,
            at: created,
            due: record.scheduled_at.map_or(0, Timestamp::as_micros),
            registration_key: record.concurrency.registration_key.clone(),
            running_key: record.concurrency.running_key.clone(),
            final_at: status.status.is_final().then_some(created),
            parent: record
                .parent_invocation_id
                .as_ref()
                .map(|p| p.as_str().to_string()),
            call_id: record.call.call_id().as_str().to_string(),
            record: record.to_json()?,
            extras: Extras::default(),
        };
        self.g.pending.insert(row);
        let task = record.call.task_id.as_str();
        self.g.pending.count(task, status.status, None, 1);
        self.g
            .pending
            .total(task, TotalKey::Counter(TaskCounter::Routed), 1);
        self.g.rows.insert(
            *id,
            Row {
                status: status.clone(),
                task: record.call.task_id.as_str().to_string(),
                running_key: record.concurrency.running_key.clone(),
                waited: false,
                error_kind: None,
                cancel_asked: false,
            },
        );
        self.g.records.insert(*id, record.clone());
        Ok(())
    }

    /// Writes a status (held, merged with the invocation's other status
    /// writes of the group), its counters, and the task total of the new
    /// status ([`TaskCounter::of_status`]; every write counts, as in the
    /// other backends).
    pub(crate) fn write_status(
        &mut self,
        id: &InvocationId,
        status: &StatusRecord,
        now: Timestamp,
    ) -> Result<()> {
        let ctx = self.ctx;
        let row = self.row(id)?.ok_or_else(|| ctx.not_found(id))?;
        let old = std::mem::replace(&mut row.status, status.clone());
        let task = row.task.clone();
        let kind = row.error_kind.clone();
        let was_final = old.status.is_final();
        let is_final = status.status.is_final();
        let clear_cancel = is_final && row.cancel_asked;
        if clear_cancel {
            row.cancel_asked = false;
        }
        let write = StatusWrite {
            code: code(status.status),
            at: now.as_micros(),
            owner: (old.owner != status.owner)
                .then(|| status.owner.as_ref().map(|o| o.as_str().to_string())),
            final_at: (was_final != is_final).then(|| is_final.then_some(now.as_micros())),
            clear_cancel,
            clear_waited: false,
            extras: Extras::default(),
        };
        self.g.pending.status(id, write);
        if old.status != status.status {
            self.g.pending.count(&task, old.status, kind.as_deref(), -1);
            self.g
                .pending
                .count(&task, status.status, kind.as_deref(), 1);
        }
        if let Some(counter) = TaskCounter::of_status(status.status) {
            self.g.pending.total(&task, TotalKey::Counter(counter), 1);
        }
        Ok(())
    }

    /// Adds a run of `micros` microseconds to the run times of the task of
    /// invocation `id`: one to its bucket, `micros` to the sum (held with
    /// the counters).
    pub(crate) fn count_run_time(&mut self, id: &InvocationId, micros: u64) -> Result<()> {
        let ctx = self.ctx;
        let task = self.row(id)?.ok_or_else(|| ctx.not_found(id))?.task.clone();
        let pending = &mut self.g.pending;
        pending.total(&task, TotalKey::RunTimeBucket(run_time_bucket(micros)), 1);
        pending.total(&task, TotalKey::RunTimeSum, micros);
        Ok(())
    }

    /// Records the kind of the invocation's error (the failure counters
    /// follow it if it is `FAILED` already).
    pub(crate) fn set_error_kind(&mut self, id: &InvocationId, kind: &str) -> Result<()> {
        let ctx = self.ctx;
        let row = self.row(id)?.ok_or_else(|| ctx.not_found(id))?;
        if row.error_kind.as_deref() == Some(kind) {
            return Ok(());
        }
        let old = row.error_kind.replace(kind.to_string());
        let (task, status) = (row.task.clone(), row.status.status);
        if status == InvocationStatus::Failed {
            self.g.pending.count(&task, status, old.as_deref(), -1);
            self.g.pending.count(&task, status, Some(kind), 1);
        }
        self.g.pending.error_kinds.insert(*id, kind.to_string());
        self.g.pending.hold(tables::INVOCATIONS);
        Ok(())
    }
}
