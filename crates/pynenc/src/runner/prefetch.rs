//! How many invocations a runner that takes invocations ahead holds at
//! once (see [`super::turns`]): its number of bodies (one for a
//! [`crate::PersistentProcessRunner`]'s worker, `runner.max_parallel_slots`
//! for a [`crate::ThreadRunner`]) times `runner.prefetch` while its runs are
//! short, so that their ends are recorded together and the next ones come
//! in the same steps; no more than its bodies as soon as a run is long, so
//! that no invocation waits behind a long one while another runner could
//! run it.
//!
//! The limit is the number of the runner's slots: a slot is added for each
//! short run (up to the most), and all but the bodies' are withdrawn once a
//! body has run for `runner.prefetch_long_run_ms` (those in use are
//! withdrawn as their runs end); the invocations taken ahead then go back
//! to the queue for other runners (see [`super::chain`]).

use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limit on the invocations a runner holds at once.
pub(crate) struct Prefetch {
    /// The limit after a long run: the number of bodies.
    base: usize,
    most: usize,
    /// A run at least this long makes the runner take no more than its bodies.
    long_run: Duration,
    state: Mutex<Limit>,
}

struct Limit {
    /// Slots the runner may hold now.
    now: usize,
    /// Slots still to withdraw as the runs holding them end.
    owed: usize,
}

impl Limit {
    /// Withdraws all slots but `base`: the free ones now, the others as
    /// their runs end.
    fn fall_to(&mut self, base: usize, slots: &Semaphore) {
        if self.now > base {
            let withdraw = self.now - base;
            self.owed += withdraw - slots.forget_permits(withdraw);
            self.now = base;
        }
    }
}

impl Prefetch {
    /// A limit between `base` and `most` over `slots` (which has `most`
    /// permits): it starts at `base`, and grows with runs shorter than
    /// `long_run`.
    pub(crate) fn new(slots: &Semaphore, base: usize, most: usize, long_run: Duration) -> Self {
        let base = base.max(1);
        let most = most.max(base);
        let owed = (most - base) - slots.forget_permits(most - base);
        Prefetch {
            base,
            most,
            long_run,
            state: Mutex::new(Limit { now: base, owed }),
        }
    }

    /// The limit after a long run: the number of bodies.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// How long a run lasts before it counts as long.
    pub(crate) fn long_run(&self) -> Duration {
        self.long_run
    }

    /// A run that held `permit` took `ran_for`: the limit moves, and the
    /// slot is given back (`None`) when one is owed.
    pub(crate) fn run_ended(
        &self,
        slots: &Semaphore,
        ran_for: Duration,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Option<OwnedSemaphorePermit> {
        let mut limit = self.state.lock();
        if ran_for >= self.long_run {
            limit.fall_to(self.base, slots);
        } else if limit.now < self.most {
            limit.now += 1;
            if limit.owed > 0 {
                limit.owed -= 1;
            } else {
                slots.add_permits(1);
            }
        }
        match permit {
            Some(p) if limit.owed > 0 => {
                limit.owed -= 1;
                p.forget();
                None
            }
            other => other,
        }
    }

    /// A body has run for [`Prefetch::long_run`] and goes on: no more than
    /// the bodies from now.
    pub(crate) fn run_is_long(&self, slots: &Semaphore) {
        self.state.lock().fall_to(self.base, slots);
    }

    /// The slots the runner may hold now.
    #[cfg(test)]
    fn now(&self) -> usize {
        self.state.lock().now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SHORT: Duration = Duration::from_micros(100);
    const LONG_RUN: Duration = Duration::from_millis(5);

    #[test]
    fn grows_with_short_runs_and_falls_to_one_after_a_long_one() {
        let slots = Arc::new(Semaphore::new(4));
        let limit = Prefetch::new(&slots, 1, 4, LONG_RUN);
        assert_eq!(slots.available_permits(), 1);
        for expected in 2..=4 {
            assert!(limit.run_ended(&slots, SHORT, None).is_none());
            assert_eq!(limit.now(), expected);
            assert_eq!(slots.available_permits(), expected);
        }
        // never past the most
        limit.run_ended(&slots, SHORT, None);
        assert_eq!((limit.now(), slots.available_permits()), (4, 4));
        // a long run, all slots free: withdrawn at once
        limit.run_ended(&slots, LONG_RUN, None);
        assert_eq!((limit.now(), slots.available_permits()), (1, 1));
    }

    #[test]
    fn slots_in_use_are_withdrawn_as_their_runs_end() {
        let slots = Arc::new(Semaphore::new(3));
        let limit = Prefetch::new(&slots, 1, 3, LONG_RUN);
        limit.run_ended(&slots, SHORT, None);
        limit.run_ended(&slots, SHORT, None);
        let held: Vec<OwnedSemaphorePermit> = (0..3)
            .map(|_| slots.clone().try_acquire_owned().unwrap())
            .collect();
        let mut held = held.into_iter();
        // a long run while all three are held: two are owed
        let first = limit.run_ended(&slots, LONG_RUN, held.next());
        assert!(first.is_none(), "the slot of the long run is withdrawn");
        let second = limit.run_ended(&slots, LONG_RUN, held.next());
        assert!(second.is_none(), "the second owed slot is withdrawn");
        let third = limit.run_ended(&slots, LONG_RUN, held.next());
        assert!(third.is_some(), "one slot stays");
        drop(third);
        assert_eq!(slots.available_permits(), 1);
    }

    #[test]
    fn several_bodies_fall_back_to_their_number() {
        let slots = Arc::new(Semaphore::new(12));
        let limit = Prefetch::new(&slots, 3, 12, LONG_RUN);
        assert_eq!((limit.now(), slots.available_permits()), (3, 3));
        for _ in 0..20 {
            limit.run_ended(&slots, SHORT, None);
        }
        assert_eq!((limit.now(), slots.available_permits()), (12, 12));
        limit.run_is_long(&slots);
        assert_eq!((limit.now(), slots.available_permits()), (3, 3));
        // a long run with nothing held: nothing more to withdraw
        limit.run_ended(&slots, LONG_RUN, None);
        assert_eq!((limit.now(), slots.available_permits()), (3, 3));
    }
}
