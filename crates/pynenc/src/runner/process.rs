//! Runners that execute invocations in other OS processes.
//!
//! - [`ProcessRunner`]: one child process per invocation. A child that waits
//!   for other invocations sets itself `PAUSED`, tells its parent, and is
//!   stopped with `SIGSTOP` (it frees its slot) until the results are ready;
//!   then `SIGCONT` and `RESUMED`.
//! - [`PersistentProcessRunner`]: a fixed pool of worker processes, each
//!   running one invocation at a time; a worker that dies is replaced.
//! - [`MultiThreadRunner`]: worker processes that each run an in-process
//!   runner with several slots, scaled between `runner.min_processes` and
//!   `runner.max_processes` by the depth of the queue.
//!
//! Children are the user's own binary started again. The one line its
//! `main` needs, before anything else:
//!
//! ```ignore
//! fn main() {
//!     pynenc::runner::run_child_if_requested(); // returns at once unless this process is a pynenc child
//!     // ... the program as usual
//! }
//! ```
//!
//! A child gets the parent's effective configuration, so it opens the same
//! backend. Process runners need a backend that other processes can reach
//! (SQLite or Redis) and refuse to start on the memory backend. A child
//! exits when its parent's pipe closes, so children are never orphaned;
//! the work of a child that died is failed (or retried, when its task's
//! `retry_for` names `ProcessCrashed`) by the parent, and the work of a dead
//! worker process is re-routed by the recovery service.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex as AsyncMutex, Semaphore};
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::{
    maintain, run_invocation, stop_on_signal, InvocationHost, RunnerHandle, SpawnedRunner,
    StopSignal,
};
use crate::app::Pynenc;
use crate::context::InvocationContext;
use crate::exceptions::{PynencError, Result, TaskError};
use crate::invocation::InvocationRecord;
use crate::orchestrator::RunOutcome;
use crate::status::InvocationStatus;
use crate::util;

/// Set in a child's environment: `invocation` or `worker`.
pub const CHILD_ENV: &str = "PYNENC_CHILD";
const CONFIG_ENV: &str = "PYNENC_CHILD_CONFIG";
const INVOCATION_ENV: &str = "PYNENC_CHILD_INVOCATION";
const OWNER_ENV: &str = "PYNENC_CHILD_OWNER";
const SLOTS_ENV: &str = "PYNENC_CHILD_SLOTS";
/// Prefix of the protocol lines a child writes on its standard output.
const MARK: &str = "\u{1e}pynenc:";
/// The error kind of an invocation whose child process died.
pub const PROCESS_CRASHED_KIND: &str = "ProcessCrashed";

/// Runs the child role and exits if this process was started as a pynenc
/// child; returns at once otherwise. Call it first thing in `main`.
pub fn run_child_if_requested() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    // a fresh thread, so it works whether or not `main` already runs a runtime
    let code = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(child_main(&mode)),
            Err(e) => {
                eprintln!("pynenc child: cannot start a runtime: {e}");
                70
            }
        }
    })
    .join()
    .unwrap_or(70);
    std::process::exit(code);
}

async fn child_main(mode: &str) -> i32 {
    let app = match child_app() {
        Ok(app) => app,
        Err(e) => {
            eprintln!("pynenc child: cannot build the app: {e}");
            return 78;
        }
    };
    let (go_tx, go_rx) = tokio::sync::mpsc::unbounded_channel();
    watch_parent(go_tx);
    let out = match mode {
        "invocation" => invocation_child(app, go_rx).await,
        "worker" => worker_child(app).await,
        other => Err(PynencError::Runner {
            message: format!("unknown {CHILD_ENV} mode '{other}'"),
        }),
    };
    match out {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pynenc child ({mode}): {e}");
            1
        }
    }
}

/// Reads the parent's pipe: `go` lines resume a paused child; end of file
/// means the parent is gone, and the child exits at once.
fn watch_parent(go: tokio::sync::mpsc::UnboundedSender<()>) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            match line {
                Ok(l) if l.trim() == "go" => {
                    let _ = go.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // the parent closed the pipe (it stopped or died): never outlive it
        std::process::exit(75);
    });
}

fn child_app() -> Result<Pynenc> {
    let raw = std::env::var(CONFIG_ENV).map_err(|_| PynencError::Runner {
        message: format!("{CONFIG_ENV} is not set"),
    })?;
    let values: Vec<(String, serde_json::Value)> = serde_json::from_str(&raw)
        .map_err(|e| PynencError::serialization("deserialize", CONFIG_ENV, e))?;
    let mut builder = Pynenc::builder();
    for (key, value) in values {
        builder = builder.config_value(&key, value);
    }
    builder.build()
}

/// The host of an invocation running in a child of a [`ProcessRunner`]: it
/// acts as the parent's runner and hands waits to the parent.
struct ChildHost {
    owner: String,
    app: Pynenc,
    go: AsyncMutex<tokio::sync::mpsc::UnboundedReceiver<()>>,
}

