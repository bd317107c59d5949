//! The broker: a FIFO queue of invocation ids.
//!
//! Runners do not pop the broker directly: the orchestrator's pick-up step
//! pops and claims in one atomic operation, so a picked id is never only in a
//! runner's memory. The broker trait is the queue's own view.

use async_trait::async_trait;

use crate::exceptions::Result;

/// Moves invocation ids from callers to runners, first in first out.
#[async_trait]
pub trait Broker: Send + Sync {
    /// Appends invocation ids to the queue.
    async fn route_invocations(&self, invocation_ids: &[String]) -> Result<()>;
    /// Pops the oldest queued id, if any (without claiming it; tests and tools).
    async fn retrieve_invocation(&self) -> Result<Option<String>>;
    /// How many ids are queued (stale ones included).
    async fn queue_len(&self) -> Result<usize>;
    /// Empties the queue of this app.
    async fn purge(&self) -> Result<()>;
}
