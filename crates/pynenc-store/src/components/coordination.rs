//! Coordination: heartbeats, leases and wake-ups.

use std::time::Duration;

use async_trait::async_trait;

use pynenc_model::{InvocationId, InvocationStatus, RunnerId, RunnerInfo, TriggerRecord};

use crate::error::Result;

/// What runners tell each other, and how waiting code is woken instead of
/// polling.
#[async_trait]
pub trait Coordination: Send + Sync {
    /// Records that `runner_id` is alive now (runners call it every
    /// `heartbeat_interval_seconds`).
    async fn heartbeat(&self, runner_id: &RunnerId) -> Result<()>;

    /// Records what a runner says of itself (at start and at every
    /// heartbeat, with what it runs now); it counts as a heartbeat.
    async fn register_runner(&self, info: &RunnerInfo) -> Result<()>;

    /// Records the triggers a runner declares (replacing those of the same
    /// names), so that every process of the app lists them.
    async fn register_triggers(&self, triggers: &[TriggerRecord]) -> Result<()>;

    /// Forgets a runner's heartbeat and what it said of itself (on a clean stop).
    async fn remove_heartbeat(&self, runner_id: &RunnerId) -> Result<()>;

    /// Takes or renews the lease `name` for `holder` for `ttl`; returns
    /// whether `holder` holds it. Only one holder at a time.
    async fn try_lease(&self, name: &str, holder: &RunnerId, ttl: Duration) -> Result<bool>;

    /// A counter that changes whenever work may have become available.
    fn work_epoch(&self) -> u64;

    /// Resolves when work may be available (the epoch moved past `epoch`) or
    /// after `timeout`.
    async fn wait_for_work(&self, epoch: u64, timeout: Duration);

    /// Resolves when every invocation in `ids` is final (woken, not re-asked,
    /// where the backend can notify).
    ///
    /// # Errors
    ///
    /// [`crate::StoreError::NotFound`] for an id that does not exist.
    async fn wait_final(&self, ids: &[InvocationId]) -> Result<()>;

    /// Resolves when the status of `id` is no longer `seen` (woken by the
    /// step that changes it where the backend can notify; read again at
    /// adaptive intervals where it cannot, as for other processes of a
    /// SQLite file), or after `timeout`. It says nothing of the new status:
    /// the caller reads it.
    ///
    /// # Errors
    ///
    /// [`crate::StoreError::NotFound`] when `id` does not exist.
    async fn wait_status_change(
        &self,
        id: &InvocationId,
        seen: InvocationStatus,
        timeout: Duration,
    ) -> Result<()>;
}