#[async_trait::async_trait]
impl InvocationHost for ChildHost {
    fn runner_id(&self) -> &str {
        &self.owner
    }

    async fn waiting_for_results(&self, ctx: &InvocationContext, ids: &[String]) -> Result<()> {
        let orch = self.app.orchestrator();
        orch.waiting_for_results(Some(&ctx.invocation_id), ids)
            .await?;
        // one wait at a time: the parent stops the whole process
        let mut go = self.go.lock().await;
        orch.set_status(
            &ctx.invocation_id,
            InvocationStatus::Paused,
            &self.owner,
            None,
        )
        .await?;
        let line = serde_json::to_string(ids)
            .map_err(|e| PynencError::serialization("serialize", "waited ids", e))?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{MARK}wait {line}");
            let _ = out.flush();
        }
        go.recv().await.ok_or_else(|| PynencError::Runner {
            message: "the parent runner closed the pipe while the child waited".into(),
        })?;
        orch.set_status(
            &ctx.invocation_id,
            InvocationStatus::Resumed,
            &self.owner,
            None,
        )
        .await?;
        orch.wait_final(ids).await
    }
}

async fn invocation_child(app: Pynenc, go: tokio::sync::mpsc::UnboundedReceiver<()>) -> Result<()> {
    let id = std::env::var(INVOCATION_ENV).map_err(|_| PynencError::Runner {
        message: format!("{INVOCATION_ENV} is not set"),
    })?;
    let owner = std::env::var(OWNER_ENV).map_err(|_| PynencError::Runner {
        message: format!("{OWNER_ENV} is not set"),
    })?;
    let record = Arc::new(app.state_backend().get_invocation(&id).await?);
    let span = info_span!("invocation", task_id = %record.call.task_id, invocation_id = %id, runner_id = %owner);
    async {
        app.orchestrator()
            .set_status(
                &id,
                InvocationStatus::Running,
                &owner,
                Some(util::process_context().to_string()),
            )
            .await?;
        let host: Arc<dyn InvocationHost> = Arc::new(ChildHost {
            owner: owner.clone(),
            app: app.clone(),
            go: AsyncMutex::new(go),
        });
        run_invocation(&app, host, record, None).await;
        Ok(())
    }
    .instrument(span)
    .await
}

async fn worker_child(app: Pynenc) -> Result<()> {
    let slots = std::env::var(SLOTS_ENV)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1);
    super::ThreadRunner::with_slots(&app, slots)
        .run_until_signal()
        .await
}

fn refuse_memory(app: &Pynenc, kind: &str) -> Result<()> {
    if app.conf().backend == "memory" {
        return Err(PynencError::RunnerNotExecutable {
            message: format!(
                "{kind} runs invocations in other processes, which cannot see the in-memory backend \
                 of this process; configure backend = \"sqlite\" (one machine) or \"redis\""
            ),
        });
    }
    Ok(())
}

fn child_command(app: &Pynenc, mode: &str) -> Result<Command> {
    let exe = std::env::current_exe().map_err(|e| PynencError::Runner {
        message: format!("cannot find this program to start a child process: {e}"),
    })?;
    let values = serde_json::to_string(&app.conf().effective_values())
        .map_err(|e| PynencError::serialization("serialize", "configuration for a child", e))?;
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, mode)
        .env(CONFIG_ENV, values)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    Ok(cmd)
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a pid of a child this runner started; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}{}", signal_name(sig)),
        _ => status.to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGBUS => " (SIGBUS)",
        _ => "",
    }
}

/// One child process per invocation.
pub struct ProcessRunner {
    app: Pynenc,
    runner_id: String,
    max_processes: usize,
    stop: Arc<StopSignal>,
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
            runner_id: format!(
                "ProcessRunner@{}:{}",
                util::process_context(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            max_processes: max_processes.max(1),
            stop: Arc::new(StopSignal::default()),
        }
    }

