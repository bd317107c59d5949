//! The orchestrator: statuses and owners, routing with registration
//! concurrency, pick-up with running concurrency, blocking control, cycle
//! control, retries and auto purge.
//!
//! Every method is one atomic step in the backend. The shared logic lives in
//! [`crate::store::engine`]; backends only provide the atomic section.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::call::Call;
use crate::exceptions::{PynencError, Result, TaskError};
use crate::invocation::InvocationRecord;
use crate::status::{InvocationStatus, StatusRecord};
use crate::task::{ConcurrencyControl, TaskOptions};

/// The concurrency settings of one call, computed when it is routed and
/// stored with its invocation (see [`concurrency_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConcurrencySpec {
    /// Invocations with the same key cannot be registered twice (reuse instead).
    pub registration_key: Option<String>,
    /// Raise instead of reusing when the registered invocation has other arguments.
    pub on_diff_non_key_args_raise: bool,
    /// Invocations with the same key cannot run at the same time.
    pub running_key: Option<String>,
    /// Re-route an invocation held back by running concurrency (else it ends final).
    pub reroute_on_concurrency_control: bool,
}

/// The key that groups invocations for a concurrency mode.
pub fn concurrency_key(
    mode: ConcurrencyControl,
    call: &Call,
    key_arguments: &[&str],
) -> Option<String> {
    match mode {
        ConcurrencyControl::Disabled => None,
        ConcurrencyControl::Task => Some(format!("task:{}", call.task_id)),
        ConcurrencyControl::Arguments => Some(format!("args:{}", call.call_id())),
        ConcurrencyControl::Keys => Some(format!(
            "keys:{}#{}",
            call.task_id,
            call.key_arguments(key_arguments).args_id()
        )),
    }
}

impl ConcurrencySpec {
    /// The spec of `call` under `options`.
    pub fn for_call(call: &Call, options: &TaskOptions) -> Self {
        if options.registration_concurrency == ConcurrencyControl::Disabled
            && options.running_concurrency == ConcurrencyControl::Disabled
        {
            return ConcurrencySpec {
                on_diff_non_key_args_raise: options.on_diff_non_key_args_raise,
                reroute_on_concurrency_control: options.reroute_on_concurrency_control,
                ..ConcurrencySpec::default()
            };
        }
        let keys = options.key_args();
        ConcurrencySpec {
            registration_key: concurrency_key(options.registration_concurrency, call, &keys),
            on_diff_non_key_args_raise: options.on_diff_non_key_args_raise,
            running_key: concurrency_key(options.running_concurrency, call, &keys),
            reroute_on_concurrency_control: options.reroute_on_concurrency_control,
        }
    }
}

/// A call to route.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    /// The call.
    pub call: Call,
    /// The invocation making the call, if it is made from a running task.
    pub parent_invocation_id: Option<String>,
    /// The call id of the parent (for cycle control).
    pub parent_call_id: Option<String>,
    /// Concurrency settings.
    pub concurrency: ConcurrencySpec,
    /// Run at this time (microseconds since the epoch) instead of now: `SCHEDULED` until due.
    pub scheduled_at_us: Option<i64>,
    /// Check that the call does not close a cycle with its parent's callers.
    pub cycle_control: bool,
    /// Who routes it (runner id or the external caller id), for the history.
    pub actor: Arc<str>,
}

impl RouteRequest {
    /// Whether routing needs the call id (a hash of every argument): for
    /// cycle control under a parent, and for registration concurrency.
    pub fn needs_call_id(&self) -> bool {
        self.parent_call_id.is_some() || self.concurrency.registration_key.is_some()
    }

    /// How this call's arguments differ from those of `existing`, the
    /// invocation registered under the same key (`None`: the same call).
    pub fn registration_diff(
        &self,
        existing: &InvocationRecord,
        same_call: bool,
        serializer: crate::serializer::Serializer,
    ) -> Option<String> {
        (!same_call).then(|| {
            existing
                .call
                .arguments
                .diff(&self.call.arguments, serializer)
        })
    }

    /// The error for a call refused because `existing_invocation_id` is
    /// registered under the same key with other arguments.
    pub fn registration_conflict(
        &self,
        existing_invocation_id: String,
        new_call_id: String,
        diff: String,
    ) -> crate::PynencError {
        crate::PynencError::InvocationConcurrencyWithDifferentArguments {
            task_id: self.call.task_id.clone(),
            existing_invocation_id,
            new_call_id,
            diff,
        }
    }
}

