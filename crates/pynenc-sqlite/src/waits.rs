//! Waiting for work and for results: woken at once by this process's
//! commits, and by adaptive polling for other processes' (SQLite cannot
//! notify them).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{InvocationId, InvocationStatus, Timestamp};
use pynenc_store::{FinalWaiters, Result, StoreError};
use tokio::sync::Notify;

use crate::writer::Inner;

/// Which of this process's waiter lists a wait is in.
#[derive(Clone, Copy)]
enum List {
    /// `wait_final`: woken when one of its ids is final.
    Finals,
    /// `wait_status_change`: woken when its id's status changed.
    Changes,
}

/// A waiter in one of the lists, unregistered when it ends (or is dropped).
struct Registered {
    inner: Arc<Inner>,
    list: List,
    ids: Vec<InvocationId>,
    notify: Arc<Notify>,
}

impl Registered {
    fn new(inner: &Arc<Inner>, list: List, ids: &[InvocationId]) -> Registered {
        let notify = Arc::new(Notify::new());
        let reg = Registered {
            inner: inner.clone(),
            list,
            ids: ids.to_vec(),
            notify,
        };
        reg.waiters().add(ids, &reg.notify);
        reg
    }

    fn waiters(&self) -> &FinalWaiters<Notify> {
        match self.list {
            List::Finals => &self.inner.final_waiters,
            List::Changes => &self.inner.status_waiters,
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.waiters().remove(&self.ids, &self.notify);
    }
}

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

/// Waits for a group without re-reading it: one pass over the ids, then
/// only the final statuses recorded in the history since the last look
/// (a sequence watermark), woken at once by commits of this process and
/// by adaptive polling for other processes. A full re-check every two
/// seconds guards against ids purged meanwhile.
pub(crate) async fn wait_final(inner: Arc<Inner>, ids: Vec<InvocationId>) -> Result<()> {
    let wait = Registered::new(&inner, List::Finals, &ids);
    let full_check = |ids: Vec<InvocationId>| {
        let inner = inner.clone();
        async move {
            inner
                .read(move |t| {
                    let mark = t.history_max_seq()?;
                    let mut left = HashSet::new();
                    for id in ids {
                        match t.status_code_of(&id)? {
                            Some(s) if s.is_final() => {}
                            Some(_) => {
                                left.insert(id);
                            }
                            None => {
                                return Err(StoreError::not_found(
                                    &id,
                                    "while waiting for its result",
                                ))
                            }
                        }
                    }
                    Ok((left, mark))
                })
                .await
        }
    };
    let (mut pending, mut mark) = full_check(ids).await?;
    let mut poll = inner.poll_min;
    let mut last_full = tokio::time::Instant::now();
    while !pending.is_empty() {
        tokio::select! {
            _ = wait.notify.notified() => {
                poll = inner.poll_min;
                if pending.len() > 1 {
                    // a group: let a few more commits land before looking
                    tokio::time::sleep(poll).await;
                }
            }
            _ = tokio::time::sleep(poll) => poll = (poll * 2).min(inner.poll_max),
        }
        if last_full.elapsed() >= Duration::from_secs(2) {
            last_full = tokio::time::Instant::now();
            (pending, mark) = full_check(pending.into_iter().collect()).await?;
            continue;
        }
        let (finals, new_mark) = inner.read(move |t| t.finals_since(mark)).await?;
        mark = new_mark;
        for id in finals {
            pending.remove(&id);
        }
    }
    Ok(())
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
        let wait = Registered::new(&inner, List::Changes, &[id]);
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
            _ = wait.notify.notified() => poll = inner.poll_min,
            _ = tokio::time::sleep(poll.min(deadline - now)) => poll = (poll * 2).min(inner.poll_max),
        }
    }
}
