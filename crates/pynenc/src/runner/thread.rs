//! [`ThreadRunner`]: the in-process runner.
//!
//! The runner loop picks for all free slots at once and starts each picked
//! invocation in a tokio task that holds its slot. When a run ends, the same
//! step that records the end takes the slot's next invocation, and the task
//! runs it too: a busy runner spawns no task and hands no slot over per
//! invocation.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pynenc_model::{InvocationId, InvocationRecord, InvocationStatus, RunOutcome, RunnerId};
use pynenc_store::RunEnd;
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use super::finisher::Finisher;
use super::host::{InvocationHost, RunFinish};
use super::ids::{new_runner_id, process_context};
use super::process;
use super::run::{run_invocation, RunResult};
use super::stop::{stop_on_signal, StopSignal};
use super::upkeep::{idle, maintain, PickBackoff};
use super::{RunnerHandle, SpawnedRunner};
use crate::app::Pynenc;
use crate::context::InvocationContext;
use crate::exceptions::{PynencError, Result};

/// State shared by a runner and the invocations it runs.
pub(crate) struct RunnerShared {
    pub(crate) runner_id: RunnerId,
    pub(crate) app: Pynenc,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) max_slots: usize,
    pub(crate) stop: Arc<StopSignal>,
    /// Running invocations by the address of their record (no key to
    /// allocate), with the handle of the tokio task running them.
    running: Mutex<FxHashMap<usize, (Arc<InvocationRecord>, AbortHandle)>>,
    idle: Notify,
    finisher: Finisher,
    /// Set in a worker process of a pool: tell the pool which invocations
    /// run here, so it can account for them if this process dies.
    report_to_parent: bool,
}

impl RunnerShared {
    /// Lists `next`, taken for the slot of `from`, as running in the tokio
    /// task of `from` (before `from` leaves the list, so a stop always
    /// finds them).
    pub(crate) fn hand_over(&self, from: &Arc<InvocationRecord>, next: &[Arc<InvocationRecord>]) {
        if next.is_empty() {
            return;
        }
        let mut running = self.running.lock();
        if let Some(abort) = running.get(&running_key(from)).map(|(_, a)| a.clone()) {
            for n in next {
                running.insert(running_key(n), (n.clone(), abort.clone()));
            }
        }
    }

    /// An invocation taken for a slot whose run is gone (the runner is
    /// stopping): `KILLED` → `REROUTED`, back to the head of the queue.
    pub(crate) async fn give_back(&self, record: &Arc<InvocationRecord>) {
        self.running.lock().remove(&running_key(record));
        let id = &record.invocation_id;
        match self
            .app
            .orchestrator()
            .kill_and_reroute(id, &self.runner_id)
            .await
        {
            Ok(()) => info!(invocation_id = %id, "re-routed: its slot's run is gone"),
            Err(e) => warn!(invocation_id = %id, error = %e, "could not re-route"),
        }
    }
}

#[async_trait::async_trait]
impl InvocationHost for RunnerShared {
    fn runner_id(&self) -> &RunnerId {
        &self.runner_id
    }

    /// Where batching pays (SQLite, Redis), the end joins the finisher's
    /// next batch, which also takes the next invocation of each slot it
    /// frees. Where it does not (the in-process backend), the end is
    /// recorded directly and the slot's next invocation taken in the same
    /// step. Either way the next invocation runs in this tokio task, so a
    /// busy runner spawns no task and hands no slot over per invocation; a
    /// stopping runner takes none.
    async fn finish(
        &self,
        app: &Pynenc,
        record: &Arc<InvocationRecord>,
        outcome: RunOutcome,
    ) -> RunFinish {
        let orch = app.orchestrator();
        if orch.batches_finishes() {
            let finished = self.finisher.finish(self, record, outcome).await;
            return RunFinish {
                end: finished.end,
                next: finished.next.into_iter().collect(),
            };
        }
        let end = vec![RunEnd {
            invocation_id: record.invocation_id,
            outcome,
        }];
        let max_next = if self.stop.is_stopped() { 0 } else { 1 };
        let report = orch
            .finish_many_and_start(&self.runner_id, end, max_next, Some(process_context()))
            .await;
        if let Some(e) = &report.pick_error {
            warn!(error = %e, "could not take the slot's next invocation");
        }
        self.hand_over(record, &report.next);
        let end = match report.ends.into_iter().next() {
            Some(end) => end.into_result().map_err(Into::into),
            None => Err(PynencError::runner("the end of the run got no outcome")),
        };
        RunFinish {
            end,
            next: report.next,
        }
    }

