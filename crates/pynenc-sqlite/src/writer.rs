//! The group-commit writer and the read connections of a store.
//!
//! Inside one process, write sections queue in front of a single write
//! connection: the sections waiting when the writer is free run in one
//! transaction, each inside its own savepoint, so a failing section is
//! rolled back alone while the others share the cost of one commit. Reads
//! (the polling waits) use a small pool of read-only transactions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pynenc_model::InvocationId;
use pynenc_store::{FinalWaiters, GroupWait, Result, StoreError, StoreTxn, WorkSignal};
use rusqlite::Connection;
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, Semaphore};

use crate::error::{is_busy, Ctx, Key};
use crate::final_watch::FinalWatch;
use crate::schema::connect;
use crate::txn::SqliteTxn;

/// How many read-only connections (for the polling waits) a store keeps at most.
pub(crate) const READ_CONNECTIONS: usize = 4;

/// The first and the longest pause between two attempts to take the write lock.
const LOCK_PAUSE_MIN: Duration = Duration::from_micros(50);
const LOCK_PAUSE_MAX: Duration = Duration::from_millis(2);

/// The most names (runner ids, actors, contexts) a store remembers.
const NAME_CACHE_MAX: usize = 10_000;

/// The most sections committed together.
const MAX_GROUP: usize = 256;

/// What a committed section asks the store to announce to this process.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) enqueued: bool,
    pub(crate) finals: Vec<InvocationId>,
    /// Invocations whose status changed (or that were deleted).
    pub(crate) changed: Vec<InvocationId>,
    pub(crate) purged: bool,
    /// Names interned (or looked up) by the section: remembered once committed.
    pub(crate) names: Vec<(String, i64)>,
}

impl Effects {
    fn merge(&mut self, other: Effects) {
        self.enqueued |= other.enqueued;
        self.purged |= other.purged;
        self.finals.extend(other.finals);
        self.changed.extend(other.changed);
        self.names.extend(other.names);
    }
}

pub(crate) type AnyValue = Box<dyn std::any::Any + Send>;
pub(crate) type JobFn = Box<dyn FnOnce(&mut dyn StoreTxn) -> Result<AnyValue> + Send>;
type Reply = tokio::sync::oneshot::Sender<Result<AnyValue>>;

/// One atomic section waiting for the writer.
pub(crate) struct WriteJob {
    pub(crate) run: JobFn,
    pub(crate) reply: Reply,
}

/// The sections waiting for the writer, and whether a writer is draining them.
#[derive(Default)]
pub(crate) struct WriteQueue {
    jobs: Vec<WriteJob>,
    draining: bool,
}

/// Everything a store shares between its handles and its blocking threads.
pub(crate) struct Inner {
    pub(crate) ctx: Ctx,
    pub(crate) poll_min: Duration,
    pub(crate) poll_max: Duration,
    /// The one write connection (used by the draining writer only).
    pub(crate) writer: Mutex<Option<Connection>>,
    /// Sections waiting to be written, committed in groups.
    pub(crate) write_queue: Mutex<WriteQueue>,
    /// Idle read-only connections.
    pub(crate) readers: Mutex<Vec<Connection>>,
    pub(crate) read_gate: Arc<Semaphore>,
    pub(crate) work: WorkSignal,
    pub(crate) final_waiters: FinalWaiters<GroupWait>,
    /// Hands the finals of other processes to `final_waiters`.
    pub(crate) final_watch: FinalWatch,
    /// This process's waits for a status change (`wait_status_change`).
    pub(crate) status_waiters: FinalWaiters<Notify>,
    /// Committed rows of `names` (they are never changed or deleted).
    pub(crate) names: Mutex<FxHashMap<String, i64>>,
}

impl Inner {
    /// Queues a section for the writer and starts a draining writer on a
    /// blocking thread when none is draining.
    pub(crate) fn submit(self: &Arc<Self>, job: WriteJob) {
        let start_writer = {
            let mut q = self.write_queue.lock();
            q.jobs.push(job);
            !std::mem::replace(&mut q.draining, true)
        };
        if start_writer {
            let writer = self.clone();
            drop(tokio::task::spawn_blocking(move || writer.drain_writes()));
        }
    }

