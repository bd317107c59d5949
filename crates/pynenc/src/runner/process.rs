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
//! `main` needs, at its start (after setting up logging, so that children
//! log too):
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
//! exits when its parent's pipe closes, so children are never orphaned.
//!
//! When a child or worker process dies while running invocations, its
//! runner decides what they did to it (see [`PROCESS_CRASHED_KIND`]):
//! - it died of a fault signal (`SIGSEGV`, `SIGABRT`, `SIGBUS`, `SIGILL`,
//!   `SIGFPE`, `SIGSYS`) while running exactly one invocation: that
//!   invocation crashed it, and it fails with `ProcessCrashed` (or is
//!   retried, when its task's `retry_for` names `ProcessCrashed`);
//! - otherwise (killed from outside, another exit, or several invocations
//!   in the process) the culprit is unknown: each invocation it ran is
//!   re-routed at once, and one that is running again in a process that
//!   dies is then treated as the culprit. So a task that always kills its
//!   process ends `FAILED` after at most two crashes instead of looping.
//!
//! Invocations a dead worker was holding back to run alone are re-routed at
//! once; anything else it had taken but not started is re-routed by the
//! recovery service once its heartbeat expires.

use std::collections::{HashMap, HashSet};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex as AsyncMutex, Semaphore};
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::{
    maintain, run_invocation, stop_on_signal, InvocationHost, PickBackoff, RunnerHandle,
    SpawnedRunner, StopSignal,
};
use crate::app::Pynenc;
use crate::context::InvocationContext;
use crate::exceptions::{PynencError, Result, TaskError};
use crate::invocation::InvocationRecord;
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
/// The error kind of an invocation that crashed the process running it.
pub const PROCESS_CRASHED_KIND: &str = "ProcessCrashed";
/// How long a runner remembers an invocation that was running in a
/// process that died without the death being pinned on it.
const SUSPECT_MEMORY: Duration = Duration::from_secs(3600);

/// In a worker process: invocations its pool suspects of crashing a
/// worker, to be run alone.
fn quarantine() -> &'static parking_lot::Mutex<HashSet<String>> {
    static SET: std::sync::OnceLock<parking_lot::Mutex<HashSet<String>>> =
        std::sync::OnceLock::new();
    SET.get_or_init(Default::default)
}

/// Whether this worker process must run `invocation_id` alone.
pub(crate) fn is_quarantined(invocation_id: &str) -> bool {
    quarantine().lock().contains(invocation_id)
}

/// `invocation_id` ran to its end in this worker process.
pub(crate) fn end_quarantine(invocation_id: &str) {
    quarantine().lock().remove(invocation_id);
}

/// Splits a line of a child's output: what the task printed is passed on
/// to this process's output, and the protocol request, if any, is returned
/// (it may follow output that did not end its line).
fn protocol_request(line: &str) -> Option<&str> {
    match line.find(MARK) {
        Some(at) => {
            if at > 0 {
                println!("{}", &line[..at]);
            }
            Some(&line[at + MARK.len()..])
        }
        None => {
            println!("{line}");
            None
        }
    }
}

/// Writes a protocol line for the parent runner on standard output.
pub(crate) fn report_to_parent(what: &str, detail: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARK}{what} {detail}");
    let _ = out.flush();
}

/// Runs the child role and exits if this process was started as a pynenc
/// child; returns at once otherwise. Call it at the start of `main`, after
/// setting up logging (a child logs through the same subscriber).
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

/// Reads the parent's pipe: `go` lines resume a paused child, `suspect
/// <id>` lines quarantine an invocation; end of file means the parent is
/// gone, and the child exits at once.
fn watch_parent(go: tokio::sync::mpsc::UnboundedSender<()>) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let line = line.trim();
            if line == "go" {
                let _ = go.send(());
            } else if let Some(id) = line.strip_prefix("suspect ") {
                quarantine().lock().insert(id.to_string());
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
        orch.waiting_for_results(Some(ctx.invocation_id()), ids)
            .await?;
        // one wait at a time: the parent stops the whole process
        let mut go = self.go.lock().await;
        ctx.set_own_status(InvocationStatus::Paused, &self.owner)
            .await?;
        let line = serde_json::to_string(ids)
            .map_err(|e| PynencError::serialization("serialize", "waited ids", e))?;
        report_to_parent("wait", &line);
        go.recv().await.ok_or_else(|| PynencError::Runner {
            message: "the parent runner closed the pipe while the child waited".into(),
        })?;
        ctx.set_own_status(InvocationStatus::Resumed, &self.owner)
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
    let owner = std::env::var(OWNER_ENV).map_err(|_| PynencError::Runner {
        message: format!("{OWNER_ENV} is not set"),
    })?;
    super::ThreadRunner::with_identity(&app, slots, owner, true)
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

fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}{}", signal_name(sig)),
        _ => status.to_string(),
    }
}

