//! The pool runners: supervised worker processes, each an in-process
//! runner — [`PersistentProcessRunner`] (a fixed pool of workers that run
//! one body at a time) and [`MultiThreadRunner`] (workers with several
//! slots, scaled by queue depth).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pynenc_model::{InvocationId, RunnerId};
use tracing::{error, info, info_span, warn, Instrument};

use super::children::{child_command, refuse_memory, signal};
use super::crash::CrashLedger;
use super::worker::{worker_died, Holdings, Worker, WorkerOutput, KILL_MARGIN};
use super::{CANCEL_ENV, ONE_BODY_ENV, OWNER_ENV, SLOTS_ENV};
use crate::app::Pynenc;
use crate::conf::RunnerKind;
use crate::exceptions::{PynencError, Result};
use crate::runner::ids::new_runner_id;
use crate::runner::stop::{stop_on_signal, StopSignal};
use crate::runner::upkeep::{maintain, Presence};
use crate::runner::{RunnerHandle, SpawnedRunner};

/// How a pool of worker processes is sized.
#[derive(Debug, Clone, Copy)]
enum PoolSize {
    Fixed(usize),
    Scaled { min: usize, max: usize },
}

/// A supervised pool of worker processes, each an in-process runner.
///
/// The pool is the runner listed among the runners (its kind, this
/// process, its slots and what its workers run). The workers are not
/// listed: each owns what it runs and beats its own heartbeat (so recovery
/// treats each on its own), and asks for its own cancel requests. In a
/// [`PersistentProcessRunner`] a worker reports a cancel to the pool, which
/// stops the worker process (`SIGTERM`, then `SIGKILL` after
/// `runner.shutdown_grace_seconds` and a margin) and replaces it; in a
/// [`MultiThreadRunner`], whose workers run several invocations each, the
/// worker cancels in-process as a [`crate::ThreadRunner`] does.
struct WorkerPool {
    app: Pynenc,
    kind: RunnerKind,
    runner_id: RunnerId,
    size: PoolSize,
    slots_per_worker: usize,
    stop: Arc<StopSignal>,
    crashes: Arc<CrashLedger>,
    started_workers: AtomicUsize,
    /// What each live worker reported holding.
    live: Arc<Mutex<Vec<Arc<Mutex<Holdings>>>>>,
}

impl WorkerPool {
    fn new(app: &Pynenc, kind: RunnerKind, size: PoolSize, slots_per_worker: usize) -> Self {
        let name = match kind {
            RunnerKind::MultiThread => "MultiThreadRunner",
            _ => "PersistentProcessRunner",
        };
        WorkerPool {
            app: app.clone(),
            kind,
            runner_id: new_runner_id(name),
            size,
            slots_per_worker: slots_per_worker.max(1),
            stop: Arc::new(StopSignal::default()),
            crashes: Arc::default(),
            started_workers: AtomicUsize::new(0),
            live: Arc::default(),
        }
    }

