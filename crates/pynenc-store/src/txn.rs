//! [`StoreTxn`]: the primitive reads and writes of a backend, run inside one
//! atomic section.

use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{
    CallId, DataRef, DataUsage, ErrorKindCount, HistoryEntry, HistoryStep, InvocationId,
    InvocationOutcome, InvocationQuery, InvocationRecord, InvocationStatus, InvocationSummary,
    LeaseHolder, ReuseRecord, Reuses, RunnerId, RunnerInfo, StatusCount, StatusRecord, TaskError,
    TaskId, TaskTotals, Timestamp, TriggerRecord, WaitGraph,
};

use crate::error::Result;

/// An invocation held by a runner, as the recovery step sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedClaim {
    /// The invocation.
    pub invocation_id: InvocationId,
    /// Its status and owner.
    pub status: StatusRecord,
    /// When that status was set.
    pub since: Timestamp,
}

/// The primitive operations of a backend, run inside one atomic section.
///
/// Implementations keep their own indexes consistent in [`StoreTxn::put_status`]
/// and [`StoreTxn::insert_invocation`]: which invocations are `REGISTERED` per
/// registration key, which running keys are held by an invocation in
/// `PENDING`, `RUNNING`, `PAUSED` or `RESUMED`, when an invocation became
/// final, and which scheduled invocations are due. The rules themselves are
/// in [`crate::engine`]; a primitive never checks a transition.
///
/// The query indexes are kept in the same primitives: counts per task and
/// status (and of `FAILED` per error kind, from the error stored before the
/// status), the listing orders of [`QueryTxn`], the waits, and the cancel
/// requests (forgotten when an invocation becomes final or is deleted).
///
/// So are the task totals ([`pynenc_model::totals`]): `insert_invocation`
/// adds one to the task's `routed`, `put_status` one to the counter of the
/// new status ([`pynenc_model::TaskCounter::of_status`]); deleting an
/// invocation leaves them, [`StoreTxn::purge`] forgets them.
pub trait StoreTxn: QueryTxn + DataTxn {
    /// Stores a new invocation with its first status.
    fn insert_invocation(
        &mut self,
        record: &Arc<InvocationRecord>,
        status: &StatusRecord,
    ) -> Result<()>;
    /// The invocation record, if it exists.
    fn get_invocation(&mut self, id: &InvocationId) -> Result<Option<Arc<InvocationRecord>>>;
    /// The current status, if the invocation exists.
    fn get_status(&mut self, id: &InvocationId) -> Result<Option<StatusRecord>>;
    /// The running concurrency key of an invocation (`None` if it has none or
    /// does not exist). The default reads the whole record; a backend that
    /// stores the key apart overrides it.
    fn running_key_of(&mut self, id: &InvocationId) -> Result<Option<String>> {
        Ok(self
            .get_invocation(id)?
            .and_then(|record| record.concurrency.running_key.clone()))
    }
    /// A fresh, unique invocation id, ordered by creation time (listings
    /// are in id order, see [`pynenc_model::query`]).
    fn new_invocation_id(&mut self) -> InvocationId {
        InvocationId::time_ordered()
    }
    /// Writes a status (already checked by the engine) at time `now`.
    fn put_status(
        &mut self,
        id: &InvocationId,
        status: &StatusRecord,
        now: Timestamp,
    ) -> Result<()>;
    /// Appends to the invocation's history.
    fn append_history(&mut self, step: HistoryStep<'_>) -> Result<()>;
    /// The history, oldest first.
    fn get_history(&mut self, id: &InvocationId) -> Result<Vec<HistoryEntry>>;
    /// How many times the invocation was retried.
    fn get_retries(&mut self, id: &InvocationId) -> Result<u32>;
    /// Adds one retry and returns the new count.
    fn increment_retries(&mut self, id: &InvocationId) -> Result<u32>;
    /// Adds a run of `micros` microseconds to the run times of the task of
    /// invocation `id` (its bucket, [`pynenc_model::run_time_bucket`], and
    /// the sum).
    fn add_run_time(&mut self, id: &InvocationId, micros: u64) -> Result<()>;
    /// Records that a call was folded into invocation `id` (registration
    /// concurrency): one more reuse, and `reuse` among the latest
    /// [`pynenc_model::REUSES_KEPT`] (older ones dropped). Deleting the
    /// invocation forgets them.
    fn add_reuse(&mut self, id: &InvocationId, reuse: &ReuseRecord) -> Result<()>;
    /// Sets `key` of the workflow `id` to `value` (with `if_absent`, only
    /// when it has none) and returns the value it holds after; the data
    /// goes with the invocation when it is deleted.
    fn put_workflow_data(
        &mut self,
        id: &InvocationId,
        key: &str,
        value: &str,
        if_absent: bool,
    ) -> Result<String>;
    /// The value of `key` of the workflow `id`, if any.
    fn get_workflow_data(&mut self, id: &InvocationId, key: &str) -> Result<Option<String>>;
    /// Stores the serialized result.
    fn set_result(&mut self, id: &InvocationId, result: String) -> Result<()>;
    /// Stores the error.
    fn set_error(&mut self, id: &InvocationId, error: &TaskError) -> Result<()>;
    /// Status, result and error.
    fn get_outcome(&mut self, id: &InvocationId) -> Result<Option<InvocationOutcome>>;
    /// [`StoreTxn::get_outcome`] of each of `ids`, in order. The default
    /// reads them one at a time; a backend with round trips reads them at once.
    fn get_outcomes(&mut self, ids: &[InvocationId]) -> Result<Vec<Option<InvocationOutcome>>> {
        ids.iter().map(|id| self.get_outcome(id)).collect()
    }
    /// Every invocation id of the app.
    fn list_invocation_ids(&mut self) -> Result<Vec<InvocationId>>;

    /// An invocation currently `REGISTERED` with this registration key.
    fn find_registered(&mut self, registration_key: &str) -> Result<Option<InvocationId>>;
    /// Whether an invocation with this running key is `PENDING`, `RUNNING`, `PAUSED` or `RESUMED`.
    fn running_key_in_use(&mut self, running_key: &str) -> Result<bool>;
    /// Parks an invocation held back by running concurrency until the key frees up.
    fn park_controlled(&mut self, running_key: &str, id: &InvocationId) -> Result<()>;
    /// Takes every invocation parked on the key, oldest first.
    fn take_controlled(&mut self, running_key: &str) -> Result<Vec<InvocationId>>;

    /// Appends an id to the queue (a backend with notifications wakes
    /// runners once the section commits).
    fn enqueue(&mut self, id: &InvocationId) -> Result<()>;
    /// Puts an id at the head of the queue: work taken back from a dead or
    /// stopped runner runs before new work. The default appends.
    fn enqueue_front(&mut self, id: &InvocationId) -> Result<()> {
        self.enqueue(id)
    }
    /// Pops up to `max` ids from the head of the queue.
    fn dequeue(&mut self, max: usize) -> Result<Vec<InvocationId>>;
    /// The queue length.
    fn queue_len(&mut self) -> Result<usize>;

    /// Records that `waiter` (or an external caller, `None`) waits for `waited`.
    fn add_waits(&mut self, waiter: Option<&InvocationId>, waited: &[InvocationId]) -> Result<()>;
    /// Waited-on invocations that are available for run, oldest first.
    fn blocking_candidates(&mut self, max: usize) -> Result<Vec<InvocationId>>;
    /// Forgets the waits on a final invocation.
    fn release_waited(&mut self, waited: &InvocationId) -> Result<()>;

    /// Records a call edge from a running invocation's call to a callee call.
    fn add_edge(
        &mut self,
        caller_invocation_id: &InvocationId,
        caller_call_id: &CallId,
        callee_call_id: &CallId,
    ) -> Result<()>;
    /// The callee call ids of the edges leaving `call_id`.
    fn callees_of(&mut self, call_id: &CallId) -> Result<Vec<CallId>>;
    /// Removes the edges added by an invocation.
    fn remove_edges_of(&mut self, caller_invocation_id: &InvocationId) -> Result<()>;

    /// Up to `max` `SCHEDULED` invocations due at `now`, earliest first.
    fn due_scheduled(&mut self, now: Timestamp, max: usize) -> Result<Vec<InvocationId>>;
    /// Up to `max` final invocations in any of `statuses` (any final status
    /// when empty) that became final before `before`, earliest end first.
    fn final_before(
        &mut self,
        statuses: &[InvocationStatus],
        before: Timestamp,
        max: usize,
    ) -> Result<Vec<InvocationId>>;
    /// Deletes an invocation and everything attached to it.
    fn delete_invocation(&mut self, id: &InvocationId) -> Result<()>;
    /// Deletes everything of the app, its stored values included.
    fn purge(&mut self) -> Result<()>;

    /// An invocation that is neither final nor `SCHEDULED` with this
    /// registration key, the oldest first (registration scope `active`).
    fn find_active(&mut self, registration_key: &str) -> Result<Option<InvocationId>>;
    /// The newest `SUCCESS` invocation with this registration key that
    /// became final at or after `since` (registration scope `cached`).
    fn find_success_since(
        &mut self,
        registration_key: &str,
        since: Timestamp,
    ) -> Result<Option<InvocationId>>;

    /// Asks `owner` to stop a running invocation (kept until it is final);
    /// `error` names who asked, and becomes the invocation's error when it
    /// ends `CANCELLED`.
    fn request_cancel(
        &mut self,
        id: &InvocationId,
        owner: &RunnerId,
        error: &TaskError,
    ) -> Result<()>;
    /// The error of the cancel asked for the invocation, if one was.
    fn cancel_requested(&mut self, id: &InvocationId) -> Result<Option<TaskError>>;
    /// The invocations `runner` was asked to stop.
    fn cancel_requests_of(&mut self, runner: &RunnerId) -> Result<Vec<InvocationId>>;

    /// Records what a runner says of itself, with `now` as its heartbeat.
    fn put_runner(&mut self, info: &RunnerInfo, now: Timestamp) -> Result<()>;

    /// Records a declared trigger (replacing the one of the same name).
    fn put_trigger(&mut self, trigger: &TriggerRecord) -> Result<()>;

    /// Records a runner heartbeat.
    fn put_heartbeat(&mut self, runner_id: &RunnerId, now: Timestamp) -> Result<()>;
    /// The last heartbeat of a runner.
    fn get_heartbeat(&mut self, runner_id: &RunnerId) -> Result<Option<Timestamp>>;
    /// Forgets a runner's heartbeat and what it said of itself.
    fn remove_heartbeat(&mut self, runner_id: &RunnerId) -> Result<()>;
    /// Up to `max` invocations in `PENDING`, `RUNNING`, `PAUSED` or `RESUMED`
    /// whose status was set before `before`, oldest claim first.
    fn owned_claims_before(&mut self, before: Timestamp, max: usize) -> Result<Vec<OwnedClaim>>;
    /// Takes or renews a lease; returns whether `holder` holds it until `now + ttl`.
    fn try_lease(
        &mut self,
        name: &str,
        holder: &RunnerId,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<bool>;

    /// Called when an invocation became final (a backend with notifications wakes waiters).
    fn on_final(&mut self, _id: &InvocationId) {}

    /// A hint: the step is about to ask [`StoreTxn::callees_of`] each of
    /// `call_ids`, which a backend with round trips may read in one go. The
    /// default does nothing.
    fn prefetch_callees(&mut self, _call_ids: &[CallId]) -> Result<()> {
        Ok(())
    }

    /// A hint: the step is about to read the statuses (and records) of
    /// `ids`, which a backend with round trips may read in one go. The
    /// default does nothing.
    fn prefetch(&mut self, _ids: &[InvocationId]) -> Result<()> {
        Ok(())
    }

    /// A hint: whatever this section writes is redone if a crash of the
    /// store's server loses it, so its commit need not wait for the disk
    /// (a pick-up: what it took goes back to the queue and runs again). A
    /// later commit that waits makes it durable too. An invocation the
    /// section ended (a pick-up can, by concurrency control) was told to
    /// its waiters: a backend still waits for the disk then. The default
    /// does nothing.
    fn redone_if_lost(&mut self) {}
}

/// The primitives of the data store (see [`crate::DataStore`]), run inside
/// one atomic section like the others. A value is keyed by its digest; its
/// references are the invocations whose records refer to it; its claim
/// time is when it was last put or claimed. The rules are in
/// [`crate::engine::claim_data`], [`crate::engine::put_data`] and
/// [`crate::engine::sweep_data`].
pub trait DataTxn {
    /// Whether the value is stored; if it is, adds `referenced_by` to its
    /// references and sets its claim time to `now`.
    fn claim_data(
        &mut self,
        data: &DataRef,
        referenced_by: &[InvocationId],
        now: Timestamp,
    ) -> Result<bool>;
    /// Stores the value unless it is stored already, adds `referenced_by`
    /// to its references and sets its claim time to `now`.
    fn put_data(
        &mut self,
        data: &DataRef,
        value: &str,
        referenced_by: &[InvocationId],
        now: Timestamp,
    ) -> Result<()>;
    /// The stored text of a value.
    fn get_data(&mut self, data: &DataRef) -> Result<Option<String>>;
    /// Up to `limit` values whose claim time is before `before`, the
    /// longest unclaimed first.
    fn unclaimed_data(&mut self, before: Timestamp, limit: usize) -> Result<Vec<DataRef>>;
    /// The invocations recorded as referring to a value.
    fn data_references(&mut self, data: &DataRef) -> Result<Vec<InvocationId>>;
    /// Forgets some references of a value.
    fn forget_data_references(&mut self, data: &DataRef, ids: &[InvocationId]) -> Result<()>;
    /// Removes a value and its references.
    fn delete_data(&mut self, data: &DataRef) -> Result<()>;
    /// How many values, bytes and references are stored.
    fn data_usage(&mut self) -> Result<DataUsage>;
}

/// The reads of the query API, run inside one atomic section like the
/// other primitives. Each answers from an index; none reads every invocation.
pub trait QueryTxn {
    /// Up to `query.limit` invocations matching every filter of `query`,
    /// after its cursor, in its order (ids order creation).
    fn list_invocations(&mut self, query: &InvocationQuery) -> Result<Vec<InvocationSummary>>;
    /// Counts per task and status, of the tasks in `task_ids` (every task
    /// when empty); zero counts left out.
    fn count_by_status(&mut self, task_ids: &[TaskId]) -> Result<Vec<StatusCount>>;
    /// Counts of `FAILED` invocations per task and error kind, of the tasks
    /// in `task_ids` (every task when empty); zero counts left out.
    fn failed_by_kind(&mut self, task_ids: &[TaskId]) -> Result<Vec<ErrorKindCount>>;
    /// The totals of the tasks in `task_ids` (every task when empty) that
    /// have any, by task id.
    fn task_totals(&mut self, task_ids: &[TaskId]) -> Result<Vec<TaskTotals>>;
    /// The reuses of an invocation (none when it has none or does not exist).
    fn reuses_of(&mut self, id: &InvocationId) -> Result<Reuses>;
    /// The oldest invocation waiting in the queue, with its creation time.
    fn queue_oldest(&mut self) -> Result<Option<(InvocationId, Timestamp)>>;
    /// What the invocation waits on, and which invocations wait on it.
    fn waits_of(&mut self, id: &InvocationId) -> Result<WaitGraph>;
    /// Every runner that said what it is and has not left, with its last heartbeat.
    fn list_runners(&mut self) -> Result<Vec<RunnerInfo>>;
    /// The declared triggers, by name.
    fn list_triggers(&mut self) -> Result<Vec<TriggerRecord>>;
    /// The holder of a lease, if it is held.
    fn get_lease(&mut self, name: &str) -> Result<Option<LeaseHolder>>;
    /// The ids of the apps that routed anything to this backend (this app
    /// included once it has), sorted.
    fn app_ids(&mut self) -> Result<Vec<String>>;
}
