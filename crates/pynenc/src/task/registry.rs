//! The tasks of an app, found by id, with their effective options.

use pynenc_model::{TaskId, TaskOptions};
use rustc_hash::FxHashMap;

use super::TaskDefinition;
use crate::exceptions::{PynencError, Result};

/// A registered task: its definition, its effective options, and its id as
/// a shared string (calls of the task share it instead of copying it).
#[derive(Debug, Clone)]
pub struct RegisteredTask {
    /// What `#[task]` generated.
    pub definition: &'static TaskDefinition,
    /// The `#[task]` options with configuration applied.
    pub options: TaskOptions,
    /// The task id.
    pub task_id: TaskId,
}

/// Per-task options after configuration, for every task of an app.
#[derive(Debug, Clone, Default)]
pub struct TaskRegistry {
    tasks: FxHashMap<&'static str, RegisteredTask>,
}

impl TaskRegistry {
    /// Adds a task with its effective options.
    pub fn insert(&mut self, definition: &'static TaskDefinition, options: TaskOptions) {
        self.tasks.insert(
            definition.task_id,
            RegisteredTask {
                definition,
                options,
                task_id: TaskId::from(definition.task_id),
            },
        );
    }

    /// Finds a task by id.
    ///
    /// # Errors
    ///
    /// [`PynencError::TaskNotRegistered`] naming the id and the registered
    /// ids that look like it.
    pub fn get(&self, task_id: &str) -> Result<&RegisteredTask> {
        self.tasks
            .get(task_id)
            .ok_or_else(|| PynencError::TaskNotRegistered {
                task_id: task_id.to_string(),
                suggestions: crate::conf::near_task_ids(task_id, self.task_ids()),
                registered: self.tasks.len(),
            })
    }

    /// The effective options of a task, if registered.
    pub fn options(&self, task_id: &str) -> Option<&TaskOptions> {
        self.tasks.get(task_id).map(|t| &t.options)
    }

    /// Whether a task id is registered.
    pub fn contains(&self, task_id: &str) -> bool {
        self.tasks.contains_key(task_id)
    }

    /// The registered task ids, sorted.
    pub fn task_ids(&self) -> Vec<&'static str> {
        let mut ids: Vec<&'static str> = self.tasks.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// How many tasks are registered.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task is registered.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}
