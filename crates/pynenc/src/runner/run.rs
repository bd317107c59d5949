//! Running one invocation, the same way in every runner kind.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pynenc_model::{
    InvocationId, InvocationRecord, InvocationStatus, RunOutcome, TaskError, TaskOptions,
};
use pynenc_store::Orchestrator;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, error, info, warn};

use super::cancel::cancelled_outcome;
use super::execute::run_body_cancellable;
use super::host::{BodyTurn, InvocationHost, RunFinish, SlotState};
use crate::app::Pynenc;
use crate::context::InvocationContext;
use crate::task::TaskInput;
use crate::trigger::{self, Happened, Phase};

/// Retry or failure for a run of `invocation_id` that ended with `error`:
/// a retry while its task's options allow one (the retries so far are read
/// only when the error is retriable at all).
pub(crate) async fn failure_outcome(
    orch: &Arc<dyn Orchestrator>,
    options: &TaskOptions,
    invocation_id: &InvocationId,
    error: TaskError,
) -> RunOutcome {
    if options.is_retriable(&error) {
        let retries = orch
            .get_num_retries(invocation_id)
            .await
            .unwrap_or(u32::MAX);
        if options.should_retry(&error, retries) {
            return RunOutcome::Retry(error);
        }
    }
    RunOutcome::Failed(error)
}

/// The record with its stored argument values read back (the same record
/// when none is stored).
async fn with_stored_arguments(
    app: &Pynenc,
    record: Arc<InvocationRecord>,
) -> crate::Result<Arc<InvocationRecord>> {
    let resolved = app
        .data()
        .resolve_arguments(
            app.data_store(),
            &record.call.arguments,
            &record.invocation_id,
        )
        .await?;
    Ok(match resolved {
        None => record,
        Some(arguments) => {
            let mut full = (*record).clone();
            full.call.arguments = arguments;
            Arc::new(full)
        }
    })
}

/// Runs `body`; a host that takes invocations ahead is told once it has
/// run for `long_run` (it then takes no more than its bodies), and when a
/// body it was told of ends.
async fn watch_long_run<T>(
    body: impl Future<Output = T>,
    long_run: Option<Duration>,
    host: &dyn InvocationHost,
) -> T {
    let Some(after) = long_run else {
        return body.await;
    };
    tokio::pin!(body);
    tokio::select! {
        biased;
        output = &mut body => output,
        () = tokio::time::sleep(after) => {
            host.run_is_long();
            let _over = LongRunOver(host);
            body.await
        }
    }
}

/// Tells its host that a long body ended, however it ended.
struct LongRunOver<'h>(&'h dyn InvocationHost);

impl Drop for LongRunOver<'_> {
    fn drop(&mut self) {
        self.0.long_run_over();
    }
}

/// How a run of [`run_invocation`] ended.
pub(crate) struct RunResult {
    /// The slot the run held at its end, if it still held one.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    /// Invocations the host took next (already `RUNNING` for it).
    pub(crate) next: Vec<Arc<InvocationRecord>>,
}

