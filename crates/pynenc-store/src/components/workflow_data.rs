//! Workflow data: values kept per workflow invocation — what its body sets
//! (`set_data`) and what it recorded on its first run (the time, random
//! numbers) — forgotten with the invocation.

use async_trait::async_trait;

use pynenc_model::InvocationId;

use crate::error::Result;

/// The data of workflows, by workflow invocation and key.
#[async_trait]
pub trait WorkflowData: Send + Sync {
    /// Sets `key` of the workflow `workflow_id` to `value` — with
    /// `if_absent`, only when the key has no value yet — and returns the
    /// value the key holds afterwards (`value`, or the one it kept).
    ///
    /// # Errors
    ///
    /// [`crate::StoreError::NotFound`] for an unknown invocation.
    async fn put_workflow_data(
        &self,
        workflow_id: &InvocationId,
        key: &str,
        value: &str,
        if_absent: bool,
    ) -> Result<String>;

    /// The value of `key` of the workflow `workflow_id`; `None` when it has
    /// none (or the invocation does not exist).
    async fn workflow_data(&self, workflow_id: &InvocationId, key: &str) -> Result<Option<String>>;
}