/// Whether a process died of a fault of the code it ran (as opposed to
/// being killed from outside or exiting).
fn died_of_a_fault(status: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    matches!(
        status.signal(),
        Some(
            libc::SIGSEGV
                | libc::SIGABRT
                | libc::SIGBUS
                | libc::SIGILL
                | libc::SIGFPE
                | libc::SIGSYS
        )
    )
}

/// What a runner knows of the processes that died under it; decides, for
/// the invocations a dead process was running, whether they crashed it.
struct CrashLedger {
    /// Invocations re-routed after a death that was not pinned on them.
    suspects: parking_lot::Mutex<HashMap<String, Instant>>,
    /// Tells the live worker processes of a pool about new suspects.
    announce: tokio::sync::broadcast::Sender<String>,
}

impl Default for CrashLedger {
    fn default() -> Self {
        CrashLedger {
            suspects: Default::default(),
            announce: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl CrashLedger {
    /// `invocation_id` ran to its end: no longer a suspect.
    fn cleared(&self, invocation_id: &str) {
        self.suspects.lock().remove(invocation_id);
    }

    /// Keeps a worker's pipe: sends it the current suspects, then every new
    /// one, until the worker or the pool is gone.
    async fn brief_worker(
        mut suspects: tokio::sync::broadcast::Receiver<String>,
        current: Vec<String>,
        mut pipe: ChildStdin,
    ) {
        for id in current {
            if pipe
                .write_all(format!("suspect {id}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = pipe.flush().await;
        loop {
            let id = match suspects.recv().await {
                Ok(id) => id,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if pipe
                .write_all(format!("suspect {id}\n").as_bytes())
                .await
                .is_err()
                || pipe.flush().await.is_err()
            {
                return;
            }
        }
    }

    /// `held` were running for `owner` in process `pid` (a `what`), which
    /// ended with `status` before finishing them.
    async fn process_died(
        &self,
        app: &Pynenc,
        owner: &str,
        held: Vec<String>,
        pid: u32,
        status: &ExitStatus,
        what: &str,
    ) {
        let exit = describe_exit(status);
        let pinned = held.len() == 1 && died_of_a_fault(status);
        for id in held {
            let seen_before = {
                let mut suspects = self.suspects.lock();
                suspects.retain(|_, since| since.elapsed() < SUSPECT_MEMORY);
                suspects.remove(&id).is_some()
            };
            if pinned || seen_before {
                let why = if pinned {
                    String::new()
                } else {
                    " (the second process to die while running it)".to_string()
                };
                let message = format!(
                    "the {what} (pid {pid}) running invocation {id} ended with {exit} before finishing it{why}"
                );
                record_crash(app, owner, &id, message).await;
                continue;
            }
            self.suspects.lock().insert(id.clone(), Instant::now());
            // before it can be picked again: wherever it runs next in the
            // pool, it runs alone
            let _ = self.announce.send(id.clone());
            match app.orchestrator().kill_and_reroute(&id, owner).await {
                Ok(()) => warn!(
                    invocation_id = %id, pid, %exit,
                    "the {what} running this invocation died without the cause being pinned on it; re-routed"
                ),
                // it ended, or was recovered, already
                Err(e) => {
                    debug!(invocation_id = %id, error = %e, "not re-routed after the {what} died")
                }
            }
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGILL => " (SIGILL)",
        libc::SIGFPE => " (SIGFPE)",
        libc::SIGSYS => " (SIGSYS)",
        _ => "",
    }
}

/// One child process per invocation.
pub struct ProcessRunner {
    app: Pynenc,
    runner_id: String,
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
            runner_id: super::new_runner_id("ProcessRunner"),
            max_processes: max_processes.max(1),
            stop: Arc::new(StopSignal::default()),
            crashes: CrashLedger::default(),
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
            let mut backoff = PickBackoff::new();
            while !me.stop.is_stopped() {
                let free = slots.available_permits();
                if free == 0 {
                    me.stop.or_stopped(slots.clone().acquire_owned()).await;
                    continue;
                }
                let epoch = orch.work_epoch();
                let picked = match orch.get_invocations_to_run(&me.runner_id, free).await {
                    Ok(p) => {
                        backoff.reset();
                        p
                    }
                    Err(e) => {
                        backoff.failed(&me.stop, &e).await;
                        continue;
                    }
                };
                if picked.is_empty() {
                    super::idle(orch, &me.stop, epoch).await;
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
            let Some(request) = protocol_request(&line) else {
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

/// Fails (or retries, when its task's `retry_for` names `ProcessCrashed`)
/// an invocation that crashed the process running it for `owner`.
async fn record_crash(app: &Pynenc, owner: &str, id: &str, message: String) {
    let orch = app.orchestrator();
    let Ok(current) = orch.get_status(id).await else {
        return;
    };
    if current.owner.as_deref() != Some(owner) || !current.status.is_owned_running() {
        return; // it ended (or was recovered) already
    }
    error!(invocation_id = %id, "{message}");
    let error = TaskError::new(PROCESS_CRASHED_KIND, message);
    // bring it back to a status a run can end from
    let step = match current.status {
        InvocationStatus::Pending => Some(InvocationStatus::Running),
        InvocationStatus::Paused => Some(InvocationStatus::Resumed),
        _ => None,
    };
    if let Some(step) = step {
        if let Err(e) = orch.set_status(id, step, owner, None).await {
            warn!(invocation_id = %id, error = %e, "could not record the crash");
            return;
        }
    }
    let options = match app.state_backend().get_invocation(id).await {
        Ok(record) => app
            .registry()
            .options(&record.call.task_id)
            .cloned()
            .unwrap_or_default(),
        Err(e) => {
            warn!(invocation_id = %id, error = %e, "could not read the crashed invocation; not retried");
            Default::default()
        }
    };
    let outcome = super::failure_outcome(orch, &options, id, error).await;
    if let Err(e) = orch.finish(id, owner, outcome).await {
        warn!(invocation_id = %id, error = %e, "could not record the crash");
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
    crashes: Arc<CrashLedger>,
    started_workers: AtomicUsize,
}

/// A worker process of a pool and what it reported running.
struct Worker {
    child: Child,
    pid: u32,
    /// The worker's runner id (owner of what it runs).
    owner: String,
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
    running: HashSet<String>,
    /// Taken, waiting for the worker's other slots to run alone; not started.
    waiting: HashSet<String>,
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
        match request.split_once(' ') {
            Some(("wait-alone", id)) => {
                held.lock().waiting.insert(id.to_string());
            }
            Some(("start", id)) => {
                let mut held = held.lock();
                held.waiting.remove(id);
                held.running.insert(id.to_string());
            }
            Some(("end", id)) => {
                held.lock().running.remove(id);
                crashes.cleared(id);
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
            runner_id: super::new_runner_id(kind),
            size,
            slots_per_worker: slots_per_worker.max(1),
            stop: Arc::new(StopSignal::default()),
            crashes: Arc::default(),
            started_workers: AtomicUsize::new(0),
        }
    }

    fn start_worker(&self) -> Result<Worker> {
        let n = self.started_workers.fetch_add(1, Ordering::Relaxed) + 1;
        let owner = format!("{}/worker-{n}", self.runner_id);
        let mut cmd = child_command(&self.app, "worker")?;
        cmd.env(SLOTS_ENV, self.slots_per_worker.to_string())
            .env(OWNER_ENV, &owner);
        let mut child = cmd.spawn().map_err(|e| PynencError::Runner {
            message: format!("cannot start a worker process: {e}"),
        })?;
        let held: Arc<parking_lot::Mutex<Holdings>> = Arc::default();
        let reader = child
            .stdout
            .take()
            .map(|out| tokio::spawn(read_worker_output(out, held.clone(), self.crashes.clone())));
        let briefing = child.stdin.take().map(|pipe| {
            let current = self.crashes.suspects.lock().keys().cloned().collect();
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
            let (running, waiting): (Vec<String>, Vec<String>) = {
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
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_are_found_after_unterminated_output() {
        assert_eq!(
            protocol_request("\u{1e}pynenc:start abc"),
            Some("start abc")
        );
        assert_eq!(
            protocol_request("printed without a newline\u{1e}pynenc:wait [\"x\"]"),
            Some("wait [\"x\"]")
        );
        assert_eq!(protocol_request("plain output"), None);
    }

    #[test]
    fn only_fault_signals_pin_a_crash() {
        use std::os::unix::process::ExitStatusExt;
        for sig in [
            libc::SIGSEGV,
            libc::SIGABRT,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
        ] {
            assert!(died_of_a_fault(&ExitStatus::from_raw(sig)), "signal {sig}");
        }
        for sig in [libc::SIGKILL, libc::SIGTERM, libc::SIGINT] {
            assert!(!died_of_a_fault(&ExitStatus::from_raw(sig)), "signal {sig}");
        }
        // exit code 1 (wait status 1 << 8)
        assert!(!died_of_a_fault(&ExitStatus::from_raw(1 << 8)));
        assert_eq!(
            describe_exit(&ExitStatus::from_raw(libc::SIGSEGV)),
            "signal 11 (SIGSEGV)"
        );
    }
}
