//! Runners execute invocations.
//!
//! [`ThreadRunner`] is the in-process runner: it runs async task bodies as
//! tokio tasks and sync ones on blocking threads, up to `max_parallel_slots`
//! at a time. It is woken by routing and by results (no sleep-polling), a
//! task waiting on other tasks is `PAUSED` and frees its slot, and a stop
//! (Ctrl-C, SIGTERM or [`RunnerHandle::stop`]) lets running invocations
//! finish within the grace period, then sets the rest `KILLED` → `REROUTED`.
//!
//! The runner loop picks for all free slots at once and starts each picked
//! invocation in a tokio task that holds its slot. When a run ends, the same
//! step that records the end takes the slot's next invocation, and the task
//! runs it too: a busy runner spawns no task and hands no slot over per
//! invocation. On the in-process backend each end is its own locked step;
//! where a step is a transaction or a round trip (SQLite, Redis), the ends
//! that come in while one step is in flight go together in the next, with
//! one pick-up for all the slots they free.

mod execute;
pub mod process;

pub use process::{
    run_child_if_requested, MultiThreadRunner, PersistentProcessRunner, ProcessRunner,
};

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::app::Pynenc;
use crate::context::InvocationContext;
use crate::exceptions::{PynencError, Result, TaskError};
use crate::invocation::InvocationRecord;
use crate::orchestrator::RunOutcome;
use crate::status::InvocationStatus;
use crate::task::TaskInput;
use crate::util;

pub(crate) use execute::run_body;

/// The slot and pause state of one running invocation.
#[derive(Default)]
pub(crate) struct SlotState {
    permit: Option<OwnedSemaphorePermit>,
    waits: usize,
}

/// What an invocation needs from the runner hosting it.
#[async_trait::async_trait]
pub(crate) trait InvocationHost: Send + Sync {
    /// The owner id of the invocations it runs.
    fn runner_id(&self) -> &str;
    /// Called when the invocation of `ctx` waits for `ids`: the host decides
    /// how it waits (pause and free the slot, or hand the wait to a parent).
    async fn waiting_for_results(&self, ctx: &InvocationContext, ids: &[String]) -> Result<()>;
    /// Records the end of the run of `record`. A host may take its next
    /// invocations in the same step: they are returned, already `RUNNING`
    /// for it, and the caller runs them.
    async fn finish(
        &self,
        app: &Pynenc,
        record: &Arc<InvocationRecord>,
        outcome: RunOutcome,
    ) -> (Result<InvocationStatus>, Vec<Arc<InvocationRecord>>) {
        let finished = app
            .orchestrator()
            .finish(&record.invocation_id, self.runner_id(), outcome)
            .await;
        (finished, Vec::new())
    }
}

/// The answer to a queued end: its result, and the next invocation of the
/// slot it frees, if one was taken.
type Finished = (Result<InvocationStatus>, Option<Arc<InvocationRecord>>);
type FinishReply = tokio::sync::oneshot::Sender<Finished>;

/// Records the ends of runs in batches by flat combining: a finishing
/// invocation queues its outcome, and whoever finds no flush in progress
/// flushes everything queued in one `finish_many_and_start` (one
/// transaction or round trip for all of them), which also takes the next
/// invocation of every slot the batch frees. Alone, an invocation flushes
/// itself at once.
#[derive(Default)]
pub(crate) struct Finisher {
    queue: Mutex<Vec<(Arc<InvocationRecord>, RunOutcome, FinishReply)>>,
    flushing: AtomicBool,
}

