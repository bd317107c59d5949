//! Reading the head of the queue without walking what was taken.
//!
//! Entries are deleted as they are taken, and until autovacuum removes
//! them their index entries stay at the head of `(app, seq)`: a read of
//! the head that starts at the app's first position walks every one of
//! them (a drained burst of 100,000 made each read cost about a
//! millisecond). So a read starts at the lowest appended position it may
//! still find ([`Ctx::queue_from`](crate::error::Ctx)), which every read
//! moves to the lowest position it took. Positions below 1 (work put at the
//! front: recovered, re-routed, given back) are always read first.
//!
//! Appended positions come from a sequence inside the app's group
//! transactions, which its advisory lock serialises: a position committed
//! later is larger than every one taken before, so nothing is left behind
//! the start by this process. Another process's rolled-back transaction
//! can leave one there, though: a read that finds nothing from the start
//! looks below it, in the same statement.

use std::sync::atomic::Ordering;

use crate::txn::PgTxn;

/// The head of the queue, `$2` positions at most: those before 1 first,
/// then the appended ones from `$3` on; when there are none, the appended
/// ones below `$3` (`$1`: the app).
pub(crate) const QUEUE_HEAD: &str = "WITH a AS MATERIALIZED (SELECT seq FROM ( \
     (SELECT seq FROM pynenc_queue WHERE app = $1 AND seq < 1 ORDER BY seq LIMIT $2) \
     UNION ALL \
     (SELECT seq FROM pynenc_queue WHERE app = $1 AND seq >= $3 ORDER BY seq LIMIT $2)) AS head \
     ORDER BY seq LIMIT $2) \
     SELECT seq FROM a \
     UNION ALL \
     (SELECT seq FROM pynenc_queue WHERE app = $1 AND seq >= 1 AND seq < $3 \
         AND NOT EXISTS (SELECT 1 FROM a) ORDER BY seq LIMIT $2)";

/// The position of a new entry at the front: below every other.
pub(crate) const FRONT_POSITION: &str =
    "LEAST(COALESCE((SELECT MIN(seq) FROM pynenc_queue WHERE app = $1 AND seq < 1), 0), 0) - 1";

impl PgTxn<'_> {
    /// Where a read of the head starts among the appended positions.
    pub(crate) fn queue_from(&self) -> i64 {
        self.ctx.queue_from.load(Ordering::Relaxed).max(1)
    }

    /// After a read of the head that asked for `max` and took the
    /// positions `taken`: the next read starts at the lowest appended one
    /// (a transaction rolled back leaves them there, still found); a read
    /// that took nothing leaves the start where it is (it looked below
    /// it). One that took fewer than it asked for found the queue drained
    /// for the rest of the group (see `Group::queue_drained`).
    pub(crate) fn queue_read(&mut self, max: usize, taken: &[i64]) {
        if let Some(lowest) = taken.iter().copied().filter(|seq| *seq >= 1).min() {
            self.ctx.queue_from.store(lowest, Ordering::Relaxed);
        }
        self.g.queue_drained = taken.len() < max;
    }
}
