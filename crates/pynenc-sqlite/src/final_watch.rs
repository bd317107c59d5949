//! The watch of final statuses written by other processes: one reader per
//! store, for every `result()` wait of the process.
//!
//! SQLite cannot notify another process, so a wait must look for the
//! finals it cannot hear of. Each wait reading the history on its own
//! costs one read per wait and per pause: a parent invocation paused
//! while its sub-tasks run is such a wait, and work that waits a lot
//! (thousands of paused parents) spent most of its time in those reads.
//! Here one task reads the final statuses recorded since its watermark
//! while any wait is registered, hands each id found to the waits for it
//! and sleeps `poll_min`, doubling the pause up to `poll_max` while it
//! finds nothing anybody waits for. The finals of this process are handed
//! over by its writer right after the commit, before the watch sees them,
//! so in a process alone the watch slows down to `poll_max`.

use std::sync::Arc;

use parking_lot::Mutex;
use tracing::debug;

use crate::writer::Inner;

/// The watch's state: whether its task runs, and from where it reads.
#[derive(Default)]
pub(crate) struct FinalWatch {
    state: Mutex<WatchState>,
    /// How many finals the watch handed to a wait.
    #[cfg(test)]
    pub(crate) handed: std::sync::atomic::AtomicU64,
    /// How many times a wait, having read its statuses, asked for cover.
    #[cfg(test)]
    pub(crate) covered: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct WatchState {
    running: bool,
    /// Counts the tasks started: the one that runs is the latest.
    task: u64,
    /// The history sequence up to which finals were handed over.
    mark: i64,
}

/// Marks the watch stopped when its task ends, also when it is dropped
/// unfinished (its runtime shut down): the next wait starts another.
struct TaskGuard {
    inner: Arc<Inner>,
    task: u64,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let mut state = self.inner.final_watch.state.lock();
        if state.task == self.task {
            state.running = false;
        }
    }
}

impl FinalWatch {
    /// A wait registered before reading its statuses at history sequence
    /// `seen`: the watch reads every final after `seen` (going back if it
    /// was further), and its task is started when none runs.
    pub(crate) fn cover(&self, inner: &Arc<Inner>, seen: i64) {
        #[cfg(test)]
        self.covered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut state = self.state.lock();
        if state.running {
            state.mark = state.mark.min(seen);
            return;
        }
        state.running = true;
        state.task += 1;
        state.mark = seen;
        let guard = TaskGuard {
            inner: inner.clone(),
            task: state.task,
        };
        tokio::spawn(watch(guard));
    }

    /// Whether the watch's task runs.
    #[cfg(test)]
    pub(crate) fn is_running(&self) -> bool {
        self.state.lock().running
    }

    /// The watermark to read from, or `None` (and the task stops) when no
    /// wait is left: checked under the state's lock, so a wait registered
    /// meanwhile finds the task stopped and starts another.
    fn next_mark(&self, inner: &Inner) -> Option<i64> {
        let mut state = self.state.lock();
        if inner.final_waiters.is_empty() {
            state.running = false;
            return None;
        }
        Some(state.mark)
    }

    /// Finals up to `mark` were read from `since`; a wait may have moved
    /// the watermark back meanwhile, and then it stays there.
    fn advance(&self, since: i64, mark: i64) {
        let mut state = self.state.lock();
        if state.mark == since {
            state.mark = mark;
        }
    }
}

/// The watch's task: reads the finals since the watermark, hands each to
/// its waits, pauses; ends once no wait is registered.
async fn watch(guard: TaskGuard) {
    let inner = guard.inner.clone();
    let mut pause = inner.poll_min;
    loop {
        tokio::time::sleep(pause).await;
        let Some(since) = inner.final_watch.next_mark(&inner) else {
            return;
        };
        match inner.read(move |t| t.finals_since(since)).await {
            Ok((finals, mark)) => {
                inner.final_watch.advance(since, mark);
                let mut told = false;
                for id in &finals {
                    let to_some = inner.final_waiters.mark_final(id);
                    #[cfg(test)]
                    if to_some {
                        use std::sync::atomic::Ordering;
                        inner.final_watch.handed.fetch_add(1, Ordering::Relaxed);
                    }
                    told |= to_some;
                }
                pause = if told {
                    inner.poll_min
                } else {
                    (pause * 2).min(inner.poll_max)
                };
            }
            Err(e) => {
                debug!(error = %e, "reading recent final statuses failed; the waits re-read theirs");
                pause = inner.poll_max;
            }
        }
    }
}