    /// The runner's name in logs.
    fn name(&self) -> &'static str {
        match self.kind {
            RunnerKind::MultiThread => "MultiThreadRunner",
            _ => "PersistentProcessRunner",
        }
    }

    /// Whether a cancel stops the whole worker process (workers that run
    /// one body at a time), rather than the invocation in it.
    fn cancel_stops_worker(&self) -> bool {
        self.kind == RunnerKind::PersistentProcess
    }

    /// Whether each worker runs one invocation body at a time (its slots
    /// hold invocations taken ahead).
    fn one_body_per_worker(&self) -> bool {
        self.kind == RunnerKind::PersistentProcess
    }

    /// How many invocations a worker runs at once.
    fn bodies_per_worker(&self) -> usize {
        if self.one_body_per_worker() {
            1
        } else {
            self.slots_per_worker
        }
    }

    fn start_worker(&self) -> Result<Worker> {
        let n = self.started_workers.fetch_add(1, Ordering::Relaxed) + 1;
        let owner = RunnerId::from(format!("{}/worker-{n}", self.runner_id));
        let mut cmd = child_command(&self.app, "worker")?;
        cmd.env(SLOTS_ENV, self.slots_per_worker.to_string())
            .env(OWNER_ENV, owner.as_str());
        if self.cancel_stops_worker() {
            cmd.env(CANCEL_ENV, "parent");
        }
        if self.one_body_per_worker() {
            cmd.env(ONE_BODY_ENV, "1");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| PynencError::runner_caused("cannot start a worker process", e))?;
        let pid = child.id().unwrap_or(0);
        let held: Arc<Mutex<Holdings>> = Arc::default();
        let grace = Duration::from_secs_f64(self.app.conf().runner.shutdown_grace_seconds.max(0.0));
        let reader = match child.stdout.take() {
            Some(out) => {
                let output = WorkerOutput {
                    held: held.clone(),
                    crashes: self.crashes.clone(),
                    pid,
                    owner: owner.clone(),
                    kill_after: grace + KILL_MARGIN,
                };
                Some(output.spawn_reader(out).map_err(|e| {
                    let _ = child.start_kill();
                    PynencError::runner_caused("cannot read the output of a worker process", e)
                })?)
            }
            None => None,
        };
        let briefing = child.stdin.take().map(|pipe| {
            // subscribed first: a suspect announced meanwhile is in one or both
            let announced = self.crashes.announce.subscribe();
            let current = self.crashes.suspects.lock().keys().copied().collect();
            tokio::spawn(self.crashes.clone().brief_worker(announced, current, pipe))
        });
        info!(pid, worker = %owner, slots = self.slots_per_worker, "worker process started");
        self.live.lock().push(held.clone());
        Ok(Worker {
            child,
            pid,
            owner,
            briefing,
            started: Instant::now(),
            held,
            reader,
        })
    }

    /// `worker` is gone: it no longer counts among the live ones.
    fn forget(&self, worker: &Worker) {
        self.live.lock().retain(|h| !Arc::ptr_eq(h, &worker.held));
    }

    /// How the pool tells the store about itself: its slots (live workers,
    /// at least the least number, times their slots) and what they run.
    fn presence(&self, min: usize) -> Presence {
        let live = self.live.clone();
        let per_worker = self.bodies_per_worker();
        Presence::new(&self.app, &self.runner_id, Some(self.kind), move || {
            let live = live.lock();
            let running: Vec<InvocationId> = live
                .iter()
                .flat_map(|h| h.lock().running.iter().copied().collect::<Vec<_>>())
                .collect();
            (live.len().max(min) * per_worker, running)
        })
    }

    async fn run(self) -> Result<()> {
        refuse_memory(&self.app, self.name())?;
        let span = info_span!("runner", runner_id = %self.runner_id);
        async move {
            let (min, max) = match self.size {
                PoolSize::Fixed(n) => (n.max(1), n.max(1)),
                PoolSize::Scaled { min, max } => (min.max(1), max.max(min.max(1))),
            };
            info!(
                min,
                max,
                slots_per_worker = self.slots_per_worker,
                "{} started",
                self.name()
            );
            let presence = Arc::new(self.presence(min));
            presence.beat().await;
            // the workers do recovery and purges, as runners of their own
            let maintenance = tokio::spawn(
                maintain(presence.clone(), false).instrument(tracing::Span::current()),
            );
            let mut workers: Vec<Worker> = Vec::new();
            let mut idle_since: Option<Instant> = None;
            while !self.stop.is_stopped() {
                // replace workers that died; kill those stopped for a cancel that outlived the grace
                let mut i = 0;
                while i < workers.len() {
                    match workers[i].child.try_wait() {
                        Ok(Some(status)) => {
                            let w = workers.swap_remove(i);
                            self.forget(&w);
                            worker_died(&self.app, &self.crashes, w, status);
                        }
                        _ => {
                            workers[i].kill_if_overdue();
                            i += 1;
                        }
                    }
                }
                let target = match self.size {
                    PoolSize::Fixed(_) => min,
                    PoolSize::Scaled { .. } => {
                        let queued = self.app.broker().queue_len().await.unwrap_or(0);
                        let wanted = queued.div_ceil(self.slots_per_worker * 4).clamp(min, max);
                        if queued == 0 {
                            let since = *idle_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_secs(5) {
                                idle_since = Some(Instant::now());
                                min.max(workers.len().saturating_sub(1))
                            } else {
                                workers.len().max(min)
                            }
                        } else {
                            idle_since = None;
                            wanted.max(workers.len())
                        }
                    }
                };
                while workers.len() < target {
                    match self.start_worker() {
                        Ok(w) => workers.push(w),
                        Err(e) => {
                            error!(error = %e, "could not start a worker process");
                            break;
                        }
                    }
                }
                if workers.len() > target {
                    if let Some(mut w) = workers.pop() {
                        self.forget(&w);
                        info!(pid = w.pid, "scaling down: stopping a worker process");
                        signal(w.pid, libc::SIGTERM);
                        tokio::spawn(async move {
                            let _ = w.child.wait().await;
                            if let Some(briefing) = w.briefing.take() {
                                briefing.abort();
                            }
                        });
                    }
                }
                self.stop
                    .or_stopped(tokio::time::sleep(Duration::from_millis(200)))
                    .await;
            }
            // graceful stop: SIGTERM every worker, SIGKILL what is left after the grace period
            for w in &workers {
                if let Some(pid) = w.child.id() {
                    signal(pid, libc::SIGTERM);
                }
            }
            let grace =
                Duration::from_secs_f64(self.app.conf().runner.shutdown_grace_seconds.max(0.0))
                    + KILL_MARGIN;
            let deadline = tokio::time::Instant::now() + grace;
            for w in &mut workers {
                if tokio::time::timeout_at(deadline, w.child.wait())
                    .await
                    .is_err()
                {
                    warn!(
                        pid = w.child.id().unwrap_or(0),
                        "worker did not stop in time; killing it"
                    );
                    let _ = w.child.kill().await;
                }
            }
            maintenance.abort();
            // a heartbeat in flight must not land after the runner left
            let _ = maintenance.await;
            presence.leave().await;
            info!("{} stopped", self.name());
            Ok(())
        }
        .instrument(span)
        .await
    }
}

