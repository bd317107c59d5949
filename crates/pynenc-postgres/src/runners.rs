//! Runners and leases: what each runner says of itself, heartbeats, and
//! leases held by one runner at a time.

use std::time::Duration;

use pynenc_model::{RunnerId, RunnerInfo, Timestamp};
use pynenc_store::Result;

use crate::txn::{tables, PgTxn};

impl PgTxn<'_> {
    /// Records what a runner says of itself, and `now` as its heartbeat.
    pub(crate) fn write_runner(&mut self, info: &RunnerInfo, now: Timestamp) -> Result<()> {
        let running = serde_json::to_string(&info.running).map_err(|e| {
            self.ctx
                .fail(format!("cannot write runner {}: {e}", info.runner_id))
        })?;
        let app = self.app();
        self.exec(
            "INSERT INTO pynenc_runners (app, runner_id, kind, host, pid, started_us, slots, running) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (app, runner_id) DO UPDATE SET kind = excluded.kind, \
                 host = excluded.host, pid = excluded.pid, started_us = excluded.started_us, \
                 slots = excluded.slots, running = excluded.running",
            &[
                &app,
                &info.runner_id.as_str(),
                &info.kind,
                &info.host,
                &i64::from(info.pid),
                &info.started_at.as_micros(),
                &i64::from(info.slots),
                &running,
            ],
            "recording a runner",
            tables::NONE,
        )?;
        self.beat(&info.runner_id, now)
    }

    /// Records a runner heartbeat.
    pub(crate) fn beat(&mut self, runner_id: &RunnerId, now: Timestamp) -> Result<()> {
        let app = self.app();
        self.exec(
            "INSERT INTO pynenc_heartbeats (app, runner_id, beat_us) VALUES ($1, $2, $3) \
             ON CONFLICT (app, runner_id) DO UPDATE SET beat_us = excluded.beat_us",
            &[&app, &runner_id.as_str(), &now.as_micros()],
            "recording a heartbeat",
            tables::NONE,
        )?;
        Ok(())
    }

    /// The last heartbeat of a runner.
    pub(crate) fn last_beat(&mut self, runner_id: &RunnerId) -> Result<Option<Timestamp>> {
        let app = self.app();
        let found = self.query_opt(
            "SELECT beat_us FROM pynenc_heartbeats WHERE app = $1 AND runner_id = $2",
            &[&app, &runner_id.as_str()],
            "reading a heartbeat",
            tables::NONE,
        )?;
        Ok(found.map(|r| Timestamp::from_micros(r.get(0))))
    }

    /// Forgets a runner's heartbeat and what it said of itself.
    pub(crate) fn forget_runner(&mut self, runner_id: &RunnerId) -> Result<()> {
        let app = self.app();
        for sql in [
            "DELETE FROM pynenc_heartbeats WHERE app = $1 AND runner_id = $2",
            "DELETE FROM pynenc_runners WHERE app = $1 AND runner_id = $2",
        ] {
            self.exec(
                sql,
                &[&app, &runner_id.as_str()],
                "removing a runner",
                tables::NONE,
            )?;
        }
        Ok(())
    }

    /// Takes or renews a lease (see [`pynenc_store::StoreTxn::try_lease`]).
    pub(crate) fn take_lease(
        &mut self,
        name: &str,
        holder: &RunnerId,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<bool> {
        let app = self.app();
        let changed = self.exec(
            "INSERT INTO pynenc_leases (app, name, holder, expires_us) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app, name) DO UPDATE \
                 SET holder = excluded.holder, expires_us = excluded.expires_us \
                 WHERE pynenc_leases.holder = excluded.holder \
                     OR pynenc_leases.expires_us <= $5",
            &[
                &app,
                &name,
                &holder.as_str(),
                &(now + ttl).as_micros(),
                &now.as_micros(),
            ],
            "taking a lease",
            tables::NONE,
        )?;
        Ok(changed > 0)
    }
}