/// What routing a call produced.
#[derive(Debug, Clone)]
pub enum RouteOutcome {
    /// A new invocation, registered (or scheduled) and queued.
    New(Arc<InvocationRecord>),
    /// An invocation already registered for the same registration key.
    Reused {
        /// The existing invocation.
        record: Arc<InvocationRecord>,
        /// The arguments of the new call that differ, readable (`None` when identical).
        diff: Option<String>,
    },
}

impl RouteOutcome {
    /// The invocation the call resolved to.
    pub fn record(&self) -> &InvocationRecord {
        match self {
            RouteOutcome::New(r) | RouteOutcome::Reused { record: r, .. } => r,
        }
    }
}

/// How a run ended, as reported by the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunOutcome {
    /// The serialized result.
    Success(String),
    /// A retriable error within `max_retries`: status `RETRY`, queued again.
    Retry(TaskError),
    /// The error that ends the invocation.
    Failed(TaskError),
}

/// Invocations taken for a runner (already `PENDING`, or `RUNNING` when
/// started, for it).
pub type Picked = Vec<Arc<InvocationRecord>>;

/// The ends of several runs, each with its own result.
pub type Ends = Vec<Result<InvocationStatus>>;

/// The result of the one end given to [`Orchestrator::finish_many_and_start`].
pub(crate) fn only_end(mut ends: Ends) -> Result<InvocationStatus> {
    ends.pop()
        .unwrap_or_else(|| Err(PynencError::backend("the end of a run got no result")))
}

/// Coordinates invocations. All methods are atomic in the backend.
#[async_trait]
pub trait Orchestrator: Send + Sync {
    /// Routes calls: registration concurrency (reuse or raise), cycle control,
    /// then a new invocation `REGISTERED` (or `SCHEDULED`) and queued. The
    /// outcomes are in request order; the first refused call fails the batch
    /// after the calls before it were routed.
    async fn route_calls(&self, requests: Vec<RouteRequest>) -> Result<Vec<RouteOutcome>>;

    /// Up to `max` invocations for `runner_id`: first those others wait on
    /// (oldest first), then the queue; each passes running concurrency and is
    /// set `PENDING` with `runner_id` as owner.
    async fn get_invocations_to_run(
        &self,
        runner_id: &str,
        max: usize,
    ) -> Result<Vec<Arc<InvocationRecord>>>;

    /// [`Orchestrator::get_invocations_to_run`], then `RUNNING` for each picked
    /// invocation in the same atomic step (the history records both
    /// `PENDING` and `RUNNING`): for runners that start what they pick at once.
    async fn get_invocations_to_start(
        &self,
        runner_id: &str,
        max: usize,
        execution_context: Option<String>,
    ) -> Result<Vec<Arc<InvocationRecord>>>;

    /// One status transition by `actor`, checked against the state machine and recorded.
    async fn set_status(
        &self,
        invocation_id: &str,
        status: InvocationStatus,
        actor: &str,
        execution_context: Option<String>,
    ) -> Result<StatusRecord>;

    /// Ends a run: stores the result or error, sets `SUCCESS`, `FAILED` or
    /// `RETRY` (queued again), releases waiters, cleans cycle edges and
    /// re-routes invocations held by running concurrency.
    async fn finish(
        &self,
        invocation_id: &str,
        runner_id: &str,
        outcome: RunOutcome,
    ) -> Result<InvocationStatus>;

    /// [`Orchestrator::finish`] for several invocations of one runner in one
    /// step where the backend can (one lock, one transaction, one round
    /// trip); each gets its own result. The default finishes one by one.
    async fn finish_many(
        &self,
        runner_id: &str,
        outcomes: Vec<(String, RunOutcome)>,
    ) -> Vec<Result<InvocationStatus>> {
        let mut results = Vec::with_capacity(outcomes.len());
        for (id, outcome) in outcomes {
            results.push(self.finish(&id, runner_id, outcome).await);
        }
        results
    }

