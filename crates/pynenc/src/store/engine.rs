//! The orchestration rules, written once over [`StoreTxn`].
//!
//! Every function here runs inside one atomic section of a backend.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::StoreTxn;
use crate::exceptions::{PynencError, Result};
use crate::invocation::InvocationRecord;
use crate::orchestrator::{Ends, Picked, RouteOutcome, RouteRequest, RunOutcome};
use crate::serializer::Serializer;
use crate::state_backend::{HistoryStep, InvocationOutcome};
use crate::status::{InvocationStatus, StatusRecord};

/// The most invocations one promotion of scheduled calls, or one recovery
/// step, handles (the rest wait for the next step).
pub const STEP_BATCH: usize = 1000;

/// The most final invocations one auto-purge section deletes.
pub const PURGE_BATCH: usize = 500;

/// Sets `to` on an invocation for `actor`, if the state machine allows it,
/// records it in the history, and applies what the new status implies.
pub fn transition(
    txn: &mut dyn StoreTxn,
    invocation_id: &str,
    to: InvocationStatus,
    actor: &str,
    execution_context: Option<&str>,
    now_us: i64,
) -> Result<StatusRecord> {
    let current = txn
        .get_status(invocation_id)?
        .ok_or_else(|| PynencError::not_found(invocation_id, &format!("while setting it {to}")))?;
    transition_from(
        txn,
        invocation_id,
        &current,
        to,
        actor,
        execution_context,
        now_us,
    )
}

/// [`transition`] when the caller has just read the current status.
fn transition_from(
    txn: &mut dyn StoreTxn,
    invocation_id: &str,
    current: &StatusRecord,
    to: InvocationStatus,
    actor: &str,
    execution_context: Option<&str>,
    now_us: i64,
) -> Result<StatusRecord> {
    let next = current
        .transition_with(to, actor, || txn.owner_id(actor))
        .map_err(|source| PynencError::StatusTransition {
            invocation_id: invocation_id.to_string(),
            source,
        })?;
    txn.put_status(invocation_id, &next, now_us)?;
    txn.append_history(HistoryStep {
        invocation_id,
        status: to,
        owner: next.owner.as_deref(),
        actor,
        timestamp_us: now_us,
        execution_context,
    })?;
    if current.status.is_owned_running() && !to.is_owned_running() {
        // the invocation no longer holds its running key: release what waited on it
        if let Some(key) = txn.running_key_of(invocation_id)? {
            for parked in txn.take_controlled(&key)? {
                transition(
                    txn,
                    &parked,
                    InvocationStatus::Rerouted,
                    actor,
                    None,
                    now_us,
                )?;
                txn.enqueue(&parked)?;
            }
        }
        txn.remove_edges_of(invocation_id)?;
    }
    if to.is_final() {
        txn.release_waited(invocation_id)?;
        if !current.status.is_owned_running() {
            txn.remove_edges_of(invocation_id)?;
        }
        txn.on_final(invocation_id);
    }
    Ok(next)
}

/// Finds a path of call edges from `from` to `to`, returning the calls on it.
fn find_path(txn: &mut dyn StoreTxn, from: &str, to: &str) -> Result<Option<Vec<String>>> {
    let mut stack: Vec<(String, Vec<String>)> = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen: HashSet<String> = HashSet::new();
    while let Some((node, path)) = stack.pop() {
        if node == to {
            return Ok(Some(path));
        }
        if !seen.insert(node.clone()) {
            continue;
        }
        for next in txn.callees_of(&node)? {
            if !seen.contains(&next) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next, p));
            }
        }
    }
    Ok(None)
}

fn check_cycle(txn: &mut dyn StoreTxn, parent_call_id: &str, callee_call_id: &str) -> Result<()> {
    let cycle = if parent_call_id == callee_call_id {
        Some(vec![parent_call_id.to_string(), callee_call_id.to_string()])
    } else {
        find_path(txn, callee_call_id, parent_call_id)?.map(|path| {
            let mut c = vec![parent_call_id.to_string()];
            c.extend(path);
            c
        })
    };
    match cycle {
        None => Ok(()),
        Some(call_ids) => Err(PynencError::cycle(parent_call_id, callee_call_id, call_ids)),
    }
}

