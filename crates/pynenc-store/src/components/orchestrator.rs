//! The orchestrator: statuses and their owners, and every step that changes them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use pynenc_model::{
    CancelOutcome, InvocationId, InvocationOutcome, InvocationRecord, InvocationStatus,
    RouteOutcome, RouteRequest, RunOutcome, RunnerId, StatusRecord,
};

use crate::error::{Result, StoreError};

/// The end of one run, as a runner reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    /// The invocation that ran.
    pub invocation_id: InvocationId,
    /// How the run ended.
    pub outcome: RunOutcome,
    /// How long the body ran, as the runner measured it (added to the
    /// task's run times when the end is recorded; `None`: not measured).
    pub ran_for: Option<Duration>,
}

impl RunEnd {
    /// The end of the run of `invocation_id`, with no run time.
    pub fn new(invocation_id: InvocationId, outcome: RunOutcome) -> Self {
        RunEnd {
            invocation_id,
            outcome,
            ran_for: None,
        }
    }
}

/// What became of one [`RunEnd`] in a step.
#[derive(Debug, Clone)]
pub enum EndOutcome {
    /// The end was recorded: the invocation is now in this status.
    Recorded(InvocationStatus),
    /// The end was not recorded, and why; nothing was written for it. A
    /// refusal ([`StoreError::is_refused_finish`]) means the invocation moved
    /// on meanwhile (it was killed or recovered).
    NotRecorded(StoreError),
}

impl EndOutcome {
    /// The outcome as a `Result`.
    pub fn into_result(self) -> Result<InvocationStatus> {
        match self {
            EndOutcome::Recorded(status) => Ok(status),
            EndOutcome::NotRecorded(e) => Err(e),
        }
    }
}

/// A change to an invocation of the runner that waits for others, carried
/// by the runner's step with its ends ([`Orchestrator::runner_step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitChange {
    /// [`Orchestrator::pause_for_results`]: `waiter` waits for `waited`
    /// and frees its slot, unless all of them are final already.
    Pause {
        /// The invocation that waits.
        waiter: InvocationId,
        /// What it waits for.
        waited: Vec<InvocationId>,
        /// When it pauses, the step takes one more invocation, for the
        /// slot it frees (as an end's slot).
        take_next: bool,
    },
    /// [`Orchestrator::resume_with_outcomes`]: `waiter` takes a slot back
    /// and reads the outcomes of `waited`.
    Resume {
        /// The invocation that waited.
        waiter: InvocationId,
        /// What it waited for (outcomes in this order).
        waited: Vec<InvocationId>,
    },
}

impl WaitChange {
    /// The invocation that waits or waited.
    pub fn waiter(&self) -> &InvocationId {
        match self {
            WaitChange::Pause { waiter, .. } | WaitChange::Resume { waiter, .. } => waiter,
        }
    }
}

/// What became of one [`WaitChange`] in a step.
#[derive(Debug, Clone)]
pub enum WaitOutcome {
    /// The pause: `true` when the waiter is `PAUSED` now, `false` when
    /// everything it waits for was final already (nothing recorded).
    Paused(bool),
    /// The resume: the waiter is `RESUMED`; the outcomes of what it waited
    /// for, in the order asked.
    Resumed(Vec<InvocationOutcome>),
}

/// What a step that ends runs and takes the next invocations did
/// ([`Orchestrator::finish_many_and_start`], [`Orchestrator::runner_step`]).
#[derive(Debug, Clone, Default)]
pub struct StepReport {
    /// One outcome per end, in the order given.
    pub ends: Vec<EndOutcome>,
    /// One outcome per [`WaitChange`], in the order given; a refused one
    /// (its waiter or a waited invocation unknown, the transition refused)
    /// wrote nothing.
    pub waits: Vec<Result<WaitOutcome>>,
    /// The invocations taken next, already `RUNNING` for the runner.
    pub next: Vec<Arc<InvocationRecord>>,
    /// Why nothing was taken next, when the pick-up failed.
    pub pick_error: Option<StoreError>,
}