macro_rules! pool_runner {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            pool: WorkerPool,
        }

        impl $name {
            /// The runner's id.
            pub fn runner_id(&self) -> &RunnerId {
                &self.pool.runner_id
            }

            /// A handle to stop the runner.
            pub fn handle(&self) -> RunnerHandle {
                RunnerHandle::new(&self.pool.runner_id, self.pool.stop.clone())
            }

            /// Starts the runner in the background.
            pub fn spawn(self) -> SpawnedRunner {
                let handle = self.handle();
                SpawnedRunner::new(handle, tokio::spawn(self.pool.run()))
            }

            /// Runs until Ctrl-C or SIGTERM.
            pub async fn run_until_signal(self) -> Result<()> {
                stop_on_signal(self.handle());
                self.pool.run().await
            }

            /// Runs until stopped.
            pub async fn run(self) -> Result<()> {
                self.pool.run().await
            }
        }
    };
}

pool_runner!(
    /// A fixed pool of `runner.max_processes` worker processes, each running
    /// one invocation body at a time; a worker that dies is replaced. A
    /// worker takes up to `runner.prefetch` invocations at once while its
    /// runs are short: the others wait in it for their turn, and the ends
    /// are recorded together (one step for several). A body that runs for
    /// `runner.prefetch_long_run_ms` makes it give back what it took ahead.
    PersistentProcessRunner
);

pool_runner!(
    /// Worker processes that each run an in-process runner with
    /// `runner.max_parallel_slots` slots, between `runner.min_processes` and
    /// `runner.max_processes` of them depending on the queue depth.
    MultiThreadRunner
);

impl PersistentProcessRunner {
    /// A pool of `runner.max_processes` worker processes.
    pub fn new(app: &Pynenc) -> Self {
        PersistentProcessRunner::with_processes(app, app.conf().effective_max_processes())
    }

    /// A pool of `processes` worker processes, each taking up to
    /// `runner.prefetch` invocations at once.
    pub fn with_processes(app: &Pynenc, processes: usize) -> Self {
        PersistentProcessRunner {
            pool: WorkerPool::new(
                app,
                RunnerKind::PersistentProcess,
                PoolSize::Fixed(processes),
                app.conf().runner.prefetch,
            ),
        }
    }
}

impl MultiThreadRunner {
    /// Scaled between `runner.min_processes` and `runner.max_processes`,
    /// each worker with `runner.max_parallel_slots` slots.
    pub fn new(app: &Pynenc) -> Self {
        let conf = app.conf();
        MultiThreadRunner::with_limits(
            app,
            conf.runner.min_processes,
            conf.effective_max_processes(),
            conf.effective_max_parallel_slots(),
        )
    }

    /// Scaled between `min` and `max` processes of `slots` slots each.
    pub fn with_limits(app: &Pynenc, min: usize, max: usize, slots: usize) -> Self {
        MultiThreadRunner {
            pool: WorkerPool::new(
                app,
                RunnerKind::MultiThread,
                PoolSize::Scaled { min, max },
                slots,
            ),
        }
    }
}
