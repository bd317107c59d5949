//! Cancelling running invocations: how a runner learns that an invocation
//! it runs was cancelled, and how the run is told.
//!
//! [`crate::store::Orchestrator::cancel`] stores a request for the owner of
//! a running invocation. While a runner runs anything, it asks for its
//! requests every `runner.cancel_poll_seconds` with one
//! `cancel_requests(runner_id)` call for the whole runner
//! ([`watch_requests`]); a runner that runs nothing makes no call. What it
//! then does depends on where the body runs:
//!
//! - in this process ([`crate::ThreadRunner`], the workers of a
//!   [`crate::MultiThreadRunner`]): the [`CancelSignal`] of the run is set.
//!   An async body is dropped at its next await; a sync body cannot be
//!   interrupted, but sees [`crate::context::is_cancelled`] turn true, and a
//!   wait for other invocations returns [`crate::PynencError::Cancelled`] at
//!   once. When the body returns (whatever it returns), the run ends
//!   `CANCELLED` through the normal end of a run;
//! - in a child process ([`crate::ProcessRunner`], the workers of a
//!   [`crate::PersistentProcessRunner`]): the process gets `SIGTERM`, then
//!   `SIGKILL` if it is still alive after `runner.shutdown_grace_seconds`
//!   (plus a margin for a pool's worker, whose own graceful stop ends the
//!   run first), and the run ends `CANCELLED` (not as a crash, not
//!   re-routed); a pool replaces the worker.
//!
//! A `PAUSED` invocation holds no slot: its wait is dropped, and the end of
//! its run takes no next invocation (the `frees_slot` of
//! [`super::host::InvocationHost::finish`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use pynenc_model::{InvocationId, RunOutcome, RunnerId};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::app::Pynenc;

/// The outcome of a run that stopped because it was cancelled. The error
/// names the runner that stopped it; the store keeps the error of the
/// request instead, which names who asked for the cancel.
pub(crate) fn cancelled_outcome(runner_id: &RunnerId) -> RunOutcome {
    RunOutcome::Cancelled(pynenc_store::engine::cancelled_error(runner_id))
}

/// The cancel state of the invocation that one tokio task of a runner runs
/// now. A task runs invocations one after another, so the signal names the
/// invocation it is for: a request for an invocation that is not (or no
/// longer) the current one changes nothing.
#[derive(Default)]
pub(crate) struct CancelSignal {
    /// Set when the current invocation was cancelled (read without the lock
    /// on the path where it was not).
    raised: AtomicBool,
    /// The invocation the task runs now.
    current: Mutex<Option<InvocationId>>,
    /// The run's own wait ([`CancelSignal::dropped_on_cancel`]): one waiter,
    /// polled with the body, so it is woken without a lock.
    run: AtomicWaker,
    /// Other waits (a paused invocation's wait for results).
    notify: Notify,
}

impl CancelSignal {
    /// The task starts running `invocation_id`: not cancelled.
    pub(crate) fn begin(&self, invocation_id: InvocationId) {
        let mut current = self.current.lock();
        *current = Some(invocation_id);
        self.raised.store(false, Ordering::Release);
    }

    /// Cancels `invocation_id` if it is the invocation running now; whether
    /// that changed anything (false when it was cancelled already or is not
    /// running here).
    pub(crate) fn request(&self, invocation_id: &InvocationId) -> bool {
        let current = self.current.lock();
        if current.as_ref() != Some(invocation_id) || self.raised.load(Ordering::Acquire) {
            return false;
        }
        self.raised.store(true, Ordering::Release);
        drop(current);
        self.run.wake();
        self.notify.notify_waiters();
        true
    }

    /// Whether `invocation_id` runs here and was cancelled.
    pub(crate) fn is_cancelled(&self, invocation_id: &InvocationId) -> bool {
        if !self.raised.load(Ordering::Acquire) {
            return false;
        }
        self.current.lock().as_ref() == Some(invocation_id)
    }

    /// Runs `fut` unless `invocation_id` is cancelled first: `None` then
    /// (`fut` is dropped). For the body of a run, polled at every wake-up of
    /// the body: the check is one atomic load.
    pub(crate) async fn dropped_on_cancel<F: Future>(
        &self,
        invocation_id: &InvocationId,
        fut: F,
    ) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if self.is_cancelled(invocation_id) {
                return Poll::Ready(None);
            }
            self.run.register(cx.waker());
            // a cancel between the check and the registration woke nobody
            if self.is_cancelled(invocation_id) {
                return Poll::Ready(None);
            }
            fut.as_mut().poll(cx).map(Some)
        })
        .await
    }

    /// Resolves once `invocation_id` is cancelled (never, if it does not run here).
    pub(crate) async fn cancelled(&self, invocation_id: &InvocationId) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled(invocation_id) {
                return;
            }
            notified.await;
        }
    }
}

/// Asks for the cancel requests of `runner_id` every `runner.cancel_poll_seconds`
/// while `is_busy()` (one call per poll, none while it runs nothing; `busy`
/// is notified when it starts running something), and hands each non-empty
/// answer to `apply`. Runs until the caller aborts it.
pub(crate) async fn watch_requests<B, A, F>(
    app: Pynenc,
    runner_id: RunnerId,
    busy: &Notify,
    is_busy: B,
    mut apply: A,
) where
    B: Fn() -> bool,
    A: FnMut(Vec<InvocationId>) -> F,
    F: Future<Output = ()>,
{
    let every = Duration::from_secs_f64(app.conf().runner.cancel_poll_seconds.max(0.001));
    let orch = app.orchestrator();
    loop {
        // no calls while nothing runs
        loop {
            let woken = busy.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if is_busy() {
                break;
            }
            woken.await;
        }
        tokio::time::sleep(every).await;
        if !is_busy() {
            continue;
        }
        match orch.cancel_requests(&runner_id).await {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => {
                debug!(requests = ids.len(), "cancel requests");
                apply(ids).await;
            }
            Err(e) => warn!(error = %e, "could not read the cancel requests"),
        }
    }
}

/// The cancel requests of `runner_id` now, once (a stopping runner stops
/// what it was asked to cancel instead of waiting for it); empty if the
/// store cannot answer.
pub(crate) async fn requests_now(app: &Pynenc, runner_id: &RunnerId) -> Vec<InvocationId> {
    match app.orchestrator().cancel_requests(runner_id).await {
        Ok(ids) => ids,
        Err(e) => {
            warn!(error = %e, "could not read the cancel requests");
            Vec::new()
        }
    }
}

/// After `kill_and_reroute` (or a recovery) of `invocation_id`: when a
/// pending cancel made it `CANCELLED` instead of `REROUTED`, logs the
/// cancellation (with `actor` as the runner, and the task, read from the
/// state backend when `task_id` is not given) and returns `true`.
pub(crate) async fn log_if_cancelled(
    app: &Pynenc,
    actor: &RunnerId,
    invocation_id: &InvocationId,
    task_id: Option<&str>,
) -> bool {
    let cancelled = app
        .orchestrator()
        .get_status(invocation_id)
        .await
        .is_ok_and(|s| s.status == pynenc_model::InvocationStatus::Cancelled);
    if !cancelled {
        return false;
    }
    let read;
    let task_id = match task_id {
        Some(t) => t,
        None => {
            read = app
                .state_backend()
                .get_invocation(invocation_id)
                .await
                .map(|r| r.call.task_id.to_string())
                .unwrap_or_default();
            read.as_str()
        }
    };
    tracing::info!(
        runner_id = %actor,
        task_id,
        invocation_id = %invocation_id,
        "invocation cancelled instead of re-routed (a cancel was pending)"
    );
    true
}
