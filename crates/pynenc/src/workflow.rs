//! Workflows: tasks with the option `workflow = true`, whose calls are
//! steps recorded once and given back when the workflow runs again (see
//! the routing of calls, `app/routing.rs`), and what only a workflow can
//! do: [`sleep`] durably; take the time, random numbers and ids that are
//! the same every time it runs ([`now`], [`random`], [`uuid()`]); keep data
//! ([`set_data`], [`get_data`]); wait for a signal ([`wait_signal`],
//! sent by [`crate::Pynenc::signal`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pynenc_model::{Arguments, InvocationId, InvocationRecord, Timestamp};
use pynenc_options::TaskOptionsSpec;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::{self, InvocationContext};
use crate::exceptions::{PynencError, Result};
use crate::task::{TaskBody, TaskDefinition, TaskInput, TaskOutput};

/// The task id of a workflow's durable sleeps: each [`sleep`] is a step,
/// an invocation of this task scheduled for the end of the sleep.
pub const SLEEP_TASK_ID: &str = "pynenc::workflow_sleep";

/// The built-in task every app registers: its body does nothing; being run
/// (once due) is what ends the sleep.
pub(crate) static SLEEP_TASK: TaskDefinition = TaskDefinition {
    task_id: SLEEP_TASK_ID,
    params: &["duration_ms"],
    options: TaskOptionsSpec::DEFAULT,
    body: TaskBody::Sync(wait_ended),
};

/// The body of the built-in tasks whose run ends a workflow's wait (a
/// sleep, a signal): nothing to do, `()` as the result.
fn wait_ended(input: TaskInput) -> TaskOutput {
    input
        .serializer
        .serialize(&(), "the end of a workflow's wait")
        .map_err(|e| PynencError::from(e).to_task_error())
}

/// The task id of a workflow's waits for signals: each wait that is not
/// answered at once is an invocation of this task, scheduled for a time
/// that never comes, run by [`crate::Pynenc::signal`].
pub const SIGNAL_TASK_ID: &str = "pynenc::workflow_signal";

/// The built-in task of signals: its body does nothing; being run (by the
/// signal) is what ends the wait.
pub(crate) static SIGNAL_TASK: TaskDefinition = TaskDefinition {
    task_id: SIGNAL_TASK_ID,
    params: &["name"],
    options: TaskOptionsSpec::DEFAULT,
    body: TaskBody::Sync(wait_ended),
};

/// How far ahead a wait for a signal is scheduled: never, in practice.
const SIGNAL_WAIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The key of the signal `name` in a workflow's data.
fn signal_key(name: &str) -> String {
    format!("signal:{name}")
}

/// The invocation of the workflow `record`'s wait for the signal `name`:
/// its id is known to the sender as well as to the workflow.
fn signal_wait_id(record: &InvocationRecord, name: &str) -> InvocationId {
    InvocationId::keyed(
        record.created_at,
        &format!("{}#signal:{name}", record.invocation_id),
    )
}

/// The error of a workflow-only function called elsewhere.
fn outside(what: &str) -> PynencError {
    PynencError::TaskRouting {
        task_id: SLEEP_TASK_ID.to_string(),
        message: format!(
            "pynenc::workflow::{what} is for the body of a workflow (a task with workflow = true)"
        ),
    }
}

/// The workflow running here; `Ok(None)` in dev mode (calls run in the
/// caller, nothing is replayed).
fn current(what: &str) -> Result<Option<Arc<InvocationContext>>> {
    let ctx = context::current().ok_or_else(|| outside(what))?;
    if ctx.workflow.is_some() {
        return Ok(Some(ctx));
    }
    if ctx.app.conf().dev_mode_force_sync_tasks {
        return Ok(None);
    }
    Err(outside(what))
}

/// A value made on the workflow's first run and given back as it was on
/// every later run: a step of its own, kept in the workflow's data (one
/// round trip, first run or not).
async fn recorded<T: Serialize + DeserializeOwned>(
    what: &str,
    make: impl FnOnce() -> T,
) -> Result<T> {
    let Some(ctx) = current(what)? else {
        return Ok(make());
    };
    let n = ctx.next_workflow_number().ok_or_else(|| outside(what))?;
    let text = serde_json::to_string(&make()).map_err(|e| value_error(what, e))?;
    let kept = ctx
        .app
        .workflow_data()
        .put_workflow_data(ctx.invocation_id(), &format!("@{n}"), &text, true)
        .await?;
    serde_json::from_str(&kept).map_err(|e| value_error(what, e))
}