/// Clears the flushing flag even if the flushing future is dropped.
struct FlushGuard<'a>(&'a AtomicBool);

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Finisher {
    /// Queues the end of the run of `record` and waits until it is recorded.
    pub(crate) async fn finish(
        &self,
        host: &RunnerShared,
        record: &Arc<InvocationRecord>,
        outcome: RunOutcome,
    ) -> Finished {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue.lock().push((record.clone(), outcome, reply));
        self.flush(host).await;
        answer.await.unwrap_or_else(|_| {
            let message = format!(
                "the end of invocation {} was not recorded (runner stopping)",
                record.invocation_id
            );
            (Err(PynencError::Runner { message }), None)
        })
    }

    /// Records the queued ends, unless another caller is already doing it
    /// (it will take them too).
    async fn flush(&self, host: &RunnerShared) {
        let orch = host.app.orchestrator();
        while !self.flushing.swap(true, Ordering::AcqRel) {
            let guard = FlushGuard(&self.flushing);
            let batch = std::mem::take(&mut *self.queue.lock());
            if !batch.is_empty() {
                // a stopping runner takes no new work
                let max_next = if host.stop.is_stopped() {
                    0
                } else {
                    batch.len()
                };
                let mut items = Vec::with_capacity(batch.len());
                let mut waiting = Vec::with_capacity(batch.len());
                for (record, outcome, reply) in batch {
                    items.push((record.invocation_id.clone(), outcome));
                    waiting.push((record, reply));
                }
                let context = Some(util::process_context());
                let (results, next) = orch
                    .finish_many_and_start(&host.runner_id, items, max_next, context)
                    .await;
                let mut next = next
                    .unwrap_or_else(|e| {
                        warn!(error = %e, "could not take next invocations while recording ends");
                        Vec::new()
                    })
                    .into_iter();
                for ((record, reply), result) in waiting.into_iter().zip(results) {
                    let taken = next.next();
                    if let Some(n) = &taken {
                        host.hand_over(&record, std::slice::from_ref(n));
                    }
                    if let Err((_, Some(lost))) = reply.send((result, taken)) {
                        // the run that was to take it is gone
                        host.give_back(&lost).await;
                    }
                }
                for lost in next {
                    host.give_back(&lost).await;
                }
            }
            drop(guard);
            // anything queued while we flushed is ours to flush too
            if self.queue.lock().is_empty() {
                break;
            }
        }
    }
}