    /// Drains the write queue on this (blocking) thread: each round takes the
    /// waiting sections and commits them in ONE transaction, each inside its
    /// own savepoint, so a section that fails is rolled back alone (group
    /// commit: the cost of a commit is shared by everyone waiting).
    fn drain_writes(&self) {
        loop {
            let batch: Vec<WriteJob> = {
                let mut q = self.write_queue.lock();
                if q.jobs.is_empty() {
                    q.draining = false;
                    return;
                }
                let n = q.jobs.len().min(MAX_GROUP);
                q.jobs.drain(..n).collect()
            };
            self.write_group(batch);
        }
    }

    /// Runs one section on `conn`, catching a panic as an error.
    fn run_section(&self, conn: &Connection, job_run: JobFn) -> (Result<AnyValue>, Effects) {
        let mut txn = SqliteTxn::new(conn, &self.ctx, &self.names);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // the section's held status write and counters are written
            // inside it, before it ends
            job_run(&mut txn).and_then(|v| {
                txn.flush_status()?;
                txn.flush_counts().map(|()| v)
            })
        }))
        .unwrap_or_else(|_| {
            Err(self
                .ctx
                .fail("a database section panicked; it was rolled back"))
        });
        (out, txn.effects)
    }

    fn write_group(&self, batch: Vec<WriteJob>) {
        let conn = match self.writer.lock().take() {
            Some(c) => Ok(c),
            // the write connection never waits in SQLite's busy handler: begin_immediate waits
            None => connect(&self.ctx, Duration::ZERO),
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
                return;
            }
        };
        let mut results: Vec<(Reply, Result<AnyValue>)> = Vec::with_capacity(batch.len());
        let mut effects = Effects::default();
        let ctx = &self.ctx;
        match begin_immediate(ctx, &conn) {
            Err(e) => {
                for job in batch {
                    results.push((job.reply, Err(e.clone())));
                }
            }
            Ok(()) if batch.len() == 1 => {
                // alone in the transaction: no savepoint needed, an error rolls back everything
                for job in batch {
                    let (out, section_effects) = self.run_section(&conn, job.run);
                    let out = finish_txn(ctx, &conn, out);
                    if out.is_ok() {
                        effects = section_effects;
                    }
                    results.push((job.reply, out));
                }
            }
            Ok(()) => {
                for job in batch {
                    if conn.is_autocommit() {
                        // SQLite rolled the whole transaction back after an I/O,
                        // disk-full or memory error: run nothing more outside it
                        let e = ctx.fail(
                            "the transaction was rolled back by an earlier error in the same \
                             group; nothing of this section was written",
                        );
                        results.push((job.reply, Err(e)));
                        continue;
                    }
                    let out = match control(ctx, &conn, "SAVEPOINT section") {
                        Err(e) => Err(e),
                        Ok(()) => {
                            let (out, section_effects) = self.run_section(&conn, job.run);
                            let closed = if out.is_ok() {
                                effects.merge(section_effects);
                                control(ctx, &conn, "RELEASE section")
                            } else {
                                control(ctx, &conn, "ROLLBACK TO section")
                                    .and_then(|()| control(ctx, &conn, "RELEASE section"))
                            };
                            closed.and(out)
                        }
                    };
                    results.push((job.reply, out));
                }
                if let Err(e) = finish_txn(ctx, &conn, Ok(())) {
                    effects = Effects::default();
                    for r in results.iter_mut() {
                        if r.1.is_ok() {
                            r.1 = Err(e.clone());
                        }
                    }
                }
            }
        }
        if conn.is_autocommit() {
            *self.writer.lock() = Some(conn);
        }
        self.announce(effects);
        for (reply, out) in results {
            let _ = reply.send(out);
        }
    }

    fn run_read<R>(&self, f: impl FnOnce(&mut SqliteTxn<'_>) -> Result<R>) -> Result<R> {
        let conn = match self.readers.lock().pop() {
            Some(c) => c,
            None => connect(&self.ctx, self.ctx.busy_timeout)?,
        };
        let out = match control(&self.ctx, &conn, "BEGIN") {
            Err(e) => Err(e),
            Ok(()) => {
                let mut txn = SqliteTxn::new(&conn, &self.ctx, &self.names);
                let out = f(&mut txn);
                finish_txn(&self.ctx, &conn, out)
            }
        };
        if conn.is_autocommit() {
            self.readers.lock().push(conn);
        }
        out
    }

    /// Wakes this process's runners and `result()` waiters after a commit.
    fn announce(&self, effects: Effects) {
        if !effects.names.is_empty() {
            let mut names = self.names.lock();
            if names.len() + effects.names.len() > NAME_CACHE_MAX {
                names.clear();
            }
            names.extend(effects.names);
        }
        if effects.enqueued {
            self.work.bump();
        }
        // after a purge every wait re-reads what it still waits for
        if effects.purged {
            self.final_waiters.wake_all();
            self.status_waiters.notify_all();
            return;
        }
        for id in &effects.finals {
            self.final_waiters.mark_final(id);
        }
        for id in &effects.changed {
            self.status_waiters.notify(id);
        }
    }

    /// Runs `f` in a read-only transaction on a blocking thread.
    pub(crate) async fn read<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut SqliteTxn<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let permit = self
            .read_gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.ctx.fail("the store is closed"))?;
        let inner = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.run_read(f)
        })
        .await
        .map_err(|e| join_error(&self.ctx, e))?
    }
}