fn value_error(what: &str, e: serde_json::Error) -> PynencError {
    PynencError::TaskRouting {
        task_id: SLEEP_TASK_ID.to_string(),
        message: format!("the value of pynenc::workflow::{what} cannot be kept: {e}"),
    }
}

/// The time of the workflow's first run at this point: the same on every
/// run (a step; the current time in dev mode).
///
/// # Errors
///
/// Outside the body of a workflow; the backend failed.
pub async fn now() -> Result<SystemTime> {
    let micros: u128 = recorded("now", || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0)
    })
    .await?;
    let micros = u64::try_from(micros).unwrap_or(u64::MAX);
    Ok(UNIX_EPOCH + Duration::from_micros(micros))
}

/// A random number in `[0, 1)` drawn on the workflow's first run, the same
/// on every run (a step).
///
/// # Errors
///
/// Outside the body of a workflow; the backend failed.
pub async fn random() -> Result<f64> {
    recorded("random", || {
        let bits = uuid::Uuid::new_v4().as_u128() as u64;
        (bits >> 11) as f64 / (1u64 << 53) as f64
    })
    .await
}

/// A random (v4) UUID made on the workflow's first run, the same on every
/// run (a step).
///
/// # Errors
///
/// Outside the body of a workflow; the backend failed.
pub async fn uuid() -> Result<uuid::Uuid> {
    let bits: u128 = recorded("uuid", || uuid::Uuid::new_v4().as_u128()).await?;
    Ok(uuid::Uuid::from_u128(bits))
}

/// Keeps `value` under `key` in the workflow's data, for the rest of this
/// run and every later run (a later `set_data` of the key replaces it). The
/// data goes with the workflow's invocation when it is purged.
///
/// # Errors
///
/// Outside the body of a workflow (dev mode included: nothing is kept
/// there); a value that does not serialize; the backend failed.
pub async fn set_data<T: Serialize>(key: &str, value: &T) -> Result<()> {
    let ctx = current("set_data")?.ok_or_else(|| outside("set_data"))?;
    let text = serde_json::to_string(value).map_err(|e| value_error("set_data", e))?;
    ctx.app
        .workflow_data()
        .put_workflow_data(ctx.invocation_id(), &format!("data:{key}"), &text, false)
        .await?;
    Ok(())
}

/// The value kept under `key` in the workflow's data (by this run or an
/// earlier one), if any.
///
/// # Errors
///
/// Outside the body of a workflow; a kept value that does not decode as
/// `T`; the backend failed.
pub async fn get_data<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
    let ctx = current("get_data")?.ok_or_else(|| outside("get_data"))?;
    let kept = ctx
        .app
        .workflow_data()
        .workflow_data(ctx.invocation_id(), &format!("data:{key}"))
        .await?;
    kept.map(|text| serde_json::from_str(&text).map_err(|e| value_error("get_data", e)))
        .transpose()
}

