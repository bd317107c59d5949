//! Invocations: one execution of a call.
//!
//! A [`DistributedInvocation`] is routed through the orchestrator and run by a
//! runner; a [`SynchronousInvocation`] ran in the caller (dev mode). Both are
//! reached through the typed [`Invocation`] handle, whose
//! [`Invocation::result`] waits for the value. Groups of invocations come
//! from `parallelize` as an [`InvocationGroup`].

use std::marker::PhantomData;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, Stream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::app::Pynenc;
use crate::call::Call;
use crate::exceptions::{PynencError, Result, TaskError};
use crate::orchestrator::ConcurrencySpec;
use crate::state_backend::{HistoryEntry, InvocationOutcome};
use crate::status::InvocationStatus;

/// The stored record of a distributed invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// Unique id of this invocation.
    pub invocation_id: String,
    /// The call it executes.
    pub call: Call,
    /// The invocation that made the call, if any.
    pub parent_invocation_id: Option<String>,
    /// When it was created (µs since the epoch); blocking control runs the oldest first.
    pub created_at_us: i64,
    /// When it is due, for scheduled calls.
    pub scheduled_at_us: Option<i64>,
    /// Its concurrency keys.
    pub concurrency: ConcurrencySpec,
}

impl InvocationRecord {
    /// The record as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A record read from [`InvocationRecord::to_json`].
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| PynencError::serialization("deserialize", "invocation record", e))
    }
}

/// An invocation routed through the orchestrator.
#[derive(Clone)]
pub struct DistributedInvocation {
    app: Pynenc,
    record: Arc<InvocationRecord>,
    reused: Option<Option<String>>,
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
    pub invocation_id: String,
    /// The call.
    pub call: Call,
    /// The serialized result or the error.
    pub outcome: std::result::Result<String, TaskError>,
    /// How many retries it took.
    pub num_retries: u32,
    pub(crate) serializer: crate::serializer::Serializer,
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
    invocation_id: String,
    call: Call,
    parent_invocation_id: Option<String>,
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
        })
    }

    /// The invocation id.
    pub fn invocation_id(&self) -> &str {
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

fn decode<R: DeserializeOwned>(
    app_serializer: crate::serializer::Serializer,
    task_id: &str,
    invocation_id: &str,
    outcome: InvocationOutcome,
) -> Result<R> {
    match outcome.status {
        InvocationStatus::Success => {
            let text = outcome.result.ok_or_else(|| {
                PynencError::backend(format!(
                    "invocation {invocation_id} is SUCCESS but has no stored result"
                ))
            })?;
            app_serializer.deserialize(&text, format_args!("result of invocation {invocation_id}"))
        }
        InvocationStatus::Failed => Err(PynencError::TaskFailed {
            task_id: task_id.to_string(),
            invocation_id: invocation_id.to_string(),
            error: outcome
                .error
                .unwrap_or_else(|| TaskError::new("Unknown", "no error stored")),
        }),
        status => Err(PynencError::NoResult {
            invocation_id: invocation_id.to_string(),
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
    pub fn invocation_id(&self) -> &str {
        self.inner.invocation_id()
    }

    /// The call.
    pub fn call(&self) -> &Call {
        self.inner.call()
    }

    /// The call id.
    pub fn call_id(&self) -> String {
        self.call().call_id()
    }

    /// The task id.
    pub fn task_id(&self) -> &str {
        &self.call().task_id
    }

    /// The parent invocation, if the call was made from a task.
    pub fn parent_invocation_id(&self) -> Option<&str> {
        match &self.inner {
            UntypedInvocation::Distributed(d) => d.record.parent_invocation_id.as_deref(),
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
            UntypedInvocation::Distributed(d) => {
                d.app
                    .orchestrator()
                    .get_num_retries(&d.record.invocation_id)
                    .await
            }
            UntypedInvocation::Synchronous(s) => Ok(s.num_retries),
        }
    }

    /// Every status it went through (empty for a synchronous invocation).
    pub async fn history(&self) -> Result<Vec<HistoryEntry>> {
        match &self.inner {
            UntypedInvocation::Distributed(d) => {
                d.app
                    .state_backend()
                    .get_history(&d.record.invocation_id)
                    .await
            }
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
                let ids = [d.record.invocation_id.clone()];
                d.app.wait_for(&ids).await?;
                let outcome = d
                    .app
                    .state_backend()
                    .get_outcomes(&ids)
                    .await?
                    .pop()
                    .ok_or_else(|| PynencError::backend("no outcome returned"))?;
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
                invocation_id: d.record.invocation_id.clone(),
                call: d.record.call.clone(),
                parent_invocation_id: d.record.parent_invocation_id.clone(),
            })
            .map_err(|e| PynencError::serialization("serialize", "invocation", e)),
            UntypedInvocation::Synchronous(s) => Err(PynencError::serialization(
                "serialize",
                format!("synchronous invocation {}", s.invocation_id),
                "only distributed invocations can be serialized",
            )),
        }
    }

    /// A handle read from [`Invocation::to_json`], checked against the app's state backend.
    pub async fn from_json(app: &Pynenc, json: &str) -> Result<Self> {
        let parsed: InvocationJson = serde_json::from_str(json)
            .map_err(|e| PynencError::serialization("deserialize", "invocation", e))?;
        let record = app
            .state_backend()
            .get_invocation(&parsed.invocation_id)
            .await?;
        if record.call != parsed.call {
            return Err(PynencError::serialization(
                "deserialize",
                format!("invocation {}", parsed.invocation_id),
                "its call does not match the stored invocation",
            ));
        }
        Ok(Invocation::from_untyped(UntypedInvocation::distributed(
            app.clone(),
            Arc::new(record),
            None,
        )))
    }
}

/// The invocations of one `parallelize`, in call order.
pub struct InvocationGroup<R> {
    task_id: String,
    invocations: Vec<Invocation<R>>,
}

impl<R> std::fmt::Debug for InvocationGroup<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationGroup")
            .field("task_id", &self.task_id)
            .field("len", &self.invocations.len())
            .finish()
    }
}