impl StepReport {
    /// The report of a step that failed as a whole: no end was recorded
    /// and nothing was taken.
    pub fn failed(ends: usize, error: StoreError) -> Self {
        Self::failed_with_waits(ends, 0, error)
    }

    /// [`StepReport::failed`] for a step that also carried `waits` wait
    /// changes: none of them was recorded either.
    pub fn failed_with_waits(ends: usize, waits: usize, error: StoreError) -> Self {
        StepReport {
            ends: (0..ends)
                .map(|_| EndOutcome::NotRecorded(error.clone()))
                .collect(),
            waits: (0..waits).map(|_| Err(error.clone())).collect(),
            next: Vec::new(),
            pick_error: Some(error),
        }
    }
}

/// How long final invocations are kept (record, result or error, history)
/// before the auto purge deletes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `SUCCESS` and `CONCURRENCY_CONTROLLED_FINAL`, after they ended.
    pub success: Duration,
    /// `FAILED`, after they ended.
    pub failed: Duration,
    /// `CANCELLED`, after they ended.
    pub cancelled: Duration,
    /// At most this many final invocations are kept; the oldest ends go
    /// first. `None`: no limit.
    pub max_final: Option<u64>,
}

impl Retention {
    /// Every final invocation kept for `d`, without a count limit.
    pub fn all(d: Duration) -> Self {
        Retention {
            success: d,
            failed: d,
            cancelled: d,
            max_final: None,
        }
    }

    /// The final statuses with how long each is kept.
    pub fn per_status(&self) -> [(&'static [InvocationStatus], Duration); 3] {
        use InvocationStatus::*;
        [
            (&[Success, ConcurrencyControlledFinal], self.success),
            (&[Failed], self.failed),
            (&[Cancelled], self.cancelled),
        ]
    }
}

/// A pick parked by [`Orchestrator::start_when_work`]: what it took, or
/// `None` when no work came in time.
pub type ParkedPick<'s> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<Vec<Arc<InvocationRecord>>>>> + Send + 's>,
>;

/// Coordinates invocations. Every method is one atomic step in the backend.
#[async_trait]
pub trait Orchestrator: Send + Sync {
    /// Routes calls: registration concurrency (reuse or raise), cycle
    /// control, then a new invocation `REGISTERED` (or `SCHEDULED`) and
    /// queued. The outcomes are in request order.
    ///
    /// # Errors
    ///
    /// The first refused call ([`StoreError::Cycle`],
    /// [`StoreError::RegistrationConflict`]) fails the batch; the calls
    /// before it in the batch were routed.
    async fn route_calls(&self, requests: Vec<RouteRequest>) -> Result<Vec<RouteOutcome>>;

    /// Up to `max` invocations for `runner_id`: first those others wait on
    /// (oldest first), then the queue; each passes running concurrency and is
    /// set `PENDING` with `runner_id` as owner. Fewer than `max` only when
    /// no more were available: a runner then waits for new work instead of
    /// asking again.
    async fn get_invocations_to_run(
        &self,
        runner_id: &RunnerId,
        max: usize,
    ) -> Result<Vec<Arc<InvocationRecord>>>;

    /// [`Orchestrator::get_invocations_to_run`], then `RUNNING` for each
    /// picked invocation in the same atomic step (the history records both
    /// `PENDING` and `RUNNING`): for runners that start what they pick at once.
    async fn get_invocations_to_start(
        &self,
        runner_id: &RunnerId,
        max: usize,
        execution_context: Option<&str>,
    ) -> Result<Vec<Arc<InvocationRecord>>>;