/// Waits for the signal `name` ([`crate::Pynenc::signal`]) and returns its
/// payload, in the body of a workflow: a step. When the signal has come
/// already (before the wait, or on an earlier run) it returns at once;
/// otherwise the workflow is paused (its slot freed) until the signal
/// comes, on any runner. A workflow receives each signal name once.
///
/// # Errors
///
/// Outside the body of a workflow (dev mode included: nothing can signal
/// it); a payload that does not decode as `T`; the wait ended without the
/// signal (it was cancelled); the backend failed.
pub async fn wait_signal<T: DeserializeOwned>(name: &str) -> Result<T> {
    let ctx = current("wait_signal")?.ok_or_else(|| outside("wait_signal"))?;
    // a step for the numbering, whether it waits or not
    ctx.next_workflow_number();
    let app = ctx.app.clone();
    let workflow = *ctx.invocation_id();
    let key = signal_key(name);
    let received = || async {
        app.workflow_data()
            .workflow_data(&workflow, &key)
            .await
            .map_err(PynencError::from)
    };
    if let Some(text) = received().await? {
        return serde_json::from_str(&text).map_err(|e| value_error("wait_signal", e));
    }
    let wait = signal_wait_id(&ctx.record, name);
    let mut args = Arguments::new();
    args.insert(app.serializer(), "name", name)?;
    let at = Timestamp::from(SystemTime::now() + SIGNAL_WAIT);
    app.route_keyed(&SIGNAL_TASK, args, Some(at), wait).await?;
    // a signal sent after the look above found no wait to end: look again
    if received().await?.is_some() {
        end_wait(&app, &wait).await?;
    }
    app.wait_for(&[wait]).await?;
    let text = received().await?.ok_or_else(|| PynencError::TaskRouting {
        task_id: SIGNAL_TASK_ID.to_string(),
        message: format!("the wait of workflow {workflow} for signal '{name}' ended without it"),
    })?;
    serde_json::from_str(&text).map_err(|e| value_error("wait_signal", e))
}

/// Ends a workflow's wait for a signal (its invocation runs now); nothing
/// when there is no such wait, or it ended already.
async fn end_wait(app: &crate::Pynenc, wait: &InvocationId) -> Result<()> {
    match app
        .orchestrator()
        .run_scheduled_now(wait, app.external_runner_id())
        .await
    {
        Ok(())
        | Err(pynenc_store::StoreError::NotFound { .. })
        | Err(pynenc_store::StoreError::Transition { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl crate::Pynenc {
    /// Sends the signal `name` with `payload` to the workflow
    /// `workflow_id` ([`wait_signal`]): kept in the workflow's data, and the
    /// workflow's wait for it, if it waits, ends now. A workflow receives a
    /// name once: returns `false` (and changes nothing) when that name was
    /// sent already with another payload.
    ///
    /// # Errors
    ///
    /// An unknown invocation; a payload that does not serialize; the
    /// backend failed.
    pub async fn signal(
        &self,
        workflow_id: &InvocationId,
        name: &str,
        payload: impl Serialize,
    ) -> Result<bool> {
        let text = serde_json::to_string(&payload).map_err(|e| value_error("signal", e))?;
        let kept = self
            .workflow_data()
            .put_workflow_data(workflow_id, &signal_key(name), &text, true)
            .await?;
        let record = self.state_backend().get_invocation(workflow_id).await?;
        end_wait(self, &signal_wait_id(&record, name)).await?;
        Ok(kept == text)
    }
}

/// The id of the workflow running here (its invocation's id): what
/// [`crate::Pynenc::signal`] is sent to.
///
/// # Errors
///
/// Outside the body of a workflow.
pub fn id() -> Result<InvocationId> {
    let ctx = current("id")?.ok_or_else(|| outside("id"))?;
    Ok(*ctx.invocation_id())
}

/// Sleeps `duration`, durably, in the body of a workflow: the sleep is a
/// step (an invocation of [`SLEEP_TASK_ID`] scheduled for its end), the
/// workflow is paused meanwhile and its runner slot freed, and it resumes
/// on whichever runner runs the step when it is due. A workflow that runs
/// again (a retry, its runner lost) gets the same step back: the sleep
/// ends when it was first due, it does not start again. In dev mode
/// (calls run in the caller) it is a plain sleep.
///
/// # Errors
///
/// Called outside the body of a workflow (a task with `workflow = true`);
/// routing the step failed, or the workflow's code asked for another step
/// here than the one it recorded ([`PynencError::WorkflowNonDeterminism`]).
pub async fn sleep(duration: Duration) -> Result<()> {
    let Some(ctx) = current("sleep")? else {
        tokio::time::sleep(duration).await;
        return Ok(());
    };
    let app = ctx.app.clone();
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let mut args = Arguments::new();
    args.insert(app.serializer(), "duration_ms", &millis)?;
    let step = app
        .schedule_task(&SLEEP_TASK, args, SystemTime::now() + duration)
        .await?;
    app.wait_for(&[*step.invocation_id()]).await
}
