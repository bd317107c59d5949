//! [`SqliteStore`]: the SQLite store of one app, an [`AtomicStore`].

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pynenc_model::{InvocationId, InvocationStatus, Serializer};
use pynenc_store::{
    AtomicStore, Components, FinalWaiters, Result, StoreTxn, TxnBackend, WorkSignal,
};
use rustc_hash::FxHashMap;
use tokio::sync::Semaphore;

use crate::error::Ctx;
use crate::schema::{check_path, connect, init_schema};
use crate::waits;
use crate::writer::{AnyValue, Inner, WriteJob, WriteQueue, READ_CONNECTIONS};
use crate::SqliteOptions;

/// The SQLite store of one app: an [`AtomicStore`] over one database file.
///
/// Open it with [`SqliteStore::open`]; [`SqliteStore::components`] (or
/// [`pynenc_store::TxnBackend`]) turns it into the components of an app.
pub struct SqliteStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.ctx.shown)
            .field("app_id", &self.inner.ctx.app_id)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file of `options` for the app
    /// `app_id`.
    ///
    /// # Errors
    ///
    /// A [`pynenc_store::StoreError::Backend`] naming the path: the path is a
    /// directory or its directory does not exist, the file is not a SQLite
    /// database, it was written with another schema version (newer or
    /// older; nothing is written to it), or it cannot be written.
    pub fn open(options: &SqliteOptions, app_id: &str) -> Result<Arc<SqliteStore>> {
        let path = options.path.clone();
        let mut ctx = Ctx {
            shown: path.display().to_string(),
            path,
            app_id: app_id.to_string(),
            app: 0,
            busy_timeout: options.busy_timeout,
        };
        check_path(&ctx)?;
        let conn = connect(&ctx, Duration::ZERO)?;
        ctx.app = init_schema(&ctx, &conn)?;
        let poll_min = options.poll_min.max(Duration::from_micros(100));
        Ok(Arc::new(SqliteStore {
            inner: Arc::new(Inner {
                ctx,
                poll_min,
                poll_max: options.poll_max.max(poll_min),
                writer: Mutex::new(Some(conn)),
                readers: Mutex::new(Vec::new()),
                write_queue: Mutex::new(WriteQueue::default()),
                read_gate: Arc::new(Semaphore::new(READ_CONNECTIONS)),
                work: WorkSignal::default(),
                final_waiters: FinalWaiters::default(),
                final_watch: Default::default(),
                status_waiters: FinalWaiters::default(),
                names: Mutex::new(FxHashMap::default()),
            }),
        }))
    }

    /// Opens the store and returns the components of the app `app_id` on it;
    /// `serializer` renders argument differences and cycles in errors.
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`].
    pub fn components(
        options: &SqliteOptions,
        app_id: &str,
        serializer: Serializer,
    ) -> Result<Components> {
        let store = SqliteStore::open(options, app_id)?;
        Ok(TxnBackend::components(store, serializer))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.ctx.path
    }

    /// The shortest pause of the polling waits (`poll_min`, at least 100 µs).
    pub fn poll_interval_min(&self) -> Duration {
        self.inner.poll_min
    }

    /// The longest pause of the polling waits (`poll_max`, at least the shortest).
    pub fn poll_interval_max(&self) -> Duration {
        self.inner.poll_max
    }

    /// The app whose rows this store reads and writes.
    pub fn app_id(&self) -> &str {
        &self.inner.ctx.app_id
    }
}

impl AtomicStore for SqliteStore {
    fn atomic<R, F>(&self, f: F) -> impl Future<Output = Result<R>> + Send
    where
        R: Send + 'static,
        F: Fn(&mut dyn StoreTxn) -> Result<R> + Send + 'static,
    {
        let inner = self.inner.clone();
        async move {
            // one writer per process: sections queue here and are committed in groups
            let (reply, answer) = tokio::sync::oneshot::channel();
            let job = WriteJob {
                run: Box::new(move |t: &mut dyn StoreTxn| f(t).map(|v| Box::new(v) as AnyValue)),
                reply,
            };
            inner.submit(job);
            let value = answer.await.map_err(|_| {
                inner
                    .ctx
                    .fail("the writer stopped before answering; the section was rolled back")
            })??;
            value.downcast::<R>().map(|b| *b).map_err(|_| {
                inner
                    .ctx
                    .fail("the writer returned a value of another type")
            })
        }
    }

    fn work_epoch(&self) -> u64 {
        self.inner.work.epoch()
    }

    fn wait_for_work(&self, epoch: u64, timeout: Duration) -> impl Future<Output = ()> + Send {
        waits::wait_for_work(self.inner.clone(), epoch, timeout)
    }

    fn wait_final(&self, ids: &[InvocationId]) -> impl Future<Output = Result<()>> + Send {
        waits::wait_final(self.inner.clone(), ids.to_vec())
    }

    fn wait_status_change(
        &self,
        id: &InvocationId,
        seen: InvocationStatus,
        timeout: Duration,
    ) -> impl Future<Output = Result<()>> + Send {
        waits::wait_status_change(self.inner.clone(), *id, seen, timeout)
    }
}
