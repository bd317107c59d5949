//! A call: one task with one set of arguments.

use serde::{Deserialize, Serialize};

use crate::arguments::Arguments;
use crate::ids::{CallId, TaskId};
use crate::serializer::SerializationError;

/// A specific call of a task. A call is unique per task and arguments;
/// one call may have several invocations.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Call {
    /// The task's id (module path and function name).
    pub task_id: TaskId,
    /// The serialized arguments.
    pub arguments: Arguments,
}

impl Call {
    /// A call of `task_id` with `arguments`.
    pub fn new(task_id: impl Into<TaskId>, arguments: Arguments) -> Self {
        Call {
            task_id: task_id.into(),
            arguments,
        }
    }

    /// The id of the call: the task id and the arguments' stable hash.
    pub fn call_id(&self) -> CallId {
        let mut id = String::with_capacity(self.task_id.as_str().len() + 65);
        id.push_str(self.task_id.as_str());
        id.push('#');
        self.arguments.push_args_id(&mut id);
        CallId::from(id)
    }

    /// The serialized call.
    pub fn to_json(&self) -> String {
        // A map of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A call read from [`Call::to_json`].
    pub fn from_json(json: &str) -> Result<Call, SerializationError> {
        serde_json::from_str(json).map_err(|e| SerializationError::deserialize("call", e))
    }

    /// The arguments that identify the call for `key_arguments` based concurrency.
    pub fn key_arguments(&self, keys: &[&str]) -> Arguments {
        self.arguments.subset(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serializer::Serializer;

    #[test]
    fn call_json_round_trip_and_id() {
        let s = Serializer::Json;
        let args = Arguments::new()
            .with(s, "b", &vec![1, 2])
            .unwrap()
            .with(s, "a", &"x")
            .unwrap();
        let call = Call::new("my_crate::add", args);
        let back = Call::from_json(&call.to_json()).unwrap();
        assert_eq!(back, call);
        assert_eq!(back.call_id(), call.call_id());
        assert!(call.call_id().starts_with("my_crate::add#"));
        let err = Call::from_json("{").unwrap_err();
        assert!(err.to_string().contains("call"));
    }
}
