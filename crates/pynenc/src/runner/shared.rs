//! The state a [`super::ThreadRunner`] shares with the invocations it
//! runs: its slots, what runs where, its role, and what it does for them
//! (handing slots over, giving work back, cancelling).

use std::sync::Arc;

use parking_lot::Mutex;
use pynenc_model::{InvocationId, InvocationRecord, RunnerId};
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::cancel::log_if_cancelled;
use super::chain::ChainHost;
use super::finisher::Finisher;
use super::handoff::Handoffs;
use super::process;
use super::stop::StopSignal;
use super::turns::Turns;
use crate::app::Pynenc;

/// What a [`ThreadRunner`] is: a runner of its own, or a worker process of
/// a pool runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A runner of its own: listed among the runners, cancels in-process.
    Standalone,
    /// A worker process of a pool: reports what it runs to the pool (which
    /// lists it), and beats its own heartbeat unlisted. With
    /// `cancel_by_parent`, a cancel is reported to the pool, which stops
    /// the whole process; without, it is done in-process.
    PoolWorker {
        /// Whether the pool stops the process on a cancel.
        cancel_by_parent: bool,
        /// Whether it runs one invocation body at a time (its other slots
        /// hold invocations taken ahead, which wait for their turn).
        one_body: bool,
    },
}

/// An invocation running in a runner: its record, the tokio task running
/// it and the host of that task (with its cancel signal).
pub(crate) struct Running {
    pub(crate) record: Arc<InvocationRecord>,
    pub(crate) abort: AbortHandle,
    pub(crate) chain: Arc<ChainHost>,
}

/// State shared by a runner and the invocations it runs.
pub(crate) struct RunnerShared {
    pub(crate) runner_id: RunnerId,
    pub(crate) app: Pynenc,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) max_slots: usize,
    pub(crate) stop: Arc<StopSignal>,
    /// Running invocations by the address of their record (no key to
    /// allocate).
    pub(crate) running: Mutex<FxHashMap<usize, Running>>,
    pub(crate) idle: Notify,
    /// Notified when the runner starts running something after running nothing.
    pub(crate) busy: Notify,
    pub(crate) finisher: Finisher,
    /// Waiting invocations that take the slot of the run they wait for
    /// when it ends.
    pub(crate) handoffs: Handoffs,
    pub(crate) role: Role,
    /// Hosts of tokio tasks that ended, for the next ones (one allocation
    /// fewer per task); cleared when the runner stops.
    pub(crate) spare_chains: Mutex<Vec<Arc<ChainHost>>>,
    /// In a runner that takes invocations ahead of its bodies: the turns
    /// to run them, and how many it takes.
    pub(crate) turns: Option<Turns>,
}

impl RunnerShared {
    /// Lists `next`, taken for the slot of `from`, as running in the tokio
    /// task of `from` (before `from` leaves the list, so a stop always
    /// finds them).
    pub(crate) fn hand_over(&self, from: &Arc<InvocationRecord>, next: &[Arc<InvocationRecord>]) {
        if next.is_empty() {
            return;
        }
        let mut running = self.running.lock();
        let Some((abort, chain)) = running
            .get(&running_key(from))
            .map(|r| (r.abort.clone(), r.chain.clone()))
        else {
            return;
        };
        for n in next {
            running.insert(
                running_key(n),
                Running {
                    record: n.clone(),
                    abort: abort.clone(),
                    chain: chain.clone(),
                },
            );
        }
    }

    /// An invocation taken that will not run here (its slot's run is gone
    /// as the runner stops, or it was taken ahead of a long run): `KILLED`
    /// → `REROUTED`, back to the head of the queue (or `CANCELLED`, when a
    /// cancel was asked for it); `why` is logged.
    pub(crate) async fn give_back(&self, record: &Arc<InvocationRecord>, why: &str) {
        self.running.lock().remove(&running_key(record));
        let id = &record.invocation_id;
        match self
            .app
            .orchestrator()
            .kill_and_reroute(id, &self.runner_id)
            .await
        {
            Ok(()) => {
                let task_id = Some(record.call.task_id.as_ref());
                if !log_if_cancelled(&self.app, &self.runner_id, id, task_id).await {
                    info!(invocation_id = %id, "re-routed: {why}");
                }
            }
            Err(e) => warn!(invocation_id = %id, error = %e, "could not re-route"),
        }
    }

    /// A host for a new tokio task: a spare one, or a new one.
    pub(crate) fn take_chain(self: &Arc<Self>) -> Arc<ChainHost> {
        let spare = self.spare_chains.lock().pop();
        spare.unwrap_or_else(|| Arc::new(ChainHost::new(self.clone())))
    }

    /// The host of a tokio task that ended, kept for a next one (a few).
    pub(crate) fn keep_chain(&self, chain: Arc<ChainHost>) {
        let mut spare = self.spare_chains.lock();
        if spare.len() < self.max_slots.min(64) {
            spare.push(chain);
        }
    }

    /// The invocations running here now.
    pub(crate) fn running_ids(&self) -> Vec<InvocationId> {
        self.running
            .lock()
            .values()
            .map(|r| r.record.invocation_id)
            .collect()
    }

    /// Stops those of `ids` that run here (in-process: see
    /// [`super::cancel`]), or, in a worker whose pool stops the process on a
    /// cancel and unless `in_process`, tells the pool (for those whose body
    /// has begun: one taken ahead is cancelled in-process, before its body).
    pub(crate) fn cancel_running(&self, ids: &[InvocationId], in_process: bool) {
        let by_parent = matches!(
            self.role,
            Role::PoolWorker {
                cancel_by_parent: true,
                ..
            }
        );
        let running = self.running.lock();
        for r in running.values() {
            let id = &r.record.invocation_id;
            if !ids.contains(id) {
                continue;
            }
            // one taken ahead whose body has not begun ends here, at its turn
            let begun = self.turns.as_ref().is_none_or(|t| t.has_begun(id));
            if by_parent && !in_process && begun {
                debug!(invocation_id = %id, "cancel requested: asking the pool to stop this process");
                let line = format!("{id} {}", r.record.call.task_id);
                process::report_to_parent("cancel", &line);
            } else if r.chain.cancel.request(id) {
                info!(
                    runner_id = %self.runner_id,
                    task_id = %r.record.call.task_id,
                    invocation_id = %id,
                    "cancel requested: stopping the invocation"
                );
            }
        }
    }
}

/// The key of a running invocation in [`RunnerShared::running`].
pub(crate) fn running_key(record: &Arc<InvocationRecord>) -> usize {
    Arc::as_ptr(record) as usize
}
