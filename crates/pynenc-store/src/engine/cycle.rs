//! Cycle control: finding a path of call edges that a new call would close,
//! and describing the cycle readably.

use std::collections::HashSet;

use pynenc_model::{
    ArgumentPrintMode, Call, CallId, CallRef, CycleError, RouteRequest, Serializer,
};

use crate::error::Result;
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
    let ancestor_calls = ancestors.iter().map(|r| &r.call);
    Err(cycle_error(
        call_ids,
        &req.call,
        ancestor_calls,
        req.print_arguments,
        serializer,
    )
    .into())
}

/// The error for the cycle `call_ids` (calling call, callee, ..., calling
/// call), naming each call by task and arguments: the callee's from `callee`,
/// the others' from the calls of the calling invocation and its ancestors
/// (`ancestor_calls`, nearest first), or by a short hash where none of them
/// made that call.
pub fn cycle_error<'a>(
    call_ids: Vec<CallId>,
    callee: &'a Call,
    ancestor_calls: impl IntoIterator<Item = &'a Call>,
    mode: ArgumentPrintMode,
    serializer: Serializer,
) -> CycleError {
    let callee_id = call_ids.get(1).cloned();
    let known: Vec<(CallId, &Call)> = ancestor_calls
        .into_iter()
        .map(|c| (c.call_id(), c))
        .collect();
    let calls = call_ids
        .into_iter()
        .map(|id| {
            let call = if Some(&id) == callee_id.as_ref() {
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
