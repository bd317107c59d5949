//! The state backend: invocation records, their history, results and errors.

use async_trait::async_trait;

use pynenc_model::{HistoryEntry, InvocationId, InvocationOutcome, InvocationRecord};

use crate::error::Result;

/// Remembers everything about invocations. Reads only, and the one purge:
/// every other write goes through the orchestrator's atomic steps, so that
/// a status and the data it implies are always written together.
#[async_trait]
pub trait StateBackend: Send + Sync {
    /// The invocation record.
    ///
    /// # Errors
    ///
    /// [`crate::StoreError::NotFound`] if there is no such invocation.
    async fn get_invocation(&self, invocation_id: &InvocationId) -> Result<InvocationRecord>;

    /// The history, oldest first.
    async fn get_history(&self, invocation_id: &InvocationId) -> Result<Vec<HistoryEntry>>;

    /// Status, result and error of each invocation, in the order asked.
    async fn get_outcomes(&self, invocation_ids: &[InvocationId])
        -> Result<Vec<InvocationOutcome>>;

    /// The record and the outcome of each of `invocation_ids`, in order;
    /// `None` for one that does not exist. Backends answer in one round
    /// trip (a workflow replaying its steps asks for them so); the default
    /// asks for each apart.
    async fn find_invocations(
        &self,
        invocation_ids: &[InvocationId],
    ) -> Result<Vec<Option<(InvocationRecord, InvocationOutcome)>>> {
        let mut out = Vec::with_capacity(invocation_ids.len());
        for id in invocation_ids {
            out.push(match self.get_invocation(id).await {
                Ok(record) => {
                    let outcome = self.get_outcomes(std::slice::from_ref(id)).await?.pop();
                    outcome.map(|o| (record, o))
                }
                Err(crate::StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            });
        }
        Ok(out)
    }

    /// The ids of every invocation of this app.
    async fn list_invocation_ids(&self) -> Result<Vec<InvocationId>>;

    /// Removes everything of this app: every invocation with its status,
    /// history, result and error, the queue, waits, call edges, schedules,
    /// heartbeats and leases. Other apps on the same backend are untouched.
    async fn purge(&self) -> Result<()>;
}
