//! Workflows: tasks with the option `workflow = true`, whose calls are
//! steps recorded once and given back when the workflow runs again (see
//! the routing of calls, `app/routing.rs`), and what only a workflow can
//! do: [`sleep`] durably.

use std::time::{Duration, SystemTime};

use pynenc_model::Arguments;
use pynenc_options::TaskOptionsSpec;

use crate::context;
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
    body: TaskBody::Sync(sleep_body),
};

fn sleep_body(input: TaskInput) -> TaskOutput {
    input
        .serializer
        .serialize(&(), "the end of a sleep")
        .map_err(|e| PynencError::from(e).to_task_error())
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
    let outside = || PynencError::TaskRouting {
        task_id: SLEEP_TASK_ID.to_string(),
        message: "pynenc::workflow::sleep is for the body of a workflow (a task with \
                  workflow = true)"
            .into(),
    };
    let ctx = context::current().ok_or_else(outside)?;
    let app = ctx.app.clone();
    if ctx.workflow_steps.is_none() {
        if app.conf().dev_mode_force_sync_tasks {
            tokio::time::sleep(duration).await;
            return Ok(());
        }
        return Err(outside());
    }
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let mut args = Arguments::new();
    args.insert(app.serializer(), "duration_ms", &millis)?;
    let step = app
        .schedule_task(&SLEEP_TASK, args, SystemTime::now() + duration)
        .await?;
    app.wait_for(&[*step.invocation_id()]).await
}
