//! [`AtomicStore`]: a backend that runs closures over a [`StoreTxn`] atomically.

use std::future::Future;
use std::time::Duration;

use pynenc_model::{InvocationId, Timestamp};

use crate::engine;
use crate::error::Result;
use crate::txn::StoreTxn;

/// What [`AtomicStore::atomic_inline`] did with a section.
#[derive(Debug)]
pub enum Inline<R, A> {
    /// The section ran here; its result.
    Ran(Result<R>),
    /// The store cannot run sections here: the input, given back for
    /// [`AtomicStore::atomic`].
    NotHere(A),
}

/// A backend that runs closures over a [`StoreTxn`] atomically (one lock in
/// memory, one `BEGIN IMMEDIATE` transaction in SQLite).
pub trait AtomicStore: Send + Sync + 'static {
    /// Runs `f` in one atomic section; a returned error rolls back every write of `f`
    /// where the backend supports it (SQLite), and is returned.
    fn atomic<R, F>(&self, f: F) -> impl Future<Output = Result<R>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn StoreTxn) -> Result<R> + Send + 'static;

    /// Runs `f` on `input` in one atomic section right here, when the store
    /// can do so without sending `f` elsewhere (an in-process lock), so `f`
    /// may borrow what it reads. Otherwise `f` is not run and `input` comes
    /// back ([`Inline::NotHere`]), for the caller to use [`AtomicStore::atomic`].
    fn atomic_inline<A, R, F>(&self, input: A, f: F) -> Inline<R, A>
    where
        F: FnOnce(&mut dyn StoreTxn, A) -> Result<R>,
    {
        let _ = f;
        Inline::NotHere(input)
    }

    /// A counter that changes whenever ids are queued (0 if the backend cannot tell).
    fn work_epoch(&self) -> u64 {
        0
    }

    /// Resolves when work may be available or after `timeout`. The default
    /// polls the queue adaptively: short sleeps while work keeps coming,
    /// backing off to the store's ceiling when idle.
    fn wait_for_work(&self, epoch: u64, timeout: Duration) -> impl Future<Output = ()> + Send {
        let _ = epoch;
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut poll = self.poll_interval_min();
            loop {
                let queued = self.atomic(|t| t.queue_len()).await.unwrap_or(0);
                let due = self
                    .atomic(|t| t.due_scheduled(Timestamp::now(), 1).map(|v| v.len()))
                    .await
                    .unwrap_or(0);
                if queued > 0 || due > 0 {
                    return;
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return;
                }
                tokio::time::sleep(poll.min(deadline - now)).await;
                poll = (poll * 2).min(self.poll_interval_max());
            }
        }
    }

    /// Resolves when every invocation in `ids` is final. The default polls
    /// adaptively between [`AtomicStore::poll_interval_min`] and
    /// [`AtomicStore::poll_interval_max`].
    fn wait_final(&self, ids: &[InvocationId]) -> impl Future<Output = Result<()>> + Send {
        let ids = ids.to_vec();
        async move {
            let mut pending = ids;
            let mut poll = self.poll_interval_min();
            loop {
                let check = pending.clone();
                pending = self
                    .atomic(move |t| engine::not_final(t, &check, "while waiting for its result"))
                    .await?;
                if pending.is_empty() {
                    return Ok(());
                }
                tokio::time::sleep(poll).await;
                poll = (poll * 2).min(self.poll_interval_max());
            }
        }
    }

    /// The shortest polling interval of the default waits.
    fn poll_interval_min(&self) -> Duration {
        Duration::from_millis(1)
    }

    /// The longest polling interval of the default waits.
    fn poll_interval_max(&self) -> Duration {
        Duration::from_millis(50)
    }

    /// Whether running several steps in one section saves work (a
    /// transaction, a round trip). False for a store whose sections are one
    /// in-process lock.
    fn batching_pays(&self) -> bool {
        true
    }
}
