//! [`AtomicStore`]: a backend that runs closures over a [`StoreTxn`] atomically.

use std::future::Future;
use std::time::Duration;

use pynenc_model::{
    InvocationId, InvocationOutcome, InvocationStatus, RunnerId, RunnerInfo, Timestamp,
};

use crate::error::Result;
use crate::txn::StoreTxn;

/// What [`AtomicStore::atomic_inline`] did with a section.
#[derive(Debug)]
pub enum Inline<R, A> {
    /// The section ran here; its result.
    Ran(Result<R>),
    /// The store cannot run sections here: the input, given back for
    /// [`AtomicStore::atomic`].
    NotHere(A),
}

/// A backend that runs closures over a [`StoreTxn`] atomically (one lock in
/// memory, one `BEGIN IMMEDIATE` transaction in SQLite).
pub trait AtomicStore: Send + Sync + 'static {
    /// Runs `f` in one atomic section; a returned error rolls back every write of `f`
    /// where the backend supports it (SQLite, PostgreSQL), and is returned.
    ///
    /// `f` is `Fn`: a store that loses its connection before the section
    /// committed (a server restart) rolls it back and runs `f` again on a
    /// new connection, so `f` must not depend on having run once.
    fn atomic<R, F>(&self, f: F) -> impl Future<Output = Result<R>> + Send
    where
        R: Send + 'static,
        F: Fn(&mut dyn StoreTxn) -> Result<R> + Send + 'static;

    /// Runs `f`, a section that only reads (the query API, the outcomes a
    /// caller reads once they are final), in one atomic
    /// section. The default is [`AtomicStore::atomic`]; a store whose
    /// sections wait for a lock runs it apart, on committed data (PostgreSQL:
    /// a pool of reader connections), so that queries and steps never wait
    /// for each other. `f` must not write.
    fn read<R, F>(&self, f: F) -> impl Future<Output = Result<R>> + Send
    where
        R: Send + 'static,
        F: Fn(&mut dyn StoreTxn) -> Result<R> + Send + 'static,
    {
        self.atomic(f)
    }

    /// Runs `f` on `input` in one atomic section right here, when the store
    /// can do so without sending `f` elsewhere (an in-process lock), so `f`
    /// may borrow what it reads. Otherwise `f` is not run and `input` comes
    /// back ([`Inline::NotHere`]), for the caller to use [`AtomicStore::atomic`].
    fn atomic_inline<A, R, F>(&self, input: A, f: F) -> Inline<R, A>
    where
        F: FnOnce(&mut dyn StoreTxn, A) -> Result<R>,
    {
        let _ = f;
        Inline::NotHere(input)
    }

    /// The outcomes of every one of `ids` when the store already holds them
    /// in memory — this process committed them a moment ago, for a wait of
    /// its own (see [`crate::KnownOutcomes`]) — taken without a read;
    /// `None` (the default) sends the caller to [`AtomicStore::read`].
    fn known_outcomes(&self, ids: &[InvocationId]) -> Option<Vec<InvocationOutcome>> {
        let _ = ids;
        None
    }

    /// Whether [`AtomicStore::atomic_when_work`] can run a section in the
    /// transaction that queues work (the default: no, it waits and runs
    /// the section on its own, which saves nothing over waiting).
    fn parks_sections(&self) -> bool {
        false
    }

    /// Runs `f` once work may have come: at once when the work epoch has
    /// moved past `epoch` (or `epoch` is `None`: the caller does not know
    /// the queue drained, and the store does not either), otherwise in the
    /// first section that queues work (a store that commits sections in
    /// groups runs it in that section's transaction, before the commit),
    /// or not at all after `timeout` (`Ok(None)`). The default waits for
    /// work, then runs `f` on its own. Await it to its end: dropped once
    /// the store took `f`, what `f` returned is lost.
    fn atomic_when_work<R, F>(
        &self,
        epoch: Option<u64>,
        timeout: Duration,
        f: F,
    ) -> impl Future<Output = Result<Option<R>>> + Send
    where
        R: Send + 'static,
        F: Fn(&mut dyn StoreTxn) -> Result<R> + Send + 'static,
    {
        async move {
            let Some(epoch) = epoch else {
                return self.atomic(f).await.map(Some);
            };
            self.wait_for_work(epoch, timeout).await;
            if self.work_epoch() == epoch {
                return Ok(None);
            }
            self.atomic(f).await.map(Some)
        }
    }

    /// A counter that changes whenever ids are queued.
    fn work_epoch(&self) -> u64;

    /// Resolves when work may be available (the epoch moved past `epoch`,
    /// or a scheduled call fell due) or after `timeout`.
    fn wait_for_work(&self, epoch: u64, timeout: Duration) -> impl Future<Output = ()> + Send;

    /// Resolves when every invocation in `ids` is final; an unknown id is
    /// [`crate::StoreError::NotFound`]. Where the store can, it is woken by
    /// the sections that make them final rather than by polling.
    fn wait_final(&self, ids: &[InvocationId]) -> impl Future<Output = Result<()>> + Send;

    /// Resolves when the status of `id` is no longer `seen`, or after
    /// `timeout` (see [`crate::Coordination::wait_status_change`]); an
    /// unknown id is [`crate::StoreError::NotFound`].
    fn wait_status_change(
        &self,
        id: &InvocationId,
        seen: InvocationStatus,
        timeout: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Records a runner's heartbeat. The default is one section; a store
    /// whose sections may wait for a lock writes it apart, so that a busy
    /// app never delays a heartbeat (a late heartbeat looks like a dead
    /// runner, whose work would be recovered while it still runs).
    fn heartbeat(&self, runner_id: &RunnerId) -> impl Future<Output = Result<()>> + Send {
        let runner = runner_id.clone();
        self.atomic(move |t| t.put_heartbeat(&runner, Timestamp::now()))
    }

    /// Records what a runner says of itself, with a heartbeat (see
    /// [`AtomicStore::heartbeat`]).
    fn register_runner(&self, info: &RunnerInfo) -> impl Future<Output = Result<()>> + Send {
        let info = info.clone();
        self.atomic(move |t| t.put_runner(&info, Timestamp::now()))
    }
}
