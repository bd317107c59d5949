//! The writer: one connection per store, on a thread of its own, that runs
//! the steps queued by the store in group transactions.
//!
//! Each round takes the steps waiting (up to [`MAX_GROUP`]) and runs them
//! one after the other in ONE transaction that first takes the app's
//! advisory lock, then commits once, with the `NOTIFY` that wakes the other
//! processes in the same round trip as the `COMMIT`. A step that returns an
//! error is answered with it and the group runs again without it (a
//! rollback is cheaper than a savepoint around every step). A lost
//! connection rolls the group back on the server: the writer reconnects and
//! runs it again, for up to `retry_for`; a connection lost during the
//! `COMMIT` itself is settled with `txid_status`.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pynenc_model::Timestamp;
use pynenc_store::{Result, StoreError};
use tokio_postgres::types::ToSql;
use tracing::{debug, warn};

use crate::commit_counter::{self, COUNT_COMMIT};
use crate::conn::connect;
use crate::error::is_connection_lost;
use crate::listener_registry::GUARDED_NOTIFY;
use crate::notify::{notify_payloads, Shared};
use crate::statements::Conn;
use crate::txn::{tables, Effects, Group, PgTxn};

/// The most steps committed together.
pub const MAX_GROUP: usize = 256;

/// The first and the longest pause between two attempts to reconnect.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(crate) type AnyValue = Box<dyn std::any::Any + Send>;
pub(crate) type JobFn = Box<dyn for<'t, 'a> Fn(&'t mut PgTxn<'a>) -> Result<AnyValue> + Send>;
type Reply = tokio::sync::oneshot::Sender<Result<AnyValue>>;

/// One step waiting for the writer.
pub(crate) struct Job {
    pub(crate) run: JobFn,
    pub(crate) reply: Reply,
}

/// How one attempt at a group ended.
enum Attempt {
    /// Committed: the value of every step that did not fail.
    Committed(Vec<Option<AnyValue>>, Effects),
    /// Step `i` failed on its own: the group was rolled back.
    StepFailed(usize, StoreError),
    /// The connection was lost before the commit: rolled back by the server.
    Lost(StoreError),
    /// Rows taken from what the process saw had changed: rolled back, to
    /// run again reading them (see [`crate::seen_rows`]).
    Stale(StoreError),
    /// The connection was lost during the commit: settled by what it says.
    Ambiguous(Settle, Vec<Option<AnyValue>>, Effects, StoreError),
    /// Every step ran and none wrote: the values, and whether a
    /// transaction is open (to end once the steps have their answers).
    ReadOnly(Vec<Option<AnyValue>>, bool),
    /// The group failed as a whole (its held writes were refused).
    Failed(StoreError),
}

/// What tells whether a commit whose answer was lost took place.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Settle {
    /// The transaction's id (`txid_status`).
    Xid(i64),
    /// The writer's commit number it wrote (see [`crate::commit_counter`]).
    Counted(i64),
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: Conn,
    pub(crate) config: crate::conn::Server,
    /// Takes the tables' statistics again when they have grown.
    pub(crate) analyzer: crate::analyze::Analyzer,
    pub(crate) retry_for: Duration,
    /// Whether the connection is known to be gone.
    pub(crate) broken: bool,
    /// This writer's number in `pynenc_commits`, and its last commit
    /// number there.
    pub(crate) key: i64,
    pub(crate) counted: i64,
}

impl Writer {
    /// Runs groups until every handle of the store is dropped.
    pub(crate) fn run(mut self, jobs: Receiver<Job>) {
        loop {
            let first = match jobs.recv_timeout(Duration::from_secs(30)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    self.forget_counter();
                    return;
                }
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.run_group(group);
            if self.conn.take_grown() {
                self.analyzer.grown();
            }
        }
    }

