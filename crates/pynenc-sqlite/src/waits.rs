//! Waiting for work and for results: woken at once by this process's
//! commits, and by adaptive polling for other processes' (SQLite cannot
//! notify them).

use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{InvocationId, InvocationStatus, Timestamp};
use pynenc_store::{GroupWait, Registered, Result, StoreError};
use tokio::sync::Notify;

use crate::writer::Inner;

/// How often a `result()` wait re-reads the statuses it waits for, a
/// guard against ids purged by another process.
const FULL_CHECK: Duration = Duration::from_secs(2);

/// Resolves when work may be available (the epoch moved, or the database
/// has queued or due work) or after `timeout`.
pub(crate) async fn wait_for_work(inner: Arc<Inner>, epoch: u64, timeout: Duration) {
    let moved = inner.work.moved_since(epoch);
    tokio::pin!(moved);
    if futures::FutureExt::now_or_never(moved.as_mut()).is_some() {
        return;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut poll = inner.poll_min;
    loop {
        let has_work = inner
            .read(|t| t.has_work(Timestamp::now()))
            .await
            .unwrap_or(false);
        if has_work {
            return;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return;
        }
        tokio::select! {
            _ = moved.as_mut() => return,
            _ = tokio::time::sleep(poll.min(deadline - now)) => {}
        }
        poll = (poll * 2).min(inner.poll_max);
    }
}

/// Waits for a group: one read of its statuses, then the ids are handed
/// over as they become final — by this process's writer right after its
/// commits, by the store's [`crate::final_watch`] for other processes'. The
/// statuses left are read again every [`FULL_CHECK`] (ids purged meanwhile)
/// and after a purge of this process.
pub(crate) async fn wait_final(inner: Arc<Inner>, ids: Vec<InvocationId>) -> Result<()> {
    // registered before reading: a final committed in between is not missed
    let mut wait = Registered::new(&inner, |i| &i.final_waiters, &ids, GroupWait::new(&ids));
    let mut pending = wait.waiter().pending();
    loop {
        let (finals, seen) = inner
            .read(move |t| {
                let seen = t.history_max_seq()?;
                let mut finals = Vec::new();
                for id in pending {
                    match t.status_code_of(&id)? {
                        Some(s) if s.is_final() => finals.push(id),
                        Some(_) => {}
                        None => {
                            return Err(StoreError::not_found(&id, "while waiting for its result"))
                        }
                    }
                }
                Ok((finals, seen))
            })
            .await?;
        for id in &finals {
            wait.waiter().mark(id);
        }
        if wait.waiter().left() == 0 {
            return Ok(());
        }
        inner.final_watch.cover(&inner, seen);
        tokio::select! {
            _ = wait.waiter().woken() => {}
            _ = tokio::time::sleep(FULL_CHECK) => {}
        }
        pending = wait.waiter().pending();
        if pending.is_empty() {
            return Ok(());
        }
        // a purge that woke it took it off them all
        wait.renew(&pending);
    }
}

/// Waits until the status of `id` is no longer `seen`, or `timeout`: woken
/// at once by this process's commits that change it, and by adaptive
/// polling of its status (one indexed read) for other processes' commits.
pub(crate) async fn wait_status_change(
    inner: Arc<Inner>,
    id: InvocationId,
    seen: InvocationStatus,
    timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut poll = inner.poll_min;
    loop {
        // register before reading: a commit in between is not missed
        let wait = Registered::new(&inner, |i| &i.status_waiters, &[id], Notify::new());
        let status = inner.read(move |t| t.status_code_of(&id)).await?;
        match status {
            None => return Err(StoreError::not_found(&id, "while waiting for a status")),
            Some(s) if s != seen => return Ok(()),
            Some(_) => {}
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(());
        }
        tokio::select! {
            _ = wait.waiter().notified() => poll = inner.poll_min,
            _ = tokio::time::sleep(poll.min(deadline - now)) => poll = (poll * 2).min(inner.poll_max),
        }
    }
}