    /// The runner's id (owner of the invocations its children run).
    pub fn runner_id(&self) -> &str {
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
            let children: Arc<parking_lot::Mutex<HashMap<String, u32>>> = Arc::default();
            let mut tasks = tokio::task::JoinSet::new();
            let orch = me.app.orchestrator();
            while !me.stop.is_stopped() {
                let free = slots.available_permits();
                if free == 0 {
                    tokio::select! {
                        p = slots.clone().acquire_owned() => drop(p),
                        _ = me.stop.stopped() => {}
                    }
                    continue;
                }
                let epoch = orch.work_epoch();
                let picked = match orch.get_invocations_to_run(&me.runner_id, free).await {
                    Ok(p) => p,
                    Err(e) => {
                        error!(error = %e, "could not get invocations to run");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            _ = me.stop.stopped() => {}
                        }
                        continue;
                    }
                };
                if picked.is_empty() {
                    if let Err(e) = orch.promote_scheduled().await {
                        warn!(error = %e, "could not promote scheduled invocations");
                    }
                    tokio::select! {
                        _ = orch.wait_for_work(epoch, Duration::from_millis(100)) => {}
                        _ = me.stop.stopped() => {}
                    }
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
                let left: Vec<(String, u32)> = children.lock().drain().collect();
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
            let _ = orch.remove_heartbeat(&me.runner_id).await;
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
    children: Arc<parking_lot::Mutex<HashMap<String, u32>>>,
) {
    let id = record.invocation_id.clone();
    let mut permit = Some(permit);
    let spawned = child_command(&runner.app, "invocation").and_then(|mut cmd| {
        cmd.env(INVOCATION_ENV, &id)
            .env(OWNER_ENV, &runner.runner_id)
            .spawn()
            .map_err(|e| PynencError::Runner {
                message: format!("cannot start a child process: {e}"),
            })
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
    children.lock().insert(id.clone(), pid);
    debug!(pid, "child started");
    let mut stdin: Option<ChildStdin> = child.stdin.take();
    if let Some(stdout) = child.stdout.take() {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Some(request) = line.strip_prefix(MARK) else {
                println!("{line}");
                continue;
            };
            let Some(ids) = request.strip_prefix("wait ") else {
                warn!(request, "unknown request from a child");
                continue;
            };
            let waited: Vec<String> = match serde_json::from_str(ids) {
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
            if let Err(e) = runner.app.orchestrator().wait_final(&waited).await {
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
    let exit = match &status {
        Ok(s) if s.success() => return,
        Ok(s) => describe_exit(s),
        Err(e) => format!("unknown end ({e})"),
    };
    record_crash(&runner, &record, pid, &exit).await;
}

/// Fails (or retries) an invocation whose child died before finishing it.
async fn record_crash(runner: &ProcessRunner, record: &InvocationRecord, pid: u32, exit: &str) {
    let orch = runner.app.orchestrator();
    let id = &record.invocation_id;
    let Ok(current) = orch.get_status(id).await else {
        return;
    };
    if current.owner.as_deref() != Some(runner.runner_id.as_str())
        || !current.status.is_owned_running()
    {
        return; // it ended (or was recovered) already
    }
    let error = TaskError::new(
        PROCESS_CRASHED_KIND,
        format!("the child process (pid {pid}) running invocation {id} ended with {exit} before finishing it"),
    );
    error!(pid, %exit, "child process died");
    // bring it back to a status a run can end from
    let step = match current.status {
        InvocationStatus::Pending => Some(InvocationStatus::Running),
        InvocationStatus::Paused => Some(InvocationStatus::Resumed),
        _ => None,
    };
    if let Some(step) = step {
        if let Err(e) = orch.set_status(id, step, &runner.runner_id, None).await {
            warn!(error = %e, "could not record the crash");
            return;
        }
    }
    let options = runner
        .app
        .registry()
        .options(&record.call.task_id)
        .cloned()
        .unwrap_or_default();
    let retries = orch.get_num_retries(id).await.unwrap_or(u32::MAX);
    let outcome = if options.is_retriable(&error) && retries < options.max_retries {
        RunOutcome::Retry(error)
    } else {
        RunOutcome::Failed(error)
    };
    if let Err(e) = orch.finish(id, &runner.runner_id, outcome).await {
        warn!(error = %e, "could not record the crash");
    }
}

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
    runner_id: String,
    size: PoolSize,
    slots_per_worker: usize,
    stop: Arc<StopSignal>,
}

struct Worker {
    child: Child,
    _stdin: Option<ChildStdin>,
    started: Instant,
}

impl WorkerPool {
    fn new(app: &Pynenc, kind: &'static str, size: PoolSize, slots_per_worker: usize) -> Self {
        WorkerPool {
            app: app.clone(),
            kind,
            runner_id: format!(
                "{kind}@{}:{}",
                util::process_context(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            size,
            slots_per_worker: slots_per_worker.max(1),
            stop: Arc::new(StopSignal::default()),
        }
    }

    fn start_worker(&self) -> Result<Worker> {
        let mut cmd = child_command(&self.app, "worker")?;
        cmd.env(SLOTS_ENV, self.slots_per_worker.to_string())
            .stdout(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| PynencError::Runner {
            message: format!("cannot start a worker process: {e}"),
        })?;
        let stdin = child.stdin.take();
        info!(
            pid = child.id().unwrap_or(0),
            slots = self.slots_per_worker,
            "worker process started"
        );
        Ok(Worker {
            child,
            _stdin: stdin,
            started: Instant::now(),
        })
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
                            warn!(
                                exit = %describe_exit(&status),
                                ran_for_s = w.started.elapsed().as_secs_f64(),
                                "worker process died; replacing it (its work is recovered)"
                            );
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
                        info!(
                            pid = w.child.id().unwrap_or(0),
                            "scaling down: stopping a worker process"
                        );
                        if let Some(pid) = w.child.id() {
                            signal(pid, libc::SIGTERM);
                        }
                        tokio::spawn(async move {
                            let _ = w.child.wait().await;
                        });
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = self.stop.stopped() => {}
                }
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
            pub fn runner_id(&self) -> &str {
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
