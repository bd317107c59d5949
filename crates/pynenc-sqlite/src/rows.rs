//! The writes of an invocation's row that keep its indexes, its counters
//! and its waits in step: insert, status, error kind, delete.

use std::sync::Arc;

use pynenc_model::{
    run_time_bucket, Call, InvocationId, InvocationRecord, InvocationStatus, StatusRecord,
    TaskCounter, Timestamp, TotalKey,
};
use pynenc_store::Result;
use rusqlite::params;

use crate::codes::{status_code, FINAL_CODES};
use crate::error::{inv, Key};
use crate::status_write::StatusWrite;
use crate::txn::{limit, Row, SqliteTxn};

/// The 32 bytes of a call's argument hash (the part of its call id after `#`).
pub(crate) type CallHash = [u8; 32];

/// The argument hash of `call` (the digits of its call id after the task).
pub(crate) fn call_hash(call: &Call) -> CallHash {
    call.arguments.args_hash()
}

/// The hash spelled by 64 hexadecimal digits.
pub(crate) fn hash_from_hex(digits: &str) -> Option<CallHash> {
    let bytes = digits.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// The hash as the 64 lowercase digits of a call id.
pub(crate) fn hash_to_hex(hash: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(hash.len() * 2);
    for b in hash {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Whether SQLite refused a row because its unique key exists.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

impl SqliteTxn<'_> {
    /// Inserts an invocation (or replaces the row of an existing id, which
    /// keeps its `rid` and so its history).
    pub(crate) fn insert_row(
        &mut self,
        record: &Arc<InvocationRecord>,
        status: &StatusRecord,
    ) -> Result<()> {
        let id = &record.invocation_id;
        let op = "inserting an invocation";
        let key = inv(id);
        let json = record.to_json()?;
        let task = self.name_id(record.call.task_id.as_str())?;
        let hash = call_hash(&record.call);
        let created = record.created_at.as_micros();
        let final_at = status.status.is_final().then_some(created);
        let inserted = self
            .stmt(
                "INSERT INTO invocations (app, invocation_id, task, status, owner, status_at_us,
                     created_at_us, due_at_us, registration_key, running_key, final_at_us,
                     parent, call_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 RETURNING rid",
                op,
                key,
            )?
            .query_row(
                params![
                    self.app(),
                    id.as_str(),
                    task,
                    status_code(status.status),
                    status.owner.as_deref(),
                    created,
                    record.scheduled_at.map_or(0, Timestamp::as_micros),
                    record.concurrency.registration_key,
                    record.concurrency.running_key,
                    final_at,
                    record
                        .parent_invocation_id
                        .as_ref()
                        .map(InvocationId::as_str),
                    &hash[..],
                ],
                |r| r.get::<_, i64>(0),
            );
        let (rid, error_kind) = match inserted {
            Ok(rid) => (rid, None),
            Err(e) if is_unique_violation(&e) => self.replace_row(record, status, task, &hash)?,
            Err(e) => return Err(self.ctx.err(e, op, key)),
        };
        self.exec(
            "INSERT OR REPLACE INTO records (rid, record) VALUES (?1, ?2)",
            op,
            key,
            params![rid, json],
        )?;
        self.deltas.status(task, status.status, error_kind, 1);
        self.deltas
            .total(task, TotalKey::Counter(TaskCounter::Routed), 1);
        self.rows.insert(
            *id,
            Row {
                rid,
                status: status.clone(),
                running_key: record.concurrency.running_key.clone(),
                waited: false,
                task,
                error_kind,
                cancel_asked: false,
            },
        );
        Ok(())
    }

    /// Rewrites the row of an invocation inserted again; its `rid` and
    /// error kind.
    fn replace_row(
        &mut self,
        record: &InvocationRecord,
        status: &StatusRecord,
        task: i64,
        hash: &[u8; 32],
    ) -> Result<(i64, Option<i64>)> {
        let id = &record.invocation_id;
        let (rid, old_status, old_task, error_kind, waited) = {
            let ctx = self.ctx;
            let row = self.row(id)?.ok_or_else(|| ctx.not_found(id))?;
            (
                row.rid,
                row.status.status,
                row.task,
                row.error_kind,
                row.waited,
            )
        };
        self.deltas.status(old_task, old_status, error_kind, -1);
        let created = record.created_at.as_micros();
        let op = "replacing an invocation";
        self.exec(
            "UPDATE invocations SET task = ?2, status = ?3, owner = ?4, status_at_us = ?5,
                 created_at_us = ?5, due_at_us = ?6, registration_key = ?7, running_key = ?8,
                 retries = 0, waited = 0, final_at_us = ?9, parent = ?10, call_hash = ?11,
                 cancel_owner = NULL, cancel_error = NULL
             WHERE rid = ?1",
            op,
            inv(id),
            params![
                rid,
                task,
                status_code(status.status),
                status.owner.as_deref(),
                created,
                record.scheduled_at.map_or(0, Timestamp::as_micros),
                record.concurrency.registration_key,
                record.concurrency.running_key,
                status.status.is_final().then_some(created),
                record
                    .parent_invocation_id
                    .as_ref()
                    .map(InvocationId::as_str),
                &hash[..],
            ],
        )?;
        if waited {
            self.exec(
                "DELETE FROM waits WHERE waited = ?1",
                op,
                inv(id),
                params![rid],
            )?;
        }
        Ok((rid, error_kind))
    }

    /// Writes a status: the columns that change (sent as one update with
    /// the invocation's next status writes of the section, see
    /// `status_write.rs`), and the counters.
    pub(crate) fn write_status(
        &mut self,
        id: &InvocationId,
        status: &StatusRecord,
        now: Timestamp,
    ) -> Result<()> {
        let new = status.status;
        let (rid, old, task, error_kind, cancel_ends) = {
            let ctx = self.ctx;
            let row = self.row(id)?.ok_or_else(|| ctx.not_found(id))?;
            let old = std::mem::replace(&mut row.status, status.clone());
            // a cancel request lasts until the invocation is final
            let cancel_ends = row.cancel_asked && new.is_final();
            row.cancel_asked &= !cancel_ends;
            (row.rid, old, row.task, row.error_kind, cancel_ends)
        };
        let owner_changes = old.owner != status.owner;
        let end_changes = new.is_final() || old.status.is_final();
        self.defer_status(StatusWrite {
            id: *id,
            rid,
            code: status_code(new),
            at: now.as_micros(),
            owner: owner_changes.then(|| status.owner.as_deref().map(str::to_string)),
            final_at: end_changes.then(|| new.is_final().then_some(now.as_micros())),
            clear_cancel: cancel_ends,
        });
        if old.status != new {
            self.deltas.status(task, old.status, error_kind, -1);
            self.deltas.status(task, new, error_kind, 1);
            if let Some(counter) = TaskCounter::of_status(new) {
                self.deltas.total(task, TotalKey::Counter(counter), 1);
            }
        }
        Ok(())
    }

    /// Adds a run time to the totals of the invocation's task.
    pub(crate) fn add_run_time(&mut self, id: &InvocationId, micros: u64) -> Result<()> {
        let task = {
            let ctx = self.ctx;
            self.row(id)?.ok_or_else(|| ctx.not_found(id))?.task
        };
        self.deltas
            .total(task, TotalKey::RunTimeBucket(run_time_bucket(micros)), 1);
        self.deltas.total(
            task,
            TotalKey::RunTimeSum,
            i64::try_from(micros).unwrap_or(i64::MAX),
        );
        Ok(())
    }

    /// Records the kind of the invocation's stored error (moving its
    /// `FAILED` count to the new kind when it is `FAILED` already).
    pub(crate) fn set_error_kind(&mut self, id: &InvocationId, kind: &str) -> Result<()> {
        let kind = self.name_id(kind)?;
        let (rid, task, status, old) = {
            let ctx = self.ctx;
            let row = self.row(id)?.ok_or_else(|| ctx.not_found(id))?;
            let old = row.error_kind.replace(kind);
            (row.rid, row.task, row.status.status, old)
        };
        if old == Some(kind) {
            return Ok(());
        }
        self.exec(
            "UPDATE invocations SET error_kind = ?2 WHERE rid = ?1",
            "storing an error",
            inv(id),
            params![rid, kind],
        )?;
        if status == InvocationStatus::Failed {
            self.deltas.failed_kind(task, old, -1);
            self.deltas.failed_kind(task, Some(kind), 1);
        }
        Ok(())
    }

    /// Deletes an invocation's row and everything attached to it.
    pub(crate) fn delete_row(&mut self, id: &InvocationId) -> Result<()> {
        if self.row(id)?.is_none() {
            return Ok(());
        }
        match self.rows.remove(id) {
            Some(row) => self.delete_known(id, row),
            None => Ok(()),
        }
    }

    fn delete_known(&mut self, id: &InvocationId, row: Row) -> Result<()> {
        let op = "deleting an invocation";
        let key = inv(id);
        let rid = row.rid;
        self.deltas
            .status(row.task, row.status.status, row.error_kind, -1);
        for sql in [
            "DELETE FROM records WHERE rid = ?1",
            "DELETE FROM outcomes WHERE rid = ?1",
            "DELETE FROM history WHERE rid = ?1",
            "DELETE FROM reuses WHERE rid = ?1",
            "DELETE FROM workflow_data WHERE rid = ?1",
            "DELETE FROM invocations WHERE rid = ?1",
            "DELETE FROM waits WHERE waiter = ?1",
        ] {
            self.exec(sql, op, key, params![rid])?;
        }
        if row.waited {
            self.exec("DELETE FROM waits WHERE waited = ?1", op, key, params![rid])?;
        }
        self.exec(
            "DELETE FROM edges WHERE app = ?1 AND caller_invocation_id = ?2",
            op,
            key,
            params![self.app(), id.as_str()],
        )?;
        self.effects.finals.push(*id);
        self.effects.changed.push(*id);
        Ok(())
    }
}

impl SqliteTxn<'_> {
    /// Up to `max` final invocations in `statuses` (every final status when
    /// empty) that ended before `before`, earliest end first: one range of
    /// the `invocations_final` index per status, merged.
    pub(crate) fn finals_before(
        &mut self,
        statuses: &[InvocationStatus],
        before: Timestamp,
        max: usize,
    ) -> Result<Vec<InvocationId>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let codes: Vec<i64> = if statuses.is_empty() {
            FINAL_CODES.to_vec()
        } else {
            statuses
                .iter()
                .filter(|s| s.is_final())
                .map(|s| status_code(*s))
                .collect()
        };
        let op = "finding final invocations";
        let mut found: Vec<(i64, i64, InvocationId)> = Vec::new();
        for code in codes {
            let mut stmt = self.stmt(
                "SELECT final_at_us, rid, invocation_id FROM invocations
                 WHERE app = ?1 AND status = ?2 AND final_at_us < ?3
                 ORDER BY final_at_us, rid LIMIT ?4",
                op,
                Key::None,
            )?;
            let rows = stmt
                .query_map(
                    params![self.app(), code, before.as_micros(), limit(max)],
                    |r| {
                        let id = InvocationId::parse(r.get_ref(2)?.as_str()?);
                        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, id))
                    },
                )
                .map_err(|e| self.ctx.err(e, op, Key::None))?;
            for row in rows {
                let (at, rid, id) = row.map_err(|e| self.ctx.err(e, op, Key::None))?;
                let id = id.map_err(|e| self.bad_id(e))?;
                found.push((at, rid, id));
            }
        }
        found.sort_unstable_by_key(|(at, rid, _)| (*at, *rid));
        Ok(found.into_iter().take(max).map(|(_, _, id)| id).collect())
    }
}
