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
use pynenc_model::{InvocationRecord, RunnerId};
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tracing::{info, info_span, warn, Instrument};

use super::cancel::{log_if_cancelled, requests_now, watch_requests};
use super::finisher::Finisher;
use super::host::InvocationHost;
use super::ids::{new_runner_id, process_context};
use super::process;
use super::run::{run_invocation, RunResult};
use super::shared::{running_key, Role, RunnerShared, Running};
use super::stop::{stop_on_signal, StopSignal};
use super::turns::Turns;
use super::upkeep::{maintain, Idle, PickBackoff, Presence};
use super::{RunnerHandle, SpawnedRunner};
use crate::app::Pynenc;
use crate::conf::{BackendKind, RunnerKind};
use crate::exceptions::Result;

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
            Role::Standalone,
        )
    }

    /// A runner with a given id and role (a pool worker writes the start
    /// and end of every invocation to its pool parent).
    pub(crate) fn with_identity(
        app: &Pynenc,
        max_parallel_slots: usize,
        runner_id: RunnerId,
        role: Role,
    ) -> Self {
        let n = max_parallel_slots.max(1);
        let conf = &app.conf().runner;
        let long_run = Duration::from_millis(conf.prefetch_long_run_ms);
        // (bodies, most held): a persistent worker runs one body and holds
        // its `n` slots; a standalone runner or a multi-thread runner's
        // worker runs `n` bodies and holds up to `runner.prefetch`
        // invocations for each, where a step costs a round trip or a
        // transaction (in memory it costs neither: taking ahead would only
        // add the wait for a turn)
        let steps_cost = app.conf().backend != BackendKind::Memory;
        let ahead = match role {
            Role::PoolWorker { one_body: true, .. } => Some((1, n)),
            _ if conf.prefetch > 1 && steps_cost => Some((n, n.saturating_mul(conf.prefetch))),
            _ => None,
        };
        let slots = Arc::new(Semaphore::new(ahead.map_or(n, |(_, most)| most)));
        let cancel_stops_process = matches!(
            role,
            Role::PoolWorker {
                cancel_by_parent: true,
                ..
            }
        );
        let turns = ahead.map(|(bodies, most)| {
            let turns = Turns::new(&slots, bodies, most, long_run);
            if cancel_stops_process {
                turns.tracking_begun()
            } else {
                turns
            }
        });
        ThreadRunner {
            shared: Arc::new(RunnerShared {
                runner_id,
                app: app.clone(),
                turns,
                slots,
                max_slots: n,
                stop: Arc::new(StopSignal::default()),
                running: Mutex::new(FxHashMap::default()),
                idle: Notify::new(),
                busy: Notify::new(),
                finisher: Finisher::new(if steps_cost { 2 } else { 1 }),
                handoffs: Default::default(),
                role,
                spare_chains: Mutex::new(Vec::new()),
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

    /// Runs until stopped. It registers at start (see
    /// [`crate::store::Queries::runners`]), re-registers with what it runs
    /// at every heartbeat, watches for cancel requests while it runs
    /// anything, and leaves the list on a clean stop.
    pub async fn run(self) -> Result<()> {
        let shared = self.shared.clone();
        let span = info_span!("runner", runner_id = %shared.runner_id);
        async move {
            if shared.app.conf().dev_mode_force_sync_tasks {
                warn!("dev_mode_force_sync_tasks is on: calls run in the caller, this runner will find no work");
            }
            info!(slots = shared.max_slots, app_id = %shared.app.app_id(), "runner started");
            let presence = Arc::new(presence_of(&shared));
            presence.beat().await;
            let maintenance = tokio::spawn(
                maintain(presence.clone(), true).instrument(tracing::Span::current()),
            );
            let watcher = tokio::spawn(watch_cancels(shared.clone()).instrument(tracing::Span::current()));
            pick_and_run(&shared).await;
            shutdown(&shared).await;
            watcher.abort();
            maintenance.abort();
            // a heartbeat in flight must not land after the runner left
            let _ = maintenance.await;
            presence.leave().await;
            // the spare hosts point back at the runner
            shared.spare_chains.lock().clear();
            info!("runner stopped");
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// How a runner of `shared`'s role tells the store about itself.
fn presence_of(shared: &Arc<RunnerShared>) -> Presence {
    let kind = (shared.role == Role::Standalone).then_some(RunnerKind::Thread);
    let s = shared.clone();
    Presence::new(&shared.app, &shared.runner_id, kind, move || {
        (s.max_slots, s.running_ids())
    })
}

/// Asks for the runner's cancel requests while it runs anything.
async fn watch_cancels(shared: Arc<RunnerShared>) {
    let s = shared.clone();
    watch_requests(
        shared.app.clone(),
        shared.runner_id.clone(),
        &shared.busy,
        || !s.running.lock().is_empty(),
        |ids| {
            shared.cancel_running(&ids, false);
            async {}
        },
    )
    .await;
}

/// The runner loop: picks for all free slots at once and runs what it
/// picked, until a stop.
async fn pick_and_run(shared: &Arc<RunnerShared>) {
    let orch = shared.app.orchestrator();
    let coordination = shared.app.coordination();
    let mut backoff = PickBackoff::new();
    let mut idle = Idle::new();
    // the last pick took fewer than it asked for, so the queue was drained:
    // the next pick parks at once, for work routed since this epoch (the
    // one read before a direct pick; `None` after a parked pick: where the
    // store knows it)
    let mut drained: Option<Option<u64>> = None;
    while !shared.stop.is_stopped() {
        let free = shared.slots.available_permits();
        if free == 0 {
            shared
                .stop
                .or_stopped(shared.slots.clone().acquire_owned())
                .await;
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
        let batch = if drained.is_some() {
            Vec::new()
        } else {
            match orch
                .get_invocations_to_start(&shared.runner_id, free, Some(process_context()))
                .await
            {
                Ok(b) => {
                    backoff.reset();
                    // (not a round trip that finds nothing, beside this
                    // batch's ends)
                    if !b.is_empty() && b.len() < free {
                        drained = Some(Some(epoch));
                    }
                    b
                }
                Err(e) => {
                    backoff.failed(&shared.stop, &e.into()).await;
                    continue;
                }
            }
        };
        let batch = if batch.is_empty() {
            let known = drained.take().unwrap_or(Some(epoch));
            let parked = idle.wait_and_start(
                &shared.app,
                &shared.stop,
                known,
                &shared.runner_id,
                free,
                Some(process_context()),
            );
            match parked.await {
                Ok(b) if !b.is_empty() => {
                    if b.len() < free {
                        drained = Some(None);
                    }
                    b
                }
                Ok(_) => continue,
                Err(e) => {
                    backoff.failed(&shared.stop, &e.into()).await;
                    continue;
                }
            }
        } else {
            batch
        };
        for record in batch {
            let permit = match shared.slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => match shared.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            spawn_invocation(shared, record, permit);
        }
    }
}

/// Runs `record` in a new tokio task holding `permit`, then, in the same
/// task, the invocations its host takes next (see [`super::chain::ChainHost::finish`]).
pub(crate) fn spawn_invocation(
    shared: &Arc<RunnerShared>,
    record: Arc<InvocationRecord>,
    permit: OwnedSemaphorePermit,
) {
    let key = running_key(&record);
    let kept = record.clone();
    let chain = shared.take_chain();
    let kept_chain = chain.clone();
    let host: Arc<dyn InvocationHost> = chain.clone();
    let s = shared.clone();
    // the runner's span (with its runner id) is the parent of every invocation's span
    let runner_span = tracing::Span::current();
    // hold the map lock while spawning so the task cannot remove itself before it is inserted
    let mut running = shared.running.lock();
    if running.is_empty() {
        shared.busy.notify_waiters();
    }
    let fut = async move {
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
        drop(host);
        s.keep_chain(kept_chain);
    };
    let task = tokio::spawn(fut);
    running.insert(
        key,
        Running {
            record: kept,
            abort: task.abort_handle(),
            chain,
        },
    );
}

/// [`run_invocation`] in a runner, reporting to a pool parent where the
/// runner is a pool worker.
async fn run_hosted(
    s: &Arc<RunnerShared>,
    host: Arc<dyn InvocationHost>,
    record: Arc<InvocationRecord>,
    mut permit: Option<OwnedSemaphorePermit>,
) -> RunResult {
    let id = matches!(s.role, Role::PoolWorker { .. }).then_some(record.invocation_id);
    let mut alone = None;
    if let Some(id) = &id {
        // it was running in a worker process that died beside others: run
        // it alone, so a crash is pinned on it (a worker that runs one body
        // at a time runs every body alone: it waits for its turn, and the
        // slots it does not hold now were withdrawn, not lent)
        let one_body = s.turns.as_ref().is_some_and(|t| t.bodies() == 1);
        if process::is_quarantined(id) && !one_body {
            process::report_to_parent("wait-alone", id.as_str());
            match &s.turns {
                // every turn but the one its body takes, held until it ends
                Some(turns) => alone = Some(turns.others_turns().await),
                None => {
                    drop(permit.take());
                    let all = u32::try_from(s.max_slots).unwrap_or(u32::MAX);
                    permit = s.slots.clone().acquire_many_owned(all).await.ok();
                }
            }
            info!("running alone: it was in a worker process that died");
        }
        if s.turns.is_some() {
            // taken ahead: its body begins at its turn, which says `start`
            process::report_to_parent_soon("taken", id.as_str());
        } else {
            process::report_to_parent("start", id.as_str());
        }
    }
    let invocation_id = record.invocation_id;
    let end = run_invocation(&s.app, host, record, permit).await;
    drop(alone);
    if let Some(turns) = &s.turns {
        turns.ended(&invocation_id);
    }
    if let Some(id) = &id {
        process::report_to_parent_soon("end", id.as_str());
        process::end_quarantine(id);
    }
    end
}

/// Stops at once what the runner was asked to cancel, lets the other
/// running invocations finish within the grace period, then kills and
/// re-routes the rest (those with a pending cancel end `CANCELLED`).
async fn shutdown(shared: &Arc<RunnerShared>) {
    if !shared.running.lock().is_empty() {
        let cancels = requests_now(&shared.app, &shared.runner_id).await;
        if !cancels.is_empty() {
            shared.cancel_running(&cancels, true);
        }
    }
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
    let left: Vec<(Arc<InvocationRecord>, AbortHandle)> = shared
        .running
        .lock()
        .drain()
        .map(|(_, r)| (r.record, r.abort))
        .collect();
    let orch = shared.app.orchestrator();
    for (record, abort) in left {
        abort.abort();
        let id = &record.invocation_id;
        match orch.kill_and_reroute(id, &shared.runner_id).await {
            Ok(()) => {
                let task_id = Some(record.call.task_id.as_ref());
                if !log_if_cancelled(&shared.app, &shared.runner_id, id, task_id).await {
                    info!(invocation_id = %id, "killed at shutdown and re-routed");
                }
            }
            Err(e) => warn!(invocation_id = %id, error = %e, "could not re-route at shutdown"),
        }
    }
}
