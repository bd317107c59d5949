//! [`ProcessRunner`]: one child process per invocation, stopped while it
//! waits for other invocations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{InvocationId, InvocationRecord, RunnerId};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::Semaphore;
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::children::{child_command, refuse_memory, signal};
use super::crash::CrashLedger;
use super::protocol::protocol_request;
use super::{INVOCATION_ENV, OWNER_ENV};
use crate::app::Pynenc;
use crate::exceptions::{PynencError, Result};
use crate::runner::ids::new_runner_id;
use crate::runner::stop::{stop_on_signal, StopSignal};
use crate::runner::upkeep::{idle, maintain, PickBackoff};
use crate::runner::{RunnerHandle, SpawnedRunner};

/// One child process per invocation.
pub struct ProcessRunner {
    app: Pynenc,
    runner_id: RunnerId,
    max_processes: usize,
    stop: Arc<StopSignal>,
    crashes: CrashLedger,
}

impl ProcessRunner {
    /// A process runner running at most `runner.max_processes` children at once.
    pub fn new(app: &Pynenc) -> Self {
        ProcessRunner::with_processes(app, app.conf().effective_max_processes())
    }

    /// A process runner with at most `max_processes` children at once.
    pub fn with_processes(app: &Pynenc, max_processes: usize) -> Self {
        ProcessRunner {
            app: app.clone(),
            runner_id: new_runner_id("ProcessRunner"),
            max_processes: max_processes.max(1),
            stop: Arc::new(StopSignal::default()),
            crashes: CrashLedger::default(),
        }
    }

    /// The runner's id (owner of the invocations its children run).
    pub fn runner_id(&self) -> &RunnerId {
        &self.runner_id
    }

    /// A handle to stop the runner.
    pub fn handle(&self) -> RunnerHandle {
        RunnerHandle::new(&self.runner_id, self.stop.clone())
    }

    /// Starts the runner in the background.
    pub fn spawn(self) -> SpawnedRunner {
        let handle = self.handle();
        SpawnedRunner::new(handle, tokio::spawn(self.run()))
    }

    /// Runs until Ctrl-C or SIGTERM.
    pub async fn run_until_signal(self) -> Result<()> {
        stop_on_signal(self.handle());
        self.run().await
    }

    /// Runs until stopped.
    pub async fn run(self) -> Result<()> {
        refuse_memory(&self.app, "ProcessRunner")?;
        let span = info_span!("runner", runner_id = %self.runner_id);
        let this = Arc::new(self);
        let me = this.clone();
        async move {
            info!(max_processes = me.max_processes, "process runner started");
            let maintenance = tokio::spawn(
                maintain(me.app.clone(), me.runner_id.clone()).instrument(tracing::Span::current()),
            );
            let slots = Arc::new(Semaphore::new(me.max_processes));
            let children: Arc<parking_lot::Mutex<HashMap<InvocationId, u32>>> = Arc::default();
            let mut tasks = tokio::task::JoinSet::new();
            let orch = me.app.orchestrator();
            let coordination = me.app.coordination();
            let mut backoff = PickBackoff::new();
            while !me.stop.is_stopped() {
                let free = slots.available_permits();
                if free == 0 {
                    me.stop.or_stopped(slots.clone().acquire_owned()).await;
                    continue;
                }
                let epoch = coordination.work_epoch();
                let picked = match orch.get_invocations_to_run(&me.runner_id, free).await {
                    Ok(p) => {
                        backoff.reset();
                        p
                    }
                    Err(e) => {
                        backoff.failed(&me.stop, &e.into()).await;
                        continue;
                    }
                };
                if picked.is_empty() {
                    idle(&me.app, &me.stop, epoch).await;
                    continue;
                }
                for record in picked {
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let span = info_span!("invocation", task_id = %record.call.task_id, invocation_id = %record.invocation_id);
                    tasks.spawn(
                        supervise_child(me.clone(), record, permit, slots.clone(), children.clone()).instrument(span),
                    );
                }
                while tasks.try_join_next().is_some() {}
            }
            // graceful stop: let children finish within the grace period, then kill
            let grace = Duration::from_secs_f64(me.app.conf().runner.shutdown_grace_seconds.max(0.0));
            if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                .await
                .is_err()
            {
                let left: Vec<(InvocationId, u32)> = children.lock().drain().collect();
                for (id, pid) in left {
                    signal(pid, libc::SIGKILL);
                    match orch.kill_and_reroute(&id, &me.runner_id).await {
                        Ok(()) => info!(invocation_id = %id, pid, "child killed at shutdown, invocation re-routed"),
                        Err(e) => warn!(invocation_id = %id, error = %e, "could not re-route at shutdown"),
                    }
                }
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
            maintenance.abort();
            let _ = coordination.remove_heartbeat(&me.runner_id).await;
            info!("process runner stopped");
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// Runs one invocation in a child process and answers its requests.
async fn supervise_child(
    runner: Arc<ProcessRunner>,
    record: Arc<InvocationRecord>,
    permit: tokio::sync::OwnedSemaphorePermit,
    slots: Arc<Semaphore>,
    children: Arc<parking_lot::Mutex<HashMap<InvocationId, u32>>>,
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
            let _ = runner
                .app
                .orchestrator()
                .kill_and_reroute(&id, &runner.runner_id)
                .await;
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    children.lock().insert(id, pid);
    debug!(pid, "child started");
    let mut stdin: Option<ChildStdin> = child.stdin.take();
    if let Some(stdout) = child.stdout.take() {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
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
            // the child is PAUSED: stop it and free its slot until the results are ready
            signal(pid, libc::SIGSTOP);
            drop(permit.take());
            debug!(pid, waiting_for = waited.len(), "child paused");
            if let Err(e) = runner.app.coordination().wait_final(&waited).await {
                warn!(error = %e, "waiting for a child's results failed");
            }
            permit = slots.clone().acquire_owned().await.ok();
            signal(pid, libc::SIGCONT);
            if let Some(pipe) = stdin.as_mut() {
                let _ = pipe.write_all(b"go\n").await;
                let _ = pipe.flush().await;
            }
            debug!(pid, "child resumed");
        }
    }
    let status = child.wait().await;
    children.lock().remove(&id);
    drop(stdin);
    drop(permit);
    match status {
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
