//! Slots handed from a run that ends to the invocation of the same runner
//! that waits for it.
//!
//! An invocation that pauses to wait for one other invocation offers to
//! take the slot of that run when it ends. The step that records the end
//! ([`super::finisher::Finisher`]) takes the offer and carries the waiter's
//! resume (`Orchestrator::runner_step`: the end, then the resume, which is
//! refused unless what it waited for is final), and the run that ended
//! gives its slot to the waiter instead of taking new work for it. A
//! waiting parent thus goes on without a step of its own and without
//! waiting for a free slot: the pattern of a task that awaits its
//! sub-tasks one by one.

use parking_lot::Mutex;
use pynenc_model::{InvocationId, InvocationOutcome};
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;
use tokio::sync::OwnedSemaphorePermit;

/// What a waiter that offered to take a slot receives.
pub(crate) enum Handed {
    /// It was resumed in the step that recorded the end: the slot of the
    /// run that ended, and the outcomes of what it waited for.
    Slot(OwnedSemaphorePermit, Vec<InvocationOutcome>),
    /// It was resumed, but the slot could not be handed (the run that ended
    /// is gone): it takes a free slot, and does not resume again.
    Resumed(Vec<InvocationOutcome>),
    /// It was not resumed (the resume was refused, or the slot could not be
    /// handed): it resumes on its own, as without an offer.
    OnItsOwn,
}

/// An offer of a waiter, taken by the step that records the end of the run
/// it waits for.
pub(crate) struct Taken {
    /// The invocation that waits.
    pub(crate) waiter: InvocationId,
    reply: oneshot::Sender<Handed>,
}

impl Taken {
    /// Hands `permit` and the outcomes over; the permit comes back when the
    /// waiter is gone (its wait was cancelled).
    pub(crate) fn give(
        self,
        permit: OwnedSemaphorePermit,
        outcomes: Vec<InvocationOutcome>,
    ) -> Option<OwnedSemaphorePermit> {
        match self.reply.send(Handed::Slot(permit, outcomes)) {
            Ok(()) => None,
            Err(Handed::Slot(permit, _)) => Some(permit),
            Err(Handed::Resumed(_) | Handed::OnItsOwn) => None,
        }
    }

    /// Tells the waiter it was resumed but takes a slot of its own.
    pub(crate) fn without_slot(self, outcomes: Vec<InvocationOutcome>) {
        // a waiter that is gone no longer asks
        let _ = self.reply.send(Handed::Resumed(outcomes));
    }

    /// Tells the waiter it resumes on its own.
    pub(crate) fn not_handed(self) {
        // a waiter that is gone no longer asks
        let _ = self.reply.send(Handed::OnItsOwn);
    }
}

/// The offers of a runner's waiting invocations, by the invocation each
/// waits for (one waiter per run: another waiter of the same run resumes on
/// its own).
#[derive(Default)]
pub(crate) struct Handoffs {
    offers: Mutex<FxHashMap<InvocationId, (InvocationId, oneshot::Sender<Handed>)>>,
}

impl Handoffs {
    /// `waiter` offers to take the slot of the run of `waited` when it
    /// ends; `None` when another waiter has offered already. The offer is
    /// withdrawn when it is dropped (however the wait ends, also when the
    /// waiting future is dropped), unless a step took it.
    pub(crate) fn offer(&self, waited: InvocationId, waiter: InvocationId) -> Option<Offer<'_>> {
        let mut offers = self.offers.lock();
        if offers.contains_key(&waited) {
            return None;
        }
        let (reply, answer) = oneshot::channel();
        offers.insert(waited, (waiter, reply));
        Some(Offer {
            handoffs: self,
            waited,
            waiter,
            answer,
        })
    }

    /// Takes the offer of `waiter` back: `true` when no step took it (the
    /// waiter resumes on its own), `false` when a step did (its answer is
    /// on the way).
    pub(crate) fn withdraw(&self, waited: &InvocationId, waiter: &InvocationId) -> bool {
        let mut offers = self.offers.lock();
        match offers.get(waited) {
            Some((w, _)) if w == waiter => {
                offers.remove(waited);
                true
            }
            _ => false,
        }
    }

    /// The offer for the slot of the run of `waited`, taken by the step
    /// that records its end.
    pub(crate) fn take(&self, waited: &InvocationId) -> Option<Taken> {
        self.offers
            .lock()
            .remove(waited)
            .map(|(waiter, reply)| Taken { waiter, reply })
    }
}

/// A waiter's offer ([`Handoffs::offer`]): the answer of the step that
/// takes it arrives on `answer`.
pub(crate) struct Offer<'a> {
    handoffs: &'a Handoffs,
    /// The run whose slot is offered for.
    pub(crate) waited: InvocationId,
    waiter: InvocationId,
    pub(crate) answer: oneshot::Receiver<Handed>,
}

impl Offer<'_> {
    /// [`Handoffs::withdraw`] of this offer.
    pub(crate) fn withdraw(&self) -> bool {
        self.handoffs.withdraw(&self.waited, &self.waiter)
    }
}

impl Drop for Offer<'_> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    async fn permit() -> OwnedSemaphorePermit {
        Arc::new(Semaphore::new(1))
            .acquire_owned()
            .await
            .expect("permit")
    }

    #[tokio::test]
    async fn an_offer_is_taken_once_and_answered() {
        let h = Handoffs::default();
        let (waited, waiter) = (InvocationId::random(), InvocationId::random());
        let mut offer = h.offer(waited, waiter).expect("offered");
        assert!(
            h.offer(waited, InvocationId::random()).is_none(),
            "a second waiter of the same run was offered the slot"
        );
        let taken = h.take(&waited).expect("taken");
        assert_eq!(taken.waiter, waiter);
        assert!(h.take(&waited).is_none(), "taken twice");
        assert!(!offer.withdraw(), "withdrawn after a step took it");
        assert!(
            taken.give(permit().await, Vec::new()).is_none(),
            "the permit came back"
        );
        assert!(matches!((&mut offer.answer).await, Ok(Handed::Slot(_, _))));
    }

    #[tokio::test]
    async fn a_withdrawn_or_dropped_offer_is_not_taken_and_a_gone_waiter_gives_the_slot_back() {
        let h = Handoffs::default();
        let (waited, waiter) = (InvocationId::random(), InvocationId::random());
        let offer = h.offer(waited, waiter).expect("offered");
        assert!(
            !h.withdraw(&waited, &InvocationId::random()),
            "another waiter withdrew it"
        );
        assert!(offer.withdraw());
        assert!(h.take(&waited).is_none(), "a withdrawn offer was taken");
        drop(offer);

        drop(h.offer(waited, waiter).expect("offered again"));
        assert!(h.take(&waited).is_none(), "a dropped offer was taken");

        // taken by a step, then the waiter goes: the slot comes back
        let offer = h.offer(waited, waiter).expect("offered a third time");
        let taken = h.take(&waited).expect("taken");
        drop(offer);
        assert!(
            h.offer(waited, InvocationId::random()).is_some(),
            "the run's slot could not be offered again"
        );
        let back = taken.give(permit().await, Vec::new());
        assert!(back.is_some(), "the slot of a gone waiter was lost");
    }
}
