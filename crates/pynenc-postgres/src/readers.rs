//! The query readers: a pool of connections (`pool_size`, each on a thread
//! of its own, connected on first use) that answer the sections that only
//! read — the operators' listings and counts, the monitor — on committed
//! data, each in a `REPEATABLE READ READ ONLY` transaction without the
//! app's advisory lock, so a query never waits for the app's steps and the
//! steps never wait for a query.
//!
//! A reader that cannot connect, or whose connection is lost, says so and
//! the store runs the section through the writer instead (which retries
//! while the server is away).

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::debug;

use crate::conn::{connect, Server};
use crate::error::{is_connection_lost, Ctx};
use crate::statements::Conn;
use crate::txn::{Group, PgTxn};
use crate::writer::{AnyValue, JobFn};

/// A section's value, and the connection whose transaction is to end.
type ReadDone = (pynenc_store::Result<AnyValue>, Option<Conn>);

/// What a reader answers: the section's own result, or why the reader
/// could not run it, with the section given back (the caller then runs it
/// through the writer).
pub(crate) type ReadAnswer = std::result::Result<pynenc_store::Result<AnyValue>, (String, JobFn)>;

/// One read-only section waiting for a reader.
pub(crate) struct ReadJob {
    pub(crate) run: JobFn,
    pub(crate) reply: tokio::sync::oneshot::Sender<ReadAnswer>,
}

/// The pool: where sections are sent (`None` when it has no reader).
pub(crate) struct Readers {
    jobs: Option<Mutex<Sender<ReadJob>>>,
}

impl Readers {
    /// Starts `size` reader threads for the store of `ctx` on `server`
    /// (none when `size` is 0: every section goes through the writer).
    pub(crate) fn start(ctx: &Ctx, server: &Server, size: usize) -> std::io::Result<Readers> {
        if size == 0 {
            return Ok(Readers { jobs: None });
        }
        let (tx, rx) = std::sync::mpsc::channel::<ReadJob>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..size {
            let reader = Reader {
                ctx: ctx.clone(),
                server: server.clone(),
                conn: None,
            };
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("pynenc-pg-read-{i}"))
                .spawn(move || reader.run(&rx))?;
        }
        Ok(Readers {
            jobs: Some(Mutex::new(tx)),
        })
    }

    /// Sends `job` to a reader; gives it back when there is none.
    pub(crate) fn send(&self, job: ReadJob) -> std::result::Result<(), ReadJob> {
        match &self.jobs {
            Some(jobs) => jobs.lock().send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

/// One reader thread's state.
struct Reader {
    ctx: Ctx,
    server: Server,
    /// Its connection, once made (dropped when lost).
    conn: Option<Conn>,
}

impl Reader {
    /// Answers sections until the store is gone.
    fn run(mut self, jobs: &Mutex<Receiver<ReadJob>>) {
        loop {
            let job = match jobs.lock().recv_timeout(Duration::from_secs(30)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let (answer, open) = match self.answer(&job.run) {
                Ok((result, open)) => (Ok(result), open),
                Err(why) => (Err((why, job.run)), None),
            };
            // a caller that stopped waiting is no error
            let _ = job.reply.send(answer);
            // the caller has its answer: the snapshot ends after it (a
            // failed statement aborted it anyway)
            if let Some(conn) = open {
                match conn.rt.block_on(conn.client.batch_execute("ROLLBACK")) {
                    Err(e) if is_connection_lost(&e) => {}
                    _ => self.conn = Some(conn),
                }
            }
        }
    }

    /// Runs one section in a read-only transaction, begun with its first
    /// statement (one round trip); the connection comes back when its
    /// transaction is still to be rolled back, or is kept when the section
    /// read nothing.
    fn answer(&mut self, run: &JobFn) -> std::result::Result<ReadDone, String> {
        let conn = match self.conn.take() {
            Some(c) if !c.client.is_closed() => c,
            _ => self.connect()?,
        };
        // no lock to take and nothing to write
        let mut g = Group {
            read_only: true,
            ..Group::default()
        };
        let mut txn = PgTxn {
            conn: &conn,
            ctx: &self.ctx,
            g: &mut g,
        };
        let result = run(&mut txn);
        if g.lost.get() {
            return Err("the reader's connection was lost".to_string());
        }
        if g.begun {
            return Ok((result, Some(conn)));
        }
        self.conn = Some(conn);
        Ok((result, None))
    }

    /// A new connection with a runtime of its own.
    fn connect(&self) -> std::result::Result<Conn, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let client = rt
            .block_on(connect(&self.server, &self.ctx.shown))
            .map_err(|e| e.to_string())?;
        debug!(postgres = %self.ctx.shown, "query reader connected");
        Ok(Conn::new(rt, client))
    }
}
