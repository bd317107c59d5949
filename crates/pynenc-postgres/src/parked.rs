//! Picks parked until work comes (see
//! [`pynenc_store::Orchestrator::start_when_work`]).
//!
//! A runner of this process that found nothing to pick leaves its pick
//! here instead of waiting for a wake-up and sending it again. When the
//! writer runs a group that queued work, it runs the picks parked here in
//! the same transaction, after the steps that queued: the work is picked
//! before the commit, and a call made in this process reaches its runner
//! in one transaction instead of two (no `BEGIN`, lock and commit of a
//! pick-up group of its own, and no thread woken in between).
//!
//! A pick is parked until its runner takes it back: when work came from
//! another process (the work epoch moved and the writer did not run it)
//! or its wait ended. Whoever comes first — the writer taking it into a
//! group, the runner taking it back — has it; the other finds it gone.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::writer::Job;

/// The picks parked by this process's runners.
#[derive(Default)]
pub(crate) struct Parked {
    next: AtomicU64,
    /// How many are parked (read without the lock by every group that queued).
    count: AtomicUsize,
    jobs: Mutex<Vec<(u64, Job)>>,
}

impl Parked {
    fn jobs(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Job)>> {
        // the list stays whole: every change is one push, remove or drain
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Parks `job`; its ticket, to take it back.
    pub(crate) fn park(&self, job: Job) -> u64 {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let mut jobs = self.jobs();
        jobs.push((ticket, job));
        self.count.store(jobs.len(), Ordering::Release);
        ticket
    }

    /// Takes back the job of `ticket`, unless the writer took it.
    pub(crate) fn withdraw(&self, ticket: u64) -> Option<Job> {
        let mut jobs = self.jobs();
        let at = jobs.iter().position(|(t, _)| *t == ticket)?;
        let (_, job) = jobs.swap_remove(at);
        self.count.store(jobs.len(), Ordering::Release);
        Some(job)
    }

    /// How many are parked.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Takes up to `most` parked jobs, oldest first (for a group that queued work).
    pub(crate) fn take(&self, most: usize) -> Vec<Job> {
        if self.count.load(Ordering::Acquire) == 0 || most == 0 {
            return Vec::new();
        }
        let mut jobs = self.jobs();
        jobs.sort_unstable_by_key(|(t, _)| *t);
        let n = most.min(jobs.len());
        let taken = jobs.drain(..n).map(|(_, job)| job).collect();
        self.count.store(jobs.len(), Ordering::Release);
        taken
    }
}

/// Takes a parked job back when the future that parked it is dropped.
pub(crate) struct Withdraw<'p> {
    pub(crate) parked: &'p Parked,
    pub(crate) ticket: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        let _ = self.parked.withdraw(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::AnyValue;

    fn job() -> (
        Job,
        tokio::sync::oneshot::Receiver<pynenc_store::Result<AnyValue>>,
    ) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let run = Box::new(|_: &mut crate::txn::PgTxn<'_>| Ok(Box::new(()) as AnyValue));
        (Job { run, reply }, answer)
    }

    #[test]
    fn a_parked_job_is_had_once_by_the_writer_or_by_its_runner() {
        let parked = Parked::default();
        assert!(parked.take(8).is_empty(), "nothing parked");
        let (a, _ra) = job();
        let (b, _rb) = job();
        let (c, _rc) = job();
        let ta = parked.park(a);
        let tb = parked.park(b);
        let tc = parked.park(c);
        assert!(parked.withdraw(tb).is_some(), "b taken back by its runner");
        assert!(parked.withdraw(tb).is_none(), "and only once");
        let taken = parked.take(1);
        assert_eq!(taken.len(), 1, "at most what was asked");
        assert!(
            parked.withdraw(ta).is_none(),
            "the oldest, a, went to the writer"
        );
        {
            let _guard = Withdraw {
                parked: &parked,
                ticket: tc,
            };
        }
        assert!(
            parked.take(8).is_empty(),
            "c was taken back when its future was dropped"
        );
    }
}