    /// Pauses `ctx` while it waits for `ids`: the wait is recorded for
    /// blocking control, the slot is freed, and taken back when all are final.
    async fn waiting_for_results(
        &self,
        ctx: &InvocationContext,
        ids: &[InvocationId],
    ) -> Result<()> {
        let orch = self.app.orchestrator();
        orch.waiting_for_results(Some(ctx.invocation_id()), ids)
            .await?;
        {
            let mut slot = ctx.slot.lock().await;
            if slot.waits == 0 {
                ctx.set_own_status(InvocationStatus::Paused, &self.runner_id)
                    .await?;
                slot.permit = None;
                debug!(invocation_id = %ctx.invocation_id(), waiting_for = ids.len(), "paused");
            }
            slot.waits += 1;
        }
        let waited = self.app.coordination().wait_final(ids).await;
        let mut slot = ctx.slot.lock().await;
        slot.waits -= 1;
        if slot.waits == 0 {
            slot.permit = Some(
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| PynencError::runner("runner slots closed"))?,
            );
            ctx.set_own_status(InvocationStatus::Resumed, &self.runner_id)
                .await?;
            debug!(invocation_id = %ctx.invocation_id(), "resumed");
        }
        Ok(waited?)
    }
}

/// The in-process runner (tokio tasks and blocking threads).
pub struct ThreadRunner {
    shared: Arc<RunnerShared>,
}

impl ThreadRunner {
    /// A runner for `app` with the configured number of slots.
    pub fn new(app: &Pynenc) -> Self {
        let slots = app.conf().effective_max_parallel_slots();
        ThreadRunner::with_slots(app, slots)
    }

    /// A runner with `max_parallel_slots` slots (at least 1).
    pub fn with_slots(app: &Pynenc, max_parallel_slots: usize) -> Self {
        ThreadRunner::with_identity(
            app,
            max_parallel_slots,
            new_runner_id("ThreadRunner"),
            false,
        )
    }

    /// A runner with a given id; `report_to_parent` makes it write the
    /// start and end of every invocation to its pool parent.
    pub(crate) fn with_identity(
        app: &Pynenc,
        max_parallel_slots: usize,
        runner_id: RunnerId,
        report_to_parent: bool,
    ) -> Self {
        let n = max_parallel_slots.max(1);
        ThreadRunner {
            shared: Arc::new(RunnerShared {
                runner_id,
                app: app.clone(),
                slots: Arc::new(Semaphore::new(n)),
                max_slots: n,
                stop: Arc::new(StopSignal::default()),
                running: Mutex::new(FxHashMap::default()),
                idle: Notify::new(),
                finisher: Finisher::default(),
                report_to_parent,
            }),
        }
    }

    /// The runner's id (owner of the invocations it runs).
    pub fn runner_id(&self) -> &RunnerId {
        &self.shared.runner_id
    }

    /// The number of slots.
    pub fn max_parallel_slots(&self) -> usize {
        self.shared.max_slots
    }

    /// A handle to stop the runner.
    pub fn handle(&self) -> RunnerHandle {
        RunnerHandle::new(&self.shared.runner_id, self.shared.stop.clone())
    }

    /// Starts the runner in the background on the current tokio runtime.
    pub fn spawn(self) -> SpawnedRunner {
        let handle = self.handle();
        let join = tokio::spawn(async move { self.run().await });
        SpawnedRunner::new(handle, join)
    }

    /// Runs until Ctrl-C or SIGTERM, then stops gracefully.
    pub async fn run_until_signal(self) -> Result<()> {
        stop_on_signal(self.handle());
        self.run().await
    }

