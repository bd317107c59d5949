//! The data model of pynenc: plain data, shared by every layer above it.
//!
//! - ids: [`InvocationId`] (32 hexadecimal digits, inline), [`RunnerId`],
//!   [`TaskId`], [`CallId`]; and [`Timestamp`];
//! - the status state machine: [`InvocationStatus`], [`StatusRecord`]
//!   (the one place where transitions are checked) and [`replay_history`];
//! - what is called: [`Arguments`] (bound by name, serialized one by one by
//!   a [`Serializer`]) and [`Call`]; large values kept out of band by
//!   [`DataRef`] (the `data` module);
//! - what is stored: [`InvocationRecord`] with its [`ConcurrencySpec`],
//!   [`HistoryEntry`], [`InvocationOutcome`], [`TaskError`];
//! - what is asked and answered: [`RouteRequest`], [`RouteOutcome`],
//!   [`RunOutcome`], [`CycleError`];
//! - what operators ask: [`InvocationQuery`], [`Page`], counts, the
//!   queue, the [`WaitGraph`], [`RunnerInfo`]; [`TaskTotals`] (what was
//!   routed, started, ended per task, and run times, kept across purges);
//!   [`Reuses`] (the calls registration concurrency folded into an
//!   invocation, and how their arguments differed);
//! - a task's effective [`TaskOptions`] (the vocabulary itself lives in
//!   [`pynenc_options`]);
//! - [`mask_url_password`], for connection URLs in messages.
//!
//! Nothing here does input or output, and nothing depends on a store, a
//! backend or the runtime.
#![deny(missing_docs)]

pub mod arguments;
pub mod call;
pub mod data;
pub mod history;
pub mod ids;
pub mod options;
pub mod outcome;
pub mod query;
pub mod record;
pub mod reuse;
pub mod routing;
pub mod secret;
pub mod serializer;
pub mod status;
pub mod time;
pub mod totals;

pub use arguments::{ArgumentPrintMode, Arguments, MovedText};
pub use call::Call;
pub use data::{DataClaim, DataRef, DataSweep, DataUsage};
pub use history::{HistoryEntry, HistoryStep};
pub use ids::{CallId, InvalidId, InvocationId, RunnerId, TaskId};
pub use options::{OptionValue, TaskOptions};
pub use outcome::{
    short_type_name, ErrorDetail, InvocationOutcome, RunOutcome, TaskError, CANCELLED_ERROR_KIND,
    CYCLE_ERROR_KIND, NOT_FOUND_ERROR_KIND, PANIC_KIND, REGISTRATION_CONFLICT_ERROR_KIND,
    RETRY_ERROR_KIND, SERIALIZATION_ERROR_KIND, STATE_BACKEND_ERROR_KIND,
    STATUS_TRANSITION_ERROR_KIND,
};
pub use pynenc_options::{ConcurrencyControl, TaskOptionsSpec};
pub use query::{
    CancelOutcome, Cursor, ErrorKindCount, InvocationQuery, InvocationSummary, LeaseHolder, Order,
    Page, QueueStats, RunnerInfo, StatusCount, TimeRange, TriggerRecord, WaitGraph,
    DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
};
pub use record::{concurrency_key, ConcurrencySpec, InvocationRecord, RegistrationScope};
pub use reuse::{DifferingArgument, ReuseRecord, Reuses, REUSES_KEPT, REUSE_VALUE_MAX_BYTES};
pub use routing::{CallRef, CycleError, RouteOutcome, RouteRequest};
pub use secret::mask_url_password;
pub use serializer::{CodecError, Direction, SerializationError, Serializer};
pub use status::{replay_history, InvocationStatus, Ownership, StatusRecord, TransitionError};
pub use time::Timestamp;
pub use totals::{
    run_time_bucket, RunTimes, TaskCounter, TaskTotals, TotalKey, RUN_TIME_BOUNDS_US,
    RUN_TIME_BUCKETS,
};
