//! # pynenc — distributed task orchestration for Rust
//!
//! Define tasks as Rust functions; calls become **invocations** that a
//! **broker** queues, **runners** execute, an **orchestrator** coordinates and
//! a **state backend** remembers. Tasks call other tasks and wait for their
//! results without deadlocking the workers (*blocking control*), call cycles
//! are caught instead of hanging (*cycle control*), duplicate or colliding
//! work is governed per task, per arguments or per key (*concurrency
//! control*), errors are retried, and every invocation keeps the full history
//! of its statuses.
//!
//! ```
//! use pynenc::{Pynenc, TaskError};
//!
//! #[pynenc::task(max_retries = 2)]
//! async fn add(x: i64, y: i64) -> i64 {
//!     x + y
//! }
//!
//! #[pynenc::task]
//! async fn total(n: i64) -> Result<i64, TaskError> {
//!     // sub-calls pick up their parent; waiting frees this runner slot
//!     let group = add::parallelize((0..n).map(|i| (i, i))).await?;
//!     Ok(group.results().await?.into_iter().sum())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), pynenc::PynencError> {
//!     let app = Pynenc::builder().app_id("demo").build()?; // in memory by default
//!     let runner = app.runner().spawn();                  // an in-process runner
//!     let inv = total::call(10).await?;                    // routed, queued, run
//!     assert_eq!(inv.result().await?, 90);
//!     runner.stop().await
//! }
//! ```
//!
//! Tasks must be module-level items (the macro adds a module next to the
//! function). Process runners start the program again as their children:
//! see [`run_child_if_requested`].
//!
//! ## Concepts
//!
//! - [`macro@task`] (attribute): turns a function into a registered task with a
//!   typed API (`call`, `direct`, `parallelize`, `args`, `task()`). The task
//!   id is the module path and function name. See [`macro@task`] for options.
//! - [`Arguments`] and [`Call`]: arguments bound by name and serialized one by
//!   one; the `call_id` is the task id plus a stable hash of the sorted
//!   `name=value` pairs.
//! - [`Invocation`]: one execution of a call: its id, status, retries,
//!   history and `result()`. [`InvocationGroup`] for `parallelize`.
//! - [`InvocationStatus`]: the state machine, enforced in one place
//!   ([`StatusRecord::transition`]) for every backend.
//! - Components: [`Broker`], [`Orchestrator`], [`StateBackend`] — traits;
//!   the memory backend ([`backends::memory`]) is the default, SQLite with the
//!   `sqlite` feature. Backends implement [`store::StoreTxn`] and get every
//!   rule from [`store::engine`].
//! - [`ThreadRunner`]: the in-process runner.
//! - [`conf`]: layered configuration (defaults < `pynenc.toml` < file in code
//!   < `PYNENC__FILEPATH` < `PYNENC__…` environment < code), every value with
//!   its source.
//! - [`Serializer`]: JSON (default) or MessagePack.
//! - [`PynencError`]: one error hierarchy, serializable.
//!
//! ## Logging
//!
//! Everything logs through `tracing`. Runner lines carry a `runner` span
//! with `runner_id`, invocation lines an `invocation` span with `task_id`
//! and `invocation_id` (also around the task body, so a task's own
//! `tracing` events carry them). Arguments are printed according to the
//! `print_arguments` setting (`full`, `keys`, `truncated`, `hidden`).
#![deny(missing_docs)]

pub mod app;
pub mod arguments;
pub mod backends;
pub mod broker;
pub mod call;
pub mod conf;
pub mod context;
pub mod exceptions;
pub mod invocation;
pub mod orchestrator;
pub mod runner;
pub mod serializer;
pub mod state_backend;
pub mod status;
pub mod store;
pub mod task;
pub mod util;

pub use app::{Components, Pynenc, PynencBuilder};
pub use arguments::{ArgumentPrintMode, Arguments};
pub use broker::Broker;
pub use call::Call;
pub use conf::PynencConfig;
pub use context::block_on;
pub use exceptions::{ConfigError, ConfigSource, PynencError, Result, TaskError};
pub use invocation::{Invocation, InvocationGroup, InvocationRecord, UntypedInvocation};
pub use orchestrator::Orchestrator;
pub use runner::{
    run_child_if_requested, MultiThreadRunner, PersistentProcessRunner, ProcessRunner, Runner,
    RunnerHandle, SpawnedRunner, ThreadRunner,
};
pub use serializer::Serializer;
pub use state_backend::{HistoryEntry, StateBackend};
pub use status::{InvocationStatus, StatusRecord};
pub use task::{ConcurrencyControl, Task, TaskOptions};

/// The `#[task]` attribute: see the `pynenc-macros` crate documentation.
pub use pynenc_macros::task;

#[doc(hidden)]
pub use inventory;
