//! Routing calls.

use std::sync::Arc;

use pynenc_model::{
    CallId, HistoryStep, InvocationRecord, InvocationStatus, ReuseRecord, RouteOutcome,
    RouteRequest, Serializer, StatusRecord, Timestamp,
};

use super::cycle::check_cycle;
use crate::error::{Result, StoreError};
use crate::txn::StoreTxn;

/// Routes calls (see [`crate::Orchestrator::route_calls`]).
pub fn route(
    txn: &mut dyn StoreTxn,
    requests: Vec<RouteRequest>,
    serializer: Serializer,
    now: Timestamp,
) -> Result<Vec<RouteOutcome>> {
    let mut outcomes = Vec::with_capacity(requests.len());
    // the call id is a hash of every argument: only computed when needed
    let call_ids: Vec<Option<CallId>> = requests
        .iter()
        .map(|req| req.needs_call_id().then(|| req.call.call_id()))
        .collect();
    // the cycle checks start from these calls' edges: a hint to read them at once
    let checked: Vec<CallId> = requests
        .iter()
        .zip(&call_ids)
        .filter(|(req, _)| req.cycle_control && req.parent_call_id.is_some())
        .filter_map(|(_, id)| id.clone())
        .collect();
    if !checked.is_empty() {
        txn.prefetch_callees(&checked)?;
    }
    for (req, call_id) in requests.into_iter().zip(call_ids) {
        // a caller-chosen id routed again: the invocation it made
        if let Some(id) = &req.invocation_id {
            if let Some(record) = txn.get_invocation(id)? {
                outcomes.push(RouteOutcome::Reused { record, diff: None });
                continue;
            }
        }
        if let (true, Some(parent_call), Some(call_id)) = (
            req.cycle_control,
            req.parent_call_id.as_ref(),
            call_id.as_ref(),
        ) {
            check_cycle(txn, &req, parent_call, call_id, serializer)?;
        }
        {
            if let Some(existing_id) = find_reusable(txn, &req, now)? {
                let record = txn.get_invocation(&existing_id)?.ok_or_else(|| {
                    StoreError::not_found(&existing_id, "registered under a concurrency key")
                })?;
                let new_call_id = call_id.clone().unwrap_or_else(|| req.call.call_id());
                let same = record.call.call_id() == new_call_id;
                let diff = req.registration_diff(&record, same, serializer);
                if let (Some(diff), true) = (&diff, req.concurrency.on_diff_non_key_args_raise) {
                    return Err(StoreError::registration_conflict(
                        &req,
                        &existing_id,
                        new_call_id,
                        diff.clone(),
                    ));
                }
                add_parent_edge(txn, &req, call_id.as_ref())?;
                txn.add_reuse(
                    &existing_id,
                    &ReuseRecord::new(
                        now,
                        req.parent_invocation_id,
                        &record.call.arguments,
                        &req.call.arguments,
                    ),
                )?;
                outcomes.push(RouteOutcome::Reused { record, diff });
                continue;
            }
        }
        let status = if req.scheduled_at.is_some_and(|at| at > now) {
            InvocationStatus::Scheduled
        } else {
            InvocationStatus::Registered
        };
        let invocation_id = match req.invocation_id {
            Some(id) => id,
            None => txn.new_invocation_id(),
        };
        let first = StatusRecord::initial(status).map_err(|source| StoreError::Transition {
            invocation_id,
            source,
        })?;
        add_parent_edge(txn, &req, call_id.as_ref())?;
        let record = Arc::new(InvocationRecord {
            invocation_id,
            call: req.call,
            parent_invocation_id: req.parent_invocation_id,
            created_at: now,
            scheduled_at: req.scheduled_at,
            concurrency: req.concurrency,
            rerun_of: req.rerun_of,
        });
        txn.insert_invocation(&record, &first)?;
        txn.append_history(HistoryStep {
            invocation_id: &record.invocation_id,
            status,
            owner: None,
            actor: &req.actor,
            timestamp: now,
            execution_context: None,
        })?;
        if status == InvocationStatus::Registered {
            txn.enqueue(&record.invocation_id)?;
        }
        outcomes.push(RouteOutcome::New(record));
    }
    Ok(outcomes)
}

/// The invocation registration concurrency reuses for `req`, per its
/// registration scope: one still queued, then (scope `active`) one picked,
/// running or paused, then (scope `cached`) a recent success. A rerun never
/// reuses.
fn find_reusable(
    txn: &mut dyn StoreTxn,
    req: &RouteRequest,
    now: Timestamp,
) -> Result<Option<pynenc_model::InvocationId>> {
    let Some(key) = req.concurrency.registration_key.as_deref() else {
        return Ok(None);
    };
    if req.rerun_of.is_some() {
        return Ok(None);
    }
    if let Some(id) = txn.find_registered(key)? {
        return Ok(Some(id));
    }
    let scope = req.concurrency.registration_scope;
    if scope.reuses_active() {
        if let Some(id) = txn.find_active(key)? {
            return Ok(Some(id));
        }
    }
    match scope.success_since(now) {
        Some(since) => txn.find_success_since(key, since),
        None => Ok(None),
    }
}

/// The call edge from the calling invocation's call to this call (cycle control).
fn add_parent_edge(
    txn: &mut dyn StoreTxn,
    req: &RouteRequest,
    call_id: Option<&CallId>,
) -> Result<()> {
    if let (Some(parent), Some(parent_call), Some(call_id)) = (
        req.parent_invocation_id.as_ref(),
        req.parent_call_id.as_ref(),
        call_id,
    ) {
        txn.add_edge(parent, parent_call, call_id)?;
    }
    Ok(())
}
