//! The host of the invocations one tokio task of a [`super::ThreadRunner`]
//! runs, one after another: the end of each run (batched or not), the
//! pause while it waits for other invocations, and its cancel signal.

use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{InvocationId, InvocationOutcome, InvocationRecord, RunOutcome, RunnerId};
use pynenc_store::{WaitChange, WaitOutcome};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};

use super::cancel::CancelSignal;
use super::handoff::{Handed, Offer};
use super::host::{BodyTurn, InvocationHost, RunFinish, SlotState};
use super::ids::process_context;
use super::process;
use super::shared::{Role, RunnerShared};
use super::thread::spawn_invocation;
use crate::app::Pynenc;
use crate::context::InvocationContext;
use crate::exceptions::{PynencError, Result};

/// The host of the invocations one tokio task of a runner runs in turn.
/// Each task has its own, so that a cancel reaches the one run it is for.
pub(crate) struct ChainHost {
    pub(crate) shared: Arc<RunnerShared>,
    pub(crate) cancel: CancelSignal,
}

impl ChainHost {
    pub(crate) fn new(shared: Arc<RunnerShared>) -> Self {
        ChainHost {
            shared,
            cancel: CancelSignal::default(),
        }
    }

    /// The turn to run a body, in a runner that takes invocations ahead
    /// (`Now(None)` elsewhere, or once `id` is cancelled). A body that has
    /// not begun yet is given back when every turn is held by a long run
    /// (`first`); one that resumes after a pause waits for its turn
    /// whatever runs.
    async fn take_turn(&self, id: &InvocationId, first: bool) -> BodyTurn {
        let Some(turns) = self.shared.turns.as_ref() else {
            return BodyTurn::Now(None);
        };
        let long_run = turns.long_run.notified();
        tokio::select! {
            biased;
            () = self.cancel.cancelled(id) => BodyTurn::Now(None),
            turn = turns.turn.clone().acquire_owned() => BodyTurn::Now(turn.ok()),
            () = long_run, if first => BodyTurn::GiveBack,
        }
    }
}

/// What a wait inside the invocation of `ctx` returns once that invocation
/// was cancelled.
fn own_cancel(ctx: &InvocationContext, runner_id: &RunnerId) -> PynencError {
    PynencError::Cancelled {
        task_id: ctx.record.call.task_id.clone(),
        invocation_id: *ctx.invocation_id(),
        error: Box::new(pynenc_store::engine::cancelled_error(runner_id)),
    }
}

#[async_trait::async_trait]
impl InvocationHost for ChainHost {
    fn runner_id(&self) -> &RunnerId {
        &self.shared.runner_id
    }

    fn cancel_signal(&self) -> Option<&CancelSignal> {
        Some(&self.cancel)
    }

