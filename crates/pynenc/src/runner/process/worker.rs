//! One worker process of a pool runner: what it reported running, stopping
//! it when an invocation it runs is cancelled (persistent pools), and
//! accounting for its invocations when it dies.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pynenc_model::{InvocationId, InvocationStatus, RunnerId};
use tokio::process::Child;
use tracing::{debug, info, warn, Instrument};

use super::children::{describe_exit, set_blocking, signal};
use super::crash::{runs_for, CrashLedger};
use super::protocol::protocol_request;
use crate::app::Pynenc;
use crate::runner::cancel::{cancelled_outcome, log_if_cancelled};

/// How long after `runner.shutdown_grace_seconds` a worker stopped for a
/// cancel gets `SIGKILL`: the worker's own graceful stop ends the cancelled
/// invocation at the grace period, this leaves it the time to record that.
pub(crate) const KILL_MARGIN: Duration = Duration::from_secs(2);

/// How long the reader of a worker's output pauses after a read.
const READ_PAUSE: Duration = Duration::from_millis(1);

/// The most read from a worker's output at once.
const READ_BUFFER: usize = 64 * 1024;

/// A worker process of a pool and what it reported running.
pub(crate) struct Worker {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    /// The worker's runner id (owner of what it runs).
    pub(crate) owner: RunnerId,
    /// Writes to the worker's pipe (which it watches to outlive nobody).
    pub(crate) briefing: Option<tokio::task::JoinHandle<()>>,
    pub(crate) started: Instant,
    /// What the worker reported holding.
    pub(crate) held: Arc<Mutex<Holdings>>,
    /// Resolves once the worker's output closed and was read to its end.
    pub(crate) reader: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Worker {
    /// Sends `SIGKILL` to a worker that was stopped for a cancel and is
    /// still alive past its deadline.
    pub(crate) fn kill_if_overdue(&mut self) {
        let overdue = self
            .held
            .lock()
            .kill_at
            .is_some_and(|at| Instant::now() >= at);
        if !overdue {
            return;
        }
        self.held.lock().kill_at = None;
        warn!(
            pid = self.pid,
            worker = %self.owner,
            "the worker process stopped for a cancel outlived SIGTERM; sending SIGKILL"
        );
        if let Err(e) = self.child.start_kill() {
            debug!(pid = self.pid, error = %e, "SIGKILL failed (it may have ended)");
        }
    }
}

/// The invocations a worker process reported holding.
#[derive(Default)]
pub(crate) struct Holdings {
    /// Started and not ended.
    pub(crate) running: HashSet<InvocationId>,
    /// Taken and not started: waiting for its turn (taken ahead) or for
    /// the worker's other slots to run alone.
    pub(crate) waiting: HashSet<InvocationId>,
    /// Running and cancelled (with their task ids): the process was
    /// stopped for them.
    pub(crate) cancelled: HashMap<InvocationId, String>,
    /// When the worker, stopped for a cancel, gets `SIGKILL`.
    pub(crate) kill_at: Option<Instant>,
}

/// Who reads a worker's output, and what it needs to stop the worker.
pub(crate) struct WorkerOutput {
    pub(crate) held: Arc<Mutex<Holdings>>,
    pub(crate) crashes: Arc<CrashLedger>,
    pub(crate) pid: u32,
    pub(crate) owner: RunnerId,
    /// How long a worker stopped for a cancel gets before `SIGKILL`.
    pub(crate) kill_after: Duration,
}

impl WorkerOutput {
    /// Forwards a worker's output and keeps `held` up to date from its
    /// `taken` / `wait-alone` / `start` / `end` / `cancel` lines (`taken`:
    /// taken ahead, waiting for its turn; `wait-alone`: waiting to run
    /// alone; both not started); `suspected` lines tell the crash ledger
    /// the worker read a suspect. Reads on a thread of its own; the
    /// receiver returned resolves once the output closed and was read to
    /// its end.
    ///
    /// After each read it pauses [`READ_PAUSE`] (unless the read filled its
    /// buffer): the lines written meanwhile wait in the pipe and are read
    /// together, instead of each write waking this process (a busy worker
    /// writes a line per invocation). What the pool does with the lines
    /// (its bookkeeping for a crash, a cancel, a suspect's announcement)
    /// takes that much longer at most; a worker's death is handled once its
    /// last lines are read.
    pub(crate) fn spawn_reader(
        self,
        out: tokio::process::ChildStdout,
    ) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
        let fd = out.into_owned_fd()?;
        set_blocking(&fd)?;
        let (done, finished) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name(format!("pynenc-worker-{}", self.pid))
            .spawn(move || {
                let _entered = span.enter();
                self.read(std::fs::File::from(fd));
                let _ = done.send(());
            })?;
        Ok(finished)
    }

