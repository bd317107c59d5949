//! Runners execute invocations.
//!
//! | `runner.kind` | runner |
//! |---|---|
//! | `thread` (default) | [`ThreadRunner`]: in-process |
//! | `process` | [`ProcessRunner`]: a child process per invocation |
//! | `persistent_process` | [`PersistentProcessRunner`]: a fixed pool of worker processes |
//! | `multi_thread` | [`MultiThreadRunner`]: worker processes running threads, scaled by queue depth |
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
//! invocation. The ends that come in while a step of ends is on its way go
//! together in the next, with one pick-up for all the slots they free: one
//! step in flight at a time on the in-process backend (a lock), two where a
//! step is a transaction or a round trip (SQLite, Redis, PostgreSQL), so
//! that the backend works on one while the next travels.
//!
//! Every runner lists itself (`Coordination::register_runner`, read back by
//! `Queries::runners`): at start with its kind (`thread`, `process`,
//! `persistent_process`, `multi_thread`), host, process id, start time and
//! slots, at every heartbeat with the invocations it runs now, and it
//! leaves the list on a clean stop. A runner that dies stays listed with
//! its last heartbeat until the runner holding the recovery lease forgets
//! it after `runner.runner_info_keep_seconds`. The child and worker
//! processes of the process runners are not listed (see [`process`]).
//!
//! While a runner runs anything, it asks every `runner.cancel_poll_seconds`
//! whether any of its invocations was cancelled (one call for the whole
//! runner, none while it runs nothing) and stops them: an async body is
//! dropped at its next await, a sync body sees
//! [`crate::context::is_cancelled`] (it cannot be interrupted), a `PAUSED`
//! invocation stops waiting (it holds no slot, and its end takes none),
//! and a child process is stopped with `SIGTERM`, then `SIGKILL`. The run
//! then ends `CANCELLED`. A stopping runner stops what was cancelled at
//! once instead of waiting for it.

mod cancel;
mod chain;
mod execute;
mod finisher;
mod handoff;
mod host;
mod ids;
mod prefetch;
pub mod process;
mod run;
mod shared;
mod stop;
mod thread;
mod turns;
mod upkeep;

use std::sync::Arc;

use pynenc_model::RunnerId;

pub(crate) use execute::run_body;
pub(crate) use host::{InvocationHost, SlotState};
pub(crate) use ids::external_runner_id;
pub use ids::process_context;
pub use process::{
    run_child_if_requested, MultiThreadRunner, PersistentProcessRunner, ProcessRunner,
};
use stop::StopSignal;
pub use thread::ThreadRunner;

use crate::app::Pynenc;
use crate::conf::RunnerKind;
use crate::exceptions::{PynencError, Result};

/// Any runner kind, as chosen by the `runner.kind` setting (see [`Pynenc::runner`]).
pub enum Runner {
    /// In-process: tokio tasks and blocking threads.
    Thread(ThreadRunner),
    /// A child process per invocation.
    Process(ProcessRunner),
    /// A fixed pool of worker processes that run one body at a time.
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
        match app.conf().runner.kind {
            RunnerKind::Thread => Runner::Thread(ThreadRunner::new(app)),
            RunnerKind::Process => Runner::Process(ProcessRunner::new(app)),
            RunnerKind::PersistentProcess => {
                Runner::PersistentProcess(PersistentProcessRunner::new(app))
            }
            RunnerKind::MultiThread => Runner::MultiThread(MultiThreadRunner::new(app)),
        }
    }

    /// The runner's id.
    pub fn runner_id(&self) -> &RunnerId {
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

/// A handle to stop a runner (cheap to clone).
#[derive(Clone)]
pub struct RunnerHandle {
    runner_id: RunnerId,
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
    pub fn runner_id(&self) -> &RunnerId {
        &self.runner_id
    }

    pub(crate) fn new(runner_id: &RunnerId, stop: Arc<StopSignal>) -> Self {
        RunnerHandle {
            runner_id: runner_id.clone(),
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
        self.join
            .await
            .map_err(|e| PynencError::runner_caused(format!("runner task failed: {e}"), e))?
    }
}
