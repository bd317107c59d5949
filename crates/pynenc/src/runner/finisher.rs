//! Recording the ends of runs in batches, by flat combining.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pynenc_model::{InvocationRecord, InvocationStatus, RunOutcome};
use pynenc_store::RunEnd;
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
/// next invocation), and where to answer (`None`: the end of the caller
/// that records the batch, answered directly).
type QueuedEnd = (Arc<InvocationRecord>, RunEnd, bool, Option<FinishReply>);

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
            let mut batch = std::mem::take(&mut *self.queue.lock());
            batch.push((record.clone(), end, frees_slot, None));
            let own = self.record(host, batch).await;
            drop(guard);
            // what queued meanwhile
            self.flush(host).await;
            return own.unwrap_or_else(|| not_recorded(record));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .lock()
            .push((record.clone(), end, frees_slot, Some(reply)));
        self.flush(host).await;
        answer.await.unwrap_or_else(|_| not_recorded(record))
    }

    /// Records the queued ends, unless another caller is already doing it
    /// (it will take them too).
    async fn flush(&self, host: &RunnerShared) {
        while !self.queue.lock().is_empty() && !self.flushing.swap(true, Ordering::AcqRel) {
            let guard = FlushGuard(&self.flushing);
            let batch = std::mem::take(&mut *self.queue.lock());
            if !batch.is_empty() {
                self.record(host, batch).await;
            }
            drop(guard);
        }
    }

    /// Records `batch` in one step and answers each end; the answer of the
    /// end without a reply channel (the caller's own) is returned.
    async fn record(&self, host: &RunnerShared, batch: Vec<QueuedEnd>) -> Option<Finished> {
        let orch = host.app.orchestrator();
        // a stopping runner takes no new work
        let max_next = if host.stop.is_stopped() {
            0
        } else {
            batch.iter().filter(|(_, _, frees, _)| *frees).count()
        };
        let mut ends = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        for (record, end, frees_slot, reply) in batch {
            ends.push(end);
            waiting.push((record, frees_slot, reply));
        }
        let report = orch
            .finish_many_and_start(&host.runner_id, ends, max_next, Some(process_context()))
            .await;
        if let Some(e) = &report.pick_error {
            warn!(error = %e, "could not take next invocations while recording ends");
        }
        let mut own = None;
        let mut next = report.next.into_iter();
        for ((record, frees_slot, reply), end) in waiting.into_iter().zip(report.ends) {
            let taken = if frees_slot { next.next() } else { None };
            if let Some(n) = &taken {
                host.hand_over(&record, std::slice::from_ref(n));
            }
            let answer = Finished {
                end: end.into_result().map_err(Into::into),
                next: taken,
            };
            match reply {
                None => own = Some(answer),
                Some(reply) => {
                    if let Err(Finished {
                        next: Some(lost), ..
                    }) = reply.send(answer)
                    {
                        // the run that was to take it is gone
                        host.give_back(&lost).await;
                    }
                }
            }
        }
        for lost in next {
            host.give_back(&lost).await;
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
