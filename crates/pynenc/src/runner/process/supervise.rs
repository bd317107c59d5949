//! Supervising the child process of one invocation of a
//! [`super::ProcessRunner`]: its requests (pauses while it waits for other
//! invocations), its end (crash or not), and stopping it when its
//! invocation is cancelled.

use std::collections::HashMap;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pynenc_model::{InvocationId, InvocationRecord, RunnerId, TaskId};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, info, warn};

use super::children::{child_command, describe_exit, signal};
use super::per_invocation::ProcessRunner;
use super::protocol::protocol_request;
use super::{INVOCATION_ENV, OWNER_ENV};
use crate::exceptions::PynencError;
use crate::runner::cancel::{cancelled_outcome, log_if_cancelled};

/// A running child: its process and how its supervisor is told to stop it.
struct ChildEntry {
    pid: u32,
    task_id: TaskId,
    cancel: Arc<Notify>,
    cancelled: bool,
}

/// The children of a process runner, by the invocation they run.
#[derive(Default)]
pub(crate) struct Children {
    map: Mutex<HashMap<InvocationId, ChildEntry>>,
    /// Notified when a child starts while none ran.
    pub(crate) busy: Notify,
}

impl Children {
    fn insert(&self, id: InvocationId, entry: ChildEntry) {
        let mut map = self.map.lock();
        if map.is_empty() {
            self.busy.notify_waiters();
        }
        map.insert(id, entry);
    }

    fn remove(&self, id: &InvocationId) {
        self.map.lock().remove(id);
    }

    /// Whether no child runs.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.lock().is_empty()
    }

    /// The invocations the children run.
    pub(crate) fn running_ids(&self) -> Vec<InvocationId> {
        self.map.lock().keys().copied().collect()
    }

    /// Forgets every child; their invocations and process ids.
    pub(crate) fn drain(&self) -> Vec<(InvocationId, u32)> {
        self.map.lock().drain().map(|(id, c)| (id, c.pid)).collect()
    }

    /// Tells the supervisors of the children running `ids` to stop them
    /// (once each).
    pub(crate) fn cancel(&self, runner_id: &RunnerId, ids: &[InvocationId]) {
        let mut map = self.map.lock();
        for id in ids {
            let Some(child) = map.get_mut(id) else {
                continue;
            };
            if child.cancelled {
                continue;
            }
            child.cancelled = true;
            child.cancel.notify_one();
            info!(
                runner_id = %runner_id,
                task_id = %child.task_id,
                invocation_id = %id,
                pid = child.pid,
                "cancel requested: stopping the child process"
            );
        }
    }
}

/// Runs one invocation in a child process and answers its requests; stops
/// the child when its invocation is cancelled.
pub(crate) async fn supervise_child(
    runner: Arc<ProcessRunner>,
    record: Arc<InvocationRecord>,
    permit: OwnedSemaphorePermit,
    slots: Arc<Semaphore>,
    children: Arc<Children>,
) {
    let id = record.invocation_id;
    let mut permit = Some(permit);
    let spawned = child_command(&runner.app, "invocation").and_then(|mut cmd| {
        cmd.env(INVOCATION_ENV, id.as_str())
            .env(OWNER_ENV, runner.runner_id.as_str())
            .spawn()
            .map_err(|e| PynencError::runner_caused("cannot start a child process", e))
    });
    let mut child: Child = match spawned {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "re-routing the invocation");
            let rerouted = runner
                .app
                .orchestrator()
                .kill_and_reroute(&id, &runner.runner_id)
                .await;
            if rerouted.is_ok() {
                let task_id = Some(record.call.task_id.as_ref());
                log_if_cancelled(&runner.app, &runner.runner_id, &id, task_id).await;
            }
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    let cancel = Arc::new(Notify::new());
    children.insert(
        id,
        ChildEntry {
            pid,
            task_id: record.call.task_id.clone(),
            cancel: cancel.clone(),
            cancelled: false,
        },
    );
    debug!(pid, "child started");
    let mut stdin: Option<ChildStdin> = child.stdin.take();
    let cancelled = match child.stdout.take() {
        Some(stdout) => {
            let mut session = Session {
                runner: &runner,
                pid,
                stdin: &mut stdin,
                permit: &mut permit,
                slots: &slots,
                cancel: &cancel,
            };
            session.answer(stdout).await
        }
        None => false,
    };
    let status = if cancelled {
        Ok(stop_child(&runner, &record, &mut child, pid).await)
    } else {
        child.wait().await
    };
    children.remove(&id);
    drop(stdin);
    drop(permit);
    match status {
        Ok(s) if cancelled => end_cancelled(&runner, &record, pid, &s).await,
        Ok(s) if s.success() => {}
        Ok(s) => {
            runner
                .crashes
                .process_died(
                    &runner.app,
                    &runner.runner_id,
                    vec![id],
                    pid,
                    &s,
                    "child process",
                )
                .await
        }
        Err(e) => warn!(pid, error = %e, "could not learn how the child process ended"),
    }
}

