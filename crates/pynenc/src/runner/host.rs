//! What an invocation needs from the runner hosting it.

use std::sync::Arc;

use pynenc_model::{InvocationId, InvocationRecord, InvocationStatus, RunOutcome, RunnerId};
use tokio::sync::OwnedSemaphorePermit;

use crate::app::Pynenc;
use crate::context::InvocationContext;
use crate::exceptions::Result;

/// The slot and pause state of one running invocation.
#[derive(Default)]
pub(crate) struct SlotState {
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    pub(crate) waits: usize,
}

/// How recording the end of a run went, and what its slot takes next.
pub(crate) struct RunFinish {
    /// The status the run ended in, or why the end was not recorded.
    pub(crate) end: Result<InvocationStatus>,
    /// Invocations taken for the slot in the same step (already `RUNNING`).
    pub(crate) next: Vec<Arc<InvocationRecord>>,
}

/// What an invocation needs from the runner hosting it.
#[async_trait::async_trait]
pub(crate) trait InvocationHost: Send + Sync {
    /// The owner id of the invocations it runs.
    fn runner_id(&self) -> &RunnerId;
    /// Called when the invocation of `ctx` waits for `ids`: the host decides
    /// how it waits (pause and free the slot, or hand the wait to a parent).
    async fn waiting_for_results(
        &self,
        ctx: &InvocationContext,
        ids: &[InvocationId],
    ) -> Result<()>;
    /// Records the end of the run of `record`. A host may take its next
    /// invocations in the same step: they are returned, already `RUNNING`
    /// for it, and the caller runs them.
    async fn finish(
        &self,
        app: &Pynenc,
        record: &Arc<InvocationRecord>,
        outcome: RunOutcome,
    ) -> RunFinish {
        let end = app
            .orchestrator()
            .finish(&record.invocation_id, self.runner_id(), outcome)
            .await
            .map_err(Into::into);
        RunFinish {
            end,
            next: Vec::new(),
        }
    }
}
