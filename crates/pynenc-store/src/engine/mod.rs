//! The orchestration rules, written once over [`StoreTxn`].
//!
//! Every function here runs inside one atomic section of a backend:
//!
//! - [`transition`]: the state machine, and what a new status implies
//!   (running keys released, parked invocations re-routed, call edges and
//!   waits cleaned, waiters woken);
//! - [`route`]: registration concurrency, cycle control, new invocations;
//! - [`pick`] / [`pick_and_start`]: blocking control first, then the queue,
//!   with running concurrency;
//! - [`finish`] / [`finish_many_and_start`] / [`runner_step`] / [`kill_and_reroute`]: the ends of runs
//!   (with the pauses and resumes of waiting invocations, for [`runner_step`]);
//! - [`promote_scheduled`], [`auto_purge`], [`recover`], [`waiting_for_results`];
//! - [`cancel`], [`delete_final`], [`queue_stats`]: what operators do and ask;
//! - [`claim_data`], [`put_data`], [`sweep_data`]: the data store's values.

mod control;
mod cycle;
mod data;
mod finish;
mod pick;
mod route;
mod upkeep;

pub use control::{cancel, cancelled_error, delete_final, queue_stats};
pub use cycle::{cycle_error, ANCESTORS_SEARCHED};
pub use data::{claim_data, put_data, sweep_data, sweep_in_batches, DATA_SWEEP_BATCH};
pub use finish::{finish, finish_many_and_start, kill_and_reroute, runner_step};
pub use pick::{pick, pick_and_start};
pub use route::route;
pub use upkeep::{
    auto_purge, pause_for_results, promote_scheduled, recover, resume_with_outcomes,
    run_scheduled_now, waiting_for_results,
};

use pynenc_model::{
    HistoryStep, InvocationId, InvocationOutcome, InvocationStatus, RunnerId, StatusRecord,
    Timestamp,
};

use crate::error::{Result, StoreError};
use crate::txn::StoreTxn;

/// The most invocations one promotion of scheduled calls, or one recovery
/// step, handles (the rest wait for the next step).
pub const STEP_BATCH: usize = 1000;

/// The most final invocations one auto-purge section deletes.
pub const PURGE_BATCH: usize = 500;

/// Runs auto-purge sections of at most [`PURGE_BATCH`] invocations (the
/// argument `section` gets) until one deletes fewer, so other steps go
/// between them; returns how many were deleted in all.
pub async fn purge_in_batches<F, Fut>(mut section: F) -> Result<usize>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<usize>>,
{
    let mut total = 0;
    loop {
        let n = section(PURGE_BATCH).await?;
        total += n;
        if n < PURGE_BATCH {
            return Ok(total);
        }
    }
}

/// Sets `to` on an invocation for `actor`, if the state machine allows it,
/// records it in the history, and applies what the new status implies.
pub fn transition(
    txn: &mut dyn StoreTxn,
    id: &InvocationId,
    to: InvocationStatus,
    actor: &RunnerId,
    execution_context: Option<&str>,
    now: Timestamp,
) -> Result<StatusRecord> {
    let current = txn
        .get_status(id)?
        .ok_or_else(|| StoreError::not_found(id, format!("while setting it {to}")))?;
    transition_from(txn, id, &current, to, actor, execution_context, now)
}

/// [`transition`] when the caller has just read the current status.
pub(crate) fn transition_from(
    txn: &mut dyn StoreTxn,
    id: &InvocationId,
    current: &StatusRecord,
    to: InvocationStatus,
    actor: &RunnerId,
    execution_context: Option<&str>,
    now: Timestamp,
) -> Result<StatusRecord> {
    let next = current
        .transition(to, actor)
        .map_err(|source| StoreError::Transition {
            invocation_id: *id,
            source,
        })?;
    txn.put_status(id, &next, now)?;
    txn.append_history(HistoryStep {
        invocation_id: id,
        status: to,
        owner: next.owner.as_ref(),
        actor,
        timestamp: now,
        execution_context,
    })?;
    if current.status.is_owned_running() && !to.is_owned_running() {
        // the invocation no longer holds its running key: release what waited on it
        if let Some(key) = txn.running_key_of(id)? {
            for parked in txn.take_controlled(&key)? {
                transition(txn, &parked, InvocationStatus::Rerouted, actor, None, now)?;
                txn.enqueue(&parked)?;
            }
        }
        txn.remove_edges_of(id)?;
    }
    if to.is_final() {
        txn.release_waited(id)?;
        if !current.status.is_owned_running() {
            txn.remove_edges_of(id)?;
        }
        txn.on_final(id);
    }
    Ok(next)
}

/// Status, result and error of each of `ids`, in order; an unknown id is an error.
pub fn outcomes(txn: &mut dyn StoreTxn, ids: &[InvocationId]) -> Result<Vec<InvocationOutcome>> {
    ids.iter()
        .zip(txn.get_outcomes(ids)?)
        .map(|(id, outcome)| {
            outcome.ok_or_else(|| StoreError::not_found(id, "while reading its result"))
        })
        .collect()
}

/// Those of `ids` that are not final yet; an unknown id is an error saying
/// it was looked for `during` what.
pub fn not_final(
    txn: &mut dyn StoreTxn,
    ids: &[InvocationId],
    during: &str,
) -> Result<Vec<InvocationId>> {
    let mut open = Vec::with_capacity(ids.len());
    txn.prefetch(ids)?;
    for id in ids {
        match txn.get_status(id)? {
            Some(s) if s.status.is_final() => {}
            Some(_) => open.push(*id),
            None => return Err(StoreError::not_found(id, during)),
        }
    }
    Ok(open)
}