/// What the supervisor of one child works with while it answers it.
struct Session<'a> {
    runner: &'a ProcessRunner,
    pid: u32,
    stdin: &'a mut Option<ChildStdin>,
    permit: &'a mut Option<OwnedSemaphorePermit>,
    slots: &'a Arc<Semaphore>,
    cancel: &'a Notify,
}

impl Session<'_> {
    /// Answers the child's requests until its output ends (`false`) or its
    /// invocation is cancelled (`true`).
    async fn answer(&mut self, stdout: ChildStdout) -> bool {
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = tokio::select! {
                biased;
                () = self.cancel.notified() => return true,
                line = lines.next_line() => line,
            };
            let Ok(Some(line)) = line else {
                return false;
            };
            let Some(request) = protocol_request(&line) else {
                continue;
            };
            let Some(ids) = request.strip_prefix("wait ") else {
                warn!(request, "unknown request from a child");
                continue;
            };
            let waited: Vec<InvocationId> = match serde_json::from_str(ids) {
                Ok(w) => w,
                Err(e) => {
                    warn!(error = %e, "unreadable wait request from a child");
                    continue;
                }
            };
            if self.pause_while_waiting(&waited).await {
                return true;
            }
        }
    }

    /// The child is `PAUSED` waiting for `waited`: stops it and frees its
    /// slot until the results are ready, then resumes it. `true` when its
    /// invocation was cancelled meanwhile (the child is left stopped).
    async fn pause_while_waiting(&mut self, waited: &[InvocationId]) -> bool {
        let pid = self.pid;
        signal(pid, libc::SIGSTOP);
        drop(self.permit.take());
        debug!(pid, waiting_for = waited.len(), "child paused");
        let coordination = self.runner.app.coordination();
        tokio::select! {
            biased;
            () = self.cancel.notified() => return true,
            waited = coordination.wait_final(waited) => {
                if let Err(e) = waited {
                    warn!(error = %e, "waiting for a child's results failed");
                }
            }
        }
        *self.permit = tokio::select! {
            biased;
            () = self.cancel.notified() => return true,
            permit = self.slots.clone().acquire_owned() => permit.ok(),
        };
        signal(pid, libc::SIGCONT);
        if let Some(pipe) = self.stdin.as_mut() {
            let _ = pipe.write_all(b"go\n").await;
            let _ = pipe.flush().await;
        }
        debug!(pid, "child resumed");
        false
    }
}

/// Stops a child whose invocation was cancelled: `SIGTERM` (and `SIGCONT`,
/// in case it was stopped while paused), then `SIGKILL` if it is still
/// alive after `runner.shutdown_grace_seconds`. Returns how it ended.
async fn stop_child(
    runner: &ProcessRunner,
    record: &InvocationRecord,
    child: &mut Child,
    pid: u32,
) -> ExitStatus {
    let grace = Duration::from_secs_f64(runner.app.conf().runner.shutdown_grace_seconds.max(0.0));
    signal(pid, libc::SIGTERM);
    signal(pid, libc::SIGCONT);
    if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
        return status;
    }
    warn!(
        runner_id = %runner.runner_id,
        task_id = %record.call.task_id,
        invocation_id = %record.invocation_id,
        pid,
        grace_s = grace.as_secs_f64(),
        "the child process of a cancelled invocation outlived SIGTERM; sending SIGKILL"
    );
    if let Err(e) = child.start_kill() {
        debug!(pid, error = %e, "SIGKILL failed (it may have ended)");
    }
    child.wait().await.unwrap_or_else(|e| {
        warn!(pid, error = %e, "could not wait for the killed child process");
        std::os::unix::process::ExitStatusExt::from_raw(libc::SIGKILL)
    })
}

/// Ends the run of a child that was stopped because its invocation was
/// cancelled: `CANCELLED`, not a crash, not re-routed.
async fn end_cancelled(
    runner: &ProcessRunner,
    record: &InvocationRecord,
    pid: u32,
    status: &ExitStatus,
) {
    let id = &record.invocation_id;
    let outcome = cancelled_outcome(&runner.runner_id);
    match runner
        .app
        .orchestrator()
        .finish(id, &runner.runner_id, outcome)
        .await
    {
        Ok(_) => info!(
            runner_id = %runner.runner_id,
            task_id = %record.call.task_id,
            invocation_id = %id,
            pid,
            exit = %describe_exit(status),
            "child process stopped: invocation cancelled"
        ),
        // it ended by itself before it was stopped
        Err(e) => debug!(
            runner_id = %runner.runner_id,
            task_id = %record.call.task_id,
            invocation_id = %id,
            error = %e,
            "the stopped child's invocation was not recorded as cancelled"
        ),
    }
}
