//! The kill -9 chaos harness: worker processes on a shared backend are
//! SIGKILLed at random while they drain a workload, then restarted; at the
//! end every invocation must have succeeded with the right result, every
//! history must replay legally, and duplicate runs may only come from
//! killed workers. Used by the chaos tests and by the `chaos` program.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pynenc::status::replay_history;
use pynenc::{InvocationStatus, Pynenc};

use crate::process::WorkerProcess;
use crate::tasks::chaos_work;

/// Where the workers and the caller meet.
pub use crate::process::SharedBackend as ChaosBackend;

/// The size of a chaos run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The backend.
    pub backend: ChaosBackend,
    /// The app id.
    pub app_id: String,
    /// The worker executable (run as `<exe> <worker_args…>`, configured by `PYNENC__…`).
    pub worker_exe: PathBuf,
    /// Its arguments.
    pub worker_args: Vec<String>,
    /// How many tasks.
    pub tasks: u64,
    /// Task durations are spread over `1..=max_task_ms` milliseconds.
    pub max_task_ms: u64,
    /// Worker processes.
    pub workers: usize,
    /// Slots of each worker.
    pub slots: usize,
    /// How many kills.
    pub kills: usize,
    /// Time between kills.
    pub kill_every: Duration,
    /// How long to wait for everything to finish after the last kill.
    pub finish_timeout: Duration,
}

impl ChaosConfig {
    /// The size the test suite runs: 2,000 tasks of 1–20 ms on 3 worker
    /// processes of 8 slots, a random worker SIGKILLed every 300 ms, 8 times.
    pub fn test_size(backend: ChaosBackend, worker_exe: PathBuf, worker_args: Vec<String>) -> Self {
        ChaosConfig {
            backend,
            app_id: "chaos".into(),
            worker_exe,
            worker_args,
            tasks: 2_000,
            max_task_ms: 20,
            workers: 3,
            slots: 8,
            kills: 8,
            kill_every: Duration::from_millis(300),
            finish_timeout: Duration::from_secs(60),
        }
    }
}

/// What a chaos run measured.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    /// Tasks routed.
    pub tasks: u64,
    /// Workers killed with SIGKILL.
    pub kills: usize,
    /// Invocations that did not end SUCCESS.
    pub lost: usize,
    /// Invocations with a wrong result.
    pub wrong_results: usize,
    /// Invocations whose history does not replay legally.
    pub illegal_histories: usize,
    /// Invocations that ran more than once.
    pub duplicate_runs: usize,
    /// Duplicate runs not explained by a killed worker (nor by a runner
    /// that gave back what it had taken ahead).
    pub unexplained_duplicates: usize,
    /// Invocations taken from a killed worker and run again.
    pub recovered: usize,
    /// The longest time from a kill to the killed work running again.
    pub max_recovery: Duration,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl ChaosReport {
    /// Panics unless the run lost nothing, every result and history is
    /// right, every duplicate run comes from a killed worker, and killed work
    /// ran again within `max_recovery`.
    pub fn assert_sound(&self, kills: usize, max_recovery: Duration) {
        assert_eq!(self.kills, kills, "{self}");
        assert_eq!(self.lost, 0, "{self}");
        assert_eq!(self.wrong_results, 0, "{self}");
        assert_eq!(self.illegal_histories, 0, "{self}");
        assert_eq!(self.unexplained_duplicates, 0, "{self}");
        assert!(self.max_recovery <= max_recovery, "{self}");
    }
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tasks {}  kills {}  lost {}  wrong {}  illegal histories {}  duplicate runs {} (unexplained {})  recovered {}  longest kill→rerun {:.2} s  elapsed {:.1} s",
            self.tasks,
            self.kills,
            self.lost,
            self.wrong_results,
            self.illegal_histories,
            self.duplicate_runs,
            self.unexplained_duplicates,
            self.recovered,
            self.max_recovery.as_secs_f64(),
            self.elapsed.as_secs_f64()
        )
    }
}

fn start_worker(cfg: &ChaosConfig) -> std::io::Result<WorkerProcess> {
    let slots = cfg.slots.to_string();
    let mut cmd = WorkerProcess::command(
        &cfg.worker_exe,
        &cfg.worker_args,
        &cfg.backend,
        &cfg.app_id,
        &[
            ("PYNENC__RUNNER__MAX_PARALLEL_SLOTS", &slots),
            ("PYNENC__PRINT_ARGUMENTS", "hidden"),
        ],
    );
    cmd.stderr(Stdio::null());
    WorkerProcess::spawn(cmd)
}

/// The caller's app on the chaos backend.
pub fn chaos_app(cfg: &ChaosConfig) -> pynenc::Result<Pynenc> {
    cfg.backend.app(&cfg.app_id)
}

