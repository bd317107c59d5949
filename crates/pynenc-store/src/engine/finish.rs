//! The ends of runs.

use std::time::Duration;

use pynenc_model::{InvocationId, InvocationStatus, RunOutcome, RunnerId, Timestamp};

use super::pick::pick_and_start;
use super::upkeep::{pause_for_results, resume_when_final};
use super::{transition, transition_from};
use crate::components::{EndOutcome, RunEnd, StepReport, WaitChange, WaitOutcome};
use crate::error::{Result, StoreError};
use crate::txn::StoreTxn;

/// Ends a run (see [`crate::Orchestrator::finish`]); `ran_for`, when the
/// runner measured it, is added to the task's run times.
pub fn finish(
    txn: &mut dyn StoreTxn,
    id: &InvocationId,
    runner_id: &RunnerId,
    outcome: RunOutcome,
    ran_for: Option<Duration>,
    now: Timestamp,
) -> Result<InvocationStatus> {
    // check first, so that a refused finish writes nothing
    let current = txn
        .get_status(id)?
        .ok_or_else(|| StoreError::not_found(id, "while finishing it"))?;
    // a run that stops at a cancel, or that would be retried after one was
    // asked, ends CANCELLED with the error naming who asked
    let outcome = match outcome {
        RunOutcome::Retry(_) | RunOutcome::Cancelled(_) => match txn.cancel_requested(id)? {
            Some(asked) => RunOutcome::Cancelled(asked),
            None => outcome,
        },
        other => other,
    };
    let to = outcome.status();
    current
        .transition(to, runner_id)
        .map_err(|source| StoreError::Transition {
            invocation_id: *id,
            source,
        })?;
    match outcome {
        RunOutcome::Success(result) => txn.set_result(id, result)?,
        RunOutcome::Retry(error) | RunOutcome::Failed(error) | RunOutcome::Cancelled(error) => {
            txn.set_error(id, &error)?
        }
    }
    transition_from(txn, id, &current, to, runner_id, None, now)?;
    if let Some(ran_for) = ran_for {
        txn.add_run_time(id, u64::try_from(ran_for.as_micros()).unwrap_or(u64::MAX))?;
    }
    if to == InvocationStatus::Retry {
        txn.increment_retries(id)?;
        txn.enqueue(id)?;
    }
    Ok(to)
}

/// [`finish`] for the ends of several runs, each with its own outcome (a
/// refused one wrote nothing and does not stop the others), then
/// [`pick_and_start`] for up to `max_next` invocations (see
/// [`crate::Orchestrator::finish_many_and_start`]). Any other error ends the
/// section, which then wrote nothing.
pub fn finish_many_and_start(
    txn: &mut dyn StoreTxn,
    runner_id: &RunnerId,
    ends: Vec<RunEnd>,
    max_next: usize,
    execution_context: Option<&str>,
    now: Timestamp,
) -> Result<StepReport> {
    runner_step(
        txn,
        runner_id,
        ends,
        Vec::new(),
        max_next,
        execution_context,
        now,
    )
}

/// [`finish_many_and_start`] with the pauses and resumes of the runner's
/// waiting invocations between the ends and the pick-ups
/// ([`crate::Orchestrator::runner_step`]): a pause whose waited invocations
/// ended in this step does not pause, a resume reads what the ends wrote
/// and is refused unless everything it waited for is final, a pause with
/// `take_next` that pauses takes one more invocation. A
/// refused wait change ([`StoreError::is_refused`]: checked before it
/// writes) is its own outcome; any other error ends the section.
pub fn runner_step(
    txn: &mut dyn StoreTxn,
    runner_id: &RunnerId,
    ends: Vec<RunEnd>,
    waits: Vec<WaitChange>,
    mut max_next: usize,
    execution_context: Option<&str>,
    now: Timestamp,
) -> Result<StepReport> {
    let ids: Vec<InvocationId> = ends.iter().map(|e| e.invocation_id).collect();
    txn.prefetch(&ids)?;
    let mut outcomes = Vec::with_capacity(ends.len());
    for end in ends {
        outcomes.push(
            match finish(
                txn,
                &end.invocation_id,
                runner_id,
                end.outcome,
                end.ran_for,
                now,
            ) {
                Ok(status) => EndOutcome::Recorded(status),
                Err(e) if e.is_refused_finish() => EndOutcome::NotRecorded(e),
                Err(e) => return Err(e),
            },
        );
    }
    let mut wait_outcomes = Vec::with_capacity(waits.len());
    for change in waits {
        let done = match change {
            WaitChange::Pause {
                waiter,
                waited,
                take_next,
            } => {
                let paused = pause_for_results(txn, &waiter, runner_id, &waited, now);
                if take_next && matches!(paused, Ok(true)) {
                    // the slot it frees takes the next invocation
                    max_next += 1;
                }
                paused.map(WaitOutcome::Paused)
            }
            WaitChange::Resume { waiter, waited } => {
                resume_when_final(txn, &waiter, runner_id, &waited, now).map(WaitOutcome::Resumed)
            }
        };
        match done {
            Err(e) if !e.is_refused() => return Err(e),
            done => wait_outcomes.push(done),
        }
    }
    let next = pick_and_start(txn, runner_id, max_next, execution_context, now)?;
    Ok(StepReport {
        ends: outcomes,
        waits: wait_outcomes,
        next,
        pick_error: None,
    })
}

/// `KILLED` then `REROUTED`, at the head of the queue; `CANCELLED` instead
/// of `REROUTED` when a cancel was asked for it.
pub fn kill_and_reroute(
    txn: &mut dyn StoreTxn,
    id: &InvocationId,
    runner_id: &RunnerId,
    now: Timestamp,
) -> Result<()> {
    transition(txn, id, InvocationStatus::Killed, runner_id, None, now)?;
    super::control::reroute_unless_cancelled(txn, id, runner_id, now)
}
