//! Picking invocations to run: blocking control first, then the queue, with
//! running concurrency.

use std::sync::Arc;

use pynenc_model::{
    InvocationId, InvocationRecord, InvocationStatus, RunnerId, StatusRecord, Timestamp,
};

use super::{transition, transition_from};
use crate::error::Result;
use crate::txn::StoreTxn;

/// Picks up to `max` invocations for `runner_id` (see
/// [`crate::Orchestrator::get_invocations_to_run`]).
pub fn pick(
    txn: &mut dyn StoreTxn,
    runner_id: &RunnerId,
    max: usize,
    now: Timestamp,
) -> Result<Vec<Arc<InvocationRecord>>> {
    let mut picked = Vec::with_capacity(max.min(1024));
    if max == 0 {
        return Ok(picked);
    }
    let mut candidates = txn.blocking_candidates(max)?;
    loop {
        for id in std::mem::take(&mut candidates) {
            if picked.len() >= max {
                break;
            }
            if let Some(record) = try_claim(txn, &id, runner_id, now)? {
                picked.push(record);
            }
        }
        if picked.len() >= max {
            break;
        }
        candidates = txn.dequeue(max - picked.len())?;
        if candidates.is_empty() {
            break;
        }
    }
    Ok(picked)
}

/// [`pick`], then `RUNNING` for each picked invocation, in the same section.
pub fn pick_and_start(
    txn: &mut dyn StoreTxn,
    runner_id: &RunnerId,
    max: usize,
    execution_context: Option<&str>,
    now: Timestamp,
) -> Result<Vec<Arc<InvocationRecord>>> {
    let picked = pick(txn, runner_id, max, now)?;
    // just set PENDING for this runner, in this section
    let pending = StatusRecord {
        status: InvocationStatus::Pending,
        owner: Some(runner_id.clone()),
    };
    for record in &picked {
        transition_from(
            txn,
            &record.invocation_id,
            &pending,
            InvocationStatus::Running,
            runner_id,
            execution_context,
            now,
        )?;
    }
    Ok(picked)
}

/// Claims one invocation if it is still available and running concurrency allows it.
fn try_claim(
    txn: &mut dyn StoreTxn,
    id: &InvocationId,
    runner_id: &RunnerId,
    now: Timestamp,
) -> Result<Option<Arc<InvocationRecord>>> {
    let Some(status) = txn.get_status(id)? else {
        // purged while queued: a stale id
        return Ok(None);
    };
    if !status.status.is_available_for_run() {
        return Ok(None);
    }
    let Some(record) = txn.get_invocation(id)? else {
        return Ok(None);
    };
    if let Some(key) = &record.concurrency.running_key {
        if txn.running_key_in_use(key)? {
            if record.concurrency.reroute_on_concurrency_control {
                transition(
                    txn,
                    id,
                    InvocationStatus::ConcurrencyControlled,
                    runner_id,
                    None,
                    now,
                )?;
                txn.park_controlled(key, id)?;
            } else {
                transition(
                    txn,
                    id,
                    InvocationStatus::ConcurrencyControlledFinal,
                    runner_id,
                    None,
                    now,
                )?;
            }
            return Ok(None);
        }
    }
    transition_from(
        txn,
        id,
        &status,
        InvocationStatus::Pending,
        runner_id,
        None,
        now,
    )?;
    Ok(Some(record))
}