/// A small deterministic generator (no dependency needed for test randomness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Runs the chaos scenario and measures it.
pub async fn run_chaos(cfg: &ChaosConfig) -> pynenc::Result<ChaosReport> {
    let started = Instant::now();
    let app = chaos_app(cfg)?;
    let mut rng = Lcg(pynenc::Timestamp::now().as_micros() as u64);
    let durations: Vec<(u64, u64)> = (0..cfg.tasks)
        .map(|i| (i, 1 + rng.next() % cfg.max_task_ms.max(1)))
        .collect();
    let group = chaos_work::parallelize_on(&app, durations).await?;
    let spawn = |cfg: &ChaosConfig| {
        start_worker(cfg).map_err(|e| {
            pynenc::PynencError::runner(format!(
                "cannot start worker {}: {e}",
                cfg.worker_exe.display()
            ))
        })
    };
    let mut workers: Vec<WorkerProcess> = Vec::new();
    for _ in 0..cfg.workers {
        workers.push(spawn(cfg)?);
    }
    // pid of each killed worker → when it was killed (µs since the epoch)
    let mut killed: HashMap<u32, i64> = HashMap::new();
    for _ in 0..cfg.kills {
        tokio::time::sleep(cfg.kill_every).await;
        let victim = (rng.next() as usize) % workers.len();
        let pid = workers[victim].pid();
        let _ = workers[victim].kill(); // SIGKILL
        killed.insert(pid, pynenc::Timestamp::now().as_micros());
        workers[victim] = spawn(cfg)?;
    }
    let ids: Vec<pynenc::InvocationId> = group
        .invocations()
        .iter()
        .map(|i| *i.invocation_id())
        .collect();
    let finished =
        tokio::time::timeout(cfg.finish_timeout, app.coordination().wait_final(&ids)).await;
    drop(workers);
    let mut report = ChaosReport {
        tasks: cfg.tasks,
        kills: killed.len(),
        ..ChaosReport::default()
    };
    let outcomes = app.state_backend().get_outcomes(&ids).await?;
    for (i, out) in outcomes.iter().enumerate() {
        if out.status != InvocationStatus::Success {
            report.lost += 1;
        } else if out.result.as_deref() != Some((2 * i as u64).to_string().as_str()) {
            report.wrong_results += 1;
        }
    }
    let pid_of = |owner: &str| -> Option<u32> {
        // runner ids are "<Kind>@<host>:<pid>:<suffix>"
        let mut parts = owner.rsplit(':');
        parts.next()?;
        parts.next()?.parse().ok()
    };
    for id in &ids {
        let history = app.state_backend().get_history(id).await?;
        if replay_history(
            history
                .iter()
                .map(|h| (h.status, h.owner.as_deref(), h.actor.as_str())),
        )
        .is_err()
        {
            report.illegal_histories += 1;
        }
        let runs: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].status == InvocationStatus::Running)
            .collect();
        if runs.len() > 1 {
            report.duplicate_runs += 1;
            // each run before the last: its worker was killed, or the
            // runner that held it gave it back itself (`KILLED` by it, then
            // `REROUTED`: taken ahead of long runs; the workers are not
            // stopped before everything is final)
            let explained = runs.windows(2).all(|pair| {
                let owner = history[pair[0]].owner.as_deref();
                let worker_killed = owner
                    .and_then(pid_of)
                    .is_some_and(|p| killed.contains_key(&p));
                let given_back = history[pair[0]..pair[1]].iter().any(|h| {
                    h.status == InvocationStatus::Killed && Some(h.actor.as_str()) == owner
                });
                worker_killed || given_back
            });
            if !explained {
                report.unexplained_duplicates += 1;
            }
        }
        // work taken from a killed worker: from its kill to the next RUNNING elsewhere
        let mut lost_owner: Option<u32> = None;
        for h in &history {
            match h.status {
                InvocationStatus::RunningRecovery | InvocationStatus::PendingRecovery => {
                    lost_owner = h
                        .owner
                        .as_deref()
                        .and_then(pid_of)
                        .filter(|p| killed.contains_key(p));
                }
                InvocationStatus::Running => {
                    if let Some(pid) = lost_owner.take() {
                        report.recovered += 1;
                        let kill_us = killed[&pid];
                        let gap = Duration::from_micros(
                            (h.timestamp.as_micros() - kill_us).max(0) as u64
                        );
                        report.max_recovery = report.max_recovery.max(gap);
                    }
                }
                _ => {}
            }
        }
    }
    if finished.is_err() && report.lost == 0 {
        report.lost = 1; // cannot happen: the wait timed out, so something was not final
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
