//! Talking to the server: the connection pool, the function library, and
//! the retries of steps and reads.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pynenc_store::{Result, StoreError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Value};
use tracing::{debug, warn};

use crate::backend::{RedisBackend, FUNCTIONS_OFF, FUNCTIONS_ON};
use crate::conn::{self, Failure, BACKEND};
use crate::notify;
use crate::script::{scripts, Reply, Step};

/// Whether `FCALL` failed because the function is not there (or the server
/// has no `FCALL` at all).
fn function_missing(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    text.contains("Function not found") || text.contains("unknown command")
}

/// Which connection of the pool a step goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The next one, in turn.
    Any,
    /// Always the first: route steps, so that steps in flight at once
    /// (the batches of one `parallelize`) reach the server in the order
    /// they were sent, and their invocations are created and queued in
    /// call order.
    Routes,
}

impl RedisBackend {
    /// A connection of the pool (opened, with the pub/sub listener, on first use).
    pub(crate) async fn conn(&self) -> RedisResult<ConnectionManager> {
        self.conn_in(Lane::Any).await
    }

    /// The connection of `lane` (the pool opened on first use).
    pub(crate) async fn conn_in(&self, lane: Lane) -> RedisResult<ConnectionManager> {
        let conns = self
            .conns
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(conn::RESPONSE_TIMEOUT))
                    .set_connection_timeout(Some(conn::OPEN_TIMEOUT))
                    .set_number_of_retries(3)
                    .set_max_delay(Duration::from_millis(500));
                let mut conns = Vec::with_capacity(self.pool_size);
                for _ in 0..self.pool_size {
                    conns.push(
                        ConnectionManager::new_with_config(
                            self.settings.client.clone(),
                            config.clone(),
                        )
                        .await?,
                    );
                }
                notify::start_listener(
                    self.settings.client.clone(),
                    self.prefix.clone(),
                    Arc::downgrade(&self.notifier),
                    self.settings.address.clone(),
                )
                .await?;
                Ok::<_, redis::RedisError>(conns)
            })
            .await?;
        let i = match lane {
            Lane::Any => self.next.fetch_add(1, Ordering::Relaxed) % conns.len(),
            Lane::Routes => 0,
        };
        Ok(conns[i].clone())
    }

    /// Loads the function library; `Ok(true)` when it is there now,
    /// `Ok(false)` when this server or user has no functions (steps then run
    /// as scripts from now on).
    async fn load_library(&self, con: &mut ConnectionManager) -> RedisResult<bool> {
        let res: RedisResult<Value> = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg(scripts().library.as_str())
            .query_async(con)
            .await;
        match res {
            Ok(_) => {}
            // another process loaded it first
            Err(e) if e.to_string().contains("already exists") => {}
            Err(e) if conn::classify(&e) != Failure::Fatal => return Err(e),
            Err(e) => {
                debug!(redis = %self.settings.address, error = %e, "no redis functions here; the steps run as scripts");
                self.functions.store(FUNCTIONS_OFF, Ordering::Release);
                return Ok(false);
            }
        }
        self.functions.store(FUNCTIONS_ON, Ordering::Release);
        Ok(true)
    }

    /// A failed command as a store error (authentication failures explained).
    pub(crate) fn command_error(&self, command: &str, e: &redis::RedisError) -> StoreError {
        if e.kind() == redis::ErrorKind::AuthenticationFailed {
            return conn::connect_error(&self.settings, e);
        }
        conn::command_error(&self.settings.address, command, e)
    }

    /// A reply that is not what a step returns.
    pub(crate) fn bad_reply(&self, what: impl std::fmt::Display) -> StoreError {
        StoreError::backend(
            BACKEND,
            format!("redis at {}: {what}", self.settings.address),
        )
    }

    /// Runs a step (a function of the library, or its script where the
    /// server has no functions), retrying while the server is unreachable.
    /// `replayable`: the step recognises a replay, so it is re-run after an
    /// ambiguous failure too.
    pub(crate) async fn run_script(
        &self,
        step: &Step,
        args: &[Vec<u8>],
        replayable: bool,
        lane: Lane,
    ) -> std::result::Result<Reply, (StoreError, Failure)> {
        let command = format!("FCALL {}", step.name);
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut replay = false;
        loop {
            let res: RedisResult<Value> = async {
                let mut con = self.conn_in(lane).await?;
                // the replay flag and who calls (see lib.lua)
                let flag = format!("{}:{}", if replay { 1 } else { 0 }, self.instance);
                if self.functions.load(Ordering::Acquire) != FUNCTIONS_OFF {
                    let mut cmd = redis::cmd("FCALL");
                    cmd.arg(&step.function)
                        .arg(1)
                        .arg(self.prefix.as_str())
                        .arg(flag.as_str());
                    for a in args {
                        cmd.arg(a.as_slice());
                    }
                    match cmd.query_async(&mut con).await {
                        Err(e) if function_missing(&e) => {
                            // not loaded (first use, or a server restarted
                            // without its data): load, then call again. It
                            // did not run, so this is not a replay.
                            if self.load_library(&mut con).await? {
                                return cmd.query_async(&mut con).await;
                            }
                        }
                        other => return other,
                    }
                }
                let mut inv = step.script.prepare_invoke();
                inv.key(self.prefix.as_str()).arg(flag.as_str());
                for a in args {
                    inv.arg(a.as_slice());
                }
                inv.invoke_async(&mut con).await
            }
            .await;
            match res {
                Ok(v) => {
                    let reply = Reply::decode(v).ok_or_else(|| {
                        (
                            self.bad_reply(format!("{command}: unexpected reply shape")),
                            Failure::Fatal,
                        )
                    })?;
                    for id in &reply.finals {
                        self.notifier.on_final(id);
                    }
                    if reply.enqueued {
                        self.notifier.bump_work();
                    }
                    return Ok(reply);
                }
                Err(e) => {
                    let kind = conn::classify(&e);
                    let retry = match kind {
                        Failure::NotSent => true,
                        Failure::Ambiguous => replayable,
                        Failure::Fatal => false,
                    };
                    if !retry || started.elapsed() > conn::RETRY_FOR {
                        return Err((self.command_error(&command, &e), kind));
                    }
                    if kind == Failure::Ambiguous {
                        replay = true;
                    }
                    warn!(redis = %self.settings.address, %command, error = %e, attempt, "redis command failed; retrying");
                    tokio::time::sleep(conn::backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Runs a step and returns its result, or its failure as a store error.
    pub(crate) async fn script(&self, step: &Step, args: &[Vec<u8>]) -> Result<Value> {
        let reply = self
            .run_script(step, args, true, Lane::Any)
            .await
            .map_err(|(e, _)| e)?;
        match reply.body {
            Ok(v) => Ok(v),
            Err(failure) => Err(self.script_failure(&failure)),
        }
    }

    /// A read (or an idempotent write) with retries.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        command: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let res: RedisResult<T> = async {
                let mut con = self.conn().await?;
                pipe.query_async(&mut con).await
            }
            .await;
            match res {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let kind = conn::classify(&e);
                    if kind == Failure::Fatal || started.elapsed() > conn::RETRY_FOR {
                        return Err(self.command_error(command, &e));
                    }
                    warn!(redis = %self.settings.address, %command, error = %e, attempt, "redis command failed; retrying");
                    tokio::time::sleep(conn::backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}
