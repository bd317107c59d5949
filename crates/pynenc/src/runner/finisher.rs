//! Recording the ends of runs in batches, by flat combining.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pynenc_model::{InvocationRecord, InvocationStatus, RunOutcome};
use pynenc_store::{EndOutcome, RunEnd};
use tracing::warn;

use super::ids::process_context;
use super::shared::RunnerShared;
use crate::exceptions::{PynencError, Result};

/// The answer to a queued end: its result, and the next invocation of the
/// slot it frees, if one was taken.
pub(crate) struct Finished {
    pub(crate) end: Result<InvocationStatus>,
    pub(crate) next: Option<Arc<InvocationRecord>>,
}

type FinishReply = tokio::sync::oneshot::Sender<Finished>;

/// A queued end: the run, its outcome, whether it frees a slot (takes a
/// next invocation), and where to answer.
type QueuedEnd = (Arc<InvocationRecord>, RunEnd, bool, FinishReply);

/// The end of the caller that records a batch: answered directly.
type OwnEnd<'a> = (&'a Arc<InvocationRecord>, RunEnd, bool);

/// Records the ends of runs in batches by flat combining: a finishing
/// invocation that finds no flush in progress records its own end at once,
/// with whatever others queued; one that finds a flush in progress queues
/// its end, and the flushing caller takes it too (one
/// `finish_many_and_start` for all of them: one transaction, round trip or
/// lock), which also takes the next invocation of every slot the batch
/// frees.
#[derive(Default)]
pub(crate) struct Finisher {
    queue: Mutex<Vec<QueuedEnd>>,
    flushing: AtomicBool,
}

/// Clears the flushing flag even if the flushing future is dropped.
struct FlushGuard<'a>(&'a AtomicBool);

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Finisher {
    /// Records the end of the run of `record` (which took `ran_for`), at
    /// once or with the batch in flight; a next invocation is taken for it
    /// only if it `frees_slot`.
    pub(crate) async fn finish(
        &self,
        host: &RunnerShared,
        record: &Arc<InvocationRecord>,
        outcome: RunOutcome,
        ran_for: Duration,
        frees_slot: bool,
    ) -> Finished {
        let end = RunEnd {
            invocation_id: record.invocation_id,
            outcome,
            ran_for: Some(ran_for),
        };
        if !self.flushing.swap(true, Ordering::AcqRel) {
            // no flush in progress: this end goes now, with what waits
            let guard = FlushGuard(&self.flushing);
            let queued = std::mem::take(&mut *self.queue.lock());
            let own = self
                .record(host, Some((record, end, frees_slot)), queued)
                .await;
            drop(guard);
            // what queued meanwhile
            self.flush(host).await;
            return own.unwrap_or_else(|| not_recorded(record));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .lock()
            .push((record.clone(), end, frees_slot, reply));
        self.flush(host).await;
        answer.await.unwrap_or_else(|_| not_recorded(record))
    }

    /// Records the queued ends, unless another caller is already doing it
    /// (it will take them too).
    async fn flush(&self, host: &RunnerShared) {
        while !self.queue.lock().is_empty() && !self.flushing.swap(true, Ordering::AcqRel) {
            let guard = FlushGuard(&self.flushing);
            let queued = std::mem::take(&mut *self.queue.lock());
            if !queued.is_empty() {
                self.record(host, None, queued).await;
            }
            drop(guard);
        }
    }

    /// Records the `queued` ends and the caller's `own` in one step and
    /// answers each queued one; the answer to `own` is returned.
    async fn record(
        &self,
        host: &RunnerShared,
        own: Option<OwnEnd<'_>>,
        queued: Vec<QueuedEnd>,
    ) -> Option<Finished> {
        let orch = host.app.orchestrator();
        // a stopping runner takes no new work
        let max_next = if host.stop.is_stopped() {
            0
        } else {
            queued.iter().filter(|(_, _, frees, _)| *frees).count()
                + usize::from(own.as_ref().is_some_and(|(_, _, frees)| *frees))
        };
        let mut ends = Vec::with_capacity(queued.len() + 1);
        let mut waiting = Vec::with_capacity(queued.len());
        for (record, end, frees_slot, reply) in queued {
            ends.push(end);
            waiting.push((record, frees_slot, reply));
        }
        let own = own.map(|(record, end, frees_slot)| {
            ends.push(end);
            (record, frees_slot)
        });
        let report = orch
            .finish_many_and_start(&host.runner_id, ends, max_next, Some(process_context()))
            .await;
        if let Some(e) = &report.pick_error {
            warn!(error = %e, "could not take next invocations while recording ends");
        }
        let mut next = report.next.into_iter();
        let mut answer =
            |record: &Arc<InvocationRecord>, frees_slot: bool, end: Option<EndOutcome>| {
                let taken = if frees_slot { next.next() } else { None };
                if let Some(n) = &taken {
                    host.hand_over(record, std::slice::from_ref(n));
                }
                Finished {
                    end: match end {
                        Some(end) => end.into_result().map_err(Into::into),
                        None => Err(PynencError::runner("the end of the run got no outcome")),
                    },
                    next: taken,
                }
            };
        let mut results = report.ends.into_iter();
        for (record, frees_slot, reply) in waiting {
            let finished = answer(&record, frees_slot, results.next());
            if let Err(Finished {
                next: Some(lost), ..
            }) = reply.send(finished)
            {
                // the run that was to take it is gone
                host.give_back(&lost, "its slot's run is gone").await;
            }
        }
        let own = own.map(|(record, frees_slot)| answer(record, frees_slot, results.next()));
        for lost in next {
            host.give_back(&lost, "its slot's run is gone").await;
        }
        own
    }
}

/// The answer to an end that was not recorded (the runner is stopping).
fn not_recorded(record: &InvocationRecord) -> Finished {
    Finished {
        end: Err(PynencError::runner(format!(
            "the end of invocation {} was not recorded (runner stopping)",
            record.invocation_id
        ))),
        next: None,
    }
}
