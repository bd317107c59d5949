//! Invocations: one execution of a call.
//!
//! A [`DistributedInvocation`] is routed through the orchestrator and run by a
//! runner; a [`SynchronousInvocation`] ran in the caller (dev mode). Both are
//! reached through the typed [`Invocation`] handle, whose
//! [`Invocation::result`] waits for the value. Groups of invocations come
//! from `parallelize` as an [`InvocationGroup`].

mod group;
mod wait;

use std::marker::PhantomData;
use std::sync::Arc;

use pynenc_model::{
    Call, CallId, HistoryEntry, InvocationId, InvocationOutcome, InvocationRecord,
    InvocationStatus, SerializationError, Serializer, TaskError, TaskId,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::app::Pynenc;
use crate::exceptions::{PynencError, Result};

pub use group::InvocationGroup;

/// An invocation routed through the orchestrator.
#[derive(Clone)]
pub struct DistributedInvocation {
    pub(crate) app: Pynenc,
    pub(crate) record: Arc<InvocationRecord>,
    reused: Option<Option<String>>,
    /// Its final outcome, when it was read with the record (a workflow's
    /// step replayed): nothing to wait for, nothing more to read.
    pub(crate) known: Option<InvocationOutcome>,
}

impl std::fmt::Debug for DistributedInvocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedInvocation")
            .field("invocation_id", &self.record.invocation_id)
            .field("task_id", &self.record.call.task_id)
            .field("reused", &self.reused.is_some())
            .finish()
    }
}

/// An invocation run in the caller (dev mode: `dev_mode_force_sync_tasks`).
#[derive(Debug, Clone)]
pub struct SynchronousInvocation {
    /// Its id (not stored anywhere).
    pub invocation_id: InvocationId,
    /// The call.
    pub call: Call,
    /// The serialized result or the error.
    pub outcome: std::result::Result<String, TaskError>,
    /// How many retries it took.
    pub num_retries: u32,
    pub(crate) serializer: Serializer,
}

impl SynchronousInvocation {
    /// Its end as a stored outcome would read.
    fn as_outcome(&self) -> InvocationOutcome {
        match &self.outcome {
            Ok(result) => InvocationOutcome {
                status: InvocationStatus::Success,
                result: Some(result.clone()),
                error: None,
            },
            Err(error) => InvocationOutcome {
                status: InvocationStatus::Failed,
                result: None,
                error: Some(error.clone()),
            },
        }
    }
}

/// An invocation of either kind, untyped.
#[derive(Debug, Clone)]
pub enum UntypedInvocation {
    /// Routed through the orchestrator.
    Distributed(DistributedInvocation),
    /// Ran in the caller.
    Synchronous(SynchronousInvocation),
}

/// The JSON form of a distributed invocation handle.
#[derive(Serialize, Deserialize)]
struct InvocationJson {
    invocation_id: InvocationId,
    call: Call,
    parent_invocation_id: Option<InvocationId>,
}

impl UntypedInvocation {
    pub(crate) fn distributed(
        app: Pynenc,
        record: Arc<InvocationRecord>,
        reused: Option<Option<String>>,
    ) -> Self {
        UntypedInvocation::Distributed(DistributedInvocation {
            app,
            record,
            reused,
            known: None,
        })
    }

    /// A workflow's step recorded by an earlier run, read with its outcome:
    /// a final outcome is kept (its result needs no more reads).
    pub(crate) fn replayed(
        app: Pynenc,
        record: Arc<InvocationRecord>,
        outcome: InvocationOutcome,
    ) -> Self {
        UntypedInvocation::Distributed(DistributedInvocation {
            app,
            record,
            reused: Some(None),
            known: outcome.status.is_final().then_some(outcome),
        })
    }

    /// The invocation id.
    pub fn invocation_id(&self) -> &InvocationId {
        match self {
            UntypedInvocation::Distributed(d) => &d.record.invocation_id,
            UntypedInvocation::Synchronous(s) => &s.invocation_id,
        }
    }

