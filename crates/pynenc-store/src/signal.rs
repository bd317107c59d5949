//! The work signal every backend gives its runners: an epoch that moves
//! whenever ids are queued, with a notification for those waiting on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// A work epoch and its notification.
#[derive(Default)]
pub struct WorkSignal {
    epoch: AtomicU64,
    notify: Notify,
}

impl WorkSignal {
    /// Work may be available: moves the epoch and wakes the waiters.
    pub fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Resolves once the epoch has moved past `epoch` (at once if it
    /// already has; no bump between the check and the wait is missed).
    pub async fn moved_since(&self, epoch: u64) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.epoch() != epoch {
            return;
        }
        notified.await;
    }

    /// [`WorkSignal::moved_since`], or `timeout`.
    pub async fn wait(&self, epoch: u64, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.moved_since(epoch)).await;
    }
}
