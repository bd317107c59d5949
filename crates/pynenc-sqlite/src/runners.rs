//! Runners, heartbeats, leases and cancel requests.

use std::time::Duration;

use pynenc_model::{
    InvocationId, LeaseHolder, RunnerId, RunnerInfo, SerializationError, TaskError, Timestamp,
};
use pynenc_store::{Result, StoreError};
use rusqlite::params;

use crate::error::{inv, Key};
use crate::txn::SqliteTxn;

/// A `runners` row joined with its heartbeat.
type RunnerRow = (String, String, String, i64, i64, i64, String, i64);

/// The cancel requests of a runner (`?1` app, `?2` runner), read by its
/// poll while it runs anything: the entries of the partial index only.
pub(crate) const CANCELS_OF: &str =
    "SELECT invocation_id FROM invocations INDEXED BY invocations_cancel
     WHERE app = ?1 AND cancel_owner = ?2";

impl SqliteTxn<'_> {
    /// Records a heartbeat of `runner_id` at `now`.
    pub(crate) fn beat(&mut self, runner_id: &RunnerId, now: Timestamp) -> Result<()> {
        self.exec(
            "INSERT INTO heartbeats (app, runner_id, beat_us) VALUES (?1, ?2, ?3)
             ON CONFLICT (app, runner_id) DO UPDATE SET beat_us = excluded.beat_us",
            "recording a heartbeat",
            Key::Of("runner", runner_id),
            params![self.app(), runner_id.as_str(), now.as_micros()],
        )?;
        Ok(())
    }

    /// The last heartbeat of a runner.
    pub(crate) fn last_beat(&mut self, runner_id: &RunnerId) -> Result<Option<Timestamp>> {
        let beat: Option<i64> = self.opt_row(
            "SELECT beat_us FROM heartbeats WHERE app = ?1 AND runner_id = ?2",
            "reading a heartbeat",
            Key::Of("runner", runner_id),
            params![self.app(), runner_id.as_str()],
            |r| r.get(0),
        )?;
        Ok(beat.map(Timestamp::from_micros))
    }

    /// Records what a runner says of itself, and `now` as its heartbeat.
    pub(crate) fn write_runner(&mut self, info: &RunnerInfo, now: Timestamp) -> Result<()> {
        let key = Key::Of("runner", &info.runner_id);
        let running = serde_json::to_string(&info.running).map_err(|e| {
            self.ctx
                .fail_caused(format!("cannot write runner {}", info.runner_id), e)
        })?;
        self.exec(
            "INSERT INTO runners (app, runner_id, kind, host, pid, started_us, slots, running)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (app, runner_id) DO UPDATE SET kind = excluded.kind,
                 host = excluded.host, pid = excluded.pid, started_us = excluded.started_us,
                 slots = excluded.slots, running = excluded.running",
            "recording a runner",
            key,
            params![
                self.app(),
                info.runner_id.as_str(),
                info.kind,
                info.host,
                info.pid,
                info.started_at.as_micros(),
                info.slots,
                running
            ],
        )?;
        self.beat(&info.runner_id, now)
    }

    /// Forgets a runner: its heartbeat and what it said of itself.
    pub(crate) fn forget_runner(&mut self, runner_id: &RunnerId) -> Result<()> {
        let key = Key::Of("runner", runner_id);
        for sql in [
            "DELETE FROM heartbeats WHERE app = ?1 AND runner_id = ?2",
            "DELETE FROM runners WHERE app = ?1 AND runner_id = ?2",
        ] {
            self.exec(
                sql,
                "removing a runner",
                key,
                params![self.app(), runner_id.as_str()],
            )?;
        }
        Ok(())
    }

    /// Every runner that said what it is, with its last heartbeat, by id.
    pub(crate) fn runners(&mut self) -> Result<Vec<RunnerInfo>> {
        let op = "listing runners";
        let mut stmt = self.stmt(
            "SELECT r.runner_id, r.kind, r.host, r.pid, r.started_us, r.slots, r.running,
                    COALESCE(h.beat_us, r.started_us)
             FROM runners AS r
             LEFT JOIN heartbeats AS h ON h.app = r.app AND h.runner_id = r.runner_id
             WHERE r.app = ?1 ORDER BY r.runner_id",
            op,
            Key::None,
        )?;
        let rows = stmt
            .query_map(params![self.app()], |r| r.try_into())
            .map_err(|e| self.ctx.err(e, op, Key::None))?;
        let mut found: Vec<RunnerRow> = Vec::new();
        for row in rows {
            found.push(row.map_err(|e| self.ctx.err(e, op, Key::None))?);
        }
        drop(stmt);
        found
            .into_iter()
            .map(|(id, kind, host, pid, started, slots, running, beat)| {
                let running: Vec<InvocationId> = serde_json::from_str(&running).map_err(|e| {
                    self.ctx
                        .fail_caused(format!("runner {id}: its running invocations"), e)
                })?;
                Ok(RunnerInfo {
                    runner_id: RunnerId::from(id),
                    kind,
                    host,
                    pid: u32::try_from(pid).unwrap_or(0),
                    started_at: Timestamp::from_micros(started),
                    heartbeat_at: Timestamp::from_micros(beat),
                    slots: u32::try_from(slots).unwrap_or(0),
                    running,
                })
            })
            .collect()
    }

    /// The ids of the apps of this file that have invocations, sorted (one
    /// probe of the id index per app).
    pub(crate) fn apps(&mut self) -> Result<Vec<String>> {
        let op = "listing apps";
        let mut stmt = self.stmt(
            "SELECT a.app_id FROM apps AS a
             WHERE EXISTS (SELECT 1 FROM invocations AS i INDEXED BY invocations_id WHERE i.app = a.app)
             ORDER BY a.app_id",
            op,
            Key::None,
        )?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.ctx.err(e, op, Key::None))?;
        let mut found = Vec::new();
        for row in rows {
            found.push(row.map_err(|e| self.ctx.err(e, op, Key::None))?);
        }
        Ok(found)
    }

    /// Takes or renews a lease (see [`pynenc_store::StoreTxn::try_lease`]).
    pub(crate) fn take_lease(
        &mut self,
        name: &str,
        holder: &RunnerId,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<bool> {
        let changed = self.exec(
            "INSERT INTO leases (app, name, holder, expires_us) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (app, name) DO UPDATE
                 SET holder = excluded.holder, expires_us = excluded.expires_us
                 WHERE leases.holder = excluded.holder OR leases.expires_us <= ?5",
            "taking a lease",
            Key::Of("lease", name),
            params![
                self.app(),
                name,
                holder.as_str(),
                (now + ttl).as_micros(),
                now.as_micros()
            ],
        )?;
        Ok(changed > 0)
    }

    /// The holder of a lease as stored (expired or not).
    pub(crate) fn lease(&mut self, name: &str) -> Result<Option<LeaseHolder>> {
        let found: Option<(String, i64)> = self.opt_row(
            "SELECT holder, expires_us FROM leases WHERE app = ?1 AND name = ?2",
            "reading a lease",
            Key::Of("lease", name),
            params![self.app(), name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(found.map(|(holder, expires)| LeaseHolder {
            name: name.to_string(),
            holder: RunnerId::from(holder),
            expires_at: Timestamp::from_micros(expires),
        }))
    }

    /// Asks `owner` to stop the invocation (forgotten once it is final);
    /// `error` names who asked.
    pub(crate) fn ask_cancel(
        &mut self,
        id: &InvocationId,
        owner: &RunnerId,
        error: &TaskError,
    ) -> Result<()> {
        let rid = self.rid_or_not_found(id)?;
        let error = serde_json::to_string(error).map_err(|e| {
            StoreError::Serialization(SerializationError::serialize("cancel error", e))
        })?;
        self.exec(
            "UPDATE invocations SET cancel_owner = ?2, cancel_error = ?3 WHERE rid = ?1",
            "requesting a cancel",
            inv(id),
            params![rid, owner.as_str(), error],
        )?;
        if let Some(row) = self.rows.get_mut(id) {
            row.cancel_asked = true;
        }
        Ok(())
    }

    /// The error of the cancel asked for the invocation (while it is not final).
    pub(crate) fn cancel_asked(&mut self, id: &InvocationId) -> Result<Option<TaskError>> {
        let asked: Option<Option<String>> = self.opt_row(
            "SELECT cancel_error FROM invocations
             WHERE app = ?1 AND invocation_id = ?2 AND cancel_owner IS NOT NULL",
            "reading a cancel request",
            inv(id),
            params![self.app(), id.as_str()],
            |r| r.get(0),
        )?;
        match asked.flatten() {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                StoreError::corrupt_caused(format!("invocation {id}, its cancel request"), e)
            }),
        }
    }

    /// The invocations `runner` was asked to stop, by id.
    pub(crate) fn cancels_of(&mut self, runner: &RunnerId) -> Result<Vec<InvocationId>> {
        // sorted here: an ORDER BY would let SQLite read the app's every
        // row in id order instead of the few entries of the partial index
        let mut ids = self.ids(
            CANCELS_OF,
            "reading cancel requests",
            Key::Of("runner", runner),
            params![self.app(), runner.as_str()],
        )?;
        ids.sort_unstable();
        Ok(ids)
    }
}
