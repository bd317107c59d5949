//! The pool runners: supervised worker processes, each an in-process
//! runner — [`PersistentProcessRunner`] (a fixed pool of single-slot
//! workers) and [`MultiThreadRunner`] (workers with several slots, scaled
//! by queue depth).

use std::collections::HashSet;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pynenc_model::{InvocationId, RunnerId};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::children::{child_command, describe_exit, refuse_memory, signal};
use super::crash::CrashLedger;
use super::protocol::protocol_request;
use super::{OWNER_ENV, SLOTS_ENV};
use crate::app::Pynenc;
use crate::exceptions::{PynencError, Result};
use crate::runner::ids::new_runner_id;
use crate::runner::stop::{stop_on_signal, StopSignal};
use crate::runner::{RunnerHandle, SpawnedRunner};

/// How a pool of worker processes is sized.
#[derive(Debug, Clone, Copy)]
enum PoolSize {
    Fixed(usize),
    Scaled { min: usize, max: usize },
}

/// A supervised pool of worker processes, each an in-process runner.
struct WorkerPool {
    app: Pynenc,
    kind: &'static str,
    runner_id: RunnerId,
    size: PoolSize,
    slots_per_worker: usize,
    stop: Arc<StopSignal>,
    crashes: Arc<CrashLedger>,
    started_workers: AtomicUsize,
}

/// A worker process of a pool and what it reported running.
struct Worker {
    child: Child,
    pid: u32,
    /// The worker's runner id (owner of what it runs).
    owner: RunnerId,
    /// Writes to the worker's pipe (which it watches to outlive nobody).
    briefing: Option<tokio::task::JoinHandle<()>>,
    started: Instant,
    /// What the worker reported holding.
    held: Arc<parking_lot::Mutex<Holdings>>,
    /// Reads the worker's output until it closes.
    reader: Option<tokio::task::JoinHandle<()>>,
}

/// The invocations a worker process reported holding.
#[derive(Default)]
struct Holdings {
    /// Started and not ended.
    running: HashSet<InvocationId>,
    /// Taken, waiting for the worker's other slots to run alone; not started.
    waiting: HashSet<InvocationId>,
}

/// Forwards a worker's output and keeps `held` up to date from its
/// `wait-alone` / `start` / `end` lines.
async fn read_worker_output(
    out: tokio::process::ChildStdout,
    held: Arc<parking_lot::Mutex<Holdings>>,
    crashes: Arc<CrashLedger>,
) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Some(request) = protocol_request(&line) else {
            continue;
        };
        let parsed = request
            .split_once(' ')
            .and_then(|(what, id)| Some((what, InvocationId::parse(id).ok()?)));
        match parsed {
            Some(("wait-alone", id)) => {
                held.lock().waiting.insert(id);
            }
            Some(("start", id)) => {
                let mut held = held.lock();
                held.waiting.remove(&id);
                held.running.insert(id);
            }
            Some(("end", id)) => {
                held.lock().running.remove(&id);
                crashes.cleared(&id);
            }
            _ => warn!(request, "unknown line from a worker process"),
        }
    }
}

impl WorkerPool {
    fn new(app: &Pynenc, kind: &'static str, size: PoolSize, slots_per_worker: usize) -> Self {
        WorkerPool {
            app: app.clone(),
            kind,
            runner_id: new_runner_id(kind),
            size,
            slots_per_worker: slots_per_worker.max(1),
            stop: Arc::new(StopSignal::default()),
            crashes: Arc::default(),
            started_workers: AtomicUsize::new(0),
        }
    }

