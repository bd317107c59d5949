//! What a runner that takes invocations ahead keeps: the turns to run
//! bodies (one for a [`crate::PersistentProcessRunner`]'s worker,
//! `runner.max_parallel_slots` for a [`crate::ThreadRunner`]), which
//! invocations' bodies have begun, how many it takes ahead, and the signal
//! that gives back what it took ahead once every turn is held by a long run.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pynenc_model::InvocationId;
use rustc_hash::FxHashSet;
use tokio::sync::{Notify, Semaphore};

use super::prefetch::Prefetch;

/// The state of a runner that takes invocations ahead of its bodies.
pub(crate) struct Turns {
    /// The turns to run a body (one permit per body).
    pub(crate) turn: Arc<Semaphore>,
    /// The bodies running now that have run long.
    long_now: Mutex<usize>,
    /// Held by the one invocation that runs alone (see
    /// [`Turns::others_turns`]).
    alone: Arc<tokio::sync::Mutex<()>>,
    /// The invocations whose body has begun (the others were taken ahead
    /// and wait for their turn), where it is asked (see
    /// [`Turns::tracking_begun`]).
    begun: Option<Mutex<FxHashSet<InvocationId>>>,
    /// How many it takes ahead (its least is the number of bodies).
    pub(crate) prefetch: Prefetch,
    /// Notified when every turn is held by a long run, for the invocations
    /// taken ahead to go back to the queue.
    pub(crate) long_run: Notify,
}

/// Every turn of a runner but one, held while one body runs alone.
pub(crate) struct Alone {
    _turns: Option<tokio::sync::OwnedSemaphorePermit>,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

impl Turns {
    /// For a runner that runs `bodies` bodies at once and whose `slots`
    /// has `most` permits; a body that runs `long_run` is long.
    pub(crate) fn new(slots: &Semaphore, bodies: usize, most: usize, long_run: Duration) -> Self {
        let bodies = bodies.max(1);
        Turns {
            turn: Arc::new(Semaphore::new(bodies)),
            long_now: Mutex::new(0),
            alone: Arc::default(),
            begun: None,
            prefetch: Prefetch::new(slots, bodies, most, long_run),
            long_run: Notify::new(),
        }
    }

    /// Keeps which bodies have begun: a pool that stops a worker process
    /// to cancel a running body asks it (see
    /// `RunnerShared::cancel_running`); elsewhere
    /// every run is spared the bookkeeping.
    pub(crate) fn tracking_begun(mut self) -> Self {
        self.begun = Some(Mutex::default());
        self
    }

    /// How many bodies run at once.
    pub(crate) fn bodies(&self) -> usize {
        self.prefetch.base()
    }

    /// Every turn but one, once they are free, for one invocation at a
    /// time (two taking part of the turns each would wait for each other):
    /// while this is held, the one body that takes the last turn runs
    /// alone.
    pub(crate) async fn others_turns(&self) -> Alone {
        let lock = self.alone.clone().lock_owned().await;
        let others = u32::try_from(self.bodies().saturating_sub(1)).unwrap_or(u32::MAX);
        let turns = self.turn.clone().acquire_many_owned(others).await.ok();
        Alone {
            _turns: turns,
            _lock: lock,
        }
    }

    /// The body of `id` begins.
    pub(crate) fn began(&self, id: InvocationId) {
        if let Some(begun) = &self.begun {
            begun.lock().insert(id);
        }
    }

    /// The run of `id` ended (its body ran or not).
    pub(crate) fn ended(&self, id: &InvocationId) {
        if let Some(begun) = &self.begun {
            begun.lock().remove(id);
        }
    }

    /// Whether the body of `id` has begun (always, where it is not kept).
    pub(crate) fn has_begun(&self, id: &InvocationId) -> bool {
        self.begun
            .as_ref()
            .is_none_or(|begun| begun.lock().contains(id))
    }

    /// A body has run long and goes on: no more taken than the bodies from
    /// now, and once every turn is held by a long run, what waits for its
    /// turn goes back to the queue.
    pub(crate) fn run_is_long(&self, slots: &Semaphore) {
        self.prefetch.run_is_long(slots);
        let mut long_now = self.long_now.lock();
        *long_now += 1;
        if *long_now >= self.bodies() {
            self.long_run.notify_waiters();
        }
    }

    /// A body that had run long ended.
    pub(crate) fn long_run_over(&self) {
        let mut long_now = self.long_now.lock();
        *long_now = long_now.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_runs_alone_at_a_time_and_two_do_not_wait_for_each_other() {
        let slots = Semaphore::new(8);
        let turns = Arc::new(Turns::new(&slots, 2, 8, Duration::from_millis(5)));
        let first = turns.others_turns().await;
        // a second one to run alone waits for the first, holding no turn
        // (each holding one of the two, neither body could begin)
        let t = turns.clone();
        let second = tokio::spawn(async move { t.others_turns().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "the second waits for the first");
        // the body of the first takes the last turn: none is left
        let body = turns
            .turn
            .clone()
            .try_acquire_owned()
            .expect("the last turn");
        assert!(
            turns.turn.clone().try_acquire_owned().is_err(),
            "it runs alone"
        );
        drop(body);
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(2), second)
            .await
            .expect("the second runs alone once the first ended")
            .expect("join");
        assert_eq!(
            turns.turn.available_permits(),
            1,
            "one turn left for its body"
        );
        drop(second);
        assert_eq!(turns.turn.available_permits(), 2);
    }

    #[tokio::test]
    async fn what_waits_goes_back_only_once_every_turn_is_long() {
        let slots = Semaphore::new(8);
        let turns = Turns::new(&slots, 2, 8, Duration::from_millis(5));
        let given_back = turns.long_run.notified();
        tokio::pin!(given_back);
        given_back.as_mut().enable();
        turns.run_is_long(&slots);
        let one_long = tokio::time::timeout(Duration::from_millis(20), given_back.as_mut()).await;
        assert!(one_long.is_err(), "one long body of two gives nothing back");
        turns.long_run_over();
        turns.run_is_long(&slots);
        let again = tokio::time::timeout(Duration::from_millis(20), given_back.as_mut()).await;
        assert!(
            again.is_err(),
            "the first long body ended: still one of two"
        );
        turns.run_is_long(&slots);
        let both = tokio::time::timeout(Duration::from_millis(200), given_back.as_mut()).await;
        assert!(both.is_ok(), "both bodies long: what waits goes back");
    }
}