impl<R: DeserializeOwned + Send + 'static> InvocationGroup<R> {
    /// A group (used by `parallelize`).
    pub fn new(task_id: &str, invocations: Vec<Invocation<R>>) -> Self {
        InvocationGroup {
            task_id: task_id.to_string(),
            invocations,
        }
    }

    /// The task.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The invocations, in call order.
    pub fn invocations(&self) -> &[Invocation<R>] {
        &self.invocations
    }

    /// How many invocations.
    pub fn len(&self) -> usize {
        self.invocations.len()
    }

    /// Whether the group is empty.
    pub fn is_empty(&self) -> bool {
        self.invocations.is_empty()
    }

    /// Waits for all of them (one pause of the caller) and returns the values
    /// in call order; the first error (in call order) is returned instead.
    pub async fn results(&self) -> Result<Vec<R>> {
        let mut app = None;
        let mut ids = Vec::new();
        for inv in &self.invocations {
            if let UntypedInvocation::Distributed(d) = &inv.inner {
                app.get_or_insert_with(|| d.app.clone());
                ids.push(d.record.invocation_id.clone());
            }
        }
        let mut outcomes = match &app {
            Some(app) => {
                app.wait_for(&ids).await?;
                app.state_backend().get_outcomes(&ids).await?.into_iter()
            }
            None => Vec::new().into_iter(),
        };
        let mut values = Vec::with_capacity(self.invocations.len());
        for inv in &self.invocations {
            match &inv.inner {
                UntypedInvocation::Distributed(d) => {
                    let outcome = outcomes
                        .next()
                        .ok_or_else(|| PynencError::backend("missing outcome in group"))?;
                    values.push(decode(
                        d.app.serializer(),
                        &d.record.call.task_id,
                        &d.record.invocation_id,
                        outcome,
                    )?);
                }
                UntypedInvocation::Synchronous(_) => values.push(inv.result().await?),
            }
        }
        Ok(values)
    }

    /// The results as they complete: `(index in call order, result)`.
    pub fn stream(&self) -> impl Stream<Item = (usize, Result<R>)> + '_ {
        self.invocations
            .iter()
            .enumerate()
            .map(|(i, inv)| async move { (i, inv.result().await) })
            .collect::<FuturesUnordered<_>>()
    }
}