    fn start_worker(&self) -> Result<Worker> {
        let n = self.started_workers.fetch_add(1, Ordering::Relaxed) + 1;
        let owner = RunnerId::from(format!("{}/worker-{n}", self.runner_id));
        let mut cmd = child_command(&self.app, "worker")?;
        cmd.env(SLOTS_ENV, self.slots_per_worker.to_string())
            .env(OWNER_ENV, owner.as_str());
        let mut child = cmd
            .spawn()
            .map_err(|e| PynencError::runner_caused("cannot start a worker process", e))?;
        let held: Arc<parking_lot::Mutex<Holdings>> = Arc::default();
        let reader = child.stdout.take().map(|out| {
            let read = read_worker_output(out, held.clone(), self.crashes.clone());
            tokio::spawn(read.instrument(tracing::Span::current()))
        });
        let briefing = child.stdin.take().map(|pipe| {
            let current = self.crashes.suspects.lock().keys().copied().collect();
            tokio::spawn(CrashLedger::brief_worker(
                self.crashes.announce.subscribe(),
                current,
                pipe,
            ))
        });
        let pid = child.id().unwrap_or(0);
        info!(pid, worker = %owner, slots = self.slots_per_worker, "worker process started");
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

    /// Accounts for the invocations a worker was running when it died.
    fn worker_died(&self, mut worker: Worker, status: ExitStatus) {
        warn!(
            pid = worker.pid,
            worker = %worker.owner,
            exit = %describe_exit(&status),
            ran_for_s = worker.started.elapsed().as_secs_f64(),
            "worker process died; replacing it"
        );
        if let Some(briefing) = worker.briefing.take() {
            briefing.abort();
        }
        if status.success() {
            return; // it stopped by itself, re-routing what it ran
        }
        let app = self.app.clone();
        let crashes = self.crashes.clone();
        tokio::spawn(async move {
            // its output is complete once the reader has seen the end of it
            if let Some(reader) = worker.reader.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
            }
            let (running, waiting): (Vec<InvocationId>, Vec<InvocationId>) = {
                let mut held = worker.held.lock();
                (
                    held.running.drain().collect(),
                    held.waiting.drain().collect(),
                )
            };
            // taken but never started: they did nothing to it, run them again now
            for id in waiting {
                match app
                    .orchestrator()
                    .kill_and_reroute(&id, &worker.owner)
                    .await
                {
                    Ok(()) => {
                        info!(invocation_id = %id, "re-routed: its worker process died before running it")
                    }
                    Err(e) => {
                        debug!(invocation_id = %id, error = %e, "not re-routed after its worker process died")
                    }
                }
            }
            crashes
                .process_died(
                    &app,
                    &worker.owner,
                    running,
                    worker.pid,
                    &status,
                    "worker process",
                )
                .await;
        }
        .instrument(tracing::Span::current()));
    }

    async fn run(self) -> Result<()> {
        refuse_memory(&self.app, self.kind)?;
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
                self.kind
            );
            let mut workers: Vec<Worker> = Vec::new();
            let mut idle_since: Option<Instant> = None;
            while !self.stop.is_stopped() {
                // replace workers that died
                let mut i = 0;
                while i < workers.len() {
                    match workers[i].child.try_wait() {
                        Ok(Some(status)) => {
                            let w = workers.swap_remove(i);
                            self.worker_died(w, status);
                        }
                        _ => i += 1,
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
                    + Duration::from_secs(2);
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
            info!("{} stopped", self.kind);
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
    /// one invocation at a time; a worker that dies is replaced.
    PersistentProcessRunner
);

pool_runner!(
    /// Worker processes that each run an in-process runner with
    /// `runner.max_parallel_slots` slots, between `runner.min_processes` and
    /// `runner.max_processes` of them depending on the queue depth.
    MultiThreadRunner
);

impl PersistentProcessRunner {
    /// A pool of `runner.max_processes` single-slot worker processes.
    pub fn new(app: &Pynenc) -> Self {
        PersistentProcessRunner::with_processes(app, app.conf().effective_max_processes())
    }

    /// A pool of `processes` single-slot worker processes.
    pub fn with_processes(app: &Pynenc, processes: usize) -> Self {
        PersistentProcessRunner {
            pool: WorkerPool::new(
                app,
                "PersistentProcessRunner",
                PoolSize::Fixed(processes),
                1,
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
                "MultiThreadRunner",
                PoolSize::Scaled { min, max },
                slots,
            ),
        }
    }
}