    /// In a runner that takes invocations ahead, the number it takes moves
    /// with the length of its runs (see [`super::prefetch`]).
    fn run_ended(
        &self,
        ran_for: Duration,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Option<OwnedSemaphorePermit> {
        match &self.shared.turns {
            Some(t) => t.prefetch.run_ended(&self.shared.slots, ran_for, permit),
            None => permit,
        }
    }

    /// In a runner that takes invocations ahead: waits for the turn (not
    /// past a cancel of `id`, nor past the moment every turn is held by a
    /// long run), then tells a pool the body begins.
    async fn begin_body(&self, id: &InvocationId) -> BodyTurn {
        let turn = self.take_turn(id, true).await;
        if let BodyTurn::Now(Some(_)) = &turn {
            if let Some(turns) = &self.shared.turns {
                turns.began(*id);
            }
            if matches!(self.shared.role, Role::PoolWorker { .. }) {
                process::report_to_parent("start", id.as_str());
            }
        }
        turn
    }

    fn long_run_after(&self) -> Option<Duration> {
        self.shared.turns.as_ref().map(|t| t.prefetch.long_run())
    }

    /// No more taken than the bodies from now; once every turn is held by
    /// a long run, what waits for its turn goes back to the queue, where
    /// another runner may take it.
    fn run_is_long(&self) {
        if let Some(turns) = &self.shared.turns {
            turns.run_is_long(&self.shared.slots);
        }
    }

    fn long_run_over(&self) {
        if let Some(turns) = &self.shared.turns {
            turns.long_run_over();
        }
    }

    async fn give_back(&self, record: &Arc<InvocationRecord>) {
        self.shared
            .give_back(record, "taken ahead of a long run, back to the queue")
            .await;
    }

    /// The end joins the finisher's next batch (flat combining: one step
    /// for the ends that come in while the steps in flight are on their
    /// way, on every backend — a transaction or round trip saved, or one
    /// lock taken instead of many), which also takes the next invocation of each slot
    /// it frees. The next invocation runs in this tokio task, so a busy
    /// runner spawns no task and hands no slot over per invocation; a
    /// stopping runner, and a run that holds no slot, take none.
    async fn finish(
        &self,
        _app: &Pynenc,
        record: &Arc<InvocationRecord>,
        outcome: RunOutcome,
        ran_for: Duration,
        frees_slot: bool,
    ) -> RunFinish {
        let shared = &self.shared;
        let finished = shared
            .finisher
            .finish(shared, record, outcome, ran_for, frees_slot)
            .await;
        RunFinish {
            end: finished.end,
            next: finished.next.into_iter().collect(),
            handoff: finished.handoff,
        }
    }

    /// Pauses `ctx` while it waits for `ids`: the wait is recorded for
    /// blocking control, the slot is freed, and taken back when all are
    /// final, in the step that reads their outcomes. A wait for one run
    /// offers to take that run's slot when it ends (`super::handoff`): the
    /// step that records the end resumes this invocation, which goes on in
    /// that slot. A cancel of the waiting invocation ends the wait at once
    /// with [`PynencError::Cancelled`], without taking a slot back.
    async fn waiting_for_results(
        &self,
        ctx: &InvocationContext,
        ids: &[InvocationId],
    ) -> Result<Option<Vec<InvocationOutcome>>> {
        let shared = &self.shared;
        let id = *ctx.invocation_id();
        if self.cancel.is_cancelled(&id) {
            return Err(own_cancel(ctx, &shared.runner_id));
        }
        // withdrawn when dropped, unless a step took it
        let mut offer = None;
        {
            let mut slot = ctx.slot.lock().await;
            if slot.waits == 0 {
                // a wait for one run offers to take that run's slot when it
                // ends: before the pause, whose step may take the run for
                // the slot it frees (a step that takes the offer before the
                // pause is recorded finds the waiter not PAUSED: refused)
                if let [waited] = ids {
                    offer = shared.handoffs.offer(*waited, id);
                }
                // the waits, the pause and the next invocation of the slot
                // it frees, in one step
                if !self.pause(&id, ids, &mut slot.permit).await? {
                    // everything waited on has ended: go on, slot kept (the
                    // offer is withdrawn as it is dropped)
                    return Ok(None);
                }
                slot.offered = offer.as_ref().map(|o| o.waited);
                // the slot went to the next invocation, or back to the runner
                slot.permit = None;
                // another body may run meanwhile
                slot.turn = None;
                slot.resumed = false;
                debug!(invocation_id = %id, waiting_for = ids.len(), "paused");
            } else {
                // paused already by another wait of this invocation, which
                // no longer takes the slot of its run (unless a step took the
                // offer already: then that wait holds a slot when it ends)
                if let Some(waited) = slot.offered.take() {
                    shared.handoffs.withdraw(&waited, &id);
                }
                shared
                    .app
                    .orchestrator()
                    .waiting_for_results(Some(&id), ids)
                    .await?;
            }
            slot.waits += 1;
        }
        let handed = match offer.as_mut() {
            Some(offer) => self.handed_or_final(ctx, ids, offer).await,
            None => tokio::select! {
                biased;
                () = self.cancel.cancelled(&id) => Woken::Cancelled,
                waited = shared.app.coordination().wait_final(ids) => Woken::Final(waited),
            },
        };
        let mut slot = ctx.slot.lock().await;
        slot.waits -= 1;
        let waited = match handed {
            Woken::Cancelled => {
                // (the offer is withdrawn as it is dropped)
                slot.offered = None;
                return Err(own_cancel(ctx, &shared.runner_id));
            }
            Woken::Handed(permit, outcomes) => {
                // resumed with the end of the run, in its slot
                slot.offered = None;
                slot.permit = permit.or(slot.permit.take());
                if slot.waits == 0 {
                    self.take_slot_and_turn(ctx, &mut slot).await?;
                    debug!(invocation_id = %id, "resumed in the slot of the run it waited for");
                } else {
                    // another wait goes on: the last one takes the turn
                    slot.resumed = true;
                }
                return Ok(Some(outcomes));
            }
            Woken::Final(waited) => waited,
        };
        if slot.waits == 0 {
            self.take_slot_and_turn(ctx, &mut slot).await?;
            waited?;
            if std::mem::take(&mut slot.resumed) {
                // resumed already, with the end of another run it waited for
                return Ok(None);
            }
            // RESUMED and the outcomes in one step
            let outcomes = shared
                .app
                .orchestrator()
                .resume_with_outcomes(&id, &shared.runner_id, ids)
                .await?;
            debug!(invocation_id = %id, "resumed");
            return Ok(Some(outcomes));
        }
        waited?;
        Ok(None)
    }
}

/// How a wait of [`ChainHost::waiting_for_results`] ended.
enum Woken {
    /// The waiting invocation was cancelled.
    Cancelled,
    /// Everything waited on is final (or could not be waited on).
    Final(pynenc_store::Result<()>),
    /// Resumed with the end of the run it waited for: that run's slot (none
    /// when it could not be handed) and the outcome.
    Handed(Option<OwnedSemaphorePermit>, Vec<InvocationOutcome>),
}

impl ChainHost {
    /// Pauses `id` while it waits for `ids` and, when it pauses, takes the
    /// next invocation for the slot it frees in the same step and runs it
    /// there (taking `permit`). `false` when everything waited on is final
    /// already: nothing recorded, nothing taken.
    async fn pause(
        &self,
        id: &InvocationId,
        ids: &[InvocationId],
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<bool> {
        let shared = &self.shared;
        let take_next = permit.is_some() && !shared.stop.is_stopped();
        let change = WaitChange::Pause {
            waiter: *id,
            waited: ids.to_vec(),
            take_next,
        };
        let mut report = shared
            .app
            .orchestrator()
            .runner_step(
                &shared.runner_id,
                Vec::new(),
                vec![change],
                0,
                Some(process_context()),
            )
            .await;
        if let Some(e) = &report.pick_error {
            warn!(error = %e, "could not take the next invocation of a paused one's slot");
        }
        let paused = match report.waits.pop() {
            Some(Ok(WaitOutcome::Paused(paused))) => paused,
            Some(Ok(WaitOutcome::Resumed(_))) => {
                return Err(PynencError::runner("a pause was answered as a resume"))
            }
            Some(Err(e)) => return Err(e.into()),
            None => return Err(PynencError::runner("a pause got no outcome")),
        };
        let mut next = report.next.into_iter();
        if let Some(record) = next.next() {
            match permit.take().filter(|_| paused) {
                Some(slot) => spawn_invocation(shared, record, slot),
                // no slot for it (a pause that keeps its slot takes nothing)
                None => {
                    shared
                        .give_back(&record, "taken for a slot that was not freed")
                        .await
                }
            }
        }
        for lost in next {
            shared
                .give_back(&lost, "taken for a slot that was not freed")
                .await;
        }
        Ok(paused)
    }

    /// The wait of an invocation that offered to take the slot of the run
    /// it waits for (`offer`): the slot handed with its resume, or, when the run's end
    /// was heard first and no step took the offer, the end alone (the
    /// invocation resumes on its own).
    async fn handed_or_final(
        &self,
        ctx: &InvocationContext,
        ids: &[InvocationId],
        offer: &mut Offer<'_>,
    ) -> Woken {
        let id = *ctx.invocation_id();
        let shared = &self.shared;
        let handed = tokio::select! {
            biased;
            () = self.cancel.cancelled(&id) => return Woken::Cancelled,
            handed = &mut offer.answer => handed.ok(),
            finals = shared.app.coordination().wait_final(ids) => {
                match offer.answer.try_recv() {
                    Ok(handed) => Some(handed),
                    // no step took the offer (or another wait withdrew it)
                    Err(_) if offer.withdraw() => return Woken::Final(finals),
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => return Woken::Final(finals),
                    // a step took it: its answer is on the way
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => tokio::select! {
                        biased;
                        () = self.cancel.cancelled(&id) => return Woken::Cancelled,
                        handed = &mut offer.answer => handed.ok(),
                    },
                }
            }
        };
        match handed {
            Some(Handed::Slot(permit, outcomes)) => Woken::Handed(Some(permit), outcomes),
            Some(Handed::Resumed(outcomes)) => Woken::Handed(None, outcomes),
            // not resumed: on its own, once everything waited on is final
            Some(Handed::OnItsOwn) | None => {
                tokio::select! {
                    biased;
                    () = self.cancel.cancelled(&id) => Woken::Cancelled,
                    waited = shared.app.coordination().wait_final(ids) => Woken::Final(waited),
                }
            }
        }
    }

    /// A slot (unless it holds one) and, in a runner that takes invocations
    /// ahead, a turn, for an invocation that goes on after its waits; not
    /// past a cancel of it.
    async fn take_slot_and_turn(
        &self,
        ctx: &InvocationContext,
        slot: &mut SlotState,
    ) -> Result<()> {
        let shared = &self.shared;
        let id = *ctx.invocation_id();
        if slot.permit.is_none() {
            let permit = tokio::select! {
                biased;
                () = self.cancel.cancelled(&id) => {
                    return Err(own_cancel(ctx, &shared.runner_id));
                }
                permit = shared.slots.clone().acquire_owned() => permit,
            };
            slot.permit = Some(permit.map_err(|_| PynencError::runner("runner slots closed"))?);
        }
        if shared.turns.is_some() && slot.turn.is_none() {
            let BodyTurn::Now(Some(turn)) = self.take_turn(&id, false).await else {
                return Err(own_cancel(ctx, &shared.runner_id));
            };
            slot.turn = Some(turn);
        }
        Ok(())
    }
}
