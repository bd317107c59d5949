//! [`PostgresStore`]: the PostgreSQL store of one app, an [`AtomicStore`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pynenc_model::{
    InvocationId, InvocationOutcome, InvocationStatus, RunnerId, RunnerInfo, Serializer, Timestamp,
};
use pynenc_store::{
    AtomicStore, Components, GroupWait, Registered, Result, StoreError, StoreTxn, TxnBackend,
};
use tokio::sync::Notify;
use tokio_postgres::types::{ToSql, Type};

use crate::conn::{connect, redact, Server};
use crate::error::{Ctx, BACKEND};
use crate::listener::start_listener;
use crate::notify::Shared;
use crate::parked::Withdraw;
use crate::readers::{ReadJob, Readers};
use crate::statements::Conn;
use crate::txn::PgTxn;
use crate::writer::{AnyValue, Job, JobFn, Writer};
use crate::{PostgresOptions, HEARD_RECHECK, SAFETY_RECHECK};

/// The PostgreSQL store of one app: an [`AtomicStore`] over one database.
///
/// Open it with [`PostgresStore::open`]; [`PostgresStore::components`] (or
/// [`pynenc_store::TxnBackend`]) turns it into the components of an app.
/// Its connections: the writer's (every step), the listener's (wake-ups),
/// one for the waits' reads and heartbeats, and up to `pool_size` query
/// readers (made on first use); each reconnects by itself.
pub struct PostgresStore {
    shared: Arc<Shared>,
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
    /// The connection of the waits' reads (opened on first use).
    reader: Mutex<Option<Arc<tokio_postgres::Client>>>,
    /// The query readers (`pool_size` of them).
    readers: Readers,
    config: Server,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.shared.ctx.shown)
            .field("app_id", &self.shared.ctx.app_id)
            .finish()
    }
}

/// The key of an app's advisory lock: the app's number in a range of its own.
pub(crate) fn lock_key(app: i32) -> i64 {
    0x7079_6e65_6e63_0000_i64 ^ (i64::from(app) << 1)
}

