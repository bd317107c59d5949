//! Invocations by id and calls by task name: what a command line, a
//! monitor, a trigger or another language uses, with no Rust type at hand.

use std::sync::Arc;

use pynenc_model::{Arguments, InvocationId};
use pynenc_store::Queries;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tracing::debug;

use super::Pynenc;
use crate::exceptions::{PynencError, Result};
use crate::invocation::{Invocation, UntypedInvocation};

impl Pynenc {
    /// Listings, counts, the queue, the blocking graph and the runners.
    pub fn queries(&self) -> &Arc<dyn Queries> {
        &self.inner.components.queries
    }

    /// A handle on an existing invocation whose result is read as JSON
    /// (whatever the serializer).
    ///
    /// # Errors
    ///
    /// [`PynencError::InvocationNotFound`] when there is no such invocation
    /// (never routed, or purged); a backend failure.
    pub async fn invocation(&self, invocation_id: &InvocationId) -> Result<Invocation<Value>> {
        self.invocation_as(invocation_id).await
    }

    /// A handle on an existing invocation whose task returns `R` (the
    /// caller vouches for `R`; a result of another type fails to
    /// deserialize with an error naming the invocation).
    ///
    /// # Errors
    ///
    /// As [`Pynenc::invocation`].
    pub async fn invocation_as<R: DeserializeOwned + Send + 'static>(
        &self,
        invocation_id: &InvocationId,
    ) -> Result<Invocation<R>> {
        let record = self.state_backend().get_invocation(invocation_id).await?;
        Ok(Invocation::from_untyped(UntypedInvocation::distributed(
            self.clone(),
            Arc::new(record),
            None,
        )))
    }

    /// Routes a call of the task `task_id` with arguments given as a JSON
    /// object (parameter name → value), as `#[task]`'s typed call would;
    /// the result is read as JSON.
    ///
    /// # Errors
    ///
    /// [`PynencError::TaskNotRegistered`] for an unknown task id (with the
    /// ids that look like it); [`PynencError::InvalidArguments`] for an
    /// argument the task has no parameter for or a parameter with no
    /// argument; what routing refuses. Nothing is routed then.
    pub async fn call_by_name(
        &self,
        task_id: &str,
        arguments: &Map<String, Value>,
    ) -> Result<Invocation<Value>> {
        let task = self.registry().get(task_id)?;
        let args = Arguments::from_json(self.serializer(), arguments)?;
        let inv = self.call_task(task.definition, args).await?;
        debug!(task_id, invocation_id = %inv.invocation_id(), "routed by name");
        Ok(Invocation::from_untyped(inv))
    }

    /// [`Pynenc::call_by_name`] with the arguments as JSON text (an object).
    ///
    /// # Errors
    ///
    /// As [`Pynenc::call_by_name`], and the text is not a JSON object.
    pub async fn call_by_name_json(
        &self,
        task_id: &str,
        arguments: &str,
    ) -> Result<Invocation<Value>> {
        let parsed: Value =
            serde_json::from_str(arguments).map_err(|e| PynencError::TaskRouting {
                task_id: task_id.to_string(),
                message: format!("the arguments are not JSON: {e}"),
            })?;
        let Value::Object(map) = parsed else {
            return Err(PynencError::TaskRouting {
                task_id: task_id.to_string(),
                message: "the arguments must be a JSON object of parameter name to value".into(),
            });
        };
        self.call_by_name(task_id, &map).await
    }
}
