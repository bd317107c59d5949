//! The atomic store: how backends plug into the shared orchestration logic.
//!
//! A backend that can run a closure atomically (one lock in memory, one
//! `BEGIN IMMEDIATE` transaction in SQLite) implements [`AtomicStore`] and the
//! primitive reads and writes of [`StoreTxn`]. [`engine`] holds every rule —
//! the state machine, registration and running concurrency, blocking and
//! cycle control, retries, purge — once, and [`TxnBackend`] exposes the result
//! as the [`crate::Broker`], [`crate::Orchestrator`] and [`crate::StateBackend`]
//! of an app.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::exceptions::{Result, TaskError};
use crate::invocation::InvocationRecord;
use crate::state_backend::{HistoryEntry, HistoryStep, InvocationOutcome};
use crate::status::StatusRecord;

mod adapter;
pub mod engine;
mod signal;
#[cfg(any(feature = "sqlite", feature = "redis"))]
mod waiters;

pub(crate) use signal::WorkSignal;
#[cfg(any(feature = "sqlite", feature = "redis"))]
pub(crate) use waiters::FinalWaiters;

pub use adapter::TxnBackend;

/// The primitive operations of a backend, run inside one atomic section.
///
/// Implementations keep their own indexes consistent in [`StoreTxn::put_status`]
/// and [`StoreTxn::insert_invocation`]: which invocations are `REGISTERED` per
/// registration key, which running keys are held by an invocation in
/// `PENDING`, `RUNNING`, `PAUSED` or `RESUMED`, when an invocation became
/// final, and which scheduled invocations are due.
pub trait StoreTxn {
    /// Stores a new invocation with its first status.
    fn insert_invocation(
        &mut self,
        record: &Arc<InvocationRecord>,
        status: &StatusRecord,
    ) -> Result<()>;
    /// The invocation record, if it exists.
    fn get_invocation(&mut self, invocation_id: &str) -> Result<Option<Arc<InvocationRecord>>>;
    /// The current status, if the invocation exists.
    fn get_status(&mut self, invocation_id: &str) -> Result<Option<StatusRecord>>;
    /// The running concurrency key of an invocation (`None` if it has none or
    /// does not exist). The default reads the whole record; a backend that
    /// stores the key apart overrides it.
    fn running_key_of(&mut self, invocation_id: &str) -> Result<Option<String>> {
        Ok(self
            .get_invocation(invocation_id)?
            .and_then(|record| record.concurrency.running_key.clone()))
    }
    /// A fresh, unique invocation id (32 hexadecimal characters). The default
    /// is a random UUID; a backend whose indexes prefer ids in creation order
    /// may return time-ordered ids instead.
    fn new_invocation_id(&mut self) -> String {
        crate::util::new_invocation_id()
    }
    /// `runner_id` as a shared string for status owners. The default makes
    /// a new one; a store may hand out one copy per runner.
    fn owner_id(&mut self, runner_id: &str) -> Arc<str> {
        Arc::from(runner_id)
    }
    /// Writes a status (already checked by the engine) at time `now_us`.
    fn put_status(&mut self, invocation_id: &str, status: &StatusRecord, now_us: i64)
        -> Result<()>;
    /// Appends to the invocation's history.
    fn append_history(&mut self, step: HistoryStep<'_>) -> Result<()>;
    /// The history, oldest first.
    fn get_history(&mut self, invocation_id: &str) -> Result<Vec<HistoryEntry>>;
    /// How many times the invocation was retried.
    fn get_retries(&mut self, invocation_id: &str) -> Result<u32>;
    /// Adds one retry and returns the new count.
    fn increment_retries(&mut self, invocation_id: &str) -> Result<u32>;
    /// Stores the serialized result.
    fn set_result(&mut self, invocation_id: &str, result: String) -> Result<()>;
    /// Stores the error.
    fn set_error(&mut self, invocation_id: &str, error: &TaskError) -> Result<()>;
    /// Status, result and error.
    fn get_outcome(&mut self, invocation_id: &str) -> Result<Option<InvocationOutcome>>;
    /// Every invocation id of the app.
    fn list_invocation_ids(&mut self) -> Result<Vec<String>>;

    /// An invocation currently `REGISTERED` with this registration key.
    fn find_registered(&mut self, registration_key: &str) -> Result<Option<String>>;
    /// Whether an invocation with this running key is `PENDING`, `RUNNING`, `PAUSED` or `RESUMED`.
    fn running_key_in_use(&mut self, running_key: &str) -> Result<bool>;
    /// Parks an invocation held back by running concurrency until the key frees up.
    fn park_controlled(&mut self, running_key: &str, invocation_id: &str) -> Result<()>;
    /// Takes every invocation parked on the key, oldest first.
    fn take_controlled(&mut self, running_key: &str) -> Result<Vec<String>>;

    /// Appends an id to the queue (a backend with notifications wakes
    /// runners once the section commits).
    fn enqueue(&mut self, invocation_id: &str) -> Result<()>;
    /// Puts an id at the head of the queue: work taken back from a dead or
    /// stopped runner runs before new work. The default appends.
    fn enqueue_front(&mut self, invocation_id: &str) -> Result<()> {
        self.enqueue(invocation_id)
    }
    /// Pops up to `max` ids from the head of the queue.
    fn dequeue(&mut self, max: usize) -> Result<Vec<String>>;
    /// The queue length.
    fn queue_len(&mut self) -> Result<usize>;

    /// Records that `waiter` (or an external caller, `None`) waits for `waited`.
    fn add_waits(&mut self, waiter: Option<&str>, waited: &[String]) -> Result<()>;
    /// Waited-on invocations that are available for run, oldest first.
    fn blocking_candidates(&mut self, max: usize) -> Result<Vec<String>>;
    /// Forgets the waits on a final invocation.
    fn release_waited(&mut self, waited: &str) -> Result<()>;

    /// Records a call edge from a running invocation's call to a callee call.
    fn add_edge(
        &mut self,
        caller_invocation_id: &str,
        caller_call_id: &str,
        callee_call_id: &str,
    ) -> Result<()>;
    /// The callee call ids of the edges leaving `call_id`.
    fn callees_of(&mut self, call_id: &str) -> Result<Vec<String>>;
    /// Removes the edges added by an invocation.
    fn remove_edges_of(&mut self, caller_invocation_id: &str) -> Result<()>;

    /// Up to `max` `SCHEDULED` invocations due at `now_us`, earliest first.
    fn due_scheduled(&mut self, now_us: i64, max: usize) -> Result<Vec<String>>;
    /// Up to `max` final invocations that became final before `before_us`.
    fn final_before(&mut self, before_us: i64, max: usize) -> Result<Vec<String>>;
    /// Deletes an invocation and everything attached to it.
    fn delete_invocation(&mut self, invocation_id: &str) -> Result<()>;
    /// Deletes everything of the app.
    fn purge(&mut self) -> Result<()>;

    /// Records a runner heartbeat.
    fn put_heartbeat(&mut self, runner_id: &str, now_us: i64) -> Result<()>;
    /// The last heartbeat of a runner.
    fn get_heartbeat(&mut self, runner_id: &str) -> Result<Option<i64>>;
    /// Forgets a runner's heartbeat.
    fn remove_heartbeat(&mut self, runner_id: &str) -> Result<()>;
    /// Up to `max` invocations in `PENDING`, `RUNNING`, `PAUSED` or `RESUMED`
    /// whose status was set before `before_us`, oldest claim first, with
    /// their status record and the time (µs) it was set.
    fn owned_claims_before(
        &mut self,
        before_us: i64,
        max: usize,
    ) -> Result<Vec<(String, StatusRecord, i64)>>;
    /// Takes or renews a lease; returns whether `holder` holds it until `now_us + ttl_us`.
    fn try_lease(&mut self, name: &str, holder: &str, now_us: i64, ttl_us: i64) -> Result<bool>;

    /// Called when an invocation became final (a backend with notifications wakes waiters).
    fn on_final(&mut self, _invocation_id: &str) {}
}

/// A backend that runs closures over a [`StoreTxn`] atomically.
pub trait AtomicStore: Send + Sync + 'static {
    /// Runs `f` in one atomic section; a returned error rolls back every write of `f`
    /// where the backend supports it (SQLite), and is returned.
    fn atomic<R, F>(&self, f: F) -> impl Future<Output = Result<R>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn StoreTxn) -> Result<R> + Send + 'static;

    /// Runs `f` on `input` in one atomic section right here, when the store
    /// can do so without sending `f` elsewhere (an in-process lock), so `f`
    /// may borrow what it reads. Otherwise `f` is not run and `input` comes
    /// back (`Err`), for the caller to use [`AtomicStore::atomic`].
    fn atomic_inline<A, R, F>(&self, input: A, f: F) -> std::result::Result<Result<R>, A>
    where
        F: FnOnce(&mut dyn StoreTxn, A) -> Result<R>,
    {
        let _ = f;
        Err(input)
    }

    /// A counter that changes whenever ids are queued (0 if the backend cannot tell).
    fn work_epoch(&self) -> u64 {
        0
    }

    /// Resolves when work may be available or after `timeout`. The default
    /// polls the queue adaptively: short sleeps while work keeps coming,
    /// backing off to the store's ceiling when idle.
    fn wait_for_work(&self, epoch: u64, timeout: Duration) -> impl Future<Output = ()> + Send {
        let _ = epoch;
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut poll = self.poll_interval_min();
            loop {
                let queued = self.atomic(|t| t.queue_len()).await.unwrap_or(0);
                let due = self
                    .atomic(|t| t.due_scheduled(crate::util::now_us(), 1).map(|v| v.len()))
                    .await
                    .unwrap_or(0);
                if queued > 0 || due > 0 {
                    return;
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return;
                }
                tokio::time::sleep(poll.min(deadline - now)).await;
                poll = (poll * 2).min(self.poll_interval_max());
            }
        }
    }

    /// Resolves when every invocation in `ids` is final. The default polls
    /// adaptively between [`AtomicStore::poll_interval_min`] and
    /// [`AtomicStore::poll_interval_max`].
    fn wait_final(&self, ids: &[String]) -> impl Future<Output = Result<()>> + Send {
        let ids = ids.to_vec();
        async move {
            let mut pending = ids;
            let mut poll = self.poll_interval_min();
            loop {
                let check = pending.clone();
                pending = self
                    .atomic(move |t| engine::not_final(t, &check, "while waiting for its result"))
                    .await?;
                if pending.is_empty() {
                    return Ok(());
                }
                tokio::time::sleep(poll).await;
                poll = (poll * 2).min(self.poll_interval_max());
            }
        }
    }

    /// The shortest polling interval of the default waits.
    fn poll_interval_min(&self) -> Duration {
        Duration::from_millis(1)
    }

    /// The longest polling interval of the default waits.
    fn poll_interval_max(&self) -> Duration {
        Duration::from_millis(50)
    }

    /// Whether running several steps in one section saves work (a
    /// transaction, a round trip). False for a store whose sections are one
    /// in-process lock.
    fn batching_pays(&self) -> bool {
        true
    }
}