impl PostgresStore {
    /// Connects to the database of `options`, creates the schema if it has
    /// none, and opens the app `app_id` in it.
    ///
    /// # Errors
    ///
    /// A [`StoreError::InvalidOption`] for a URL that cannot be read, and a
    /// [`StoreError::Backend`] naming the server (never the password): it
    /// cannot be reached, refuses the user or password, has no such
    /// database, or holds another schema version (nothing is written then).
    pub fn open(options: &PostgresOptions, app_id: &str) -> Result<Arc<PostgresStore>> {
        let shown = redact(&options.url);
        let cfg = Server::of(options)?;
        // a runtime of its own: the caller may be inside one
        let opened = {
            let (cfg, shown, app_id) = (cfg.clone(), shown.clone(), app_id.to_string());
            std::thread::spawn(move || -> Result<(tokio::runtime::Runtime, _, i32, i32)> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        StoreError::backend_caused(BACKEND, "cannot start a runtime", e)
                    })?;
                let (client, app, pid) = rt.block_on(async {
                    let client = connect(&cfg, &shown).await?;
                    let app = crate::schema::init(&client, &shown, &app_id).await?;
                    crate::commit_counter::forget_old(&client, app).await;
                    let pid: i32 = client
                        .query_one("SELECT pg_backend_pid()", &[])
                        .await
                        .map_err(|e| {
                            StoreError::backend_caused(
                                BACKEND,
                                format!("PostgreSQL {shown}: {e}"),
                                e,
                            )
                        })?
                        .get(0);
                    Ok::<_, StoreError>((client, app, pid))
                })?;
                Ok((rt, client, app, pid))
            })
            .join()
            .map_err(|_| StoreError::backend(BACKEND, "the thread opening the store panicked"))??
        };
        let (rt, client, app, pid) = opened;
        let ctx = Ctx {
            shown,
            app_id: app_id.to_string(),
            app,
            lock_key: lock_key(app),
            queue: Default::default(),
            seen: Default::default(),
        };
        let shared = Arc::new(Shared::new(ctx));
        shared.set_writer_pid(pid);
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            conn: Conn::new(rt, client),
            config: cfg.clone(),
            analyzer: crate::analyze::Analyzer::new(cfg.clone(), shared.ctx.shown.clone()),
            retry_for: options.retry_for,
            broken: false,
            key: crate::commit_counter::new_writer_key(),
            counted: 0,
        };
        std::thread::Builder::new()
            .name("pynenc-pg-writer".to_string())
            .spawn(move || writer.run(rx))
            .map_err(|e| {
                StoreError::backend_caused(BACKEND, "cannot start the writer thread", e)
            })?;
        let readers = Readers::start(&shared.ctx, &cfg, options.pool_size).map_err(|e| {
            StoreError::backend_caused(BACKEND, "cannot start the query readers", e)
        })?;
        let cfg_reader = cfg.clone();
        start_listener(&shared, cfg).map_err(|e| {
            StoreError::backend_caused(BACKEND, "cannot start the listener thread", e)
        })?;
        Ok(Arc::new(PostgresStore {
            shared,
            jobs: Mutex::new(tx),
            reader: Mutex::new(None),
            readers,
            config: cfg_reader,
        }))
    }

    /// Opens the store and returns the components of the app `app_id` on it;
    /// `serializer` renders argument differences and cycles in errors.
    ///
    /// # Errors
    ///
    /// As [`PostgresStore::open`].
    pub fn components(
        options: &PostgresOptions,
        app_id: &str,
        serializer: Serializer,
    ) -> Result<Components> {
        let store = PostgresStore::open(options, app_id)?;
        Ok(TxnBackend::components(store, serializer))
    }

    /// The app whose rows this store reads and writes.
    pub fn app_id(&self) -> &str {
        &self.shared.ctx.app_id
    }

    /// The key of the advisory lock every step of this app takes
    /// (`pg_advisory_xact_lock`): what to look for in `pg_locks` when
    /// steps wait.
    pub fn lock_key(&self) -> i64 {
        self.shared.ctx.lock_key
    }

    /// The server's URL, without its password.
    pub fn url(&self) -> &str {
        &self.shared.ctx.shown
    }

    /// Whether this store's listener hears the other processes' `NOTIFY`s
    /// (false while it connects or reconnects: waits then fall back to
    /// rechecks, and every pick-up reads the queue).
    pub fn hears_others(&self) -> bool {
        self.shared.ctx.queue.hears()
    }

    /// How many picks of this process's runners are parked until work
    /// comes (see [`pynenc_store::Orchestrator::start_when_work`]).
    pub fn parked_picks(&self) -> usize {
        self.shared.parked.len()
    }

    /// How long a wait goes without re-reading what it waits for: long
    /// while the listener hears every change announced, short otherwise.
    fn recheck(&self) -> Duration {
        if self.hears_others() {
            HEARD_RECHECK
        } else {
            SAFETY_RECHECK
        }
    }

    /// The statuses of `ids` (`None` for an id that does not exist), read
    /// on the reader connection: committed data, without the app's lock,
    /// so waiting never slows the steps down. Through the writer (which
    /// retries while the server is away) when the reader fails.
    async fn statuses(&self, ids: Vec<InvocationId>) -> Result<Vec<Option<InvocationStatus>>> {
        match self.read_statuses(&ids).await {
            Ok(found) => Ok(found),
            Err(e) => {
                tracing::debug!(error = %e, "the reader failed; reading through the writer");
                *self.reader.lock() = None;
                self.run(move |t| {
                    let outcomes = t.outcomes_of(&ids)?;
                    Ok(outcomes.into_iter().map(|o| o.map(|o| o.status)).collect())
                })
                .await
            }
        }
    }

    /// The reader connection, opened (again) when needed.
    async fn reader(&self) -> std::result::Result<Arc<tokio_postgres::Client>, String> {
        let existing = self.reader.lock().clone();
        match existing {
            Some(c) if !c.is_closed() => Ok(c),
            _ => {
                let c = Arc::new(
                    connect(&self.config, &self.shared.ctx.shown)
                        .await
                        .map_err(|e| e.to_string())?,
                );
                *self.reader.lock() = Some(c.clone());
                Ok(c)
            }
        }
    }

    /// A heartbeat (and what the runner says of itself) written on the
    /// reader connection, outside the steps and their lock.
    async fn write_beat(
        &self,
        runner_id: &RunnerId,
        info: Option<&RunnerInfo>,
    ) -> std::result::Result<(), String> {
        let client = self.reader().await?;
        let app = self.shared.ctx.app;
        let now = Timestamp::now().as_micros();
        let runner = runner_id.as_str();
        let beat_params: [(&(dyn ToSql + Sync), Type); 3] = [
            (&app, Type::INT4),
            (&runner, Type::TEXT),
            (&now, Type::INT8),
        ];
        let beat = client.execute_typed(
            "INSERT INTO pynenc_heartbeats (app, runner_id, beat_us) VALUES ($1, $2, $3) \
             ON CONFLICT (app, runner_id) DO UPDATE SET beat_us = excluded.beat_us",
            &beat_params,
        );
        let Some(info) = info else {
            return beat
                .await
                .map(|_| ())
                .map_err(|e| crate::error::describe(&e));
        };
        let running = serde_json::to_string(&info.running).map_err(|e| e.to_string())?;
        let (pid, slots, started) = (
            i64::from(info.pid),
            i64::from(info.slots),
            info.started_at.as_micros(),
        );
        let said_params: [(&(dyn ToSql + Sync), Type); 8] = [
            (&app, Type::INT4),
            (&runner, Type::TEXT),
            (&info.kind, Type::TEXT),
            (&info.host, Type::TEXT),
            (&pid, Type::INT8),
            (&started, Type::INT8),
            (&slots, Type::INT8),
            (&running, Type::TEXT),
        ];
        let said = client.execute_typed(
            "INSERT INTO pynenc_runners (app, runner_id, kind, host, pid, started_us, slots, \
                 running) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (app, runner_id) DO UPDATE SET kind = excluded.kind, \
                 host = excluded.host, pid = excluded.pid, started_us = excluded.started_us, \
                 slots = excluded.slots, running = excluded.running",
            &said_params,
        );
        let (said, beat) = futures::join!(said, beat);
        said.and(beat)
            .map(|_| ())
            .map_err(|e| crate::error::describe(&e))
    }

    async fn read_statuses(
        &self,
        ids: &[InvocationId],
    ) -> std::result::Result<Vec<Option<InvocationStatus>>, String> {
        let client = self.reader().await?;
        let texts: Vec<&str> = ids.iter().map(InvocationId::as_str).collect();
        // one round trip: no named statement to prepare
        let rows = client
            .query_typed(
                "SELECT invocation_id, status FROM pynenc_invocations \
                 WHERE app = $1 AND invocation_id = ANY($2::text[])",
                &[
                    (&self.shared.ctx.app, Type::INT4),
                    (&texts, Type::TEXT_ARRAY),
                ],
            )
            .await
            .map_err(|e| crate::error::describe(&e))?;
        let mut found = rustc_hash::FxHashMap::default();
        for r in &rows {
            let text: &str = r.get(0);
            let code: i16 = r.get(1);
            let status = pynenc_store::codes::status_from_code(i64::from(code))
                .ok_or_else(|| format!("invocation {text}: unknown status code {code}"))?;
            found.insert(text, status);
        }
        Ok(texts.iter().map(|t| found.get(t).copied()).collect())
    }

    /// Runs `f` in a group transaction of the writer.
    fn run<R, F>(&self, f: F) -> impl Future<Output = Result<R>> + Send
    where
        R: Send + 'static,
        F: for<'t, 'a> Fn(&'t mut PgTxn<'a>) -> Result<R> + Send + 'static,
    {
        let value = self.run_job(Box::new(move |t: &mut PgTxn<'_>| {
            f(t).map(|v| Box::new(v) as AnyValue)
        }));
        let shared = self.shared.clone();
        async move { value.await.and_then(|v| downcast(&shared, v)) }
    }

    /// Runs `run` in a group transaction of the writer; its value.
    fn run_job(&self, run: JobFn) -> impl Future<Output = Result<AnyValue>> + Send {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = self.jobs.lock().send(Job { run, reply });
        let shared = self.shared.clone();
        async move {
            if sent.is_err() {
                return Err(shared.ctx.fail("the writer thread has stopped"));
            }
            answer
                .await
                .map_err(|_| shared.ctx.fail("the writer stopped before answering"))?
        }
    }
}