    /// Reads `out` to its end, line by line, pausing after each read that
    /// did not fill the buffer.
    fn read(&self, mut out: impl Read) {
        let mut buf = vec![0u8; READ_BUFFER];
        let mut partial: Vec<u8> = Vec::new();
        loop {
            let n = match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(pid = self.pid, error = %e, "cannot read the output of a worker process");
                    break;
                }
            };
            partial.extend_from_slice(&buf[..n]);
            let mut used = 0;
            while let Some(at) = partial[used..].iter().position(|b| *b == b'\n') {
                self.line(&String::from_utf8_lossy(&partial[used..used + at]));
                used += at + 1;
            }
            partial.drain(..used);
            if n < buf.len() {
                std::thread::sleep(READ_PAUSE);
            }
        }
        if !partial.is_empty() {
            self.line(&String::from_utf8_lossy(&partial));
        }
    }

    /// One line of a worker's output.
    fn line(&self, line: &str) {
        let Some(request) = protocol_request(line) else {
            return;
        };
        if let Some(rest) = request.strip_prefix("cancel ") {
            self.cancel_requested(rest);
            return;
        }
        let parsed = request
            .split_once(' ')
            .and_then(|(what, id)| Some((what, InvocationId::parse(id).ok()?)));
        match parsed {
            Some(("suspected", id)) => self.crashes.suspect_read(&id),
            Some(("taken" | "wait-alone", id)) => {
                self.held.lock().waiting.insert(id);
            }
            Some(("start", id)) => {
                let mut held = self.held.lock();
                held.waiting.remove(&id);
                held.running.insert(id);
            }
            Some(("end", id)) => {
                let mut held = self.held.lock();
                // an invocation taken ahead may end without starting
                // (given back to the queue)
                held.waiting.remove(&id);
                held.running.remove(&id);
                drop(held);
                self.crashes.cleared(&id);
            }
            _ => warn!(request, "unknown line from a worker process"),
        }
    }

    /// `cancel <invocation id> <task id>`: an invocation the worker runs was
    /// cancelled; the worker is stopped (`SIGTERM`, `SIGKILL` later) once.
    fn cancel_requested(&self, rest: &str) {
        let (id, task_id) = rest.split_once(' ').unwrap_or((rest, ""));
        let Ok(id) = InvocationId::parse(id) else {
            warn!(line = rest, "unreadable cancel line from a worker process");
            return;
        };
        let mut held = self.held.lock();
        if !held.running.contains(&id) || held.cancelled.contains_key(&id) {
            return;
        }
        held.cancelled.insert(id, task_id.to_string());
        if held.kill_at.is_none() {
            held.kill_at = Some(Instant::now() + self.kill_after);
        }
        drop(held);
        info!(
            runner_id = %self.owner,
            task_id,
            invocation_id = %id,
            pid = self.pid,
            "cancel requested: stopping the worker process running it"
        );
        signal(self.pid, libc::SIGTERM);
    }
}

