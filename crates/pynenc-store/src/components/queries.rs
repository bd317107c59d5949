//! Queries: what operators ask of an app's invocations and runners.

use async_trait::async_trait;

use pynenc_model::{
    ErrorKindCount, InvocationId, InvocationQuery, InvocationStatus, InvocationSummary,
    LeaseHolder, QueueStats, Reuses, RunnerInfo, StatusCount, TaskId, TaskTotals, TriggerRecord,
    WaitGraph,
};

use crate::error::Result;

/// The read side of the query API. Every answer comes from indexes the
/// backend keeps in the same atomic steps as the statuses: no scan of every
/// invocation, no round trip per invocation. Checking a query (page cap,
/// unknown task) is the caller's job; backends answer what they are asked.
#[async_trait]
pub trait Queries: Send + Sync {
    /// Up to `query.limit` invocations matching every filter, after the
    /// cursor, in the query's order.
    async fn list_invocations(&self, query: &InvocationQuery) -> Result<Vec<InvocationSummary>>;

    /// Counts per task and status of the tasks in `task_ids` (all when
    /// empty); zero counts are left out.
    async fn count_by_status(&self, task_ids: &[TaskId]) -> Result<Vec<StatusCount>>;

    /// Counts of `FAILED` invocations per task and error kind.
    async fn failed_by_kind(&self, task_ids: &[TaskId]) -> Result<Vec<ErrorKindCount>>;

    /// The totals (routed, started, ended, run times) of the tasks in
    /// `task_ids` (all when empty) that have any, by task id; kept across
    /// purges of invocations.
    async fn task_totals(&self, task_ids: &[TaskId]) -> Result<Vec<TaskTotals>>;

    /// The calls registration concurrency folded into an invocation: how
    /// many, and the latest with how their arguments differed (empty for
    /// an unknown invocation).
    async fn reuses(&self, invocation_id: &InvocationId) -> Result<Reuses>;

    /// The current status of each of `invocation_ids`, in order; `None` for
    /// one that does not exist (never stored, or purged). One round trip.
    async fn statuses(
        &self,
        invocation_ids: &[InvocationId],
    ) -> Result<Vec<Option<InvocationStatus>>>;

    /// The queue's depth and its oldest invocation.
    async fn queue_stats(&self) -> Result<QueueStats>;

    /// What an invocation waits on, and what waits on it.
    ///
    /// # Errors
    ///
    /// [`crate::StoreError::NotFound`] for an unknown invocation.
    async fn wait_graph(&self, invocation_id: &InvocationId) -> Result<WaitGraph>;

    /// Every runner that registered and did not leave (live or dead: the
    /// heartbeat tells), with its last heartbeat.
    async fn runners(&self) -> Result<Vec<RunnerInfo>>;

    /// The triggers runners of the app declared, by name.
    async fn triggers(&self) -> Result<Vec<TriggerRecord>>;

    /// The holder of the lease `name`, if it is held.
    async fn lease(&self, name: &str) -> Result<Option<LeaseHolder>>;

    /// The ids of the apps that routed anything to this backend (this app
    /// included once it has), sorted: what an operator connects to.
    async fn app_ids(&self) -> Result<Vec<String>>;
}
