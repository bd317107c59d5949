//! [`MemStore`]: one app's memory store as an [`AtomicStore`].

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pynenc_model::{InvocationId, InvocationStatus};
use pynenc_store::{AtomicStore, Inline, Result, StoreError, StoreTxn, WorkSignal};
use tokio::sync::Notify;

use crate::state::{GroupWait, MemState, Waiters};

/// The memory store of one app: its data behind one lock, and the signal
/// that wakes its runners.
#[derive(Default)]
pub struct MemStore {
    pub(crate) state: Mutex<MemState>,
    work: WorkSignal,
}

impl MemStore {
    /// The empty store of the app `app_id`.
    pub fn for_app(app_id: &str) -> Self {
        let store = MemStore::default();
        store.state.lock().app_id = app_id.to_string();
        store
    }

    /// Runs `f` under the lock; wakes runners if it queued work.
    fn locked<R>(&self, f: impl FnOnce(&mut dyn StoreTxn) -> Result<R>) -> Result<R> {
        let (out, enqueued) = {
            let mut state = self.state.lock();
            state.enqueued = false;
            let out = f(&mut *state);
            (out, std::mem::take(&mut state.enqueued))
        };
        if enqueued {
            self.work.bump();
        }
        out
    }

    /// Registers one wait on every open invocation of `ids` (in the same
    /// section as the check, so none becomes final unseen); `None` when all
    /// are final already.
    fn register_wait(&self, ids: &[InvocationId]) -> Result<Option<Arc<GroupWait>>> {
        let mut state = self.state.lock();
        let mut open = 0;
        for id in ids {
            match state.invocations.get(id) {
                Some(e) if e.status.status.is_final() => {}
                Some(_) => open += 1,
                None => return Err(StoreError::not_found(id, "while waiting for its result")),
            }
        }
        if open == 0 {
            return Ok(None);
        }
        let w = Arc::new(GroupWait {
            remaining: AtomicUsize::new(open),
            done: Notify::new(),
        });
        for id in ids {
            if let Some(e) = state.invocations.get_mut(id) {
                if !e.status.status.is_final() {
                    match &mut e.waiters {
                        Some(waiters) => waiters.add(w.clone()),
                        None => e.waiters = Some(Waiters::One(w.clone())),
                    }
                }
            }
        }
        Ok(Some(w))
    }
}

/// A wait for the next status change of one invocation; leaves the
/// store's list when it ends or is dropped.
struct StatusWatch<'a> {
    store: &'a MemStore,
    id: InvocationId,
    notify: Arc<Notify>,
}

impl Drop for StatusWatch<'_> {
    fn drop(&mut self) {
        let mut state = self.store.state.lock();
        if let Some(list) = state.status_watch.get_mut(&self.id) {
            list.retain(|n| !Arc::ptr_eq(n, &self.notify));
            if list.is_empty() {
                state.status_watch.remove(&self.id);
            }
        }
    }
}

impl MemStore {
    /// Registers a wait for the next status change of `id`, in the same
    /// section as the check of its status (so no change is missed); `None`
    /// when its status is not `seen` any more.
    fn watch_status(
        &self,
        id: &InvocationId,
        seen: InvocationStatus,
    ) -> Result<Option<StatusWatch<'_>>> {
        let mut state = self.state.lock();
        match state.invocations.get(id) {
            None => Err(StoreError::not_found(id, "while waiting for a status")),
            Some(e) if e.status.status != seen => Ok(None),
            Some(_) => {
                let notify = Arc::new(Notify::new());
                state
                    .status_watch
                    .entry(*id)
                    .or_default()
                    .push(notify.clone());
                Ok(Some(StatusWatch {
                    store: self,
                    id: *id,
                    notify,
                }))
            }
        }
    }
}

impl AtomicStore for MemStore {
    fn atomic<R, F>(&self, f: F) -> impl Future<Output = Result<R>> + Send
    where
        R: Send + 'static,
        F: Fn(&mut dyn StoreTxn) -> Result<R> + Send + 'static,
    {
        std::future::ready(self.locked(f))
    }

    fn atomic_inline<A, R, F>(&self, input: A, f: F) -> Inline<R, A>
    where
        F: FnOnce(&mut dyn StoreTxn, A) -> Result<R>,
    {
        Inline::Ran(self.locked(|t| f(t, input)))
    }

    fn work_epoch(&self) -> u64 {
        self.work.epoch()
    }

    async fn wait_for_work(&self, epoch: u64, timeout: Duration) {
        self.work.wait(epoch, timeout).await
    }

    fn wait_final(&self, ids: &[InvocationId]) -> impl Future<Output = Result<()>> + Send {
        let wait = self.register_wait(ids);
        async move {
            if let Some(w) = wait? {
                while w.remaining.load(Ordering::Acquire) > 0 {
                    w.done.notified().await;
                }
            }
            Ok(())
        }
    }

    fn wait_status_change(
        &self,
        id: &InvocationId,
        seen: InvocationStatus,
        timeout: Duration,
    ) -> impl Future<Output = Result<()>> + Send {
        let watch = self.watch_status(id, seen);
        async move {
            if let Some(w) = watch? {
                // a timeout is the caller's to notice
                let _ = tokio::time::timeout(timeout, w.notify.notified()).await;
            }
            Ok(())
        }
    }
}
