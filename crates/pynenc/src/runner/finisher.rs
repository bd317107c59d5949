//! Recording the ends of runs in batches, by flat combining.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pynenc_model::{InvocationRecord, InvocationStatus, RunOutcome};
use pynenc_store::{RunEnd, WaitChange, WaitOutcome};
use tracing::{debug, warn};

use super::handoff::Taken;
use super::host::Handoff;
use super::ids::process_context;
use super::shared::RunnerShared;
use crate::exceptions::{PynencError, Result};

/// The answer to a queued end: its result, and the next invocation of the
/// slot it frees, if one was taken, or the invocation that waited for the
/// run, resumed in the same step, which takes the slot.
pub(crate) struct Finished {
    pub(crate) end: Result<InvocationStatus>,
    pub(crate) next: Option<Arc<InvocationRecord>>,
    pub(crate) handoff: Option<Handoff>,
}

type FinishReply = tokio::sync::oneshot::Sender<Finished>;

/// A queued end: the run, its outcome, whether it frees a slot (takes a
/// next invocation), and where to answer.
type QueuedEnd = (Arc<InvocationRecord>, RunEnd, bool, FinishReply);

/// The end of the caller that records a batch: answered directly.
type OwnEnd<'a> = (&'a Arc<InvocationRecord>, RunEnd, bool);

/// Records the ends of runs in batches by flat combining (with the resumes
/// of the invocations that take the slots of those runs, see
/// [`super::handoff`]): a finishing
/// invocation that finds room for a flush records its own end at once,
/// with whatever others queued; one that finds the flushes in flight
/// queues its end, and a flushing caller takes it too (one
/// `finish_many_and_start` for all of them: one transaction, round trip or
/// lock), which also takes the next invocation of every slot the batch
/// frees. Where a step costs a round trip, two flushes go at once, so the
/// backend works on one while the next travels (Redis burn: drain +30 %);
/// in memory, where it costs a lock, one (two only contend for the lock:
/// drain −13 %).
pub(crate) struct Finisher {
    queue: Mutex<Vec<QueuedEnd>>,
    /// Flushes in flight.
    flushing: AtomicUsize,
    /// Flushes in flight at once, at most.
    most: usize,
}

/// Ends a flush even if the flushing future is dropped.
struct FlushGuard<'a>(&'a AtomicUsize);

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Finisher {
    /// A finisher of up to `most` flushes in flight at once (at least one).
    pub(crate) fn new(most: usize) -> Finisher {
        Finisher {
            queue: Mutex::new(Vec::new()),
            flushing: AtomicUsize::new(0),
            most: most.max(1),
        }
    }

    /// Starts a flush if fewer than `most` are in flight.
    fn start_flush(&self) -> Option<FlushGuard<'_>> {
        self.flushing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.most).then_some(n + 1)
            })
            .ok()
            .map(|_| FlushGuard(&self.flushing))
    }

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
        if let Some(guard) = self.start_flush() {
            // room for a flush: this end goes now, with what waits
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
        while !self.queue.lock().is_empty() {
            let Some(guard) = self.start_flush() else {
                return;
            };
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
        // a stopping runner takes no new work, nor hands slots over
        let stopping = host.stop.is_stopped();
        let mut ends = Vec::with_capacity(queued.len() + 1);
        let mut waits = Vec::new();
        let mut waiting = Vec::with_capacity(queued.len() + 1);
        let mut offer = |end: &RunEnd, frees_slot: bool| -> Option<Taken> {
            let taken = (frees_slot && !stopping)
                .then(|| host.handoffs.take(&end.invocation_id))
                .flatten()?;
            waits.push(WaitChange::Resume {
                waiter: taken.waiter,
                waited: vec![end.invocation_id],
            });
            Some(taken)
        };
        for (record, end, frees_slot, reply) in queued {
            let taken = offer(&end, frees_slot);
            ends.push(end);
            waiting.push((record, frees_slot, Some(reply), taken));
        }
        let own = own.map(|(record, end, frees_slot)| {
            let taken = offer(&end, frees_slot);
            ends.push(end);
            (record.clone(), frees_slot, None, taken)
        });
        waiting.extend(own);
        // a slot handed to a waiter takes nothing next
        let max_next = if stopping {
            0
        } else {
            waiting
                .iter()
                .filter(|(_, frees, _, taken)| *frees && taken.is_none())
                .count()
        };
        let report = orch
            .runner_step(
                &host.runner_id,
                ends,
                waits,
                max_next,
                Some(process_context()),
            )
            .await;
        if let Some(e) = &report.pick_error {
            warn!(error = %e, "could not take next invocations while recording ends");
        }
        let mut next = report.next.into_iter();
        let mut resumed = report.waits.into_iter();
        let mut results = report.ends.into_iter();
        let mut own_answer = None;
        for (record, frees_slot, reply, taken) in waiting {
            let end = match results.next() {
                Some(end) => end.into_result().map_err(Into::into),
                None => Err(PynencError::runner("the end of the run got no outcome")),
            };
            let handoff = taken.and_then(|to| match resumed.next() {
                Some(Ok(WaitOutcome::Resumed(outcomes))) => Some(Handoff { to, outcomes }),
                other => {
                    if let Some(Err(e)) = other {
                        debug!(invocation_id = %to.waiter, error = %e, "not resumed with the end it waited for");
                    }
                    to.not_handed();
                    None
                }
            });
            let taken_next = if frees_slot && handoff.is_none() {
                next.next()
            } else {
                None
            };
            if let Some(n) = &taken_next {
                host.hand_over(&record, std::slice::from_ref(n));
            }
            let finished = Finished {
                end,
                next: taken_next,
                handoff,
            };
            match reply {
                None => own_answer = Some(finished),
                Some(reply) => {
                    if let Err(lost) = reply.send(finished) {
                        // the run that was to take it is gone
                        if let Some(n) = lost.next {
                            host.give_back(&n, "its slot's run is gone").await;
                        }
                        if let Some(h) = lost.handoff {
                            // the waiter is resumed: it takes a slot of its own
                            h.to.without_slot(h.outcomes);
                        }
                    }
                }
            }
        }
        for lost in next {
            host.give_back(&lost, "its slot's run is gone").await;
        }
        own_answer
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
        handoff: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_more_flushes_than_allowed_go_at_once() {
        let f = Finisher::new(2);
        let a = f.start_flush().expect("first");
        let b = f.start_flush().expect("second");
        assert!(f.start_flush().is_none(), "a third flush went");
        drop(a);
        let c = f.start_flush().expect("room again after one ended");
        drop((b, c));
        assert_eq!(f.flushing.load(Ordering::Acquire), 0);

        let one = Finisher::new(0);
        let g = one.start_flush().expect("at least one");
        assert!(one.start_flush().is_none());
        drop(g);
    }
}
