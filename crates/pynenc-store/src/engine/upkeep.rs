//! Waits, scheduled calls, auto purge and recovery.

use std::collections::HashMap;
use std::time::Duration;

use pynenc_model::{InvocationId, InvocationOutcome, InvocationStatus, RunnerId, Timestamp};

use super::{not_final, transition, transition_from, STEP_BATCH};
use crate::components::Retention;
use crate::error::{Result, StoreError};
use crate::txn::StoreTxn;

/// Records waits, ignoring invocations that are already final.
pub fn waiting_for_results(
    txn: &mut dyn StoreTxn,
    waiter: Option<&InvocationId>,
    waited: &[InvocationId],
) -> Result<()> {
    let open = not_final(txn, waited, "while registering a wait for it")?;
    if !open.is_empty() {
        txn.add_waits(waiter, &open)?;
    }
    Ok(())
}

/// Records that `waiter`, run by `runner`, waits for `waited`, and pauses it
/// (`PAUSED`), in one step; `false` when every waited invocation is final
/// already (nothing recorded, no pause: the caller goes on).
pub fn pause_for_results(
    txn: &mut dyn StoreTxn,
    waiter: &InvocationId,
    runner: &RunnerId,
    waited: &[InvocationId],
    now: Timestamp,
) -> Result<bool> {
    let current = txn
        .get_status(waiter)?
        .ok_or_else(|| StoreError::not_found(waiter, "while pausing it to wait"))?;
    // a pause that would be refused is refused before anything is written
    // (not every backend undoes a section that fails)
    current
        .transition(InvocationStatus::Paused, runner)
        .map_err(|source| StoreError::Transition {
            invocation_id: *waiter,
            source,
        })?;
    let open = not_final(txn, waited, "while registering a wait for it")?;
    if open.is_empty() {
        return Ok(false);
    }
    txn.add_waits(Some(waiter), &open)?;
    transition_from(
        txn,
        waiter,
        &current,
        InvocationStatus::Paused,
        runner,
        None,
        now,
    )?;
    Ok(true)
}

/// Sets `waiter` `RESUMED` by `runner` and reads the outcomes of `waited`
/// (what it waited on), in one step. The outcomes are read first: an
/// unknown id fails the step before anything is written.
pub fn resume_with_outcomes(
    txn: &mut dyn StoreTxn,
    waiter: &InvocationId,
    runner: &RunnerId,
    waited: &[InvocationId],
    now: Timestamp,
) -> Result<Vec<InvocationOutcome>> {
    resume(txn, waiter, runner, waited, now, false)
}

/// [`resume_with_outcomes`] for a resume that travels with the ends of a
/// runner's step ([`super::runner_step`]): refused with
/// [`StoreError::StillWaiting`], before anything is written, unless every
/// waited invocation is final (an end refused in the same step leaves its
/// waiter paused).
pub fn resume_when_final(
    txn: &mut dyn StoreTxn,
    waiter: &InvocationId,
    runner: &RunnerId,
    waited: &[InvocationId],
    now: Timestamp,
) -> Result<Vec<InvocationOutcome>> {
    resume(txn, waiter, runner, waited, now, true)
}

/// The outcomes of `waited`, then `waiter` `RESUMED` (with `final_only`,
/// refused unless every waited invocation is final).
fn resume(
    txn: &mut dyn StoreTxn,
    waiter: &InvocationId,
    runner: &RunnerId,
    waited: &[InvocationId],
    now: Timestamp,
    final_only: bool,
) -> Result<Vec<InvocationOutcome>> {
    let out = super::outcomes(txn, waited)?;
    if final_only {
        if let Some((id, _)) = waited.iter().zip(&out).find(|(_, o)| !o.status.is_final()) {
            return Err(StoreError::StillWaiting {
                invocation_id: *waiter,
                waited: *id,
            });
        }
    }
    transition(txn, waiter, InvocationStatus::Resumed, runner, None, now)?;
    Ok(out)
}

/// Registers due scheduled invocations.
pub fn promote_scheduled(
    txn: &mut dyn StoreTxn,
    actor: &RunnerId,
    now: Timestamp,
) -> Result<usize> {
    let due = txn.due_scheduled(now, STEP_BATCH)?;
    for id in &due {
        transition(txn, id, InvocationStatus::Registered, actor, None, now)?;
        txn.enqueue(id)?;
    }
    Ok(due.len())
}

/// The scheduled invocation `id` becomes `REGISTERED` now and is queued;
/// the transition refuses an invocation that is not `SCHEDULED`.
pub fn run_scheduled_now(
    txn: &mut dyn StoreTxn,
    id: &InvocationId,
    actor: &RunnerId,
    now: Timestamp,
) -> Result<()> {
    transition(txn, id, InvocationStatus::Registered, actor, None, now)?;
    txn.enqueue(id)
}

/// Deletes up to `max` final invocations that `retention` no longer keeps
/// at `now`: each final status after its own time, then the oldest ends
/// beyond the count limit.
pub fn auto_purge(
    txn: &mut dyn StoreTxn,
    retention: &Retention,
    now: Timestamp,
    max: usize,
) -> Result<usize> {
    let mut deleted = 0;
    for (statuses, keep) in retention.per_status() {
        if deleted >= max {
            break;
        }
        for id in txn.final_before(statuses, now - keep, max - deleted)? {
            txn.delete_invocation(&id)?;
            deleted += 1;
        }
    }
    if let (Some(limit), true) = (retention.max_final, deleted < max) {
        let finals: u64 = txn
            .count_by_status(&[])?
            .iter()
            .filter(|c| c.status.is_final())
            .map(|c| c.count)
            .sum();
        let excess = usize::try_from(finals.saturating_sub(limit)).unwrap_or(usize::MAX);
        let far = Timestamp::from_micros(i64::MAX);
        for id in txn.final_before(&[], far, excess.min(max - deleted))? {
            txn.delete_invocation(&id)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// The recovery step (see [`crate::Orchestrator::recover`]).
pub fn recover(
    txn: &mut dyn StoreTxn,
    actor: &RunnerId,
    now: Timestamp,
    dead_after: Duration,
    max_pending: Duration,
) -> Result<Vec<InvocationId>> {
    let claims = txn.owned_claims_before(now - dead_after.min(max_pending), STEP_BATCH)?;
    let mut recovered = Vec::new();
    let mut alive: HashMap<RunnerId, bool> = HashMap::new();
    for claim in claims {
        let rec = &claim.status;
        let stuck_pending =
            rec.status == InvocationStatus::Pending && claim.since < now - max_pending;
        let lost = claim.since < now - dead_after && {
            let owner = rec.owner.clone().unwrap_or_else(|| RunnerId::from(""));
            let owner_alive = match alive.get(&owner) {
                Some(a) => *a,
                None => {
                    let a = txn
                        .get_heartbeat(&owner)?
                        .is_some_and(|beat| beat >= now - dead_after);
                    alive.insert(owner, a);
                    a
                }
            };
            !owner_alive
        };
        if !(stuck_pending || lost) {
            continue;
        }
        let via = if rec.status == InvocationStatus::Pending {
            InvocationStatus::PendingRecovery
        } else {
            InvocationStatus::RunningRecovery
        };
        let id = claim.invocation_id;
        transition(txn, &id, via, actor, None, now)?;
        super::control::reroute_unless_cancelled(txn, &id, actor, now)?;
        recovered.push(id);
    }
    Ok(recovered)
}
