//! What a process runner knows of the processes that died under it, and
//! the verdict on the invocations they were running: crashed it, or suspect.

use std::collections::HashMap;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use pynenc_model::{InvocationId, InvocationStatus, RunnerId, TaskError};
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tracing::{debug, error, warn};

use super::children::{describe_exit, died_of_a_fault};
use super::PROCESS_CRASHED_KIND;
use crate::app::Pynenc;
use crate::runner::cancel::log_if_cancelled;
use crate::runner::run::failure_outcome;

/// How long a runner remembers an invocation that was running in a
/// process that died without the death being pinned on it.
const SUSPECT_MEMORY: Duration = Duration::from_secs(3600);

/// What a runner knows of the processes that died under it; decides, for
/// the invocations a dead process was running, whether they crashed it.
pub(crate) struct CrashLedger {
    /// Invocations re-routed after a death that was not pinned on them.
    pub(crate) suspects: parking_lot::Mutex<HashMap<InvocationId, Instant>>,
    /// Tells the live worker processes of a pool about new suspects.
    pub(crate) announce: tokio::sync::broadcast::Sender<InvocationId>,
}

impl Default for CrashLedger {
    fn default() -> Self {
        CrashLedger {
            suspects: Default::default(),
            announce: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl CrashLedger {
    /// `invocation_id` ran to its end: no longer a suspect.
    pub(crate) fn cleared(&self, invocation_id: &InvocationId) {
        self.suspects.lock().remove(invocation_id);
    }

    /// Keeps a worker's pipe: sends it the current suspects, then every new
    /// one, until the worker or the pool is gone.
    pub(crate) async fn brief_worker(
        mut suspects: tokio::sync::broadcast::Receiver<InvocationId>,
        current: Vec<InvocationId>,
        mut pipe: ChildStdin,
    ) {
        for id in current {
            if pipe
                .write_all(format!("suspect {id}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = pipe.flush().await;
        loop {
            let id = match suspects.recv().await {
                Ok(id) => id,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if pipe
                .write_all(format!("suspect {id}\n").as_bytes())
                .await
                .is_err()
                || pipe.flush().await.is_err()
            {
                return;
            }
        }
    }

    /// `held` were running for `owner` in process `pid` (a `what`), which
    /// ended with `status` before finishing them.
    pub(crate) async fn process_died(
        &self,
        app: &Pynenc,
        owner: &RunnerId,
        held: Vec<InvocationId>,
        pid: u32,
        status: &ExitStatus,
        what: &str,
    ) {
        let exit = describe_exit(status);
        let pinned = held.len() == 1 && died_of_a_fault(status);
        for id in held {
            let seen_before = {
                let mut suspects = self.suspects.lock();
                suspects.retain(|_, since| since.elapsed() < SUSPECT_MEMORY);
                suspects.remove(&id).is_some()
            };
            if pinned || seen_before {
                let why = if pinned {
                    String::new()
                } else {
                    " (the second process to die while running it)".to_string()
                };
                let message = format!(
                    "the {what} (pid {pid}) running invocation {id} ended with {exit} before finishing it{why}"
                );
                record_crash(app, owner, &id, message).await;
                continue;
            }
            self.suspects.lock().insert(id, Instant::now());
            // before it can be picked again: wherever it runs next in the
            // pool, it runs alone
            let _ = self.announce.send(id);
            match app.orchestrator().kill_and_reroute(&id, owner).await {
                Ok(()) if log_if_cancelled(app, owner, &id, None).await => {}
                Ok(()) => warn!(
                    invocation_id = %id, pid, %exit,
                    "the {what} running this invocation died without the cause being pinned on it; re-routed"
                ),
                // it ended, or was recovered, already
                Err(e) => {
                    debug!(invocation_id = %id, error = %e, "not re-routed after the {what} died")
                }
            }
        }
    }
}

/// Fails (or retries, when its task's `retry_for` names `ProcessCrashed`)
/// an invocation that crashed the process running it for `owner`.
async fn record_crash(app: &Pynenc, owner: &RunnerId, id: &InvocationId, message: String) {
    let orch = app.orchestrator();
    let Ok(current) = orch.get_status(id).await else {
        return;
    };
    if current.owner.as_ref() != Some(owner) || !current.status.is_owned_running() {
        return; // it ended (or was recovered) already
    }
    error!(invocation_id = %id, "{message}");
    let error = TaskError::new(PROCESS_CRASHED_KIND, message);
    // bring it back to a status a run can end from
    let step = match current.status {
        InvocationStatus::Pending => Some(InvocationStatus::Running),
        InvocationStatus::Paused => Some(InvocationStatus::Resumed),
        _ => None,
    };
    if let Some(step) = step {
        if let Err(e) = orch.set_status(id, step, owner, None).await {
            warn!(invocation_id = %id, error = %e, "could not record the crash");
            return;
        }
    }
    let options = match app.state_backend().get_invocation(id).await {
        Ok(record) => app
            .registry()
            .options(&record.call.task_id)
            .cloned()
            .unwrap_or_default(),
        Err(e) => {
            warn!(invocation_id = %id, error = %e, "could not read the crashed invocation; not retried");
            Default::default()
        }
    };
    let outcome = failure_outcome(orch, &options, id, error).await;
    if let Err(e) = orch.finish(id, owner, outcome).await {
        warn!(invocation_id = %id, error = %e, "could not record the crash");
    }
}
