//! The stable codes of statuses in the schemas of the SQL backends
//! (SQLite, PostgreSQL).
//!
//! The codes are an on-disk format: a status's code is its position in
//! `STATUS_CODES`, and never changes (a new status gets the next code).
//! The partial indexes of the backends' schemas name some of them.

use pynenc_model::InvocationStatus;

/// The statuses by their stable code in the schema (see the crate
/// documentation): a status's code is its position here.
const STATUS_CODES: [InvocationStatus; 16] = {
    use InvocationStatus::*;
    [
        Scheduled,
        Registered,
        ConcurrencyControlled,
        ConcurrencyControlledFinal,
        Rerouted,
        Pending,
        PendingRecovery,
        Running,
        Paused,
        Resumed,
        RunningRecovery,
        Killed,
        Retry,
        Success,
        Failed,
        Cancelled,
    ]
};

/// The stable code of a status in the schema.
pub fn status_code(status: InvocationStatus) -> i64 {
    STATUS_CODES
        .iter()
        .position(|s| *s == status)
        .map_or(-1, |i| i as i64)
}

/// The status of a code, if it is one.
pub fn status_from_code(code: i64) -> Option<InvocationStatus> {
    usize::try_from(code)
        .ok()
        .and_then(|i| STATUS_CODES.get(i).copied())
}

/// The codes of the final statuses (`CONCURRENCY_CONTROLLED_FINAL`,
/// `SUCCESS`, `FAILED`, `CANCELLED`), as the queries spell them.
pub const FINAL_CODES: [i64; 4] = [3, 13, 14, 15];

/// The code of `FAILED`.
pub const FAILED_CODE: i64 = 14;
