//! Runners that execute invocations in other OS processes.
//!
//! - [`ProcessRunner`]: one child process per invocation. A child that waits
//!   for other invocations sets itself `PAUSED`, tells its parent, and is
//!   stopped with `SIGSTOP` (it frees its slot) until the results are ready;
//!   then `SIGCONT` and `RESUMED`.
//! - [`PersistentProcessRunner`]: a fixed pool of worker processes, each
//!   running one invocation body at a time (and taking invocations ahead
//!   while its runs are short, see `runner.prefetch`); a worker that dies
//!   is replaced.
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
//!     pynenc::run_child_if_requested(); // returns at once unless this process is a pynenc child
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
//! Invocations a dead worker had taken and not started are re-routed at
//! once; one it took in the last millisecond before it died (the line
//! saying so not written yet, see below) is re-routed by the recovery
//! service once the worker's heartbeat expires.
//!
//! A worker tells its pool what it holds in lines on its standard output:
//! `start` before a body begins, written at once (the body may crash the
//! process); `taken` and `end` wait up to a millisecond to go in the same
//! write as the next line, so that a busy worker writes once per
//! invocation, and the pool reads them every millisecond at most. Before
//! blaming a crash on the invocations a worker held, the pool asks the
//! store which of them the worker still runs.
//!
//! Who is a runner: a [`ProcessRunner`]'s children act for it (they own
//! nothing, beat no heartbeat and are not listed among the runners). A
//! pool's workers own what they run and beat their own heartbeats, but the
//! pool is the runner that is listed, with what its workers run.
//!
//! A cancel of an invocation running in a child stops the process: the
//! child of a [`ProcessRunner`] gets `SIGTERM`, then `SIGKILL` after
//! `runner.shutdown_grace_seconds`, and the runner ends the run
//! `CANCELLED` (not as a crash, not re-routed). A worker of a
//! [`PersistentProcessRunner`] reports the cancel of a body that began to
//! its pool, which stops the worker the same way (`SIGKILL` two seconds
//! after the grace period, which the worker's own graceful stop uses to end
//! the run `CANCELLED`) and replaces it; one taken ahead and waiting for its
//! turn ends `CANCELLED` in the worker, before its body begins. The workers of a [`MultiThreadRunner`] run several
//! invocations each, so they cancel in-process, as a [`crate::ThreadRunner`].

mod child;
mod children;
mod crash;
mod per_invocation;
mod pool;
mod protocol;
mod supervise;
mod worker;

pub use child::run_child_if_requested;
pub(crate) use child::{end_quarantine, is_quarantined};
pub use per_invocation::ProcessRunner;
pub use pool::{MultiThreadRunner, PersistentProcessRunner};
pub(crate) use protocol::{report_to_parent, report_to_parent_soon};

/// Set in a child's environment: `invocation` or `worker`.
pub const CHILD_ENV: &str = "PYNENC_CHILD";
const CONFIG_ENV: &str = "PYNENC_CHILD_CONFIG";
const INVOCATION_ENV: &str = "PYNENC_CHILD_INVOCATION";
const OWNER_ENV: &str = "PYNENC_CHILD_OWNER";
const SLOTS_ENV: &str = "PYNENC_CHILD_SLOTS";
/// Set (to `1`) for a worker that runs one invocation body at a time.
const ONE_BODY_ENV: &str = "PYNENC_CHILD_ONE_BODY";
/// Set to `parent` for a worker whose pool stops the whole process on a
/// cancel (a persistent pool's workers, which run one body at a time).
const CANCEL_ENV: &str = "PYNENC_CHILD_CANCEL";
/// The error kind of an invocation that crashed the process running it.
pub const PROCESS_CRASHED_KIND: &str = "ProcessCrashed";
