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
//! - [`macro@workflow`] (attribute): a task whose calls are steps recorded
//!   once and given back when it runs again; [`mod@workflow`] holds what
//!   only a workflow body does (durable `sleep`, `wait_signal`, `now` /
//!   `random` / `uuid` taken once, `set_data` / `get_data`).
//! - [`Invocation`]: one execution of a call: its id ([`InvocationId`]),
//!   status, retries, history and `result()`. [`InvocationGroup`] for
//!   `parallelize`.
//! - [`InvocationStatus`]: the state machine, enforced in one place
//!   ([`StatusRecord::transition`]) for every backend.
//! - Components: [`Broker`], [`Orchestrator`], [`StateBackend`] and
//!   [`Coordination`] — traits ([`store`]); the memory backend
//!   ([`backends::memory`]) is the default, SQLite with the `sqlite`
//!   feature, Redis with `redis`. Choose one with
//!   [`PynencBuilder::backend`] or the `backend` setting. Backends implement
//!   [`store::StoreTxn`] and get every rule from [`store::engine`], or
//!   implement the traits natively.
//! - Runners: [`ThreadRunner`] (in-process), [`ProcessRunner`],
//!   [`PersistentProcessRunner`], [`MultiThreadRunner`].
//! - [`conf`]: layered configuration (defaults < `pynenc.toml` < file in code
//!   < `PYNENC__FILEPATH` < `PYNENC__…` environment < code), every value with
//!   its source.
//! - [`Serializer`]: JSON (default) or MessagePack.
//! - [`PynencError`]: the error of every operation, with the error it came
//!   from as its source; a task's own error is a [`TaskError`].
//!
//! ## Layers
//!
//! The crate is the runtime layer over four crates, each importing only
//! those before it: `pynenc-model` (plain data: ids, statuses, records),
//! `pynenc-store` (the component traits and the engine), the backends
//! (`pynenc-memory`, `pynenc-sqlite`, `pynenc-redis`), then this crate
//! (app, tasks, invocations, configuration, runners). See the repository's
//! `ARCHITECTURE.md`.
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
pub mod conf;
pub mod context;
mod data;
pub mod exceptions;
pub mod invocation;
pub mod runner;
pub mod task;
mod trigger;
pub mod workflow;

pub use pynenc_model::{arguments, call, serializer, status};

/// The data model (ids, statuses, records, outcomes): the `pynenc-model` crate.
pub mod model {
    pub use pynenc_model::*;
}

/// The component traits and the engine: the `pynenc-store` crate.
pub mod store {
    pub use pynenc_store::*;
}

/// The backends compiled into this build.
pub mod backends {
    /// In one process (the default).
    pub use pynenc_memory as memory;
    /// PostgreSQL (feature `postgres`).
    #[cfg(feature = "postgres")]
    pub use pynenc_postgres as postgres;
    /// Redis (feature `redis`).
    #[cfg(feature = "redis")]
    pub use pynenc_redis as redis;
    /// SQLite (feature `sqlite`).
    #[cfg(feature = "sqlite")]
    pub use pynenc_sqlite as sqlite;
}

#[cfg(feature = "postgres")]
pub use app::PostgresOptions;
#[cfg(feature = "redis")]
pub use app::RedisOptions;
#[cfg(feature = "sqlite")]
pub use app::SqliteOptions;
pub use app::{Backend, Pynenc, PynencBuilder};
pub use conf::{BackendKind, ConfigEntry, PynencConfig, RunnerKind};
pub use context::{block_on, is_cancelled};
pub use data::DataCacheStats;
pub use exceptions::{ConfigError, ConfigSource, PynencError, Result};
pub use invocation::{Invocation, InvocationGroup, UntypedInvocation};
pub use pynenc_memory::MemoryBackend;
pub use pynenc_model::{
    ArgumentPrintMode, Arguments, Call, CallId, CallRef, ConcurrencyControl, DataRef, HistoryEntry,
    InvocationId, InvocationRecord, InvocationStatus, RunnerId, Serializer, StatusRecord,
    TaskError, TaskId, TaskOptions, Timestamp,
};
pub use pynenc_store::{
    Broker, Components, Coordination, DataStore, Orchestrator, Queries, Retention, StateBackend,
};
pub use runner::{
    run_child_if_requested, MultiThreadRunner, PersistentProcessRunner, ProcessRunner, Runner,
    RunnerHandle, SpawnedRunner, ThreadRunner,
};
pub use task::{Shared, Task};
pub use trigger::{
    trigger_arguments, Trigger, TriggerEvent, TriggerFiring, TriggerInfo, TriggerSource, When,
    EVENT_TASK_ID, MAX_CATCH_UP, REACTABLE_STATUSES, RECENT_TICKS,
};

/// The `#[task]` attribute: see the `pynenc-macros` crate documentation.
pub use pynenc_macros::{task, workflow};

/// What code generated by `#[pynenc::task]` uses; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::task::definition::{
        TaskBody, TaskFuture, TaskInput, TaskOutput, TaskRegistration,
    };
    pub use inventory;
}
