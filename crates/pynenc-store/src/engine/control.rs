//! What operators do: cancel, delete; and the queue as they see it.

use pynenc_model::{
    CancelOutcome, InvocationId, InvocationStatus, QueueStats, RunnerId, TaskError, Timestamp,
    CANCELLED_ERROR_KIND,
};

use super::transition;
use crate::error::{Result, StoreError};
use crate::txn::StoreTxn;

/// The error kept with an invocation `actor` cancelled.
pub fn cancelled_error(actor: &RunnerId) -> TaskError {
    TaskError::new(CANCELLED_ERROR_KIND, format!("cancelled by {actor}"))
}

/// Cancels an invocation (see [`crate::Orchestrator::cancel`]).
pub fn cancel(
    txn: &mut dyn StoreTxn,
    id: &InvocationId,
    actor: &RunnerId,
    now: Timestamp,
) -> Result<CancelOutcome> {
    let current = txn
        .get_status(id)?
        .ok_or_else(|| StoreError::not_found(id, "while cancelling it"))?;
    let status = current.status;
    if status.is_final() {
        return Ok(CancelOutcome::AlreadyFinal { status });
    }
    if status.is_owned_running() {
        let owner = current.owner.ok_or_else(|| {
            StoreError::corrupt(format!("invocation {id}"), "running without an owner")
        })?;
        txn.request_cancel(id, &owner, &cancelled_error(actor))?;
        return Ok(CancelOutcome::Requested { owner });
    }
    // waiting, or between two steps of the recovery: it ends here
    txn.set_error(id, &cancelled_error(actor))?;
    transition(txn, id, InvocationStatus::Cancelled, actor, None, now)?;
    Ok(CancelOutcome::Cancelled)
}

/// After `KILLED` or a recovery status: `REROUTED` at the head of the
/// queue, or `CANCELLED` when a cancel was asked for the invocation.
pub(crate) fn reroute_unless_cancelled(
    txn: &mut dyn StoreTxn,
    id: &InvocationId,
    actor: &RunnerId,
    now: Timestamp,
) -> Result<()> {
    if let Some(error) = txn.cancel_requested(id)? {
        // the error names who asked for the cancel
        txn.set_error(id, &error)?;
        transition(txn, id, InvocationStatus::Cancelled, actor, None, now)?;
    } else {
        transition(txn, id, InvocationStatus::Rerouted, actor, None, now)?;
        txn.enqueue_front(id)?;
    }
    Ok(())
}

/// Deletes those of `ids` that are final; returns how many.
pub fn delete_final(txn: &mut dyn StoreTxn, ids: &[InvocationId]) -> Result<usize> {
    let mut deleted = 0;
    for id in ids {
        if txn.get_status(id)?.is_some_and(|s| s.status.is_final()) {
            txn.delete_invocation(id)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// The queue's depth (invocations available for a runner, from the status
/// counts) and its oldest invocation.
pub fn queue_stats(txn: &mut dyn StoreTxn) -> Result<QueueStats> {
    let depth = txn
        .count_by_status(&[])?
        .iter()
        .filter(|c| c.status.is_available_for_run())
        .map(|c| c.count)
        .sum();
    Ok(QueueStats {
        depth,
        oldest: txn.queue_oldest()?,
    })
}