/// A section that did not come back from its blocking thread.
pub(crate) fn join_error(ctx: &Ctx, e: tokio::task::JoinError) -> StoreError {
    let how = if e.is_panic() {
        "it panicked"
    } else {
        "it was cancelled"
    };
    ctx.fail_caused(
        format!("a database section did not complete ({how}); its transaction was rolled back"),
        e,
    )
}

/// A pause between `base / 2` and `base * 3 / 2`, so that competing processes drift apart.
fn jittered(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base / 2 + base.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

/// Takes the write lock, waiting up to the busy timeout in short jittered pauses.
pub(crate) fn begin_immediate(ctx: &Ctx, conn: &Connection) -> Result<()> {
    let start = Instant::now();
    let mut pause = LOCK_PAUSE_MIN;
    loop {
        let attempt = conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]).map(|_| ()));
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if is_busy(&e) => {
                let waited = start.elapsed();
                if waited >= ctx.busy_timeout {
                    return Err(StoreError::backend_caused(
                        crate::error::BACKEND,
                        format!(
                            "SQLite database {} stayed locked for {} ms (busy_timeout_ms = {}): \
                             another process holds a write transaction; raise \
                             sqlite.busy_timeout_ms or find the long transaction ({e})",
                            ctx.shown,
                            waited.as_millis(),
                            ctx.busy_timeout.as_millis()
                        ),
                        e,
                    ));
                }
                std::thread::sleep(jittered(pause).min(ctx.busy_timeout - waited));
                pause = (pause * 2).min(LOCK_PAUSE_MAX);
            }
            Err(e) => return Err(ctx.err(e, "BEGIN IMMEDIATE", Key::None)),
        }
    }
}

/// Runs one of the fixed transaction-control statements (cached).
pub(crate) fn control(ctx: &Ctx, conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]).map(|_| ()))
        .map_err(|e| ctx.err(e, sql, Key::None))
}

/// Commits on `Ok`, rolls back on `Err` (or when the commit fails).
pub(crate) fn finish_txn<R>(ctx: &Ctx, conn: &Connection, out: Result<R>) -> Result<R> {
    let out = match out {
        Ok(v) => control(ctx, conn, "COMMIT").map(|()| v),
        Err(e) => Err(e),
    };
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    out
}