/// Routes calls (see [`crate::Orchestrator::route_calls`]).
pub fn route(
    txn: &mut dyn StoreTxn,
    requests: Vec<RouteRequest>,
    serializer: Serializer,
    now_us: i64,
) -> Result<Vec<RouteOutcome>> {
    let mut outcomes = Vec::with_capacity(requests.len());
    for req in requests {
        // the call id is a hash of every argument: only compute it when needed
        let call_id = if req.needs_call_id() {
            req.call.call_id()
        } else {
            String::new()
        };
        if let (true, Some(parent_call)) = (req.cycle_control, req.parent_call_id.as_deref()) {
            check_cycle(txn, parent_call, &call_id)?;
        }
        if let Some(key) = &req.concurrency.registration_key {
            if let Some(existing_id) = txn.find_registered(key)? {
                let record = txn.get_invocation(&existing_id)?.ok_or_else(|| {
                    PynencError::not_found(&existing_id, "registered under a concurrency key")
                })?;
                let diff =
                    req.registration_diff(&record, record.call.call_id() == call_id, serializer);
                if let (Some(diff), true) = (&diff, req.concurrency.on_diff_non_key_args_raise) {
                    return Err(req.registration_conflict(existing_id, call_id, diff.clone()));
                }
                if let (Some(parent), Some(parent_call)) = (
                    req.parent_invocation_id.as_deref(),
                    req.parent_call_id.as_deref(),
                ) {
                    txn.add_edge(parent, parent_call, &call_id)?;
                }
                outcomes.push(RouteOutcome::Reused { record, diff });
                continue;
            }
        }
        let status = if req.scheduled_at_us.is_some_and(|at| at > now_us) {
            InvocationStatus::Scheduled
        } else {
            InvocationStatus::Registered
        };
        let record = Arc::new(InvocationRecord {
            invocation_id: txn.new_invocation_id(),
            call: req.call,
            parent_invocation_id: req.parent_invocation_id.clone(),
            created_at_us: now_us,
            scheduled_at_us: req.scheduled_at_us,
            concurrency: req.concurrency,
        });
        let first =
            StatusRecord::initial(status).map_err(|source| PynencError::StatusTransition {
                invocation_id: record.invocation_id.clone(),
                source,
            })?;
        txn.insert_invocation(&record, &first)?;
        txn.append_history(HistoryStep {
            invocation_id: &record.invocation_id,
            status,
            owner: None,
            actor: &req.actor,
            timestamp_us: now_us,
            execution_context: None,
        })?;
        if status == InvocationStatus::Registered {
            txn.enqueue(&record.invocation_id)?;
        }
        if let (Some(parent), Some(parent_call)) = (
            req.parent_invocation_id.as_deref(),
            req.parent_call_id.as_deref(),
        ) {
            txn.add_edge(parent, parent_call, &call_id)?;
        }
        outcomes.push(RouteOutcome::New(record));
    }
    Ok(outcomes)
}

/// Picks up to `max` invocations for `runner_id` (see
/// [`crate::Orchestrator::get_invocations_to_run`]).
pub fn pick(
    txn: &mut dyn StoreTxn,
    runner_id: &str,
    max: usize,
    now_us: i64,
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
            if let Some(record) = try_claim(txn, &id, runner_id, now_us)? {
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
    runner_id: &str,
    max: usize,
    execution_context: Option<&str>,
    now_us: i64,
) -> Result<Vec<Arc<InvocationRecord>>> {
    let picked = pick(txn, runner_id, max, now_us)?;
    // just set PENDING for this runner, in this section
    let pending = StatusRecord {
        status: InvocationStatus::Pending,
        owner: Some(txn.owner_id(runner_id)),
    };
    for record in &picked {
        transition_from(
            txn,
            &record.invocation_id,
            &pending,
            InvocationStatus::Running,
            runner_id,
            execution_context,
            now_us,
        )?;
    }
    Ok(picked)
}

/// Claims one invocation if it is still available and running concurrency allows it.
fn try_claim(
    txn: &mut dyn StoreTxn,
    id: &str,
    runner_id: &str,
    now_us: i64,
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
                    now_us,
                )?;
                txn.park_controlled(key, id)?;
            } else {
                transition(
                    txn,
                    id,
                    InvocationStatus::ConcurrencyControlledFinal,
                    runner_id,
                    None,
                    now_us,
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
        now_us,
    )?;
    Ok(Some(record))
}

/// Ends a run (see [`crate::Orchestrator::finish`]).
pub fn finish(
    txn: &mut dyn StoreTxn,
    invocation_id: &str,
    runner_id: &str,
    outcome: RunOutcome,
    now_us: i64,
) -> Result<InvocationStatus> {
    // check first, so that a refused finish writes nothing
    let current = txn
        .get_status(invocation_id)?
        .ok_or_else(|| PynencError::not_found(invocation_id, "while finishing it"))?;
    let to = match &outcome {
        RunOutcome::Success(_) => InvocationStatus::Success,
        RunOutcome::Retry(_) => InvocationStatus::Retry,
        RunOutcome::Failed(_) => InvocationStatus::Failed,
    };
    current
        .transition(to, runner_id)
        .map_err(|source| PynencError::StatusTransition {
            invocation_id: invocation_id.to_string(),
            source,
        })?;
    match outcome {
        RunOutcome::Success(result) => txn.set_result(invocation_id, result)?,
        RunOutcome::Retry(error) | RunOutcome::Failed(error) => {
            txn.set_error(invocation_id, &error)?
        }
    }
    transition_from(txn, invocation_id, &current, to, runner_id, None, now_us)?;
    if to == InvocationStatus::Retry {
        txn.increment_retries(invocation_id)?;
        txn.enqueue(invocation_id)?;
    }
    Ok(to)
}

