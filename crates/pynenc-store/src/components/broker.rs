//! The broker: the FIFO queue of invocation ids.

use async_trait::async_trait;

use crate::error::Result;

/// The queue of invocation ids, first in first out.
///
/// Invocation ids enter the queue in the orchestrator's routing step and
/// leave it in its pick-up step, each in the same atomic operation as the
/// status change it goes with, so a picked id is never only in a runner's
/// memory. The broker is the queue's own view.
#[async_trait]
pub trait Broker: Send + Sync {
    /// How many ids are queued (stale ones, of invocations purged while
    /// queued, included).
    async fn queue_len(&self) -> Result<usize>;
}