/// Accounts for the invocations a worker was running when it ended with
/// `status`: those cancelled end `CANCELLED`; if it did not stop cleanly,
/// those it had taken but not started are re-routed and those it ran go to
/// the crash ledger.
pub(crate) fn worker_died(
    app: &Pynenc,
    crashes: &Arc<CrashLedger>,
    mut worker: Worker,
    status: ExitStatus,
) {
    let stopped_for_cancel = !worker.held.lock().cancelled.is_empty();
    if stopped_for_cancel {
        info!(
            pid = worker.pid,
            worker = %worker.owner,
            exit = %describe_exit(&status),
            "worker process stopped for a cancel; replacing it"
        );
    } else {
        warn!(
            pid = worker.pid,
            worker = %worker.owner,
            exit = %describe_exit(&status),
            ran_for_s = worker.started.elapsed().as_secs_f64(),
            "worker process died; replacing it"
        );
    }
    if let Some(briefing) = worker.briefing.take() {
        briefing.abort();
    }
    let app = app.clone();
    let crashes = crashes.clone();
    tokio::spawn(
        async move {
            // its output is complete once the reader has seen the end of it
            if let Some(reader) = worker.reader.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
            }
            let (mut running, waiting, cancelled) = {
                let mut held = worker.held.lock();
                (
                    held.running.drain().collect::<Vec<_>>(),
                    held.waiting.drain().collect::<Vec<_>>(),
                    held.cancelled.drain().collect::<Vec<_>>(),
                )
            };
            for (id, task_id) in &cancelled {
                end_cancelled(&app, &worker.owner, id, task_id).await;
            }
            if status.success() {
                return; // it stopped by itself, re-routing what it ran
            }
            running.retain(|id| !cancelled.iter().any(|(c, _)| c == id));
            // taken but never started: they did nothing to it, run them again now
            for id in waiting {
                match app.orchestrator().kill_and_reroute(&id, &worker.owner).await {
                    Ok(()) => {
                        if !log_if_cancelled(&app, &worker.owner, &id, None).await {
                            info!(invocation_id = %id, "re-routed: its worker process died before running it")
                        }
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
        .instrument(tracing::Span::current()),
    );
}

/// Ends `CANCELLED` an invocation whose worker (`owner`) was stopped for
/// its cancel, unless it is final already (the worker ended it itself
/// while stopping, which is the usual case).
async fn end_cancelled(app: &Pynenc, owner: &RunnerId, id: &InvocationId, task_id: &str) {
    let orch = app.orchestrator();
    let Ok(current) = orch.get_status(id).await else {
        return;
    };
    if !runs_for(&current, owner) {
        return; // ended already
    }
    // PENDING, RUNNING, PAUSED and RESUMED may all end CANCELLED
    debug_assert!(current
        .status
        .can_transition_to(InvocationStatus::Cancelled));
    match orch.finish(id, owner, cancelled_outcome(owner)).await {
        Ok(_) => info!(
            runner_id = %owner,
            task_id,
            invocation_id = %id,
            "worker process killed: invocation cancelled"
        ),
        Err(e) => warn!(invocation_id = %id, error = %e, "could not record the cancel"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives its bytes a few at a time, as a pipe may.
    struct Trickle(Vec<u8>, usize);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn lines_split_across_reads_keep_the_holdings_right() {
        let output = WorkerOutput {
            held: Arc::default(),
            crashes: Arc::default(),
            pid: 0,
            owner: RunnerId::from("pool/worker-1"),
            kill_after: Duration::from_secs(1),
        };
        let [a, b, c] = [1u128, 2, 3].map(InvocationId::from_u128);
        let mark = "\u{1e}pynenc:";
        // printed output without a newline, a line cut anywhere, bytes
        // that are not UTF-8, and a last line without its newline
        let mut bytes = format!(
            "hello{mark}taken {a}\n{mark}taken {b}\n{mark}start {a}\n{mark}end {a}\n{mark}start {b}\n"
        )
        .into_bytes();
        bytes.extend_from_slice(b"\xff\xfe printed\n");
        bytes.extend_from_slice(format!("{mark}taken {c}").as_bytes());
        output.read(Trickle(bytes, 7));
        let held = output.held.lock();
        assert_eq!(held.running, HashSet::from([b]));
        assert_eq!(held.waiting, HashSet::from([c]));
    }
}