/// A new runner id: the kind, this process (`host:pid`) and 8 random hex
/// digits.
pub(crate) fn new_runner_id(kind: &str) -> String {
    format!(
        "{kind}@{}:{}",
        util::process_context(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// State shared by a runner and the invocations it runs.
pub(crate) struct RunnerShared {
    pub(crate) runner_id: String,
    app: Pynenc,
    slots: Arc<Semaphore>,
    max_slots: usize,
    stop: Arc<StopSignal>,
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
    fn hand_over(&self, from: &Arc<InvocationRecord>, next: &[Arc<InvocationRecord>]) {
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
    async fn give_back(&self, record: &Arc<InvocationRecord>) {
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
    fn runner_id(&self) -> &str {
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
    ) -> (Result<InvocationStatus>, Vec<Arc<InvocationRecord>>) {
        let orch = app.orchestrator();
        if orch.batches_finishes() {
            let (finished, next) = self.finisher.finish(self, record, outcome).await;
            return (finished, next.into_iter().collect());
        }
        let end = vec![(record.invocation_id.clone(), outcome)];
        let max_next = if self.stop.is_stopped() { 0 } else { 1 };
        let context = Some(util::process_context());
        let (ends, next) = orch
            .finish_many_and_start(&self.runner_id, end, max_next, context)
            .await;
        let next = next.unwrap_or_else(|e| {
            warn!(error = %e, "could not take the slot's next invocation");
            Vec::new()
        });
        self.hand_over(record, &next);
        (crate::orchestrator::only_end(ends), next)
    }

    /// Pauses `ctx` while it waits for `ids`: the wait is recorded for
    /// blocking control, the slot is freed, and taken back when all are final.
    async fn waiting_for_results(&self, ctx: &InvocationContext, ids: &[String]) -> Result<()> {
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
        let waited = orch.wait_final(ids).await;
        let mut slot = ctx.slot.lock().await;
        slot.waits -= 1;
        if slot.waits == 0 {
            slot.permit = Some(self.slots.clone().acquire_owned().await.map_err(|_| {
                PynencError::Runner {
                    message: "runner slots closed".into(),
                }
            })?);
            ctx.set_own_status(InvocationStatus::Resumed, &self.runner_id)
                .await?;
            debug!(invocation_id = %ctx.invocation_id(), "resumed");
        }
        waited
    }
}

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

/// Any runner kind, as chosen by the `runner.kind` setting (see [`Pynenc::runner`]).
pub enum Runner {
    /// In-process: tokio tasks and blocking threads.
    Thread(ThreadRunner),
    /// A child process per invocation.
    Process(ProcessRunner),
    /// A fixed pool of single-slot worker processes.
    PersistentProcess(PersistentProcessRunner),
    /// Worker processes with several slots, scaled by queue depth.
    MultiThread(MultiThreadRunner),
}

macro_rules! each_runner {
    ($self:expr, $r:ident => $e:expr) => {
        match $self {
            Runner::Thread($r) => $e,
            Runner::Process($r) => $e,
            Runner::PersistentProcess($r) => $e,
            Runner::MultiThread($r) => $e,
        }
    };
}

impl Runner {
    /// The runner `runner.kind` names, for `app`.
    pub fn for_app(app: &Pynenc) -> Runner {
        match app.conf().runner.kind.as_str() {
            "process" => Runner::Process(ProcessRunner::new(app)),
            "persistent_process" => Runner::PersistentProcess(PersistentProcessRunner::new(app)),
            "multi_thread" => Runner::MultiThread(MultiThreadRunner::new(app)),
            _ => Runner::Thread(ThreadRunner::new(app)),
        }
    }

    /// The runner's id.
    pub fn runner_id(&self) -> &str {
        each_runner!(self, r => r.runner_id())
    }

    /// A handle to stop it.
    pub fn handle(&self) -> RunnerHandle {
        each_runner!(self, r => r.handle())
    }

    /// Starts it in the background.
    pub fn spawn(self) -> SpawnedRunner {
        each_runner!(self, r => r.spawn())
    }

    /// Runs until stopped.
    pub async fn run(self) -> Result<()> {
        each_runner!(self, r => r.run().await)
    }

    /// Runs until Ctrl-C or SIGTERM.
    pub async fn run_until_signal(self) -> Result<()> {
        each_runner!(self, r => r.run_until_signal().await)
    }
}

/// The in-process runner (tokio tasks and blocking threads).
pub struct ThreadRunner {
    shared: Arc<RunnerShared>,
}

/// A handle to stop a runner (cheap to clone).
#[derive(Clone)]
pub struct RunnerHandle {
    runner_id: Arc<str>,
    stop: Arc<StopSignal>,
}

impl std::fmt::Debug for RunnerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunnerHandle({})", self.runner_id)
    }
}

impl RunnerHandle {
    /// Asks the runner to stop: it takes no new work, waits up to the grace
    /// period for running invocations, then kills and re-routes the rest.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// The runner's id.
    pub fn runner_id(&self) -> &str {
        &self.runner_id
    }

    pub(crate) fn new(runner_id: &str, stop: Arc<StopSignal>) -> Self {
        RunnerHandle {
            runner_id: Arc::from(runner_id),
            stop,
        }
    }
}

/// A runner started in the background by [`ThreadRunner::spawn`].
pub struct SpawnedRunner {
    handle: RunnerHandle,
    join: tokio::task::JoinHandle<Result<()>>,
}

impl SpawnedRunner {
    pub(crate) fn new(handle: RunnerHandle, join: tokio::task::JoinHandle<Result<()>>) -> Self {
        SpawnedRunner { handle, join }
    }

    /// The stop handle.
    pub fn handle(&self) -> &RunnerHandle {
        &self.handle
    }

    /// Stops the runner and waits until it has finished stopping.
    pub async fn stop(self) -> Result<()> {
        self.handle.stop();
        self.join.await.map_err(|e| PynencError::Runner {
            message: format!("runner task failed: {e}"),
        })?
    }
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
        runner_id: String,
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
    pub fn runner_id(&self) -> &str {
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
                let epoch = orch.work_epoch();
                let batch = match orch
                    .get_invocations_to_start(&shared.runner_id, free, Some(util::process_context().to_string()))
                    .await
                {
                    Ok(b) => {
                        backoff.reset();
                        b
                    }
                    Err(e) => {
                        backoff.failed(&shared.stop, &e).await;
                        continue;
                    }
                };
                if batch.is_empty() {
                    idle(orch, &shared.stop, epoch).await;
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
            if let Err(e) = orch.remove_heartbeat(&shared.runner_id).await {
                warn!(error = %e, "could not remove the runner heartbeat");
            }
            info!("runner stopped");
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// The wait of a runner loop after a failed pick: 10 ms, doubling up to
/// 5 s while picks keep failing, back to 10 ms once one works.
pub(crate) struct PickBackoff(Duration);

impl PickBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const LONGEST: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        PickBackoff(Self::FIRST)
    }

    /// A pick worked.
    pub(crate) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// A pick failed with `error`: logs it and waits (or until a stop).
    pub(crate) async fn failed(&mut self, stop: &StopSignal, error: &PynencError) {
        error!(error = %error, retry_in_ms = self.0.as_millis() as u64, "could not get invocations to run");
        stop.or_stopped(tokio::time::sleep(self.0)).await;
        self.0 = (self.0 * 2).min(Self::LONGEST);
    }
}

/// A runner found nothing to pick: promotes the scheduled calls that are
/// due, and when there were none, waits for work (or a stop) up to 100 ms.
pub(crate) async fn idle(orch: &Arc<dyn crate::Orchestrator>, stop: &StopSignal, epoch: u64) {
    match orch.promote_scheduled().await {
        Ok(0) => {}
        Ok(n) => {
            debug!(promoted = n, "scheduled invocations are due");
            return;
        }
        Err(e) => warn!(error = %e, "could not promote scheduled invocations"),
    }
    stop.or_stopped(orch.wait_for_work(epoch, Duration::from_millis(100)))
        .await;
}

/// The runner's periodic duties, off the hot path: heartbeat, recovery of
/// lost work (by the one runner holding the recovery lease) and auto purge.
pub(crate) async fn maintain(app: Pynenc, runner_id: String) {
    let conf = app.conf();
    let orch = app.orchestrator();
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.001));
    let heartbeat_every = secs(conf.runner.heartbeat_interval_seconds);
    let recover_every = secs(conf.runner.recovery_interval_seconds);
    let dead_after = secs(conf.runner.runner_dead_after_seconds);
    let max_pending = secs(conf.orchestrator.max_pending_seconds);
    let purge_every = secs(conf.orchestrator.auto_purge_interval_seconds);
    let purge_after = Duration::from_secs_f64(
        conf.orchestrator.auto_final_invocation_purge_hours.max(0.0) * 3600.0,
    );
    let recovery_actor = format!("recovery@{runner_id}");
    let tick = heartbeat_every.min(recover_every).min(purge_every);
    let (mut last_beat, mut last_recover, mut last_purge) =
        (None::<Instant>, Instant::now(), Instant::now());
    loop {
        if last_beat.map_or(true, |t| t.elapsed() >= heartbeat_every) {
            last_beat = Some(Instant::now());
            if let Err(e) = orch.heartbeat(&runner_id).await {
                warn!(error = %e, "could not write the runner heartbeat");
            }
        }
        if last_recover.elapsed() >= recover_every {
            last_recover = Instant::now();
            match orch
                .try_lease("recovery", &runner_id, recover_every * 3)
                .await
            {
                Ok(true) => match orch.recover(&recovery_actor, dead_after, max_pending).await {
                    Ok(ids) if ids.is_empty() => {}
                    Ok(ids) => {
                        warn!(recovered = ids.len(), invocations = ?ids, "re-routed invocations of dead runners")
                    }
                    Err(e) => warn!(error = %e, "recovery failed"),
                },
                Ok(false) => {}
                Err(e) => warn!(error = %e, "could not take the recovery lease"),
            }
        }
        if last_purge.elapsed() >= purge_every {
            last_purge = Instant::now();
            match orch.auto_purge(purge_after).await {
                Ok(0) => {}
                Ok(n) => info!(purged = n, "auto purge removed final invocations"),
                Err(e) => warn!(error = %e, "auto purge failed"),
            }
        }
        tokio::time::sleep(tick).await;
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
) -> RunEnd {
    let id = s.report_to_parent.then(|| record.invocation_id.clone());
    if let Some(id) = &id {
        if process::is_quarantined(id) {
            // it was running in a worker process that died beside
            // others: run it alone, so a crash is pinned on it
            drop(permit.take());
            process::report_to_parent("wait-alone", id);
            let all = u32::try_from(s.max_slots).unwrap_or(u32::MAX);
            permit = s.slots.clone().acquire_many_owned(all).await.ok();
            info!("running alone: it was in a worker process that died");
        }
        process::report_to_parent("start", id);
    }
    let end = run_invocation(&s.app, host, record, permit).await;
    if let Some(id) = &id {
        process::report_to_parent("end", id);
        process::end_quarantine(id);
    }
    end
}

/// Retry or failure for a run of `invocation_id` that ended with `error`:
/// a retry while its task's options allow one (the retries so far are read
/// only when the error is retriable at all).
pub(crate) async fn failure_outcome(
    orch: &Arc<dyn crate::Orchestrator>,
    options: &crate::task::TaskOptions,
    invocation_id: &str,
    error: TaskError,
) -> RunOutcome {
    if options.is_retriable(&error) {
        let retries = orch
            .get_num_retries(invocation_id)
            .await
            .unwrap_or(u32::MAX);
        if options.should_retry(&error, retries) {
            return RunOutcome::Retry(error);
        }
    }
    RunOutcome::Failed(error)
}

/// How a run of [`run_invocation`] ended.
pub(crate) struct RunEnd {
    /// The slot the run held at its end, if it still held one.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    /// Invocations the host took next (already `RUNNING` for it).
    pub(crate) next: Vec<Arc<InvocationRecord>>,
}

/// Runs one invocation that is already `RUNNING` for `host`: finds its task
/// in the registry, runs the body in its context, decides between success,
/// retry and failure, and records the end. Shared by every runner kind.
pub(crate) async fn run_invocation(
    app: &Pynenc,
    host: Arc<dyn InvocationHost>,
    record: Arc<InvocationRecord>,
    permit: Option<OwnedSemaphorePermit>,
) -> RunEnd {
    let orch = app.orchestrator();
    let kept = record.clone();
    let id = kept.invocation_id.as_str();
    let registered = app.registry().get(&record.call.task_id);
    let (def, options) = match registered {
        Ok(x) => x,
        Err(e) => {
            error!(error = %e, "task is not registered in this process");
            let err = TaskError::new(e.kind(), e.to_string());
            if let Err(e) = orch
                .finish(id, host.runner_id(), RunOutcome::Failed(err))
                .await
            {
                error!(error = %e, "could not record the failure");
            }
            return RunEnd {
                permit,
                next: Vec::new(),
            };
        }
    };
    let started = Instant::now();
    debug!(
        arguments = %record.call.arguments.render(app.conf().print_arguments, app.serializer()),
        "running"
    );
    let ctx = Arc::new(InvocationContext {
        app: app.clone(),
        record: record.clone(),
        task_id: def.task_id,
        runner: Some(host.clone()),
        slot: tokio::sync::Mutex::new(SlotState { permit, waits: 0 }),
    });
    let input = TaskInput {
        task_id: def.task_id,
        record,
        serializer: app.serializer(),
    };
    let output = run_body(def.body, input, ctx.clone()).await;
    let outcome = match output {
        Ok(result) => RunOutcome::Success(result),
        Err(error) => {
            let outcome = failure_outcome(orch, options, id, error).await;
            match &outcome {
                RunOutcome::Retry(e) => {
                    warn!(error = %e, max_retries = options.max_retries, "invocation will be retried")
                }
                RunOutcome::Failed(e) => error!(error = %e, "invocation failed"),
                RunOutcome::Success(_) => {}
            }
            outcome
        }
    };
    let (finished, next) = host.finish(app, &kept, outcome).await;
    match finished {
        Ok(status) => {
            debug!(%status, elapsed_us = started.elapsed().as_micros() as u64, "finished")
        }
        Err(e) => {
            warn!(error = %e, "could not record the end of the invocation (was it killed?)")
        }
    }
    // take the slot back now (the context may outlive this function in user clones)
    let permit = ctx.slot.lock().await.permit.take();
    RunEnd { permit, next }
}

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
    let left: Vec<(String, AbortHandle)> = shared
        .running
        .lock()
        .drain()
        .map(|(_, (record, abort))| (record.invocation_id.clone(), abort))
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
