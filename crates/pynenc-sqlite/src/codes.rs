//! The stable status codes of the schema: shared with the other SQL backend.

pub(crate) use pynenc_store::codes::{status_code, status_from_code, FAILED_CODE, FINAL_CODES};

/// The condition "the invocation is in a runner's hands" (`PENDING`,
/// `RUNNING`, `PAUSED`, `RESUMED`), as the partial indexes
/// `invocations_running` and `invocations_owned` write it: comparisons
/// joined by OR (a constant `IN` list of more than two values costs a
/// temporary b-tree per statement), spelled the same in every query that
/// uses those indexes.
macro_rules! owned_running {
    () => {
        "(status = 5 OR status = 7 OR status = 8 OR status = 9)"
    };
}

/// The condition "available for a run" (`REGISTERED`, `REROUTED`,
/// `RETRY`), as the partial index `invocations_blocking` writes it (see
/// [`owned_running`]).
macro_rules! available {
    () => {
        "(status = 1 OR status = 4 OR status = 12)"
    };
}

/// The condition "final" (`FAILED`, `SUCCESS`, `CONCURRENCY_CONTROLLED_FINAL`,
/// `CANCELLED`) of a history row (alias `h`), without a temporary b-tree.
macro_rules! history_final {
    () => {
        "(h.status = 3 OR h.status = 13 OR h.status = 14 OR h.status = 15)"
    };
}

pub(crate) use {available, history_final, owned_running};
