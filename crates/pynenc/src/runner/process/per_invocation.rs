//! [`ProcessRunner`]: one child process per invocation, stopped while it
//! waits for other invocations, and stopped for good when its invocation
//! is cancelled.

use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{InvocationId, RunnerId};
use tokio::sync::{Notify, Semaphore};
use tracing::{info, info_span, warn, Instrument};

use super::children::{refuse_memory, signal};
use super::crash::CrashLedger;
use super::supervise::{supervise_child, Children};
use crate::app::Pynenc;
use crate::conf::RunnerKind;
use crate::exceptions::Result;
use crate::runner::cancel::{log_if_cancelled, requests_now, watch_requests};
use crate::runner::ids::new_runner_id;
use crate::runner::stop::{stop_on_signal, StopSignal};
use crate::runner::upkeep::{maintain, Idle, PickBackoff, Presence};
use crate::runner::{RunnerHandle, SpawnedRunner};

/// One child process per invocation.
///
/// The children are not runners of their own: each acts for this runner
/// (the owner of its invocation), beats no heartbeat and is not listed
/// among the runners; this runner lists the invocations they run. A cancel
/// of one of them reaches this runner, which stops the child (`SIGTERM`,
/// then `SIGKILL` after `runner.shutdown_grace_seconds`) and ends the run
/// `CANCELLED`.
pub struct ProcessRunner {
    pub(crate) app: Pynenc,
    pub(crate) runner_id: RunnerId,
    max_processes: usize,
    stop: Arc<StopSignal>,
    pub(crate) crashes: CrashLedger,
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
            let children = Arc::new(Children::default());
            let presence = {
                let (children, slots) = (children.clone(), me.max_processes);
                Arc::new(Presence::new(&me.app, &me.runner_id, Some(RunnerKind::Process), move || {
                    (slots, children.running_ids())
                }))
            };
            presence.beat().await;
            let maintenance = tokio::spawn(
                maintain(presence.clone(), true).instrument(tracing::Span::current()),
            );
            let watcher = tokio::spawn(
                watch_cancels(me.clone(), children.clone()).instrument(tracing::Span::current()),
            );
            let slots = Arc::new(Semaphore::new(me.max_processes));
            let mut tasks = tokio::task::JoinSet::new();
            let orch = me.app.orchestrator();
            let coordination = me.app.coordination();
            let mut backoff = PickBackoff::new();
            let mut idle = Idle::new();
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
                    idle.wait(&me.app, &me.stop, epoch).await;
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
            // what was cancelled is stopped now, not waited for
            let cancels = requests_now(&me.app, &me.runner_id).await;
            children.cancel(&me.runner_id, &cancels);
            // graceful stop: let children finish within the grace period, then kill
            let grace = Duration::from_secs_f64(me.app.conf().runner.shutdown_grace_seconds.max(0.0));
            if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                .await
                .is_err()
            {
                let left: Vec<(InvocationId, u32)> = children.drain();
                for (id, pid) in left {
                    signal(pid, libc::SIGKILL);
                    match orch.kill_and_reroute(&id, &me.runner_id).await {
                        Ok(()) => {
                            if !log_if_cancelled(&me.app, &me.runner_id, &id, None).await {
                                info!(invocation_id = %id, pid, "child killed at shutdown, invocation re-routed")
                            }
                        }
                        Err(e) => warn!(invocation_id = %id, error = %e, "could not re-route at shutdown"),
                    }
                }
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
            watcher.abort();
            maintenance.abort();
            // a heartbeat in flight must not land after the runner left
            let _ = maintenance.await;
            presence.leave().await;
            info!("process runner stopped");
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// Asks for the runner's cancel requests while any child runs, and stops
/// the children running what was cancelled.
async fn watch_cancels(runner: Arc<ProcessRunner>, children: Arc<Children>) {
    let busy: &Notify = &children.busy;
    watch_requests(
        runner.app.clone(),
        runner.runner_id.clone(),
        busy,
        || !children.is_empty(),
        |ids| {
            children.cancel(&runner.runner_id, &ids);
            async {}
        },
    )
    .await;
}