    /// [`Orchestrator::get_invocations_to_start`] parked until work may
    /// have come, for a runner that found nothing: the pick runs once the
    /// work epoch ([`crate::Coordination::work_epoch`]) has moved past
    /// `epoch` — where the backend commits steps in groups, inside the very
    /// transaction that queued the work — or not at all after `timeout`
    /// (`Ok(None)`). One transaction instead of two, and no wake-up of the
    /// runner between them. `epoch` is the epoch at which the runner found
    /// nothing; `None` when it does not know (its last pick, parked, took
    /// fewer than it asked for): the pick then runs at once unless the
    /// backend knows the queue is drained.
    ///
    /// Await the pick to its end: dropped once the backend took it into a
    /// transaction, what it started is lost to the runner (`RUNNING` for
    /// it until recovered).
    ///
    /// `None` (the default): this orchestrator does not park picks; the
    /// runner waits for work ([`crate::Coordination::wait_for_work`]) and
    /// picks.
    fn start_when_work<'s>(
        &'s self,
        runner_id: &RunnerId,
        max: usize,
        execution_context: Option<&str>,
        epoch: Option<u64>,
        timeout: Duration,
    ) -> Option<ParkedPick<'s>> {
        let _ = (runner_id, max, execution_context, epoch, timeout);
        None
    }

    /// One status transition by `actor`, checked against the state machine
    /// and recorded.
    ///
    /// # Errors
    ///
    /// [`StoreError::Transition`] when the state machine refuses it (nothing changes).
    async fn set_status(
        &self,
        invocation_id: &InvocationId,
        status: InvocationStatus,
        actor: &RunnerId,
        execution_context: Option<&str>,
    ) -> Result<StatusRecord>;

    /// Ends a run: stores the result or error, sets `SUCCESS`, `FAILED` or
    /// `RETRY` (queued again), releases waiters, cleans cycle edges and
    /// re-routes invocations held by running concurrency.
    ///
    /// # Errors
    ///
    /// A refusal ([`StoreError::is_refused_finish`]) when the invocation was
    /// killed or recovered meanwhile; nothing was written.
    async fn finish(
        &self,
        invocation_id: &InvocationId,
        runner_id: &RunnerId,
        outcome: RunOutcome,
    ) -> Result<InvocationStatus>;

    /// Ends several runs of one runner (each checked on its own: a refused
    /// end does not stop the others), then takes up to `max_next`
    /// invocations for it, `RUNNING` at once, in one step where the backend
    /// can (one lock, one transaction, one round trip): the runner slots that
    /// end their runs take their next invocations.
    ///
    /// [`Orchestrator::runner_step`] without wait changes.
    async fn finish_many_and_start(
        &self,
        runner_id: &RunnerId,
        ends: Vec<RunEnd>,
        max_next: usize,
        execution_context: Option<&str>,
    ) -> StepReport {
        self.runner_step(runner_id, ends, Vec::new(), max_next, execution_context)
            .await
    }

    /// [`Orchestrator::finish_many_and_start`] that also pauses and
    /// resumes invocations of the runner that wait for others (`waits`,
    /// each checked on its own: a refused one writes nothing and stops
    /// nothing else): the ends first, then the wait changes in the order
    /// given (a pause whose waited invocations ended in the same step does
    /// not pause; a resume reads the outcomes those ends wrote and is
    /// refused with [`StoreError::StillWaiting`] unless they are final),
    /// then the pick-ups: `max_next`, and one more for each pause with
    /// `take_next` that paused — one step where the backend can. A runner
    /// hands the slot of a run that ends to the invocation that waited for
    /// it this way (the end and the resume in one step), and the slot of an
    /// invocation that pauses to its next invocation.
    async fn runner_step(
        &self,
        runner_id: &RunnerId,
        ends: Vec<RunEnd>,
        waits: Vec<WaitChange>,
        max_next: usize,
        execution_context: Option<&str>,
    ) -> StepReport;

    /// Stops an owned invocation: `KILLED` then `REROUTED`, at the head of the queue.
    async fn kill_and_reroute(
        &self,
        invocation_id: &InvocationId,
        runner_id: &RunnerId,
    ) -> Result<()>;

    /// The current status and owner.
    async fn get_status(&self, invocation_id: &InvocationId) -> Result<StatusRecord>;

    /// How many times the invocation was retried.
    async fn get_num_retries(&self, invocation_id: &InvocationId) -> Result<u32>;

    /// Records that `waiter` (or an external caller, `None`) waits for
    /// `waited`: the waited invocations are picked before queued work
    /// (blocking control). Invocations already final are ignored.
    async fn waiting_for_results(
        &self,
        waiter: Option<&InvocationId>,
        waited: &[InvocationId],
    ) -> Result<()>;

    /// [`Orchestrator::waiting_for_results`] for `waiter`, run by
    /// `runner_id`, and its `PAUSED` in one step (a task that waits frees
    /// its slot). Returns `false`, recording nothing and pausing nothing,
    /// when every waited invocation is final already.
    ///
    /// # Errors
    ///
    /// [`crate::StoreError::NotFound`] for a waited invocation that does not
    /// exist; the transition to `PAUSED` refused. Nothing changes then.
    async fn pause_for_results(
        &self,
        waiter: &InvocationId,
        runner_id: &RunnerId,
        waited: &[InvocationId],
    ) -> Result<bool>;

    /// Sets `waiter` `RESUMED` by `runner_id` and returns the outcomes of
    /// `waited`, in that order, in one step (a task that waited takes its
    /// slot back and reads what it waited for).
    ///
    /// # Errors
    ///
    /// [`crate::StoreError::NotFound`] for an unknown id; the transition
    /// refused. Nothing changes then.
    async fn resume_with_outcomes(
        &self,
        waiter: &InvocationId,
        runner_id: &RunnerId,
        waited: &[InvocationId],
    ) -> Result<Vec<InvocationOutcome>>;

    /// Registers scheduled invocations that are due; returns how many.
    async fn promote_scheduled(&self) -> Result<usize>;

    /// A `SCHEDULED` invocation becomes `REGISTERED` now, for `actor`, and
    /// is queued (its scheduled time no longer waited for).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown invocation;
    /// [`StoreError::Transition`] for one that is not `SCHEDULED` (nothing
    /// changes).
    async fn run_scheduled_now(&self, invocation_id: &InvocationId, actor: &RunnerId)
        -> Result<()>;

    /// Deletes the final invocations that `retention` no longer keeps, in
    /// sections of at most [`crate::engine::PURGE_BATCH`]; returns how many.
    async fn auto_purge(&self, retention: &Retention) -> Result<usize>;

    /// Deletes those of `ids` that are final (others are left alone);
    /// returns how many were deleted.
    async fn delete_final(&self, ids: &[InvocationId]) -> Result<usize>;

    /// Cancels an invocation for `actor`: one that waits (see
    /// [`InvocationStatus::is_waiting`]) becomes `CANCELLED` at once; for a
    /// running one its owner is asked to stop it (it then ends `CANCELLED`,
    /// and the recovery step cancels it instead of re-routing it if the
    /// owner dies). A final one is left as it is.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown invocation.
    async fn cancel(&self, invocation_id: &InvocationId, actor: &RunnerId)
        -> Result<CancelOutcome>;

    /// The invocations `runner_id` was asked to stop and still owns.
    async fn cancel_requests(&self, runner_id: &RunnerId) -> Result<Vec<InvocationId>>;

    /// The recovery step: invocations in `PENDING`, `RUNNING`, `PAUSED` or
    /// `RESUMED` whose claim is older than `dead_after` and whose owner's
    /// heartbeat is older than `dead_after` (or missing), and `PENDING` ones
    /// older than `max_pending`, go through `PENDING_RECOVERY` /
    /// `RUNNING_RECOVERY` to `REROUTED` and are queued again (at the head).
    /// Returns their ids.
    async fn recover(
        &self,
        actor: &RunnerId,
        dead_after: Duration,
        max_pending: Duration,
    ) -> Result<Vec<InvocationId>>;
}