/// The value a section returned, as the type its caller expects.
fn downcast<R: 'static>(shared: &Shared, value: AnyValue) -> Result<R> {
    value.downcast::<R>().map(|b| *b).map_err(|_| {
        shared
            .ctx
            .fail("a section returned a value of another type")
    })
}

impl AtomicStore for PostgresStore {
    fn atomic<R, F>(&self, f: F) -> impl Future<Output = Result<R>> + Send
    where
        R: Send + 'static,
        F: Fn(&mut dyn StoreTxn) -> Result<R> + Send + 'static,
    {
        self.run(move |t| f(t))
    }

    /// On a query reader (see `readers.rs`); through the writer when
    /// the store has none or the reader cannot run it.
    fn read<R, F>(&self, f: F) -> impl Future<Output = Result<R>> + Send
    where
        R: Send + 'static,
        F: Fn(&mut dyn StoreTxn) -> Result<R> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = ReadJob {
            run: Box::new(move |t: &mut PgTxn<'_>| f(t).map(|v| Box::new(v) as AnyValue)),
            reply,
        };
        let sent = self.readers.send(job);
        let shared = self.shared.clone();
        async move {
            let value = match sent {
                // no reader: through the writer
                Err(job) => self.run_job(job.run).await,
                Ok(()) => match answer.await {
                    Ok(Ok(value)) => value,
                    Ok(Err((why, run))) => {
                        tracing::debug!(reason = %why, "a query runs through the writer");
                        self.run_job(run).await
                    }
                    Err(_) => Err(shared.ctx.fail("the reader stopped before answering")),
                },
            };
            value.and_then(|v| downcast(&shared, v))
        }
    }

