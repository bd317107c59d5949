//! Cycle control: finding a path of call edges that a new call would close,
//! and describing the cycle readably.

use std::collections::HashSet;
use std::sync::Arc;

use pynenc_model::{
    ArgumentPrintMode, Call, CallId, CallRef, CycleError, InvocationId, InvocationRecord,
    RouteRequest, Serializer,
};

use crate::error::{Result, StoreError};
use crate::txn::StoreTxn;

/// How many ancestors of the calling invocation are read to show the
/// arguments of the calls of a cycle (only when one is found).
pub const ANCESTORS_SEARCHED: usize = 64;

/// Finds a path of call edges from `from` to `to`, returning the calls on it.
fn find_path(txn: &mut dyn StoreTxn, from: &CallId, to: &CallId) -> Result<Option<Vec<CallId>>> {
    let mut stack: Vec<(CallId, Vec<CallId>)> = vec![(from.clone(), vec![from.clone()])];
    let mut seen: HashSet<CallId> = HashSet::new();
    while let Some((node, path)) = stack.pop() {
        if &node == to {
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

/// Refuses `req` (made from the invocation whose call is `parent_call_id`)
/// if calling `callee_call_id` closes a cycle of unfinished invocations.
pub(crate) fn check_cycle(
    txn: &mut dyn StoreTxn,
    req: &RouteRequest,
    parent_call_id: &CallId,
    callee_call_id: &CallId,
    serializer: Serializer,
) -> Result<()> {
    let call_ids = if parent_call_id == callee_call_id {
        vec![parent_call_id.clone(), callee_call_id.clone()]
    } else {
        match find_path(txn, callee_call_id, parent_call_id)? {
            None => return Ok(()),
            Some(path) => {
                let mut c = vec![parent_call_id.clone()];
                c.extend(path);
                c
            }
        }
    };
    let mut ancestors = Vec::new();
    let mut next = req.parent_invocation_id;
    while let Some(id) = next {
        if ancestors.len() >= ANCESTORS_SEARCHED {
            break;
        }
        match txn.get_invocation(&id)? {
            Some(record) => {
                next = record.parent_invocation_id;
                ancestors.push(record);
            }
            None => break,
        }
    }
    Err(cycle_error(
        call_ids,
        &req.call,
        &ancestors,
        req.print_arguments,
        serializer,
    )
    .into())
}

/// The error for the cycle `call_ids` (calling call, callee, ..., calling
/// call), naming each call by task and arguments: the callee's from `callee`,
/// the others' from the calling invocation and its `ancestors` (nearest
/// first), or by a short hash where none of them made that call.
pub fn cycle_error(
    call_ids: Vec<CallId>,
    callee: &Call,
    ancestors: &[Arc<InvocationRecord>],
    mode: ArgumentPrintMode,
    serializer: Serializer,
) -> CycleError {
    let callee_id = callee.call_id();
    let known: Vec<(CallId, &Call)> = ancestors
        .iter()
        .map(|r| (r.call.call_id(), &r.call))
        .collect();
    let calls = call_ids
        .into_iter()
        .map(|id| {
            let call = if id == callee_id {
                Some(callee)
            } else {
                known.iter().find(|(k, _)| *k == id).map(|(_, c)| *c)
            };
            match call {
                Some(call) => CallRef::of_call(call, id, mode, serializer),
                None => CallRef::from_call_id(id),
            }
        })
        .collect();
    CycleError { calls }
}

/// The error for a call refused because `existing` is registered under the
/// same key with other arguments.
pub fn registration_conflict(
    req: &RouteRequest,
    existing: &InvocationId,
    new_call_id: CallId,
    diff: String,
) -> StoreError {
    StoreError::RegistrationConflict {
        task_id: req.call.task_id.clone(),
        existing_invocation_id: *existing,
        new_call_id,
        diff,
    }
}
