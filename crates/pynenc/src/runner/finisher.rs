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
/// next invocation), and where to answer.
type QueuedEnd = (Arc<InvocationRecord>, RunEnd, bool, FinishReply);

/// Records the ends of runs in batches by flat combining: a finishing
/// invocation queues its outcome, and whoever finds no flush in progress
/// flushes everything queued in one `finish_many_and_start` (one
/// transaction or round trip for all of them), which also takes the next
/// invocation of every slot the batch frees. Alone, an invocation flushes
/// itself at once.
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
    /// Queues the end of the run of `record` (which took `ran_for`) and
    /// waits until it is recorded; a next invocation is taken for it only
    /// if it `frees_slot`.
    pub(crate) async fn finish(
        &self,
        host: &RunnerShared,
        record: &Arc<InvocationRecord>,
        outcome: RunOutcome,
        ran_for: Duration,
        frees_slot: bool,
    ) -> Finished {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let end = RunEnd {
            invocation_id: record.invocation_id,
            outcome,
            ran_for: Some(ran_for),
        };
        self.queue
            .lock()
            .push((record.clone(), end, frees_slot, reply));
        self.flush(host).await;
        answer.await.unwrap_or_else(|_| Finished {
            end: Err(PynencError::runner(format!(
                "the end of invocation {} was not recorded (runner stopping)",
                record.invocation_id
            ))),
            next: None,
        })
    }

    /// Records the queued ends, unless another caller is already doing it
    /// (it will take them too).
    async fn flush(&self, host: &RunnerShared) {
        let orch = host.app.orchestrator();
        while !self.flushing.swap(true, Ordering::AcqRel) {
            let guard = FlushGuard(&self.flushing);
            let batch = std::mem::take(&mut *self.queue.lock());
            if !batch.is_empty() {
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
                    if let Err(Finished {
                        next: Some(lost), ..
                    }) = reply.send(answer)
                    {
                        // the run that was to take it is gone
                        host.give_back(&lost).await;
                    }
                }
                for lost in next {
                    host.give_back(&lost).await;
                }
            }
            drop(guard);
            // anything queued while we flushed is ours to flush too
            if self.queue.lock().is_empty() {
                break;
            }
        }
    }
}