    /// Written on the reader connection, so a busy app (steps waiting for
    /// its lock) never delays it; through a step when the reader fails.
    fn heartbeat(&self, runner_id: &RunnerId) -> impl Future<Output = Result<()>> + Send {
        let runner = runner_id.clone();
        async move {
            if let Err(e) = self.write_beat(&runner, None).await {
                tracing::debug!(error = %e, "the reader failed; the heartbeat goes through the writer");
                *self.reader.lock() = None;
                let r = runner.clone();
                self.run(move |t| t.beat(&r, Timestamp::now())).await?;
            }
            Ok(())
        }
    }

    /// Written like [`PostgresStore::heartbeat`].
    fn register_runner(&self, info: &RunnerInfo) -> impl Future<Output = Result<()>> + Send {
        let info = info.clone();
        async move {
            if let Err(e) = self.write_beat(&info.runner_id, Some(&info)).await {
                tracing::debug!(error = %e, "the reader failed; the runner is recorded through the writer");
                *self.reader.lock() = None;
                let i = info.clone();
                self.run(move |t| t.write_runner(&i, Timestamp::now()))
                    .await?;
            }
            Ok(())
        }
    }

    fn parks_sections(&self) -> bool {
        true
    }

    /// Parks `f` for the writer's next group that queues work (see
    /// `parked.rs`); taken back and sent on its own when work came from
    /// another process, and dropped when none came within `timeout`.
    /// The future must be awaited to its end: dropped after the writer
    /// took `f`, what `f` returned is lost (taken back otherwise).
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
        let shared = self.shared.clone();
        async move {
            let run: JobFn =
                Box::new(move |t: &mut PgTxn<'_>| f(t).map(|v| Box::new(v) as AnyValue));
            // parked at the epoch at which the caller, or this process,
            // knows the queue drained; otherwise the work may be there
            let now = shared.work.epoch();
            if epoch != Some(now) && !shared.ctx.queue.drained_at(now) {
                return self
                    .run_job(run)
                    .await
                    .and_then(|v| downcast(&shared, v))
                    .map(Some);
            }
            let epoch = now;
            let (reply, mut answer) = tokio::sync::oneshot::channel();
            let ticket = shared.parked.park(Job { run, reply });
            let _withdraw = Withdraw {
                parked: &shared.parked,
                ticket,
            };
            let answered = tokio::select! {
                answered = &mut answer => Some(answered),
                () = shared.work.wait(epoch, timeout) => None,
            };
            let value = match answered {
                Some(answered) => answered,
                None => match shared.parked.withdraw(ticket) {
                    // no work came
                    Some(_) if shared.work.epoch() == epoch => return Ok(None),
                    // work came from elsewhere: the pick goes on its own
                    Some(job) => Ok(self.run_job(job.run).await),
                    // the writer took it: its answer comes
                    None => answer.await,
                },
            };
            let value =
                value.map_err(|_| shared.ctx.fail("the writer stopped before answering"))?;
            value.and_then(|v| downcast(&shared, v)).map(Some)
        }
    }

