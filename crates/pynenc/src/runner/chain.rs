//! The host of the invocations one tokio task of a [`super::ThreadRunner`]
//! runs, one after another: the end of each run (batched or not), the
//! pause while it waits for other invocations, and its cancel signal.

use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{InvocationId, InvocationOutcome, InvocationRecord, RunOutcome, RunnerId};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use super::cancel::CancelSignal;
use super::host::{BodyTurn, InvocationHost, RunFinish};
use super::process;
use super::shared::{Role, RunnerShared};
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
        }
    }

    /// Pauses `ctx` while it waits for `ids`: the wait is recorded for
    /// blocking control, the slot is freed, and taken back when all are
    /// final, in the step that reads their outcomes. A cancel of the waiting
    /// invocation ends the wait at once with [`PynencError::Cancelled`],
    /// without taking a slot back.
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
        {
            let mut slot = ctx.slot.lock().await;
            let orchestrator = shared.app.orchestrator();
            if slot.waits == 0 {
                // the waits and the pause in one step
                if !orchestrator
                    .pause_for_results(&id, &shared.runner_id, ids)
                    .await?
                {
                    // everything waited on has ended: go on, slot kept
                    return Ok(None);
                }
                slot.permit = None;
                // another body may run meanwhile
                slot.turn = None;
                debug!(invocation_id = %id, waiting_for = ids.len(), "paused");
            } else {
                // paused already by another wait of this invocation
                orchestrator.waiting_for_results(Some(&id), ids).await?;
            }
            slot.waits += 1;
        }
        let waited = tokio::select! {
            biased;
            () = self.cancel.cancelled(&id) => None,
            waited = shared.app.coordination().wait_final(ids) => Some(waited),
        };
        let mut slot = ctx.slot.lock().await;
        slot.waits -= 1;
        let Some(waited) = waited else {
            return Err(own_cancel(ctx, &shared.runner_id));
        };
        if slot.waits == 0 {
            let permit = tokio::select! {
                biased;
                () = self.cancel.cancelled(&id) => {
                    return Err(own_cancel(ctx, &shared.runner_id));
                }
                permit = shared.slots.clone().acquire_owned() => permit,
            };
            slot.permit = Some(permit.map_err(|_| PynencError::runner("runner slots closed"))?);
            if self.shared.turns.is_some() {
                let BodyTurn::Now(Some(turn)) = self.take_turn(&id, false).await else {
                    return Err(own_cancel(ctx, &shared.runner_id));
                };
                slot.turn = Some(turn);
            }
            waited?;
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
