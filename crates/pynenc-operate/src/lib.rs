//! Operating a pynenc app: see what runs, what failed and why, who runs it,
//! and steer the work — on every backend, through the query API of its
//! components (every answer from an index kept in the same atomic step as
//! the statuses) and the engine's transitions (every change recorded in the
//! history with its actor).
//!
//! ```no_run
//! use pynenc_operate::{Operate, parse_statuses};
//! use pynenc_model::InvocationQuery;
//!
//! # async fn demo(app: pynenc::Pynenc) -> Result<(), pynenc_operate::OperateError> {
//! // what failed, newest first
//! let failed = app
//!     .inspect()
//!     .list(&InvocationQuery {
//!         statuses: parse_statuses("failed")?,
//!         ..InvocationQuery::new()
//!     })
//!     .await?;
//! for s in &failed.items {
//!     // run each again, linked to the one that failed
//!     app.control().retry_failed(&s.invocation_id).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! - [`Inspector`] ([`Operate::inspect`]): listings with filters and cursor
//!   pages, counts by status and by error kind, the queue, an invocation's
//!   family and waits, the runners.
//! - [`Controller`] ([`Operate::control`]): cancel (one, with children, or
//!   by filter), rerun, retry failed, purge by filter.
//!
//! A runnable tour on the embedded backend: `cargo run -p pynenc-operate
//! --example operate`.
#![deny(missing_docs)]

mod control;
mod error;
mod inspect;

pub use control::{CancelReport, Controller, Rerun};
pub use error::{OperateError, Result};
pub use inspect::{
    parse_cursor, parse_statuses, Family, Inspector, RunnerView, StatusCounts, RECOVERY_LEASE,
};

/// The operator's entry points on an app.
pub trait Operate {
    /// Queries over the app's invocations and runners.
    fn inspect(&self) -> Inspector;
    /// Actions on the app's invocations, acting as `operator`.
    fn control(&self) -> Controller;
}

impl Operate for pynenc::Pynenc {
    fn inspect(&self) -> Inspector {
        Inspector::new(self)
    }

    fn control(&self) -> Controller {
        Controller::new(self)
    }
}