/// [`finish`], with a refused finish (it wrote nothing) as the inner error,
/// so the section goes on; any other error ends the section.
fn finish_or_refuse(
    txn: &mut dyn StoreTxn,
    invocation_id: &str,
    runner_id: &str,
    outcome: RunOutcome,
    now_us: i64,
) -> Result<Result<InvocationStatus>> {
    match finish(txn, invocation_id, runner_id, outcome, now_us) {
        Err(e) if e.is_refused_finish() => Ok(Err(e)),
        Err(e) => Err(e),
        Ok(status) => Ok(Ok(status)),
    }
}

/// [`finish`] for the ends of several runs, each with its own result (a
/// refused one does not stop the others), then [`pick_and_start`] for up
/// to `max_next` invocations (see
/// [`crate::Orchestrator::finish_many_and_start`]).
pub fn finish_many_and_start(
    txn: &mut dyn StoreTxn,
    runner_id: &str,
    outcomes: Vec<(String, RunOutcome)>,
    max_next: usize,
    execution_context: Option<&str>,
    now_us: i64,
) -> Result<(Ends, Picked)> {
    let mut finished = Vec::with_capacity(outcomes.len());
    for (id, outcome) in outcomes {
        finished.push(finish_or_refuse(txn, &id, runner_id, outcome, now_us)?);
    }
    let next = pick_and_start(txn, runner_id, max_next, execution_context, now_us)?;
    Ok((finished, next))
}

/// Status, result and error of each of `ids`, in order; an unknown id is an error.
pub fn outcomes(txn: &mut dyn StoreTxn, ids: &[String]) -> Result<Vec<InvocationOutcome>> {
    ids.iter()
        .map(|id| {
            txn.get_outcome(id)?
                .ok_or_else(|| PynencError::not_found(id, "while reading its result"))
        })
        .collect()
}

/// `KILLED` then `REROUTED`, queued again.
pub fn kill_and_reroute(
    txn: &mut dyn StoreTxn,
    invocation_id: &str,
    runner_id: &str,
    now_us: i64,
) -> Result<()> {
    transition(
        txn,
        invocation_id,
        InvocationStatus::Killed,
        runner_id,
        None,
        now_us,
    )?;
    transition(
        txn,
        invocation_id,
        InvocationStatus::Rerouted,
        runner_id,
        None,
        now_us,
    )?;
    txn.enqueue_front(invocation_id)?;
    Ok(())
}

/// Registers due scheduled invocations.
pub fn promote_scheduled(txn: &mut dyn StoreTxn, actor: &str, now_us: i64) -> Result<usize> {
    let due = txn.due_scheduled(now_us, STEP_BATCH)?;
    for id in &due {
        transition(txn, id, InvocationStatus::Registered, actor, None, now_us)?;
        txn.enqueue(id)?;
    }
    Ok(due.len())
}

/// Deletes final invocations that ended before `before_us`, in chunks.
pub fn auto_purge(txn: &mut dyn StoreTxn, before_us: i64, max: usize) -> Result<usize> {
    let old = txn.final_before(before_us, max)?;
    for id in &old {
        txn.delete_invocation(id)?;
    }
    Ok(old.len())
}

/// Those of `ids` that are not final yet; an unknown id is an error saying
/// it was looked for `during` what.
pub fn not_final(txn: &mut dyn StoreTxn, ids: &[String], during: &str) -> Result<Vec<String>> {
    let mut open = Vec::with_capacity(ids.len());
    for id in ids {
        match txn.get_status(id)? {
            Some(s) if s.status.is_final() => {}
            Some(_) => open.push(id.clone()),
            None => return Err(PynencError::not_found(id, during)),
        }
    }
    Ok(open)
}

/// Records waits, ignoring invocations that are already final.
pub fn waiting_for_results(
    txn: &mut dyn StoreTxn,
    waiter: Option<&str>,
    waited: &[String],
) -> Result<()> {
    let open = not_final(txn, waited, "while registering a wait for it")?;
    if !open.is_empty() {
        txn.add_waits(waiter, &open)?;
    }
    Ok(())
}

/// The recovery step (see [`crate::Orchestrator::recover`]).
pub fn recover(
    txn: &mut dyn StoreTxn,
    actor: &str,
    now_us: i64,
    dead_after_us: i64,
    max_pending_us: i64,
) -> Result<Vec<String>> {
    let claims = txn.owned_claims_before(now_us - dead_after_us.min(max_pending_us), STEP_BATCH)?;
    let mut recovered = Vec::new();
    let mut alive: HashMap<Arc<str>, bool> = HashMap::new();
    for (id, rec, claimed_at) in claims {
        let stuck_pending =
            rec.status == InvocationStatus::Pending && claimed_at < now_us - max_pending_us;
        let lost = claimed_at < now_us - dead_after_us && {
            let owner = rec.owner.clone().unwrap_or_else(|| Arc::from(""));
            let owner_alive = match alive.get(&owner) {
                Some(a) => *a,
                None => {
                    let a = txn
                        .get_heartbeat(&owner)?
                        .is_some_and(|beat| beat >= now_us - dead_after_us);
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
        transition(txn, &id, via, actor, None, now_us)?;
        transition(txn, &id, InvocationStatus::Rerouted, actor, None, now_us)?;
        txn.enqueue_front(&id)?;
        recovered.push(id);
    }
    Ok(recovered)
}