    /// Runs until stopped.
    pub async fn run(self) -> Result<()> {
        let shared = self.shared.clone();
        let span = info_span!("runner", runner_id = %shared.runner_id);
        async move {
            if shared.app.conf().dev_mode_force_sync_tasks {
                warn!("dev_mode_force_sync_tasks is on: calls run in the caller, this runner will find no work");
            }
            info!(slots = shared.max_slots, app_id = %shared.app.app_id(), "runner started");
            let orch = shared.app.orchestrator();
            let coordination = shared.app.coordination();
            let maintenance = tokio::spawn(
                maintain(shared.app.clone(), shared.runner_id.clone()).instrument(tracing::Span::current()),
            );
            let mut backoff = PickBackoff::new();
            while !shared.stop.is_stopped() {
                let free = shared.slots.available_permits();
                if free == 0 {
                    shared.stop.or_stopped(shared.slots.clone().acquire_owned()).await;
                    // let invocations that are about to end free their slots
                    // too, so one pick fills several
                    let enough = (shared.max_slots / 4).max(1);
                    for _ in 0..8 {
                        tokio::task::yield_now().await;
                        if shared.slots.available_permits() >= enough {
                            break;
                        }
                    }
                    continue;
                }
                let epoch = coordination.work_epoch();
                let batch = match orch
                    .get_invocations_to_start(&shared.runner_id, free, Some(process_context()))
                    .await
                {
                    Ok(b) => {
                        backoff.reset();
                        b
                    }
                    Err(e) => {
                        backoff.failed(&shared.stop, &e.into()).await;
                        continue;
                    }
                };
                if batch.is_empty() {
                    idle(&shared.app, &shared.stop, epoch).await;
                    continue;
                }
                for record in batch {
                    let permit = match shared.slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => match shared.slots.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                    };
                    spawn_invocation(&shared, record, permit);
                }
            }
            shutdown(&shared).await;
            maintenance.abort();
            if let Err(e) = coordination.remove_heartbeat(&shared.runner_id).await {
                warn!(error = %e, "could not remove the runner heartbeat");
            }
            info!("runner stopped");
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// The key of a running invocation in [`RunnerShared::running`].
fn running_key(record: &Arc<InvocationRecord>) -> usize {
    Arc::as_ptr(record) as usize
}

/// Runs `record` in a new tokio task holding `permit`, then, in the same
/// task, the invocations its host takes next (see [`RunnerShared::finish`]).
fn spawn_invocation(
    shared: &Arc<RunnerShared>,
    record: Arc<InvocationRecord>,
    permit: OwnedSemaphorePermit,
) {
    let key = running_key(&record);
    let kept = record.clone();
    let s = shared.clone();
    // the runner's span (with its runner id) is the parent of every invocation's span
    let runner_span = tracing::Span::current();
    // hold the map lock while spawning so the task cannot remove itself before it is inserted
    let mut running = shared.running.lock();
    let fut = async move {
        let host: Arc<dyn InvocationHost> = s.clone();
        let mut permit = Some(permit);
        let mut queue = vec![record];
        while let Some(record) = queue.pop() {
            if permit.is_none() {
                // the slot went with a run that kept it: take another one
                permit = s.slots.clone().acquire_owned().await.ok();
            }
            let span = info_span!(
                parent: &runner_span,
                "invocation",
                task_id = %record.call.task_id,
                invocation_id = %record.invocation_id,
            );
            let end = run_hosted(&s, host.clone(), record.clone(), permit.take())
                .instrument(span)
                .await;
            // only a one-slot permit goes on to the next invocation
            permit = end.permit.filter(|p| p.num_permits() == 1);
            queue.extend(end.next);
            let mut running = s.running.lock();
            running.remove(&running_key(&record));
            if running.is_empty() {
                s.idle.notify_waiters();
            }
        }
    };
    let task = tokio::spawn(fut);
    running.insert(key, (kept, task.abort_handle()));
}

/// [`run_invocation`] in a runner, reporting to a pool parent where the
/// runner is a pool worker.
async fn run_hosted(
    s: &Arc<RunnerShared>,
    host: Arc<dyn InvocationHost>,
    record: Arc<InvocationRecord>,
    mut permit: Option<OwnedSemaphorePermit>,
) -> RunResult {
    let id = s.report_to_parent.then_some(record.invocation_id);
    if let Some(id) = &id {
        if process::is_quarantined(id) {
            // it was running in a worker process that died beside
            // others: run it alone, so a crash is pinned on it
            drop(permit.take());
            process::report_to_parent("wait-alone", id.as_str());
            let all = u32::try_from(s.max_slots).unwrap_or(u32::MAX);
            permit = s.slots.clone().acquire_many_owned(all).await.ok();
            info!("running alone: it was in a worker process that died");
        }
        process::report_to_parent("start", id.as_str());
    }
    let end = run_invocation(&s.app, host, record, permit).await;
    if let Some(id) = &id {
        process::report_to_parent("end", id.as_str());
        process::end_quarantine(id);
    }
    end
}

/// Lets running invocations finish within the grace period, then kills and
/// re-routes the rest.
async fn shutdown(shared: &Arc<RunnerShared>) {
    let grace = Duration::from_secs_f64(shared.app.conf().runner.shutdown_grace_seconds.max(0.0));
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let idle = shared.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if shared.running.lock().is_empty() {
            return;
        }
        if tokio::time::timeout_at(deadline, idle).await.is_err() {
            break;
        }
    }
    let left: Vec<(InvocationId, AbortHandle)> = shared
        .running
        .lock()
        .drain()
        .map(|(_, (record, abort))| (record.invocation_id, abort))
        .collect();
    let orch = shared.app.orchestrator();
    for (id, abort) in left {
        abort.abort();
        match orch.kill_and_reroute(&id, &shared.runner_id).await {
            Ok(()) => info!(invocation_id = %id, "killed at shutdown and re-routed"),
            Err(e) => warn!(invocation_id = %id, error = %e, "could not re-route at shutdown"),
        }
    }
}