    fn run_group(&mut self, mut jobs: Vec<Job>) {
        let started = Instant::now();
        let mut failed: Vec<Option<StoreError>> = jobs.iter().map(|_| None).collect();
        let mut backoff = BACKOFF_MIN;
        loop {
            if failed.iter().all(Option::is_some) {
                return self.answer(jobs, failed, Vec::new());
            }
            if self.broken {
                if let Err(e) = self.reconnect() {
                    if started.elapsed() >= self.retry_for {
                        let all = jobs.iter().map(|_| Some(e.clone())).collect();
                        return self.answer(jobs, all, Vec::new());
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
            match self.attempt(&mut jobs, &mut failed) {
                Attempt::Committed(values, effects) => {
                    self.shared.announce_local(&effects);
                    return self.answer(jobs, failed, values);
                }
                Attempt::ReadOnly(values, open) => {
                    self.answer(jobs, failed, values);
                    // nothing to commit: the steps do not wait for its end
                    if open {
                        self.rollback();
                    }
                    return;
                }
                Attempt::StepFailed(i, e) => {
                    debug!(error = %e, "a step failed; its group runs again without it");
                    failed[i] = Some(e);
                }
                Attempt::Failed(e) => {
                    let all = jobs.iter().map(|_| Some(e.clone())).collect();
                    return self.answer(jobs, all, Vec::new());
                }
                Attempt::Stale(e) => {
                    debug!(error = %e, "a row this process saw had changed; its group runs again");
                    self.shared.ctx.seen.clear();
                }
                Attempt::Lost(e) => {
                    self.broken = true;
                    warn!(error = %e, "PostgreSQL connection lost; the steps run again");
                    if started.elapsed() >= self.retry_for {
                        let all = jobs.iter().map(|_| Some(e.clone())).collect();
                        return self.answer(jobs, all, Vec::new());
                    }
                }
                Attempt::Ambiguous(how, values, effects, e) => {
                    self.broken = true;
                    match self.settle(how, started) {
                        Some(true) => {
                            self.shared.announce_local(&effects);
                            return self.answer(jobs, failed, values);
                        }
                        Some(false) => {
                            warn!(error = %e, "PostgreSQL connection lost before the commit; the steps run again");
                        }
                        None => {
                            let e = self.shared.ctx.fail(format!(
                                "the connection was lost during a commit and the server could \
                                 not be asked whether it committed within {:?}: {e}",
                                self.retry_for
                            ));
                            let all = jobs.iter().map(|_| Some(e.clone())).collect();
                            return self.answer(jobs, all, Vec::new());
                        }
                    }
                }
            }
        }
    }

    /// Whether the commit committed, asked on a new connection until
    /// `retry_for` has passed since the group began (`None` when the
    /// server cannot be reached in time, or cannot tell).
    fn settle(&mut self, how: Settle, started: Instant) -> Option<bool> {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.reconnect().is_ok() {
                if let Some(answer) = self.ask(how) {
                    return answer;
                }
            }
            if started.elapsed() >= self.retry_for {
                return None;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One question of [`Writer::settle`] on the current connection: its
    /// answer, or `None` to ask again.
    fn ask(&mut self, how: Settle) -> Option<Option<bool>> {
        let asked = match how {
            Settle::Xid(xid) => self
                .conn
                .rt
                .block_on(
                    self.conn
                        .client
                        .query_opt("SELECT txid_status($1)::text", &[&xid]),
                )
                .map(
                    |row| match row.and_then(|r| r.get::<_, Option<String>>(0)).as_deref() {
                        Some("committed") => Some(Some(true)),
                        Some("aborted") => Some(Some(false)),
                        // the old session has not ended yet (its server
                        // process has not seen the connection close): ask
                        // again until it committed or rolled back
                        Some(_) => None,
                        // too old for the server to know
                        None => Some(None),
                    },
                ),
            // see `crate::commit_counter`
            Settle::Counted(seq) => {
                let ctx = &self.shared.ctx;
                self.conn
                    .rt
                    .block_on(commit_counter::settled(
                        &self.conn.client,
                        ctx.app,
                        ctx.lock_key,
                        self.key,
                        seq,
                    ))
                    .map(|committed| Some(Some(committed)))
            }
        };
        match asked {
            Ok(answer) => answer,
            Err(e) if is_connection_lost(&e) => {
                self.broken = true;
                None
            }
            // the lost session still holds the app's lock: again
            Err(e) if matches!(how, Settle::Counted(_)) => {
                debug!(error = %e, "settling a commit by its number: asking again");
                None
            }
            Err(_) => Some(None),
        }
    }

    /// Removes this writer's row of `pynenc_commits` (its store is gone).
    fn forget_counter(&mut self) {
        if self.counted == 0 || self.broken {
            return;
        }
        let (app, key) = (self.shared.ctx.app, self.key);
        let forgot = self
            .conn
            .rt
            .block_on(commit_counter::forget(&self.conn.client, app, key));
        if let Err(e) = forgot {
            debug!(error = %e, "the writer's commit number stays a day");
        }
    }

    fn reconnect(&mut self) -> Result<()> {
        let shown = self.shared.ctx.shown.clone();
        let client = self.conn.rt.block_on(connect(&self.config, &shown))?;
        let pid = self
            .conn
            .rt
            .block_on(client.query_one("SELECT pg_backend_pid()", &[]))
            .map_err(|e| self.shared.ctx.err(e, "reading the backend pid"))?;
        self.shared.set_writer_pid(pid.get(0));
        self.conn.replace_client(client);
        self.broken = false;
        Ok(())
    }

    /// Sends each step its value or its error.
    fn answer(
        &self,
        jobs: Vec<Job>,
        failed: Vec<Option<StoreError>>,
        values: Vec<Option<AnyValue>>,
    ) {
        let mut values = values.into_iter();
        for (job, error) in jobs.into_iter().zip(failed) {
            let value = values.next().flatten();
            let answer = match (error, value) {
                (Some(e), _) => Err(e),
                (None, Some(v)) => Ok(v),
                (None, None) => Err(self.shared.ctx.fail("the step was not run")),
            };
            // a caller that stopped waiting is no error
            let _ = job.reply.send(answer);
        }
    }

    /// One attempt at a group: every step not failed yet (the first
    /// statement goes with `BEGIN` and the app's lock), then its commit
    /// ([`Writer::commit`]).
    ///
    /// A group that queued work takes in the picks parked by this
    /// process's runners (see `parked.rs`) after its own steps: they join
    /// `jobs` for good, answered with the others.
    fn attempt(&mut self, jobs: &mut Vec<Job>, failed: &mut Vec<Option<StoreError>>) -> Attempt {
        let shared = self.shared.clone();
        let ctx = &shared.ctx;
        let mut g = Group {
            epoch: shared.work.epoch(),
            all_redone: true,
            ..Group::default()
        };
        let (drained, began) = ctx.queue.begin(g.epoch);
        g.queue_drained = drained;
        g.own_queue = drained;
        let mut values = Vec::with_capacity(jobs.len());
        let mut i = 0;
        loop {
            if i == jobs.len() {
                let parked = if g.effects.enqueued {
                    shared.parked.take(MAX_GROUP.saturating_sub(jobs.len()))
                } else {
                    Vec::new()
                };
                if parked.is_empty() {
                    break;
                }
                debug!(
                    picks = parked.len(),
                    "parked picks join a group that queued work"
                );
                failed.extend(parked.iter().map(|_| None));
                jobs.extend(parked);
            }
            let at = i;
            i += 1;
            let job = &jobs[at];
            if failed[at].is_some() {
                values.push(None);
                continue;
            }
            g.section_redone = false;
            let mut txn = PgTxn {
                conn: &self.conn,
                ctx,
                g: &mut g,
            };
            let mut result = (job.run)(&mut txn);
            txn.g.all_redone &= txn.g.section_redone;
            if result.is_ok() {
                // ids a step took ahead and did not use go back first
                if let Err(e) = txn.put_back_taken() {
                    result = Err(e);
                }
            }
            // the group runs again: on a new connection, or reading the
            // rows a check found changed
            if g.lost.get() || g.stale.get() {
                let e = result
                    .err()
                    .unwrap_or_else(|| ctx.fail("the group must run again"));
                return self.abandon(&g, e);
            }
            match result {
                Ok(v) => values.push(Some(v)),
                Err(e) => {
                    if g.begun {
                        self.rollback();
                    }
                    // decided on rows not checked yet: the step is not to blame
                    if !g.assumed.is_empty() {
                        return Attempt::Stale(e);
                    }
                    return Attempt::StepFailed(at, e);
                }
            }
        }
        if !g.wrote && !g.pending.holds(tables::ALL) && g.effects.is_empty() {
            // answers given on rows taken unchecked wait for their check
            if !g.assumed.is_empty() {
                if let Some(attempt) = self.check_assumed(&mut g) {
                    return attempt;
                }
            }
            ctx.queue.after(&g, began, false);
            return Attempt::ReadOnly(values, g.begun);
        }
        let effects = std::mem::take(&mut g.effects);
        self.commit(g, effects, values, began)
    }

    /// Commits group `g`: its held writes, its commit number when it has
    /// not begun (`BEGIN` and `COMMIT` then go in one round trip: see
    /// [`crate::commit_counter`]), the notifications of `effects` under
    /// the registry's guard (see [`crate::listener_registry`]), then
    /// `COMMIT`, all in one round trip.
    fn commit(
        &mut self,
        mut g: Group,
        effects: Effects,
        values: Vec<Option<AnyValue>>,
        began: Option<u64>,
    ) -> Attempt {
        let shared = self.shared.clone();
        let ctx = &shared.ctx;
        let counted = (!g.begun).then(|| {
            self.counted += 1;
            self.counted
        });
        let payloads = notify_payloads(&effects);
        let prepared = self
            .statement_if(counted.is_some(), COUNT_COMMIT)
            .and_then(|c| Ok((c, self.statement_if(!payloads.is_empty(), GUARDED_NOTIFY)?)));
        let mut txn = PgTxn {
            conn: &self.conn,
            ctx,
            g: &mut g,
        };
        let (count, notify) = match prepared {
            Ok(statements) => statements,
            Err(e) => {
                let e = txn.fail(e, "preparing the commit's statements");
                return self.abandon(&g, e);
            }
        };
        let commit = commit_sql(&effects, txn.g.all_redone);
        let (app, own) = (ctx.app, shared.listener_pid());
        let (key, seq, now) = (self.key, counted.unwrap_or(0), Timestamp::now().as_micros());
        let count_params: [&(dyn ToSql + Sync); 4] = [&app, &key, &seq, &now];
        let params: Vec<[&(dyn ToSql + Sync); 4]> = payloads
            .iter()
            .map(|p| [&shared.channel as &(dyn ToSql + Sync), p, &app, &own])
            .collect();
        let client = &self.conn.client;
        let last = async {
            let counted = async {
                match &count {
                    Some(stmt) => client.execute(stmt, &count_params).await.map(|_| ()),
                    None => Ok(()),
                }
            };
            let notified = futures::future::join_all(
                notify
                    .iter()
                    .flat_map(|stmt| params.iter().map(move |p| client.execute(stmt, p))),
            );
            let (counted, notified, committed) =
                futures::join!(counted, notified, client.simple_query(commit));
            counted?;
            notified
                .into_iter()
                .collect::<std::result::Result<Vec<u64>, _>>()?;
            committed
        };
        let committed = txn.pipeline(tables::ALL, "committing", last);
        // a held write, the commit number or a notification that fails is
        // returned before the COMMIT's answer (the server then answers
        // COMMIT with ROLLBACK)
        match committed {
            Ok(_) => {
                ctx.queue.after(&g, began, effects.enqueued);
                ctx.seen.learn(g.rows.iter());
                Attempt::Committed(values, effects)
            }
            Err(e) if g.lost.get() => match (g.xid, counted) {
                (Some(xid), _) => Attempt::Ambiguous(Settle::Xid(xid), values, effects, e),
                (None, Some(seq)) => Attempt::Ambiguous(Settle::Counted(seq), values, effects, e),
                // begun earlier, so its id is known: not reached
                (None, None) => Attempt::Lost(e),
            },
            Err(e) => self.abandon(&g, e),
        }
    }

    /// Sends the check of the rows group `g` took from what the process
    /// saw (see [`crate::seen_rows`]) in a round trip of its own; how the
    /// attempt ends when it fails.
    fn check_assumed(&mut self, g: &mut Group) -> Option<Attempt> {
        let shared = self.shared.clone();
        let mut txn = PgTxn {
            conn: &self.conn,
            ctx: &shared.ctx,
            g,
        };
        let nothing = async { Ok::<(), tokio_postgres::Error>(()) };
        let e = txn
            .pipeline(tables::NONE, "checking the rows this process saw", nothing)
            .err()?;
        Some(self.abandon(g, e))
    }

    /// The statement for `sql` on the writer's connection when `wanted`.
    fn statement_if(
        &self,
        wanted: bool,
        sql: &'static str,
    ) -> std::result::Result<Option<tokio_postgres::Statement>, tokio_postgres::Error> {
        wanted
            .then(|| self.conn.prepared_for(sql, usize::MAX))
            .transpose()
    }

    /// The end of an attempt whose statements failed: run again on a new
    /// connection, or reading the rows a check found changed, or failed.
    fn abandon(&mut self, g: &Group, e: StoreError) -> Attempt {
        if g.lost.get() {
            return Attempt::Lost(e);
        }
        self.rollback();
        if g.stale.get() {
            Attempt::Stale(e)
        } else {
            Attempt::Failed(e)
        }
    }

    /// Rolls the open transaction back (a lost connection rolls it back anyway).
    fn rollback(&mut self) {
        if let Err(e) = self
            .conn
            .rt
            .block_on(self.conn.client.batch_execute("ROLLBACK"))
        {
            if is_connection_lost(&e) {
                self.broken = true;
            }
        }
    }
}

/// What ends a group's transaction, after its notifications: `COMMIT`,
/// which does not wait for the disk when every
/// step of the group is `redone` if a crash of the server loses it (a
/// pick-up is taken again; a later commit that waits flushes this one too)
/// and none ended an invocation (a pick-up can, by concurrency control: its
/// waiters are told, so it waits like every end).
fn commit_sql(effects: &Effects, redone: bool) -> &'static str {
    if redone && effects.finals.is_empty() {
        "SET LOCAL synchronous_commit = off; COMMIT"
    } else {
        "COMMIT"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_group_of_steps_redone_if_lost_commits_without_waiting_for_the_disk() {
        let effects = Effects {
            enqueued: true,
            ..Effects::default()
        };
        assert_eq!(commit_sql(&effects, false), "COMMIT");
        assert_eq!(
            commit_sql(&effects, true),
            "SET LOCAL synchronous_commit = off; COMMIT"
        );
        let id = pynenc_model::InvocationId::time_ordered();
        let ended = Effects {
            finals: vec![id],
            ..Effects::default()
        };
        assert_eq!(
            commit_sql(&ended, true),
            "COMMIT",
            "a pick-up that ended an invocation waits for the disk"
        );
    }
}
