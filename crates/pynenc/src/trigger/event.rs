//! Events: [`Pynenc::emit_event`] routes an invocation of the built-in task
//! [`EVENT_TASK_ID`]; the runner that runs it routes the calls of the
//! `on_event` triggers it meets, each keyed by the trigger and the event's
//! invocation. An event is therefore as durable as any call: queued until
//! a runner is up, run again if its runner dies, in the history and the
//! listings like any invocation.

use pynenc_model::{Arguments, InvocationId};
use serde::Serialize;
use serde_json::Value;
use tracing::info;

use crate::app::Pynenc;
use crate::exceptions::{PynencError, Result};
use crate::task::{TaskBody, TaskDefinition, TaskInput, TaskOutput};
use pynenc_options::TaskOptionsSpec;

/// The task id of events: an emitted event is an invocation of this task
/// with the arguments `name` and `payload`.
pub const EVENT_TASK_ID: &str = "pynenc::event";

/// The built-in task every app registers: its body does nothing (the
/// reactions are routed by the runner around it, as for any source task).
pub(crate) static EVENT_TASK: TaskDefinition = TaskDefinition {
    task_id: EVENT_TASK_ID,
    params: &["name", "payload"],
    options: TaskOptionsSpec::DEFAULT,
    body: TaskBody::Sync(event_body),
};

fn event_body(input: TaskInput) -> TaskOutput {
    input
        .serializer
        .serialize(&(), "the result of an event")
        .map_err(|e| PynencError::from(e).to_task_error())
}

impl Pynenc {
    /// Emits the event `name` with `payload`: the `on_event` triggers whose
    /// name and payload filter it meets each route their call once (a
    /// runner runs the event's invocation and routes them, keyed by the
    /// trigger and the event). Callable from anywhere, tasks included.
    /// Returns the event's invocation id.
    ///
    /// # Errors
    ///
    /// An empty name; a payload that does not serialize; routing failed.
    pub async fn emit_event(&self, name: &str, payload: impl Serialize) -> Result<InvocationId> {
        if name.trim().is_empty() {
            return Err(PynencError::TaskRouting {
                task_id: EVENT_TASK_ID.to_string(),
                message: "an event needs a name".into(),
            });
        }
        let payload: Value =
            serde_json::to_value(payload).map_err(|e| PynencError::TaskRouting {
                task_id: EVENT_TASK_ID.to_string(),
                message: format!("the payload of event '{name}' is not JSON: {e}"),
            })?;
        let serializer = self.serializer();
        let mut args = Arguments::new();
        args.insert(serializer, "name", name)?;
        args.insert(serializer, "payload", &payload)?;
        let inv = self.call_task(&EVENT_TASK, args).await?;
        let id = *inv.invocation_id();
        info!(event = name, invocation_id = %id, "event emitted");
        Ok(id)
    }
}
