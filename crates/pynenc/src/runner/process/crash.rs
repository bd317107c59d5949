//! What a process runner knows of the processes that died under it, and
//! the verdict on the invocations they were running: crashed it, or suspect.

use std::collections::HashMap;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pynenc_model::{InvocationId, InvocationStatus, RunnerId, StatusRecord, TaskError};
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::Semaphore;
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
    /// The announcements waiting for the workers to have read them: each
    /// worker adds a permit once it has read the suspect from its pipe (its
    /// `suspected` line), or its briefing does when the pipe is gone.
    reading: parking_lot::Mutex<HashMap<InvocationId, Arc<Semaphore>>>,
}

/// How long a death waits for the live workers to have read of a suspect
/// before it re-routes it (a briefing that cannot write gives up at once).
const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);

impl Default for CrashLedger {
    fn default() -> Self {
        CrashLedger {
            suspects: Default::default(),
            announce: tokio::sync::broadcast::channel(1024).0,
            reading: Default::default(),
        }
    }
}

/// Writes `suspect <id>` to a worker's pipe.
async fn write_suspect(pipe: &mut ChildStdin, id: &InvocationId) -> std::io::Result<()> {
    pipe.write_all(format!("suspect {id}\n").as_bytes()).await?;
    pipe.flush().await
}

impl CrashLedger {
    /// `invocation_id` ran to its end: no longer a suspect.
    pub(crate) fn cleared(&self, invocation_id: &InvocationId) {
        self.suspects.lock().remove(invocation_id);
    }

    /// Keeps a worker's pipe: sends it the current suspects, then every new
    /// one, until the worker or the pool is gone. `suspects` must be
    /// subscribed before `current` is read, so that no suspect falls
    /// between the two.
    pub(crate) async fn brief_worker(
        self: Arc<Self>,
        mut suspects: tokio::sync::broadcast::Receiver<InvocationId>,
        current: Vec<InvocationId>,
        mut pipe: ChildStdin,
    ) {
        for id in current {
            if write_suspect(&mut pipe, &id).await.is_err() {
                return;
            }
        }
        loop {
            let id = match suspects.recv().await {
                Ok(announced) => announced,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if write_suspect(&mut pipe, &id).await.is_err() {
                // the worker is gone: nobody waits for it to read
                self.suspect_read(&id);
                return;
            }
        }
    }

    /// A worker read `id` from its pipe (it quarantined it), or is gone.
    pub(crate) fn suspect_read(&self, id: &InvocationId) {
        if let Some(read) = self.reading.lock().get(id) {
            read.add_permits(1);
        }
    }

    /// Tells every live worker that `id` is a suspect, and waits until each
    /// has read it (or `ANNOUNCE_WAIT`): a worker that picks it once it is
    /// re-routed runs it alone. Waiting only for the line to be written
    /// left a window: a worker could pick the re-routed suspect before its
    /// thread reading the pipe got to the line.
    async fn announce(&self, id: InvocationId) {
        let read = Arc::new(Semaphore::new(0));
        self.reading.lock().insert(id, read.clone());
        if let Ok(workers) = self.announce.send(id) {
            let workers = u32::try_from(workers).unwrap_or(u32::MAX);
            let waited = tokio::time::timeout(ANNOUNCE_WAIT, read.acquire_many(workers)).await;
            if waited.is_err() {
                warn!(
                    invocation_id = %id,
                    workers,
                    "not every worker process said it read the suspect within {} s; re-routed anyway",
                    ANNOUNCE_WAIT.as_secs()
                );
            }
        }
        self.reading.lock().remove(&id);
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
        let held = still_held(app, owner, held).await;
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
            self.announce(id).await;
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

/// Whether an invocation in `current` is still in the hands of `owner`
/// (`PENDING`, `RUNNING`, `PAUSED` or `RESUMED`, owned by it): not ended,
/// nor recovered by another runner.
pub(crate) fn runs_for(current: &StatusRecord, owner: &RunnerId) -> bool {
    current.owner.as_ref() == Some(owner) && current.status.is_owned_running()
}

/// Those of `held` that `owner` still runs: a worker reports the end of a
/// run a moment later than the run ends (with its next line), so a process
/// that died between the two is not blamed for a run it finished. An id
/// whose status cannot be read stays held.
async fn still_held(app: &Pynenc, owner: &RunnerId, held: Vec<InvocationId>) -> Vec<InvocationId> {
    let orch = app.orchestrator();
    let mut left = Vec::with_capacity(held.len());
    for id in held {
        match orch.get_status(&id).await {
            Ok(current) if !runs_for(&current, owner) => {
                debug!(invocation_id = %id, status = %current.status, "ended before its process died");
            }
            _ => left.push(id),
        }
    }
    left
}

/// Fails (or retries, when its task's `retry_for` names `ProcessCrashed`)
/// an invocation that crashed the process running it for `owner`.
async fn record_crash(app: &Pynenc, owner: &RunnerId, id: &InvocationId, message: String) {
    let orch = app.orchestrator();
    let Ok(current) = orch.get_status(id).await else {
        return;
    };
    if !runs_for(&current, owner) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_its_owner_still_runs_is_blamed() {
        let owner = RunnerId::from("pool/worker-1");
        let record = |status, owner: &str| StatusRecord {
            status,
            owner: Some(RunnerId::from(owner)),
        };
        for status in [
            InvocationStatus::Pending,
            InvocationStatus::Running,
            InvocationStatus::Paused,
            InvocationStatus::Resumed,
        ] {
            assert!(
                runs_for(&record(status, "pool/worker-1"), &owner),
                "{status}"
            );
            // recovered and taken by another runner meanwhile
            assert!(
                !runs_for(&record(status, "pool/worker-2"), &owner),
                "{status}"
            );
        }
        // ended (its `end` line had not reached the pool) or back in the queue
        for status in [
            InvocationStatus::Success,
            InvocationStatus::Failed,
            InvocationStatus::Retry,
            InvocationStatus::Rerouted,
        ] {
            assert!(
                !runs_for(&record(status, "pool/worker-1"), &owner),
                "{status}"
            );
        }
        let unowned = StatusRecord {
            status: InvocationStatus::Running,
            owner: None,
        };
        assert!(!runs_for(&unowned, &owner));
    }

    #[tokio::test]
    async fn a_suspect_is_announced_once_every_worker_has_read_it() {
        let ledger = Arc::new(CrashLedger::default());
        // two workers listening, as their briefings do
        let mut workers = [ledger.announce.subscribe(), ledger.announce.subscribe()];
        let id = InvocationId::from_u128(7);
        let announcing = tokio::spawn({
            let ledger = ledger.clone();
            async move { ledger.announce(id).await }
        });
        for worker in &mut workers {
            let announced = worker.recv().await.expect("announced to each worker");
            assert_eq!(announced, id);
        }
        ledger.suspect_read(&id);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!announcing.is_finished(), "one worker has not read it yet");
        ledger.suspect_read(&id);
        tokio::time::timeout(Duration::from_secs(1), announcing)
            .await
            .expect("done once both read it (before ANNOUNCE_WAIT)")
            .unwrap();
        assert!(
            ledger.reading.lock().is_empty(),
            "the announcement is forgotten"
        );
        // a late line of a worker changes nothing
        ledger.suspect_read(&id);
    }
}
