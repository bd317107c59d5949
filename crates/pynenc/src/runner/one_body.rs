//! What a worker that runs one invocation body at a time keeps (a
//! [`crate::PersistentProcessRunner`]'s worker): the turn to run a body,
//! which invocations' bodies have begun, how many it takes ahead, and the
//! signal that gives back what it took ahead when a body runs long.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pynenc_model::InvocationId;
use rustc_hash::FxHashSet;
use tokio::sync::{Notify, Semaphore};

use super::prefetch::Prefetch;

/// The state of a worker that runs one body at a time.
pub(crate) struct OneBody {
    /// The turn to run a body (one permit).
    pub(crate) turn: Arc<Semaphore>,
    /// The invocations whose body has begun (the others were taken ahead
    /// and wait for their turn).
    begun: Mutex<FxHashSet<InvocationId>>,
    /// How many it takes ahead.
    pub(crate) prefetch: Prefetch,
    /// Notified when a body runs long, for the invocations taken ahead to
    /// go back to the queue.
    pub(crate) long_run: Notify,
}

impl OneBody {
    /// For a worker whose `slots` has `most` permits; a body that runs
    /// `long_run` is long.
    pub(crate) fn new(slots: &Semaphore, most: usize, long_run: Duration) -> Self {
        OneBody {
            turn: Arc::new(Semaphore::new(1)),
            begun: Mutex::default(),
            prefetch: Prefetch::new(slots, most, long_run),
            long_run: Notify::new(),
        }
    }

    /// The body of `id` begins.
    pub(crate) fn began(&self, id: InvocationId) {
        self.begun.lock().insert(id);
    }

    /// The run of `id` ended (its body ran or not).
    pub(crate) fn ended(&self, id: &InvocationId) {
        self.begun.lock().remove(id);
    }

    /// Whether the body of `id` has begun.
    pub(crate) fn has_begun(&self, id: &InvocationId) -> bool {
        self.begun.lock().contains(id)
    }

    /// A body has run long and goes on: one at a time from now, and what
    /// waits for its turn goes back to the queue.
    pub(crate) fn run_is_long(&self, slots: &Semaphore) {
        self.prefetch.run_is_long(slots);
        self.long_run.notify_waiters();
    }
}