    fn work_epoch(&self) -> u64 {
        self.shared.work.epoch()
    }

    fn wait_for_work(&self, epoch: u64, timeout: Duration) -> impl Future<Output = ()> + Send {
        let shared = self.shared.clone();
        async move { shared.work.wait(epoch, timeout).await }
    }

    fn known_outcomes(&self, ids: &[InvocationId]) -> Option<Vec<InvocationOutcome>> {
        self.shared.known.take_all(ids)
    }

    fn wait_final(&self, ids: &[InvocationId]) -> impl Future<Output = Result<()>> + Send {
        let ids = ids.to_vec();
        async move {
            if ids.is_empty() {
                return Ok(());
            }
            // registered before reading: a commit in between is not missed
            let mut wait = Registered::new(
                &self.shared,
                |s| &s.final_waiters,
                &ids,
                GroupWait::new(&ids),
            );
            let mut pending = ids;
            loop {
                let statuses = self.statuses(pending.clone()).await?;
                for (id, status) in pending.iter().zip(statuses) {
                    match status {
                        None => {
                            return Err(StoreError::not_found(id, "while waiting for its result"))
                        }
                        Some(s) if s.is_final() => wait.waiter().mark(id),
                        Some(_) => {}
                    }
                }
                if wait.waiter().left() == 0 {
                    return Ok(());
                }
                tokio::select! {
                    _ = wait.waiter().woken() => {}
                    _ = tokio::time::sleep(self.recheck()) => {}
                }
                pending = wait.waiter().pending();
                if pending.is_empty() {
                    return Ok(());
                }
                // a wake-up of every wait took it off them all
                wait.renew(&pending);
            }
        }
    }

    fn wait_status_change(
        &self,
        id: &InvocationId,
        seen: InvocationStatus,
        timeout: Duration,
    ) -> impl Future<Output = Result<()>> + Send {
        let id = *id;
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let wait =
                    Registered::new(&self.shared, |s| &s.status_waiters, &[id], Notify::new());
                match self.statuses(vec![id]).await?.pop().flatten() {
                    None => return Err(StoreError::not_found(&id, "while waiting for a status")),
                    Some(s) if s != seen => return Ok(()),
                    Some(_) => {}
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Ok(());
                }
                tokio::select! {
                    _ = wait.waiter().notified() => {}
                    _ = tokio::time::sleep(self.recheck().min(deadline - now)) => {}
                }
            }
        }
    }
}