    /// [`Orchestrator::finish_many`], then
    /// [`Orchestrator::get_invocations_to_start`] for up to `max_next`
    /// invocations (none when 0), in one step where the backend can (one
    /// transaction, one round trip): the runner slots that end their runs
    /// take their next invocations. The pick happens even when some ends are
    /// refused; its own failure is the second result. The default makes the
    /// two calls.
    async fn finish_many_and_start(
        &self,
        runner_id: &str,
        outcomes: Vec<(String, RunOutcome)>,
        max_next: usize,
        execution_context: Option<&str>,
    ) -> (Ends, Result<Picked>) {
        let finished = self.finish_many(runner_id, outcomes).await;
        let next = if max_next == 0 {
            Ok(Vec::new())
        } else {
            self.get_invocations_to_start(
                runner_id,
                max_next,
                execution_context.map(str::to_string),
            )
            .await
        };
        (finished, next)
    }

    /// Whether ending several runs in one step saves work (one transaction
    /// or round trip instead of several): runners then gather the ends that
    /// come in while a step is in flight. When it does not (the in-process
    /// backend), each run ends in a step of its own. Either way the step
    /// takes the next invocations of the slots it frees
    /// ([`Orchestrator::finish_many_and_start`]).
    fn batches_finishes(&self) -> bool {
        true
    }

    /// [`Orchestrator::finish_many_and_start`] for the end of one run: the
    /// finish (refused or not) is the first result, and a failed pick the
    /// outer error.
    async fn finish_and_start(
        &self,
        invocation_id: &str,
        runner_id: &str,
        outcome: RunOutcome,
        max_next: usize,
        execution_context: Option<&str>,
    ) -> Result<(Result<InvocationStatus>, Picked)> {
        let end = vec![(invocation_id.to_string(), outcome)];
        let (ends, next) = self
            .finish_many_and_start(runner_id, end, max_next, execution_context)
            .await;
        Ok((only_end(ends), next?))
    }

    /// Stops an owned invocation: `KILLED` then `REROUTED` and queued again.
    async fn kill_and_reroute(&self, invocation_id: &str, runner_id: &str) -> Result<()>;

    /// The current status and owner.
    async fn get_status(&self, invocation_id: &str) -> Result<StatusRecord>;

    /// How many times the invocation was retried.
    async fn get_num_retries(&self, invocation_id: &str) -> Result<u32>;

    /// Records that `waiter` (or an external caller) waits for `waited`: the
    /// waited invocations are picked before queued work.
    async fn waiting_for_results(&self, waiter: Option<&str>, waited: &[String]) -> Result<()>;

    /// Resolves when every invocation in `ids` is final (woken, not re-asked
    /// where the backend can notify).
    async fn wait_final(&self, ids: &[String]) -> Result<()>;

    /// A counter that changes whenever work may have become available.
    fn work_epoch(&self) -> u64;

    /// Resolves when work may be available (the epoch moved past `epoch`) or
    /// after `timeout`.
    async fn wait_for_work(&self, epoch: u64, timeout: Duration);

    /// Registers scheduled invocations that are due; returns how many.
    async fn promote_scheduled(&self) -> Result<usize>;

    /// Removes final invocations that ended more than `older_than` ago; returns how many.
    async fn auto_purge(&self, older_than: Duration) -> Result<usize>;

    /// Records that `runner_id` is alive now (runners call it every
    /// `heartbeat_interval_seconds`).
    async fn heartbeat(&self, runner_id: &str) -> Result<()>;

    /// Forgets a runner's heartbeat (on a clean stop).
    async fn remove_heartbeat(&self, runner_id: &str) -> Result<()>;

    /// Takes or renews the lease `name` for `holder` for `ttl`; returns
    /// whether `holder` holds it. Only one holder at a time.
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// The recovery step: invocations in `PENDING`, `RUNNING`, `PAUSED` or
    /// `RESUMED` whose claim is older than `dead_after` and whose owner's
    /// heartbeat is older than `dead_after` (or missing), and `PENDING` ones
    /// older than `max_pending`, go through `PENDING_RECOVERY` /
    /// `RUNNING_RECOVERY` to `REROUTED` and are queued again. Returns their ids.
    async fn recover(
        &self,
        actor: &str,
        dead_after: Duration,
        max_pending: Duration,
    ) -> Result<Vec<String>>;

    /// Removes everything of this app.
    async fn purge(&self) -> Result<()>;
}
