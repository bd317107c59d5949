//! Reading the head of the queue without walking what was taken.
//!
//! Entries are deleted as they are taken, and until autovacuum removes
//! them their index entries stay at the head of `(app, seq)`: a read of
//! the head that starts at the app's first position walks every one of
//! them (a drained burst of 100,000 made each read cost about a
//! millisecond). So a read starts at the lowest appended position it may
//! still find ([`QueueKnown`]), which every read
//! moves to the lowest position it took. Positions below 1 (work put at the
//! front: recovered, re-routed, given back) are always read first.
//!
//! Appended positions come from a sequence inside the app's group
//! transactions, which its advisory lock serialises: a position committed
//! later is larger than every one taken before, so nothing is left behind
//! the start by this process. Another process's rolled-back transaction
//! can leave one there, though: a read that finds nothing from the start
//! looks below it, in the same statement.
//!
//! A group that found the queue drained also tells the groups after it
//! ([`QueueKnown`]): until work may have been queued, their pick-ups answer
//! without reading it (a runner looks for work after every start and end,
//! and in a quiet app each look was a locked round trip or two).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pynenc_model::InvocationId;

use crate::txn::{Group, PgTxn};

/// How long a drained queue is believed without a read, at most (the
/// notifications of other processes end it sooner; this bounds what a
/// notification lost without the listener noticing could delay).
pub(crate) const DRAINED_FOR: Duration = Duration::from_millis(250);

/// What this process knows of its app's queue between group transactions.
///
/// Every way work enters the queue moves the store's work epoch: a group
/// of this process that queued (after its commit), a `w` notification of
/// another process, a purge, the listener reconnecting. So a queue found
/// drained by a committed group at epoch `e` is still drained while the
/// epoch is `e`; the available invocations a pick-up also looks for
/// (waited ones, for blocking control) are always queued too. The belief
/// holds only while the listener hears the other processes, and for
/// [`DRAINED_FOR`] at most.
pub(crate) struct QueueKnown {
    /// Where a read of the head starts among the appended positions.
    from: AtomicI64,
    /// One more than the epoch at which a committed group found the queue
    /// drained (0: not known drained).
    drained_at: AtomicU64,
    /// When that group began, in microseconds since `origin`.
    drained_us: AtomicU64,
    /// Whether the listener hears the other processes' notifications.
    hearing: AtomicBool,
    origin: Instant,
}

impl Default for QueueKnown {
    fn default() -> QueueKnown {
        QueueKnown {
            from: AtomicI64::new(0),
            drained_at: AtomicU64::new(0),
            drained_us: AtomicU64::new(0),
            hearing: AtomicBool::new(false),
            origin: Instant::now(),
        }
    }
}

impl QueueKnown {
    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The listener hears the other processes (or stopped hearing them).
    pub(crate) fn hearing(&self, yes: bool) {
        self.hearing.store(yes, Ordering::Release);
    }

    /// Whether the listener hears the other processes.
    pub(crate) fn hears(&self) -> bool {
        self.hearing.load(Ordering::Acquire)
    }

    /// After group `g` committed (or ended having written nothing): what
    /// its reads of the queue found is what the next groups know. A group
    /// that began while the listener was not hearing tells nothing.
    ///
    /// A group that `queued` (and read the queue after, as a parked pick
    /// does) moves the epoch once itself, after its commit: what it found
    /// holds at the epoch after that move. Another move meanwhile makes
    /// the epoch larger still, and the group then tells nothing.
    pub(crate) fn after(&self, g: &Group, began: Option<u64>, queued: bool) {
        if !g.queue_read {
            return;
        }
        match began {
            Some(us) if g.queue_drained => {
                self.drained_us.store(us, Ordering::Release);
                let epoch = g.epoch + u64::from(queued);
                self.drained_at.store(epoch + 1, Ordering::Release);
            }
            _ => self.drained_at.store(0, Ordering::Release),
        }
    }

    /// Whether a group beginning now at work epoch `epoch` would take the
    /// queue for drained.
    pub(crate) fn drained_at(&self, epoch: u64) -> bool {
        self.begin(epoch).0
    }

    /// A group begins at work epoch `epoch`: whether it may take the queue
    /// for drained, and when it began if the listener hears (for
    /// [`QueueKnown::after`]).
    pub(crate) fn begin(&self, epoch: u64) -> (bool, Option<u64>) {
        if !self.hearing.load(Ordering::Acquire) {
            return (false, None);
        }
        let now = self.now_us();
        let drained = self.drained_at.load(Ordering::Acquire) == epoch + 1
            && now.saturating_sub(self.drained_us.load(Ordering::Acquire))
                < DRAINED_FOR.as_micros() as u64;
        (drained, Some(now))
    }
}

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
        self.ctx.queue.from.load(Ordering::Relaxed).max(1)
    }

    /// [`pynenc_store::StoreTxn::dequeue`] from the group's own held
    /// appends (see [`crate::txn::Group::own_queue`]): the oldest `max`,
    /// never written. Once none is left, the queue is drained, and the
    /// group has queued nothing to announce.
    pub(crate) fn dequeue_own(&mut self, max: usize) -> Vec<InvocationId> {
        let taken = self.g.pending.take_enqueued(max);
        self.g.queue_read = true;
        self.g.queue_drained = self.g.pending.enqueued().is_empty();
        if self.g.queue_drained {
            self.g.effects.enqueued = false;
        }
        taken
    }

    /// After a read of the head that asked for `max` and took the
    /// positions `taken`: the next read starts at the lowest appended one
    /// (a transaction rolled back leaves them there, still found); a read
    /// that took nothing leaves the start where it is (it looked below
    /// it). One that took fewer than it asked for found the queue drained
    /// for the rest of the group (see `Group::queue_drained`).
    pub(crate) fn queue_read(&mut self, max: usize, taken: &[i64]) {
        if let Some(lowest) = taken.iter().copied().filter(|seq| *seq >= 1).min() {
            self.ctx.queue.from.store(lowest, Ordering::Relaxed);
        }
        self.g.queue_drained = taken.len() < max;
        self.g.queue_read = true;
    }
}