/// Runs one invocation that is already `RUNNING` for `host`: finds its task
/// in the registry, runs the body in its context, decides between success,
/// retry, failure and cancellation, and records the end. Shared by every
/// runner kind.
///
/// Where the host has a cancel signal, a cancel of the invocation drops an
/// async body at its next await; a sync body runs to its end. Either way a
/// run whose invocation was cancelled ends `CANCELLED`, whatever the body
/// returned.
pub(crate) async fn run_invocation(
    app: &Pynenc,
    host: Arc<dyn InvocationHost>,
    record: Arc<InvocationRecord>,
    permit: Option<OwnedSemaphorePermit>,
) -> RunResult {
    let orch = app.orchestrator();
    let kept = record.clone();
    let id = &kept.invocation_id;
    let (def, options) = match app.registry().get(&record.call.task_id) {
        Ok(task) => (task.definition, &task.options),
        Err(e) => {
            error!(error = %e, "task is not registered in this process");
            let err = e.to_task_error();
            if let Err(e) = orch
                .finish(id, host.runner_id(), RunOutcome::Failed(err))
                .await
            {
                error!(error = %e, "could not record the failure");
            }
            return RunResult {
                permit,
                next: Vec::new(),
            };
        }
    };
    debug!(
        arguments = %record.call.arguments.render(app.conf().print_arguments, app.serializer()),
        "running"
    );
    let cancel = host.cancel_signal();
    if let Some(signal) = cancel {
        signal.begin(*id);
    }
    let ctx = Arc::new(InvocationContext {
        app: app.clone(),
        record: record.clone(),
        task_id: def.task_id,
        runner: Some(host.clone()),
        slot: tokio::sync::Mutex::new(SlotState {
            permit,
            waits: 0,
            offered: None,
            resumed: false,
            turn: None,
        }),
        caller: None,
        workflow: options.workflow.then(crate::context::WorkflowRun::new),
    });
    // a host that takes invocations ahead (and learns when one runs long)
    // gives this run its turn here; the others cost nothing here
    let long_run = host.long_run_after();
    if long_run.is_some() {
        match host.begin_body(id).await {
            BodyTurn::Now(turn) => ctx.slot.lock().await.turn = turn,
            BodyTurn::GiveBack => {
                host.give_back(&kept).await;
                let permit = ctx.slot.lock().await.permit.take();
                return RunResult {
                    // as a long run: the slot it held is withdrawn
                    permit: host.run_ended(Duration::MAX, permit),
                    next: Vec::new(),
                };
            }
        }
    }
    let started = Instant::now();
    // stored arguments are read back (through the local cache) for the body
    let resolved = with_stored_arguments(app, record).await;
    // what the triggers see of the source: its arguments' values
    let source = match &resolved {
        Ok(full) => full.clone(),
        Err(_) => kept.clone(),
    };
    let reacting = trigger::reacts_to(app.resolved_triggers(), def.task_id);
    if reacting {
        let running = Happened {
            status: InvocationStatus::Running,
            result: None,
            error: None,
        };
        trigger::react(app, &source, running, Phase::BeforeEnd).await;
    }
    let output = match resolved {
        Ok(record) => {
            let input = TaskInput {
                task_id: def.task_id,
                record,
                serializer: app.serializer(),
            };
            if cancel.is_some_and(|signal| signal.is_cancelled(id)) {
                None // cancelled before its body began: it does not begin
            } else {
                let body = run_body_cancellable(def.body, input, ctx.clone(), cancel);
                watch_long_run(body, long_run, host.as_ref()).await
            }
        }
        Err(e) => {
            error!(error = %e, "could not read the stored arguments");
            Some(Err(e.to_task_error()))
        }
    };
    // the next body may begin while this run's end is recorded
    if long_run.is_some() {
        ctx.slot.lock().await.turn = None;
    }
    // the result as the body returned it, for the triggers that read it
    let plain_result = match &output {
        Some(Ok(result)) if reacting => Some(result.clone()),
        _ => None,
    };
    let output = match output {
        Some(Ok(result)) => Some(Ok(app
            .data()
            .store_result(app.data_store(), id, Some(options), result)
            .await)),
        other => other,
    };
    let cancelled = cancel.is_some_and(|signal| signal.is_cancelled(id));
    let outcome = match output {
        Some(Ok(result)) if !cancelled => RunOutcome::Success(result),
        Some(Err(error)) if !cancelled => {
            let outcome = failure_outcome(orch, options, id, error).await;
            match &outcome {
                RunOutcome::Retry(e) => {
                    warn!(error = %e, max_retries = options.max_retries, "invocation will be retried")
                }
                RunOutcome::Failed(e) => error!(error = %e, "invocation failed"),
                RunOutcome::Cancelled(_) | RunOutcome::Success(_) => {}
            }
            outcome
        }
        // cancelled: the body was dropped (`None`), or returned after the cancel
        _ => {
            info!(
                runner_id = %host.runner_id(),
                task_id = %def.task_id,
                invocation_id = %id,
                body_returned = output.is_some(),
                "invocation cancelled"
            );
            cancelled_outcome(host.runner_id())
        }
    };
    let mut reacted = None;
    if reacting {
        let happened = match &outcome {
            RunOutcome::Success(_) => Some(Happened {
                status: InvocationStatus::Success,
                result: plain_result.as_deref(),
                error: None,
            }),
            RunOutcome::Failed(e) => Some(Happened {
                status: InvocationStatus::Failed,
                result: None,
                error: Some(e),
            }),
            RunOutcome::Retry(e) => Some(Happened {
                status: InvocationStatus::Retry,
                result: None,
                error: Some(e),
            }),
            RunOutcome::Cancelled(_) => None,
        };
        // before the end is recorded: a runner lost in between runs it
        // again, and the keyed calls are made once
        if let Some(happened) = &happened {
            trigger::react(app, &source, happened.clone(), Phase::BeforeEnd).await;
        }
        reacted = happened.map(|h| (h.status, h.error.cloned()));
    }
    // take the slot back now (the context may outlive this function in user
    // clones); a run cancelled while PAUSED holds none, and takes nothing next
    let permit = host.run_ended(started.elapsed(), ctx.slot.lock().await.permit.take());
    let RunFinish { end, next, handoff } = host
        .finish(app, &kept, outcome, started.elapsed(), permit.is_some())
        .await;
    // the invocation that waited for this run, resumed with its end, takes
    // the slot (back here when it is gone)
    let permit = match (handoff, permit) {
        (Some(h), Some(permit)) => h.to.give(permit, h.outcomes),
        (Some(h), None) => {
            h.to.without_slot(h.outcomes);
            None
        }
        (None, permit) => permit,
    };
    match end {
        Ok(status) => {
            debug!(%status, elapsed_us = started.elapsed().as_micros() as u64, "finished");
            // the end is recorded: `all_of` triggers look back again
            if let Some((reached, error)) = reacted.filter(|(s, _)| *s == status) {
                let happened = Happened {
                    status: reached,
                    result: plain_result.as_deref(),
                    error: error.as_ref(),
                };
                trigger::react(app, &source, happened, Phase::AfterEnd).await;
            }
        }
        Err(e) => {
            warn!(error = %e, "could not record the end of the invocation (was it killed?)")
        }
    }
    RunResult { permit, next }
}
