//! Stopping runners: the stop signal, and Ctrl-C / SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tracing::info;

use super::RunnerHandle;

/// A stop request shared by a runner and its handles.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopping: AtomicBool,
    notify: Notify,
}

impl StopSignal {
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Resolves once a stop was requested.
    pub(crate) async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }

    /// Runs `fut` until it ends or a stop is requested, whichever is first.
    pub(crate) async fn or_stopped<F: std::future::Future>(&self, fut: F) {
        tokio::select! {
            _ = fut => {}
            _ = self.stopped() => {}
        }
    }
}

/// Stops `handle` on the first Ctrl-C or SIGTERM.
pub(crate) fn stop_on_signal(handle: RunnerHandle) {
    tokio::spawn(async move {
        wait_for_signal().await;
        info!(runner_id = %handle.runner_id(), "stop signal received, stopping runner");
        handle.stop();
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
