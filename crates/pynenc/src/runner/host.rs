//! What an invocation needs from the runner hosting it.

use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{
    InvocationId, InvocationOutcome, InvocationRecord, InvocationStatus, RunOutcome, RunnerId,
};
use pynenc_store::RunEnd;
use tokio::sync::OwnedSemaphorePermit;

use super::cancel::CancelSignal;
use crate::app::Pynenc;
use crate::context::InvocationContext;
use crate::exceptions::{PynencError, Result};

/// The slot and pause state of one running invocation.
#[derive(Default)]
pub(crate) struct SlotState {
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    pub(crate) waits: usize,
    /// While it waits for one run: that run, whose slot it offered to take
    /// when the run ends (`super::handoff`).
    pub(crate) offered: Option<InvocationId>,
    /// Resumed by the end of a run it waited for while another of its
    /// waits went on (the last wait then does not resume it again).
    pub(crate) resumed: bool,
    /// Its turn, in a host that takes invocations ahead (given up while
    /// it is paused).
    pub(crate) turn: Option<OwnedSemaphorePermit>,
}

/// What an invocation taken ahead does when its wait for a turn ends.
pub(crate) enum BodyTurn {
    /// Its body begins now, holding the turn (`None`: a host without turns,
    /// or the invocation was cancelled meanwhile).
    Now(Option<OwnedSemaphorePermit>),
    /// It goes back to the queue, for another worker: a long run began.
    GiveBack,
}

/// How recording the end of a run went, and what its slot takes next.
pub(crate) struct RunFinish {
    /// The status the run ended in, or why the end was not recorded.
    pub(crate) end: Result<InvocationStatus>,
    /// Invocations taken for the slot in the same step (already `RUNNING`).
    pub(crate) next: Vec<Arc<InvocationRecord>>,
    /// The invocation that waited for this run, resumed in the same step:
    /// the run's slot goes to it (`super::handoff`).
    pub(crate) handoff: Option<Handoff>,
}

/// A waiter resumed with the end of the run it waited for, and the outcomes
/// it reads: the run's slot is handed to it.
pub(crate) struct Handoff {
    pub(crate) to: super::handoff::Taken,
    pub(crate) outcomes: Vec<InvocationOutcome>,
}

/// What an invocation needs from the runner hosting it.
#[async_trait::async_trait]
pub(crate) trait InvocationHost: Send + Sync {
    /// The owner id of the invocations it runs.
    fn runner_id(&self) -> &RunnerId;
    /// Called when the invocation of `ctx` waits for `ids`: the host decides
    /// how it waits (pause and free the slot, or hand the wait to a parent).
    /// The outcomes of `ids` when it read them in the step that resumed the
    /// invocation, `None` when the caller reads them.
    async fn waiting_for_results(
        &self,
        ctx: &InvocationContext,
        ids: &[InvocationId],
    ) -> Result<Option<Vec<InvocationOutcome>>>;
    /// The cancel signal of the runs it hosts, where a cancel reaches the
    /// body in this process (see [`super::cancel`]); `None` where a cancel
    /// stops the whole process instead.
    fn cancel_signal(&self) -> Option<&CancelSignal> {
        None
    }
    /// The run that held `permit` (its slot) took `ran_for`: the slot it
    /// keeps for a next invocation (`None`: the host withdrew it).
    fn run_ended(
        &self,
        ran_for: Duration,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Option<OwnedSemaphorePermit> {
        let _ = ran_for;
        permit
    }
    /// Waits for the turn of `id` to run its body, in a host that takes
    /// invocations ahead (asked only of a host with
    /// [`InvocationHost::long_run_after`]); `Now(None)` when `id` was
    /// cancelled while it waited. The body begins when this returns `Now`.
    async fn begin_body(&self, id: &InvocationId) -> BodyTurn {
        let _ = id;
        BodyTurn::Now(None)
    }
    /// After how long a body that still runs counts as long, in a host
    /// that takes invocations ahead of its bodies (`None` elsewhere: such
    /// a host has no turns either).
    fn long_run_after(&self) -> Option<Duration> {
        None
    }
    /// A body ran for [`InvocationHost::long_run_after`] and goes on.
    fn run_is_long(&self) {}
    /// A body that [`InvocationHost::run_is_long`] was told of ended.
    fn long_run_over(&self) {}
    /// `record`, taken ahead, is given back to the queue instead of run
    /// (every turn was held by a long run before its turn came).
    async fn give_back(&self, record: &Arc<InvocationRecord>) {
        let _ = record;
    }
    /// Records the end of the run of `record`, whose body ran for
    /// `ran_for` (added to the task's run times). A host may take its next
    /// invocations in the same step: they are returned, already `RUNNING`
    /// for it, and the caller runs them. `frees_slot` tells whether the run
    /// held a slot at its end: one that did not (a run cancelled while it
    /// was `PAUSED`) takes nothing next.
    async fn finish(
        &self,
        app: &Pynenc,
        record: &Arc<InvocationRecord>,
        outcome: RunOutcome,
        ran_for: Duration,
        frees_slot: bool,
    ) -> RunFinish {
        let _ = frees_slot;
        let end = RunEnd {
            invocation_id: record.invocation_id,
            outcome,
            ran_for: Some(ran_for),
        };
        let report = app
            .orchestrator()
            .finish_many_and_start(self.runner_id(), vec![end], 0, None)
            .await;
        let end = match report.ends.into_iter().next() {
            Some(end) => end.into_result().map_err(Into::into),
            None => Err(PynencError::runner("the end of the run got no outcome")),
        };
        RunFinish {
            end,
            next: Vec::new(),
            handoff: None,
        }
    }
}