    /// The call.
    pub fn call(&self) -> &Call {
        match self {
            UntypedInvocation::Distributed(d) => &d.record.call,
            UntypedInvocation::Synchronous(s) => &s.call,
        }
    }
}

/// A typed handle on an invocation whose task returns `R`.
pub struct Invocation<R> {
    inner: UntypedInvocation,
    _marker: PhantomData<fn() -> R>,
}

impl<R> Clone for Invocation<R> {
    fn clone(&self) -> Self {
        Invocation {
            inner: self.inner.clone(),
            _marker: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for Invocation<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

/// The value (or the error) of an invocation that ended with `outcome`.
pub(crate) fn decode<R: DeserializeOwned>(
    serializer: Serializer,
    task_id: &TaskId,
    invocation_id: &InvocationId,
    outcome: InvocationOutcome,
) -> Result<R> {
    match outcome.status {
        InvocationStatus::Success => {
            let text = outcome.result.ok_or_else(|| {
                PynencError::StateBackend(pynenc_store::StoreError::corrupt(
                    format!("invocation {invocation_id}"),
                    "it is SUCCESS but has no stored result",
                ))
            })?;
            Ok(serializer
                .deserialize(&text, format_args!("result of invocation {invocation_id}"))?)
        }
        InvocationStatus::Failed => Err(PynencError::TaskFailed {
            task_id: task_id.clone(),
            invocation_id: *invocation_id,
            error: outcome
                .error
                .unwrap_or_else(|| TaskError::new("Unknown", "no error stored")),
        }),
        InvocationStatus::Cancelled => Err(PynencError::Cancelled {
            task_id: task_id.clone(),
            invocation_id: *invocation_id,
            error: Box::new(outcome.error.unwrap_or_else(|| {
                TaskError::new(pynenc_model::CANCELLED_ERROR_KIND, "cancelled")
            })),
        }),
        status => Err(PynencError::NoResult {
            invocation_id: *invocation_id,
            status,
        }),
    }
}

impl<R: DeserializeOwned + Send + 'static> Invocation<R> {
    /// Wraps an untyped invocation (the caller vouches for `R`).
    pub fn from_untyped(inner: UntypedInvocation) -> Self {
        Invocation {
            inner,
            _marker: PhantomData,
        }
    }

    /// The untyped invocation.
    pub fn untyped(&self) -> &UntypedInvocation {
        &self.inner
    }

    /// The invocation id.
    pub fn invocation_id(&self) -> &InvocationId {
        self.inner.invocation_id()
    }

    /// The call.
    pub fn call(&self) -> &Call {
        self.inner.call()
    }

    /// The call id.
    pub fn call_id(&self) -> CallId {
        self.call().call_id()
    }

    /// The task id.
    pub fn task_id(&self) -> &TaskId {
        &self.call().task_id
    }

    /// The parent invocation, if the call was made from a task.
    pub fn parent_invocation_id(&self) -> Option<&InvocationId> {
        match &self.inner {
            UntypedInvocation::Distributed(d) => d.record.parent_invocation_id.as_ref(),
            UntypedInvocation::Synchronous(_) => None,
        }
    }

    /// The invocation this one reruns, if it is a rerun.
    pub fn rerun_of(&self) -> Option<&InvocationId> {
        match &self.inner {
            UntypedInvocation::Distributed(d) => d.record.rerun_of.as_ref(),
            UntypedInvocation::Synchronous(_) => None,
        }
    }

    /// The stored record (distributed invocations only).
    pub fn record(&self) -> Option<&InvocationRecord> {
        match &self.inner {
            UntypedInvocation::Distributed(d) => Some(&d.record),
            UntypedInvocation::Synchronous(_) => None,
        }
    }

    /// Whether registration concurrency returned an existing invocation.
    pub fn is_reused(&self) -> bool {
        matches!(&self.inner, UntypedInvocation::Distributed(d) if d.reused.is_some())
    }

    /// For a reused invocation, the arguments of the new call that differed
    /// from the existing invocation's (readable), if any.
    pub fn reuse_diff(&self) -> Option<&str> {
        match &self.inner {
            UntypedInvocation::Distributed(d) => d.reused.as_ref().and_then(|o| o.as_deref()),
            UntypedInvocation::Synchronous(_) => None,
        }
    }

    /// The current status.
    pub async fn status(&self) -> Result<InvocationStatus> {
        match &self.inner {
            UntypedInvocation::Distributed(d) => Ok(d
                .app
                .orchestrator()
                .get_status(&d.record.invocation_id)
                .await?
                .status),
            UntypedInvocation::Synchronous(s) => Ok(if s.outcome.is_ok() {
                InvocationStatus::Success
            } else {
                InvocationStatus::Failed
            }),
        }
    }

    /// How many times it was retried.
    pub async fn num_retries(&self) -> Result<u32> {
        match &self.inner {
            UntypedInvocation::Distributed(d) => Ok(d
                .app
                .orchestrator()
                .get_num_retries(&d.record.invocation_id)
                .await?),
            UntypedInvocation::Synchronous(s) => Ok(s.num_retries),
        }
    }

    /// Every status it went through (empty for a synchronous invocation).
    pub async fn history(&self) -> Result<Vec<HistoryEntry>> {
        match &self.inner {
            UntypedInvocation::Distributed(d) => Ok(d
                .app
                .state_backend()
                .get_history(&d.record.invocation_id)
                .await?),
            UntypedInvocation::Synchronous(_) => Ok(Vec::new()),
        }
    }

    /// Waits for the invocation to finish and returns its value, or the
    /// task's error as [`PynencError::TaskFailed`] (kind and message kept).
    ///
    /// Inside a task, the waiting invocation is paused and frees its runner
    /// slot until the result is ready.
    pub async fn result(&self) -> Result<R> {
        match &self.inner {
            UntypedInvocation::Distributed(d) => {
                let outcome = d.app.outcomes_of(&[d]).await?.pop().ok_or_else(|| {
                    PynencError::StateBackend(pynenc_store::StoreError::not_found(
                        &d.record.invocation_id,
                        "the state backend returned no outcome",
                    ))
                })?;
                decode(
                    d.app.serializer(),
                    &d.record.call.task_id,
                    &d.record.invocation_id,
                    outcome,
                )
            }
            UntypedInvocation::Synchronous(s) => decode(
                s.serializer,
                &s.call.task_id,
                &s.invocation_id,
                s.as_outcome(),
            ),
        }
    }

    /// The invocation handle as JSON (distributed invocations only).
    pub fn to_json(&self) -> Result<String> {
        match &self.inner {
            UntypedInvocation::Distributed(d) => serde_json::to_string(&InvocationJson {
                invocation_id: d.record.invocation_id,
                call: d.record.call.clone(),
                parent_invocation_id: d.record.parent_invocation_id,
            })
            .map_err(|e| SerializationError::serialize("invocation", e).into()),
            UntypedInvocation::Synchronous(s) => Err(SerializationError::serialize(
                format_args!("synchronous invocation {}", s.invocation_id),
                pynenc_model::CodecError::Unsupported(
                    "only distributed invocations can be serialized".into(),
                ),
            )
            .into()),
        }
    }

    /// A handle read from [`Invocation::to_json`], checked against the app's state backend.
    pub async fn from_json(app: &Pynenc, json: &str) -> Result<Self> {
        let parsed: InvocationJson = serde_json::from_str(json)
            .map_err(|e| SerializationError::deserialize("invocation", e))?;
        let record = app
            .state_backend()
            .get_invocation(&parsed.invocation_id)
            .await?;
        if record.call != parsed.call {
            return Err(SerializationError::deserialize(
                format_args!("invocation {}", parsed.invocation_id),
                pynenc_model::CodecError::Unsupported(
                    "its call does not match the stored invocation".into(),
                ),
            )
            .into());
        }
        Ok(Invocation::from_untyped(UntypedInvocation::distributed(
            app.clone(),
            Arc::new(record),
            None,
        )))
    }
}
