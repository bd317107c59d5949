//! The pynenc engine: the component traits and every orchestration rule,
//! written once.
//!
//! - [`components`]: the traits an app works with — [`Broker`],
//!   [`Orchestrator`], [`StateBackend`], [`Coordination`], [`Queries`] and
//!   [`DataStore`] — bundled as [`Components`].
//! - [`StoreTxn`], [`QueryTxn`] and [`DataTxn`]: the primitive reads and writes of a backend, and
//!   [`AtomicStore`]: a backend that runs a closure over them atomically (one
//!   lock in memory, one transaction in SQLite and PostgreSQL).
//! - [`codes`]: the stable status codes of the SQL backends' schemas.
//! - [`engine`]: every rule — the state machine, registration and running
//!   concurrency, blocking and cycle control, retries, purge, recovery —
//!   once, over [`StoreTxn`].
//! - [`TxnBackend`]: any [`AtomicStore`] as the four components.
//!
//! A backend either implements [`StoreTxn`] and [`AtomicStore`] and gets
//! every rule from here (memory, SQLite, PostgreSQL), or implements the component
//! traits natively (Redis runs each step as one server-side script) and
//! reuses the engine's shared pieces (errors, cycle descriptions, batch
//! limits). Either way it passes the same conformance suite.
//!
//! Nothing here depends on a backend or on the runtime.
#![deny(missing_docs)]

mod adapter;
mod atomic;
pub mod codes;
pub mod components;
pub mod engine;
mod error;
mod known;
mod signal;
mod txn;
mod waiters;

pub use adapter::TxnBackend;
pub use atomic::{AtomicStore, Inline};
pub use components::{
    Broker, Components, Coordination, DataStore, EndOutcome, Orchestrator, ParkedPick, Queries,
    Retention, RunEnd, StateBackend, StepReport, WaitChange, WaitOutcome, WorkflowData,
};
pub use error::{Result, StoreError};
pub use known::KnownOutcomes;
pub use signal::WorkSignal;
pub use txn::{DataTxn, OwnedClaim, QueryTxn, StoreTxn};
pub use waiters::{FinalWaiters, GroupWait, Registered};
