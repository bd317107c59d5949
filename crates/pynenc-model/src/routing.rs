//! Routing: the calls a caller asks to route, what routing produced, and
//! the cycles cycle control refuses.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::arguments::ArgumentPrintMode;
use crate::call::Call;
use crate::ids::{CallId, InvocationId, RunnerId, TaskId};
use crate::record::{ConcurrencySpec, InvocationRecord};
use crate::serializer::Serializer;
use crate::time::Timestamp;

/// A call to route.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    /// The call.
    pub call: Call,
    /// The invocation making the call, if it is made from a running task.
    pub parent_invocation_id: Option<InvocationId>,
    /// The call id of the parent (for cycle control).
    pub parent_call_id: Option<CallId>,
    /// Concurrency settings.
    pub concurrency: ConcurrencySpec,
    /// Run at this time instead of now: `SCHEDULED` until due.
    pub scheduled_at: Option<Timestamp>,
    /// Check that the call does not close a cycle with its parent's callers.
    pub cycle_control: bool,
    /// How the arguments of the calls of a cycle are shown in its error.
    pub print_arguments: ArgumentPrintMode,
    /// Who routes it (runner id or the external caller id), for the history.
    pub actor: RunnerId,
    /// The invocation this call reruns (it then never reuses another).
    pub rerun_of: Option<InvocationId>,
    /// The id a new invocation gets (`None`: the backend picks one). A
    /// caller chooses it when it must name the invocation before routing:
    /// as the holder of values its arguments keep in the data store, or as
    /// the key of a call that must be made once (a trigger's firing, see
    /// [`InvocationId::keyed`]). If an invocation with this id exists, routing
    /// returns it as reused and creates nothing.
    pub invocation_id: Option<InvocationId>,
}

impl RouteRequest {
    /// A top-level call (no parent) routed now by `actor`, with cycle
    /// control on, no concurrency control and arguments shown truncated in
    /// errors; set the other fields for anything else.
    pub fn new(call: Call, actor: RunnerId) -> RouteRequest {
        RouteRequest {
            call,
            parent_invocation_id: None,
            parent_call_id: None,
            concurrency: ConcurrencySpec::default(),
            scheduled_at: None,
            cycle_control: true,
            print_arguments: ArgumentPrintMode::default(),
            actor,
            rerun_of: None,
            invocation_id: None,
        }
    }

    /// Whether routing needs the call id (a hash of every argument): for
    /// cycle control under a parent, and for registration concurrency.
    pub fn needs_call_id(&self) -> bool {
        self.parent_call_id.is_some() || self.concurrency.registration_key.is_some()
    }

    /// How this call's arguments differ from those of `existing`, the
    /// invocation registered under the same key (`None`: the same call).
    pub fn registration_diff(
        &self,
        existing: &InvocationRecord,
        same_call: bool,
        serializer: Serializer,
    ) -> Option<String> {
        (!same_call).then(|| {
            existing
                .call
                .arguments
                .diff(&self.call.arguments, serializer)
        })
    }
}

/// What routing a call produced.
#[derive(Debug, Clone)]
pub enum RouteOutcome {
    /// A new invocation, registered (or scheduled) and queued.
    New(Arc<InvocationRecord>),
    /// An invocation already registered for the same registration key.
    Reused {
        /// The existing invocation.
        record: Arc<InvocationRecord>,
        /// The arguments of the new call that differ, readable (`None` when identical).
        diff: Option<String>,
    },
}

impl RouteOutcome {
    /// The invocation the call resolved to.
    pub fn record(&self) -> &InvocationRecord {
        match self {
            RouteOutcome::New(r) | RouteOutcome::Reused { record: r, .. } => r,
        }
    }
}

/// A call named in a message: its task, its id, and its arguments as shown
/// by the app's `print_arguments` setting when they are known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRef {
    /// The task.
    pub task_id: TaskId,
    /// The call id.
    pub call_id: CallId,
    /// The arguments, rendered (`(x=1, y=2)`), when known.
    pub arguments: Option<String>,
}

impl CallRef {
    /// A call known only by its id (the arguments are shown as a short hash).
    pub fn from_call_id(call_id: CallId) -> Self {
        CallRef {
            task_id: TaskId::from(call_id.task_id()),
            call_id,
            arguments: None,
        }
    }

    /// A call with its arguments rendered by `mode`.
    pub fn of_call(
        call: &Call,
        call_id: CallId,
        mode: ArgumentPrintMode,
        serializer: Serializer,
    ) -> Self {
        CallRef {
            task_id: call.task_id.clone(),
            call_id,
            arguments: Some(call.arguments.render(mode, serializer)),
        }
    }
}

impl fmt::Display for CallRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.arguments {
            Some(args) => write!(f, "{}{args}", self.task_id),
            None => write!(f, "{}(#{})", self.task_id, self.call_id.short_hash(12)),
        }
    }
}

/// A call that would close a cycle of invocations waiting for each other:
/// routing refuses it instead of letting the invocations deadlock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct CycleError {
    /// The cycle in call order: the calling invocation's call, the call it
    /// makes, ..., and the calling call again.
    pub calls: Vec<CallRef>,
}

impl CycleError {
    /// The readable message: what call from where closes which cycle.
    pub fn message(&self) -> String {
        let chain = self
            .calls
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" → ");
        match (self.calls.first(), self.calls.get(1)) {
            (Some(parent), Some(callee)) => format!(
                "calling {callee} from {parent} would close the cycle {chain}; an invocation would wait for itself"
            ),
            _ => format!("the calls {chain} form a cycle"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_messages_name_calls_by_task_and_arguments() {
        let a = CallRef {
            task_id: TaskId::from("shop::a"),
            call_id: CallId::from(format!("shop::a#{}", "0".repeat(64))),
            arguments: Some("(x=1)".into()),
        };
        let b = CallRef::from_call_id(CallId::from(format!("shop::b#{}", "ab".repeat(32))));
        let err = CycleError {
            calls: vec![a.clone(), b.clone(), a],
        };
        assert_eq!(
            err.to_string(),
            "calling shop::b(#abababababab) from shop::a(x=1) would close the cycle \
             shop::a(x=1) → shop::b(#abababababab) → shop::a(x=1); an invocation would wait for itself"
        );
    }
}
