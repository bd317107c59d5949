//! The Redis backend: broker, orchestrator and state backend on one Redis
//! server, shared by any number of processes and machines (feature `redis`).
//!
//! Select it with `backend = "redis"` and either `redis.redis_url`
//! (`redis://[user][:password@]host[:port][/db]`, or `rediss://` for TLS with
//! the feature `redis-tls`) or `redis_host`, `redis_port`, `redis_db`,
//! `redis_username` and `redis_password`.
//!
//! # Atomic on the server
//!
//! Every step that changes state is **one Lua function** of a library the
//! backend loads once per server (`FUNCTION LOAD`, called with `FCALL`;
//! where functions are not available — Redis 6, or an ACL user without
//! `FUNCTION` — the same code runs as one script per step with `EVALSHA`):
//! routing a whole batch (cycle check, registration concurrency, record,
//! history, queue), the runners' *step* (ends of runs — result or error,
//! status, history, waits, call edges, re-routing invocations parked by
//! running concurrency, `RETRY` re-queue — and pick-ups — waited-on
//! invocations first, then the queue; running concurrency; `PENDING` with
//! the runner as owner, and `RUNNING` when starting), every status
//! transition, kill-and-reroute, waits, scheduled promotion, auto-purge
//! chunks, heartbeats, leases and recovery. Nothing is read, checked on the
//! client and written back, so two runners can never own one invocation.
//!
//! The state machine is not copied into Lua: the transition table, the
//! ownership rules and the status classes are generated from
//! [`crate::status::InvocationStatus`] when the library is built (see
//! `script.rs`) and prepended to it. The steps follow
//! [`crate::store::engine`] step by step, and every call reads the server
//! clock once (`TIME`), so all timestamps of a step — e.g. the `created_at_us`
//! of a routed batch — are equal.
//!
//! # Key layout
//!
//! Every key starts with `{redis_key_prefix}:{app_id}:` (`__pynenc__:{app_id}:`
//! by default; a `:` or `%` in the app id is written `%3A` / `%25`, so one
//! app's prefix never covers another's). After the prefix:
//!
//! | key | type | content |
//! |---|---|---|
//! | `inv:{id}` | hash | `call` (JSON), `parent`, `created`, `sched`, `gkey` / `call_id` / `graise` (registration key, the call id, `1` to raise on diff), `rkey` / `reroute` (running key, `1` to re-route), `status`, `owner` (empty once released), `retries`, `result`, `error` (JSON), `waited` (the last waiter), `edges` (set once it called other tasks), `x` (set when any of `gkey`, `rkey`, `waited`, `edges` is, so that transitions read those only then), and the history: `hn` fields `h1`, `h2`, …, each holding the entries one step wrote, `[status, owner, actor, timestamp_us, execution_context]` separated by commas |
//! | `queue` | list | the broker's FIFO of invocation ids (stale ids are skipped at pick-up; killed and recovered work goes to the head) |
//! | `reg:{registration key}` | zset | `REGISTERED` invocations of the key, by creation time |
//! | `run:{running key}` | set | invocations holding the key (`PENDING`, `RUNNING`, `PAUSED`, `RESUMED`) |
//! | `ctl:{running key}` | list | invocations parked `CONCURRENCY_CONTROLLED` until the key frees up |
//! | `blocking` | zset | waited-on invocations available for run, by creation time, then id (ids are time-ordered) — picked first |
//! | `edges:{call_id}` | hash | callee call id → count: the call graph of unfinished invocations (cycle control) |
//! | `iedges:{id}` | list | the edges an invocation added, as (caller call, callee call) pairs |
//! | `scheduled` | zset | `SCHEDULED` invocations by due time |
//! | `finals` | list | the auto-purge log: one entry per step that made invocations final, `time id id …`, in time order |
//! | `owned` | zset | invocations in `PENDING` … `RESUMED` by the time of their last status (recovery) |
//! | `heartbeats` | hash | runner id → last heartbeat (µs, server clock) |
//! | `waiters` | hash | backend id → until when (µs) it waits for results (`wait_final`) |
//! | `lease:{name}` | hash | `holder`, `expires` |
//! | `lastpick:{runner}` | string | the token and ids of the runner's last pick-up (10 min), for a replay |
//!
//! Channels: `{prefix}work` (something was queued) and `{prefix}final`
//! (payload: the ids that became final in one step, separated by spaces).
//! The library `pynenc_{hash of its code}` holds the functions
//! `pynenc_{hash}_{step}`; processes of different versions each load their
//! own.
//!
//! A transition costs one `HSET` per invocation: a step stages the fields
//! it changes — status, owner, result, and its history entries, which live
//! in the same hash — and writes them once at its end, so a pick-up that
//! sets `PENDING` and `RUNNING` writes each invocation once. The shared
//! indexes (`queue`, `owned`, `finals`) and the `final` notification get
//! one command per step, whatever the batch size.
//!
//! Every step touches only the keys of the invocations it handles and
//! per-key indexes (hashes, sets, sorted sets, lists), so its cost does not
//! grow with the amount of data. Listing (`SCAN` for `{prefix}inv:*`) and
//! purging (`SCAN` on the app prefix, then `UNLINK`) are the only scans;
//! the library never uses `KEYS`, `FLUSHDB`, `FLUSHALL`, `CONFIG`, `DEBUG` or any other
//! `@dangerous` command, so an ACL user limited to `~__pynenc__:*` and
//! `&__pynenc__:*` with `+@all -@dangerous` is enough. (The steps build key
//! names from the prefix passed as their one key; this is fine on a
//! standalone server or a replica set, not on Redis Cluster.)
//!
//! # Wake-ups, not polling
//!
//! Steps `PUBLISH` on the two channels; one pub/sub connection per backend
//! wakes local runners (a work epoch) and `result()` waiters (a map from
//! invocation id to waiters). The process that ran a step applies the
//! step's reply locally at once (work queued, ids that became final), so
//! the end of an invocation is published only while some *other* backend
//! waits for results: `wait_final` registers its backend in `waiters` for
//! a minute (renewed while it waits) before it reads any status. A waiter
//! registers first and then reads the status, so a wake-up is never lost;
//! after the pub/sub connection comes back every waiter re-reads its
//! statuses, and a waiter that heard nothing for 2 s re-reads them as a
//! safety net.
//!
//! # Round trips
//!
//! Routing a batch is one call (a plain call is three arguments); a
//! pick-up claims (and starts) up to the runner's free slots in one call;
//! `finish_many` (the runner combines the ends of concurrent runs) writes
//! up to 256 ends in one call, each invocation still checked and changed on
//! its own; waits are recorded in chunks of 1,000 and statuses and outcomes
//! of a group are read with one pipeline. With the thread runner a no-op
//! task costs about 0.42 calls (one route per 100, a pick-up per ~5, an
//! end per ~5) and 3 hash writes.
//!
//! # Connections and failures
//!
//! The app builder is synchronous: [`RedisBackend::open`] resolves the
//! settings and checks the server with one blocking `PING` (so a wrong
//! address or password fails `build()` with a message naming the address;
//! inside a multi-threaded tokio runtime it runs under `block_in_place`).
//! The async connections (`redis_pool_size` multiplexed
//! [`redis::aio::ConnectionManager`]s, which reconnect by themselves, plus
//! the pub/sub connection) are opened on first use, on the tokio runtime of
//! that first use, which must outlive the app.
//!
//! A command whose connection was refused, or that met a server still
//! loading its data, is retried with backoff for up to 30 s. When the
//! connection broke while a script was in flight, the script is re-run with a
//! *replay* flag that makes it recognise its own earlier effect: routing
//! reuses the ids it generated, a transition already made by the same actor
//! (the last history entry) is accepted, and a pick-up returns the ids it
//! handed out under its token (`lastpick:{runner}`) instead of claiming
//! more, so a runner never owns work it did not receive. A call that finds
//! its function missing (a server restarted without its data) loads the
//! library again and calls once more; it had not run.
//! Every error is a [`PynencError::StateBackend`] naming the server and the
//! command. With AOF (`appendfsync always`) nothing acknowledged is lost
//! across a Redis restart.

mod conn;
mod notify;
mod script;
mod step;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Value};
use tracing::{debug, error, warn};

use self::conn::{Failure, Settings};
use self::notify::Notifier;
use self::script::{as_int, as_list, as_string, scripts, Reply, Step};
use self::step::{PickUp, STEP_ENDS};
use crate::broker::Broker;
use crate::call::Call;
use crate::conf::PynencConfig;
use crate::exceptions::{PynencError, Result, TaskError};
use crate::invocation::InvocationRecord;
use crate::orchestrator::{
    ConcurrencySpec, Ends, Orchestrator, Picked, RouteOutcome, RouteRequest, RunOutcome,
};
use crate::serializer::Serializer;
use crate::state_backend::{HistoryEntry, InvocationOutcome, StateBackend};
use crate::status::{InvocationStatus, StatusRecord};
use crate::store::engine::PURGE_BATCH;

/// The safety-net re-check of `wait_final`.
const WAIT_RECHECK: Duration = Duration::from_secs(2);
/// Invocations per `waiting_for_results` script.
const WAIT_CHUNK: usize = 1000;
/// How long a `wait_final` registration (hash `waiters`) lasts.
const WAITING_TTL: Duration = Duration::from_secs(60);
/// The fields of a record in a pick-up's reply (`RECORD_LEN` in lib.lua).
const RECORD_LEN: usize = 9;
/// The most invocations one pick-up claims.
const MAX_PICK: usize = 10_000;

/// The broker, orchestrator and state backend of one app on Redis.
pub struct RedisBackend {
    settings: Settings,
    prefix: String,
    serializer: Serializer,
    pool_size: usize,
    conns: tokio::sync::OnceCell<Vec<ConnectionManager>>,
    next: AtomicUsize,
    notifier: Arc<Notifier>,
    /// This backend's id in the hash `waiters`.
    instance: String,
    /// When this backend last registered in `waiters`.
    waiting_since: parking_lot::Mutex<Option<Instant>>,
    /// Whether the steps run as Redis functions ([`FUNCTIONS_ON`]), as
    /// scripts ([`FUNCTIONS_OFF`]), or not known yet.
    functions: AtomicU8,
}

/// Functions not tried yet.
const FUNCTIONS_UNKNOWN: u8 = 0;
/// The library is loaded: steps run with `FCALL`.
const FUNCTIONS_ON: u8 = 1;
/// No functions on this server (or not for this user): steps run with `EVALSHA`.
const FUNCTIONS_OFF: u8 = 2;

/// Whether `FCALL` failed because the function is not there (or the server
/// has no `FCALL` at all).
fn function_missing(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    text.contains("Function not found") || text.contains("unknown command")
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.settings.address)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// `app_id` with `%` and `:` escaped, so prefixes of different apps never nest.
fn escape_app_id(app_id: &str) -> String {
    app_id.replace('%', "%25").replace(':', "%3A")
}

/// `s` with the glob characters of `SCAN MATCH` escaped.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A new invocation id in creation order (32 hex digits: µs time, a
/// per-process sequence, random bits), so that invocations created in the
/// same microsecond (one routed batch) sort in call order in the
/// `blocking` index, whose ties are broken by member.
fn ordered_invocation_id() -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let us = (crate::util::now_us().max(0) as u64) & 0x000F_FFFF_FFFF_FFFF;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) & 0xFFF;
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    format!("{us:013x}{seq:03x}{random:016x}")
}

fn corrupt(key: &str, field: &str, reason: impl std::fmt::Display) -> PynencError {
    PynencError::backend(format!(
        "corrupt record at redis key '{key}' (field '{field}'): {reason}"
    ))
}

pub(crate) fn bytes(s: impl Into<String>) -> Vec<u8> {
    s.into().into_bytes()
}

fn opt_bytes(s: Option<&str>) -> Vec<u8> {
    s.unwrap_or_default().as_bytes().to_vec()
}

fn micros(d: Duration) -> String {
    crate::util::micros(d).to_string()
}

impl RedisBackend {
    /// Opens the backend of `conf.app_id`: resolves the connection settings
    /// and checks that the server answers `PING` with these credentials (a
    /// blocking check, see the module docs). The async connections are opened
    /// on first use.
    pub fn open(conf: &PynencConfig) -> Result<Arc<RedisBackend>> {
        let settings = conn::settings(conf)?;
        conn::check_reachable(&settings)?;
        let base = if conf.redis.redis_key_prefix.is_empty() {
            "__pynenc__"
        } else {
            conf.redis.redis_key_prefix.as_str()
        };
        let prefix = format!("{base}:{}:", escape_app_id(&conf.app_id));
        Ok(Arc::new(RedisBackend {
            prefix,
            settings,
            serializer: conf.serializer,
            pool_size: conf.redis.redis_pool_size.max(1),
            conns: tokio::sync::OnceCell::new(),
            next: AtomicUsize::new(0),
            notifier: Arc::new(Notifier::default()),
            functions: AtomicU8::new(FUNCTIONS_UNKNOWN),
            instance: uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
            waiting_since: parking_lot::Mutex::new(None),
        }))
    }

    /// The prefix of every key of this app (`{redis_key_prefix}:{app_id}:`).
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of an invocation's record (for tools and tests).
    pub fn invocation_key(&self, invocation_id: &str) -> String {
        self.key("inv", invocation_id)
    }

    /// The server address (`host:port/db`, without credentials).
    pub fn address(&self) -> &str {
        &self.settings.address
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    async fn conn(&self) -> RedisResult<ConnectionManager> {
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
        let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
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

    fn command_error(&self, command: &str, e: &redis::RedisError) -> PynencError {
        if e.kind() == redis::ErrorKind::AuthenticationFailed {
            return conn::connect_error(&self.settings, e);
        }
        conn::command_error(&self.settings.address, command, e)
    }

    /// Runs a step (a function of the library, or its script where the
    /// server has no functions), retrying while the server is unreachable.
    /// `replayable`: the step recognises a replay, so it is re-run after an
    /// ambiguous failure too.
    async fn run_script(
        &self,
        step: &Step,
        args: &[Vec<u8>],
        replayable: bool,
    ) -> std::result::Result<Reply, (PynencError, Failure)> {
        let command = format!("FCALL {}", step.name);
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut replay = false;
        loop {
            let res: RedisResult<Value> = async {
                let mut con = self.conn().await?;
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
                            PynencError::backend(format!(
                                "redis at {}: {command}: unexpected reply shape",
                                self.settings.address
                            )),
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

    /// Runs a script and returns its result, or its failure as a pynenc error.
    async fn script(&self, step: &Step, args: &[Vec<u8>]) -> Result<Value> {
        let reply = self
            .run_script(step, args, true)
            .await
            .map_err(|(e, _)| e)?;
        match reply.body {
            Ok(v) => Ok(v),
            Err(failure) => Err(self.script_failure(&failure)),
        }
    }

    /// A read (or an idempotent write) with retries.
    async fn query<T: redis::FromRedisValue>(
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

    /// A failure raised by a script (`kind`, fields...) as a pynenc error.
    fn script_failure(&self, f: &[Value]) -> PynencError {
        let s = |i: usize| f.get(i).and_then(as_string);
        let kind = s(0).unwrap_or_default();
        match kind.as_str() {
            "NOT_FOUND" => {
                PynencError::not_found(&s(1).unwrap_or_default(), &s(2).unwrap_or_default())
            }
            "TRANSITION" => {
                let id = s(1).unwrap_or_default();
                let from = s(2).unwrap_or_default();
                let owner = s(3);
                let to = s(4).unwrap_or_default();
                let actor = s(5).unwrap_or_default();
                let key = self.key("inv", &id);
                let (from, to) = match (
                    from.parse::<InvocationStatus>(),
                    to.parse::<InvocationStatus>(),
                ) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => return corrupt(&key, "status", e),
                };
                // the same check the script made, for the same message
                match (StatusRecord { status: from, owner: owner.map(Arc::from) }).transition(to, &actor) {
                    Err(source) => PynencError::StatusTransition {
                        invocation_id: id,
                        source,
                    },
                    Ok(_) => PynencError::backend(format!(
                        "redis at {}: the transition {from} -> {to} of invocation {id} by {actor} was refused by the server",
                        self.settings.address
                    )),
                }
            }
            "CORRUPT" => corrupt(
                &s(1).unwrap_or_default(),
                &s(2).unwrap_or_default(),
                format!(
                    "'{}' is not valid",
                    s(3).unwrap_or_default()
                        .chars()
                        .take(80)
                        .collect::<String>()
                ),
            ),
            "CYCLE" => {
                let call_ids: Vec<String> = f[1..].iter().filter_map(as_string).collect();
                let parent = call_ids.first().cloned().unwrap_or_default();
                let callee = call_ids.get(1).cloned().unwrap_or_default();
                PynencError::cycle(&parent, &callee, call_ids)
            }
            other => PynencError::backend(format!(
                "redis at {}: script failure {other}: {:?}",
                self.settings.address,
                f.iter().skip(1).filter_map(as_string).collect::<Vec<_>>()
            )),
        }
    }

    /// An invocation record from `[id, call, parent, created, sched, gkey, graise, rkey, reroute]`.
    fn decode_record(&self, f: &[Value]) -> Result<InvocationRecord> {
        let s = |i: usize| f.get(i).and_then(as_string);
        let id = s(0).unwrap_or_default();
        let key = self.key("inv", &id);
        let call_json = s(1).ok_or_else(|| corrupt(&key, "call", "missing"))?;
        let call: Call = serde_json::from_str(&call_json).map_err(|e| corrupt(&key, "call", e))?;
        let created_at_us = s(3)
            .ok_or_else(|| corrupt(&key, "created", "missing"))?
            .parse::<i64>()
            .map_err(|e| corrupt(&key, "created", e))?;
        let scheduled_at_us = match s(4) {
            Some(v) if !v.is_empty() => {
                Some(v.parse::<i64>().map_err(|e| corrupt(&key, "sched", e))?)
            }
            _ => None,
        };
        let nonempty = |v: Option<String>| v.filter(|x| !x.is_empty());
        Ok(InvocationRecord {
            invocation_id: id,
            call,
            parent_invocation_id: nonempty(s(2)),
            created_at_us,
            scheduled_at_us,
            concurrency: ConcurrencySpec {
                registration_key: nonempty(s(5)),
                on_diff_non_key_args_raise: s(6).as_deref() == Some("1"),
                running_key: nonempty(s(7)),
                reroute_on_concurrency_control: s(8).as_deref() == Some("1"),
            },
        })
    }

    fn parse_status(&self, id: &str, v: &str) -> Result<InvocationStatus> {
        v.parse::<InvocationStatus>()
            .map_err(|e| corrupt(&self.key("inv", id), "status", e))
    }

    /// Makes sure the server knows this backend waits for results, so that
    /// ends made by other backends are published (see `lib.lua`): the
    /// registration lasts [`WAITING_TTL`] and is renewed once half of it
    /// has passed.
    async fn register_waiting(&self) -> Result<()> {
        let fresh = |at: Option<Instant>| at.is_some_and(|t| t.elapsed() < WAITING_TTL / 2);
        if fresh(*self.waiting_since.lock()) {
            return Ok(());
        }
        let started = Instant::now();
        self.script(
            &scripts().small,
            &[bytes("waiting"), bytes(micros(WAITING_TTL))],
        )
        .await?;
        *self.waiting_since.lock() = Some(started);
        Ok(())
    }

    /// For each id: whether it is final (error if missing or corrupt).
    async fn finals_of(&self, ids: &[String]) -> Result<Vec<bool>> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.key("inv", id), "status");
        }
        let statuses: Vec<Option<String>> = self.query("HGET status", &pipe).await?;
        ids.iter()
            .zip(statuses)
            .map(|(id, st)| match st {
                None => Err(PynencError::not_found(id, "while waiting for its result")),
                Some(st) => Ok(self.parse_status(id, &st)?.is_final()),
            })
            .collect()
    }

    /// A claimed invocation whose record cannot be decoded ends `FAILED` with
    /// the decoding error, so its waiters learn what is wrong.
    async fn fail_corrupt(&self, runner_id: &str, id: &str, started: bool, err: &PynencError) {
        error!(invocation_id = id, error = %err, "cannot decode a claimed invocation; it fails");
        let te = TaskError::new(err.kind(), err.to_string());
        let res = async {
            if !started {
                self.set_status(id, InvocationStatus::Running, runner_id, None)
                    .await?;
            }
            self.finish(id, runner_id, RunOutcome::Failed(te)).await
        }
        .await;
        if let Err(e) = res {
            error!(invocation_id = id, error = %e, "could not fail the corrupt invocation");
        }
    }

    /// Pick-up; `start`: also `RUNNING` with this execution context (one
    /// `step` script, see `step.rs`).
    async fn pick(
        &self,
        runner_id: &str,
        max: usize,
        start: Option<String>,
    ) -> Result<Vec<Arc<InvocationRecord>>> {
        let max = max.min(MAX_PICK);
        if max == 0 {
            return Ok(Vec::new());
        }
        let pick = PickUp {
            max,
            start: start.as_deref(),
        };
        let (_, body) = self.step(runner_id, &[], Some(pick)).await;
        let body =
            body.unwrap_or_else(|| Err(PynencError::backend("a pick-up returned nothing")))?;
        self.decode_pick(runner_id, body, start.is_some()).await
    }

    /// The invocations of a pick-up's outcome; corrupt ones are logged,
    /// and failed where they were already claimed.
    async fn decode_pick(
        &self,
        runner_id: &str,
        body: redis::Value,
        started: bool,
    ) -> Result<Vec<Arc<InvocationRecord>>> {
        let parts = as_list(&body);
        let picked = parts.first().map(as_list).unwrap_or_default();
        for key in parts
            .get(1)
            .map(as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(as_string)
        {
            error!(redis_key = %key, "skipped a queued invocation whose record is corrupt (field 'status')");
        }
        // the records' fields, RECORD_LEN each (see step.lua)
        let mut out = Vec::with_capacity(picked.len() / RECORD_LEN);
        for fields in picked.chunks(RECORD_LEN) {
            match self.decode_record(fields) {
                Ok(r) => out.push(Arc::new(r)),
                Err(e) => {
                    let id = fields.first().and_then(as_string).unwrap_or_default();
                    self.fail_corrupt(runner_id, &id, started, &e).await;
                }
            }
        }
        Ok(out)
    }

    /// One page of `SCAN cursor MATCH <prefix>* COUNT 1000`: the next
    /// cursor (0 at the end) and the keys (a key may come twice).
    async fn scan_page(&self, cursor: u64, prefix: &str) -> Result<(u64, Vec<String>)> {
        let mut pipe = redis::pipe();
        pipe.cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", escape_glob(prefix)))
            .arg("COUNT")
            .arg(1000);
        let r: Vec<(u64, Vec<String>)> = self.query("SCAN", &pipe).await?;
        Ok(r.into_iter().next().unwrap_or((0, Vec::new())))
    }

    async fn purge_all(&self) -> Result<()> {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys) = self.scan_page(cursor, &self.prefix).await?;
            if !keys.is_empty() {
                let mut del = redis::pipe();
                del.cmd("UNLINK").arg(&keys).ignore();
                self.query::<()>("UNLINK", &del).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        self.notifier.recheck.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl Broker for RedisBackend {
    async fn route_invocations(&self, invocation_ids: &[String]) -> Result<()> {
        if invocation_ids.is_empty() {
            return Ok(());
        }
        let mut args = vec![bytes("enqueue")];
        args.extend(invocation_ids.iter().map(|id| bytes(id.as_str())));
        self.script(&scripts().small, &args).await.map(|_| ())
    }

    async fn retrieve_invocation(&self) -> Result<Option<String>> {
        let command = "LPOP queue";
        let mut con = self
            .conn()
            .await
            .map_err(|e| self.command_error(command, &e))?;
        redis::cmd("LPOP")
            .arg(format!("{}queue", self.prefix))
            .query_async(&mut con)
            .await
            .map_err(|e| self.command_error(command, &e))
    }

    async fn queue_len(&self) -> Result<usize> {
        let mut pipe = redis::pipe();
        pipe.llen(format!("{}queue", self.prefix));
        let (n,): (usize,) = self.query("LLEN queue", &pipe).await?;
        Ok(n)
    }

    async fn purge(&self) -> Result<()> {
        self.purge_all().await
    }
}

#[async_trait]
impl StateBackend for RedisBackend {
    async fn get_invocation(&self, invocation_id: &str) -> Result<InvocationRecord> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(self.key("inv", invocation_id)).arg(&[
            "status", "call", "parent", "created", "sched", "gkey", "graise", "rkey", "reroute",
        ]);
        let (mut fields,): (Vec<Value>,) = self.query("HMGET record", &pipe).await?;
        if matches!(fields.first(), None | Some(Value::Nil)) {
            return Err(PynencError::not_found(invocation_id, ""));
        }
        fields[0] = Value::BulkString(invocation_id.as_bytes().to_vec());
        self.decode_record(&fields)
    }

    async fn get_history(&self, invocation_id: &str) -> Result<Vec<HistoryEntry>> {
        let key = self.key("inv", invocation_id);
        let v = self
            .script(&scripts().small, &[bytes("history"), bytes(invocation_id)])
            .await?;
        let Value::Array(fields) = v else {
            return Err(PynencError::not_found(invocation_id, ""));
        };
        type Raw = (String, Option<String>, String, i64, Option<String>);
        let mut out = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            // a field holds the entries of one step, separated by commas
            let field = format!("h{}", i + 1);
            let f = as_string(f).ok_or_else(|| corrupt(&key, &field, "missing"))?;
            let entries: Vec<Raw> = serde_json::from_str(&format!("[{f}]"))
                .map_err(|err| corrupt(&key, &field, err))?;
            for (status, owner, actor, timestamp_us, execution_context) in entries {
                let status = status
                    .parse::<InvocationStatus>()
                    .map_err(|err| corrupt(&key, &field, err))?;
                out.push(HistoryEntry {
                    invocation_id: invocation_id.to_string(),
                    status,
                    owner,
                    actor,
                    timestamp_us,
                    execution_context,
                });
            }
        }
        Ok(out)
    }

    async fn get_outcomes(&self, invocation_ids: &[String]) -> Result<Vec<InvocationOutcome>> {
        if invocation_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in invocation_ids {
            pipe.cmd("HMGET")
                .arg(self.key("inv", id))
                .arg(&["status", "result", "error"]);
        }
        let rows: Vec<(Option<String>, Option<String>, Option<String>)> =
            self.query("HMGET outcome", &pipe).await?;
        invocation_ids
            .iter()
            .zip(rows)
            .map(|(id, (status, result, error))| {
                let status =
                    status.ok_or_else(|| PynencError::not_found(id, "while reading its result"))?;
                let status = self.parse_status(id, &status)?;
                let error = match error {
                    Some(e) => Some(
                        serde_json::from_str::<TaskError>(&e)
                            .map_err(|err| corrupt(&self.key("inv", id), "error", err))?,
                    ),
                    None => None,
                };
                Ok(InvocationOutcome {
                    status,
                    result,
                    error,
                })
            })
            .collect()
    }

    async fn list_invocation_ids(&self) -> Result<Vec<String>> {
        let inv_prefix = format!("{}inv:", self.prefix);
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys) = self.scan_page(cursor, &inv_prefix).await?;
            out.extend(
                keys.into_iter()
                    .filter_map(|k| k.strip_prefix(&inv_prefix).map(str::to_string)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice
        let mut seen = HashSet::with_capacity(out.len());
        out.retain(|id| seen.insert(id.clone()));
        Ok(out)
    }

    async fn purge(&self) -> Result<()> {
        self.purge_all().await
    }
}

#[async_trait]
impl Orchestrator for RedisBackend {
    async fn route_calls(&self, requests: Vec<RouteRequest>) -> Result<Vec<RouteOutcome>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = requests.iter().map(|_| ordered_invocation_id()).collect();
        let mut args = Vec::with_capacity(1 + requests.len() * 3);
        args.push(bytes(requests.len().to_string()));
        for (req, id) in requests.iter().zip(&ids) {
            let call_json = serde_json::to_string(&req.call).map_err(|e| {
                PynencError::serialization(
                    "serialize",
                    format!("call of task {}", req.call.task_id),
                    e,
                )
            })?;
            let c = &req.concurrency;
            args.push(bytes(id.as_str()));
            args.push(call_json.into_bytes());
            let flag = |b: bool| if b { '1' } else { '0' };
            let mut flags: String = [
                flag(c.on_diff_non_key_args_raise),
                flag(c.reroute_on_concurrency_control),
                flag(req.cycle_control),
            ]
            .iter()
            .collect();
            // the rest only when there is one (see route.lua)
            let plain = req.parent_invocation_id.is_none()
                && req.parent_call_id.is_none()
                && c.registration_key.is_none()
                && c.running_key.is_none()
                && req.scheduled_at_us.is_none()
                && req.actor.is_empty();
            if plain {
                args.push(flags.into_bytes());
                continue;
            }
            flags.push('+');
            args.push(flags.into_bytes());
            // the call id serves cycle control (with a parent) and
            // registration concurrency; computing it costs a hash
            args.push(if req.needs_call_id() {
                bytes(req.call.call_id())
            } else {
                Vec::new()
            });
            args.push(opt_bytes(req.parent_invocation_id.as_deref()));
            args.push(opt_bytes(req.parent_call_id.as_deref()));
            args.push(opt_bytes(c.registration_key.as_deref()));
            args.push(opt_bytes(c.running_key.as_deref()));
            args.push(
                req.scheduled_at_us
                    .map(|t| bytes(t.to_string()))
                    .unwrap_or_default(),
            );
            args.push(bytes(&*req.actor));
        }
        let reply = self
            .run_script(&scripts().route, &args, true)
            .await
            .map_err(|(e, _)| e)?;
        drop(args);
        let body = match reply.body {
            Ok(v) => v,
            Err(f) => {
                if f.first().and_then(as_string).as_deref() == Some("REG_CONFLICT") {
                    let idx = f.get(1).and_then(as_int).unwrap_or(0) as usize;
                    let record = self.decode_record(&f[2..])?;
                    let req = requests.get(idx).ok_or_else(|| {
                        PynencError::backend("route: conflict on an unknown request")
                    })?;
                    let diff = record
                        .call
                        .arguments
                        .diff(&req.call.arguments, self.serializer);
                    return Err(req.registration_conflict(
                        record.invocation_id,
                        req.call.call_id(),
                        diff,
                    ));
                }
                return Err(self.script_failure(&f));
            }
        };
        let items = as_list(&body);
        let now = items.first().and_then(as_int);
        let outcomes = items.get(1..).unwrap_or_default();
        if outcomes.len() != requests.len() {
            return Err(PynencError::backend(format!(
                "redis at {}: route returned {} outcomes for {} calls",
                self.settings.address,
                outcomes.len(),
                requests.len()
            )));
        }
        let mut out = Vec::with_capacity(requests.len());
        for ((req, id), o) in requests.into_iter().zip(ids).zip(outcomes) {
            // a new invocation is 'N' (created now), or {'N', id, created} after a replay
            let (kind, o) = match o {
                Value::Array(_) => (as_list(o).first().and_then(as_string), as_list(o)),
                other => (as_string(other), &[][..]),
            };
            match kind.as_deref() {
                Some("N") => {
                    let created_at_us = if o.is_empty() {
                        now
                    } else {
                        o.get(2).and_then(as_int)
                    }
                    .ok_or_else(|| {
                        PynencError::backend("route: a new invocation without creation time")
                    })?;
                    out.push(RouteOutcome::New(Arc::new(InvocationRecord {
                        invocation_id: id,
                        call: req.call,
                        parent_invocation_id: req.parent_invocation_id,
                        created_at_us,
                        scheduled_at_us: req.scheduled_at_us,
                        concurrency: req.concurrency,
                    })));
                }
                Some("R") => {
                    let same = o.get(1).and_then(as_int) == Some(1);
                    let record = self.decode_record(o.get(2..).unwrap_or_default())?;
                    let diff = req.registration_diff(&record, same, self.serializer);
                    out.push(RouteOutcome::Reused {
                        record: Arc::new(record),
                        diff,
                    });
                }
                _ => return Err(PynencError::backend("route: unexpected outcome shape")),
            }
        }
        Ok(out)
    }

    async fn get_invocations_to_run(
        &self,
        runner_id: &str,
        max: usize,
    ) -> Result<Vec<Arc<InvocationRecord>>> {
        self.pick(runner_id, max, None).await
    }

    async fn get_invocations_to_start(
        &self,
        runner_id: &str,
        max: usize,
        execution_context: Option<String>,
    ) -> Result<Vec<Arc<InvocationRecord>>> {
        self.pick(runner_id, max, Some(execution_context.unwrap_or_default()))
            .await
    }

    async fn set_status(
        &self,
        invocation_id: &str,
        status: InvocationStatus,
        actor: &str,
        execution_context: Option<String>,
    ) -> Result<StatusRecord> {
        let args = [
            bytes(invocation_id),
            bytes(status.as_str()),
            bytes(actor),
            opt_bytes(execution_context.as_deref()),
        ];
        let v = self.script(&scripts().set_status, &args).await?;
        let parts = as_list(&v);
        let st = parts.first().and_then(as_string).unwrap_or_default();
        Ok(StatusRecord {
            status: self.parse_status(invocation_id, &st)?,
            owner: parts.get(1).and_then(as_string).map(Arc::from),
        })
    }

    async fn finish(
        &self,
        invocation_id: &str,
        runner_id: &str,
        outcome: RunOutcome,
    ) -> Result<InvocationStatus> {
        let ends = self
            .finish_many(runner_id, vec![(invocation_id.to_string(), outcome)])
            .await;
        crate::orchestrator::only_end(ends)
    }

    async fn finish_many(
        &self,
        runner_id: &str,
        outcomes: Vec<(String, RunOutcome)>,
    ) -> Vec<Result<InvocationStatus>> {
        self.finish_many_and_start(runner_id, outcomes, 0, None)
            .await
            .0
    }

    async fn finish_many_and_start(
        &self,
        runner_id: &str,
        outcomes: Vec<(String, RunOutcome)>,
        max_next: usize,
        execution_context: Option<&str>,
    ) -> (Ends, Result<Picked>) {
        if outcomes.is_empty() && max_next == 0 {
            return (Vec::new(), Ok(Vec::new()));
        }
        // one `step` script per STEP_ENDS ends (at least one), the last with
        // the pick-up (see `step.rs`)
        let mut results = Vec::with_capacity(outcomes.len());
        let mut chunks: Vec<&[(String, RunOutcome)]> = outcomes.chunks(STEP_ENDS).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let mut picked = None;
        for (i, items) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let pick = (last && max_next > 0).then(|| PickUp {
                max: max_next.min(MAX_PICK),
                start: Some(execution_context.unwrap_or_default()),
            });
            let (ends, pick) = self.step(runner_id, items, pick).await;
            results.extend(ends);
            picked = pick;
        }
        let next = match picked {
            None => Ok(Vec::new()),
            Some(Err(e)) => Err(e),
            Some(Ok(body)) => self.decode_pick(runner_id, body, true).await,
        };
        (results, next)
    }

    async fn kill_and_reroute(&self, invocation_id: &str, runner_id: &str) -> Result<()> {
        let args = [bytes(invocation_id), bytes(runner_id)];
        self.script(&scripts().kill_reroute, &args)
            .await
            .map(|_| ())
    }

    async fn get_status(&self, invocation_id: &str) -> Result<StatusRecord> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.key("inv", invocation_id))
            .arg(&["status", "owner"]);
        let ((status, owner),): ((Option<String>, Option<String>),) =
            self.query("HMGET status", &pipe).await?;
        let status = status.ok_or_else(|| PynencError::not_found(invocation_id, ""))?;
        Ok(StatusRecord {
            status: self.parse_status(invocation_id, &status)?,
            // a released owner is stored empty
            owner: owner.filter(|o| !o.is_empty()).map(Arc::from),
        })
    }

    async fn get_num_retries(&self, invocation_id: &str) -> Result<u32> {
        let key = self.key("inv", invocation_id);
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(&key).arg(&["status", "retries"]);
        let ((status, retries),): ((Option<String>, Option<String>),) =
            self.query("HMGET retries", &pipe).await?;
        if status.is_none() {
            return Err(PynencError::not_found(invocation_id, ""));
        }
        match retries {
            None => Ok(0),
            Some(r) => r.parse().map_err(|e| corrupt(&key, "retries", e)),
        }
    }

    async fn waiting_for_results(&self, waiter: Option<&str>, waited: &[String]) -> Result<()> {
        if waited.is_empty() {
            return Ok(());
        }
        // chunks keep each script short (a wait is recorded per invocation)
        for chunk in waited.chunks(WAIT_CHUNK) {
            let mut args = Vec::with_capacity(chunk.len() + 1);
            args.push(opt_bytes(waiter));
            args.extend(chunk.iter().map(|id| bytes(id.as_str())));
            self.script(&scripts().wait, &args).await?;
        }
        Ok(())
    }

    async fn wait_final(&self, ids: &[String]) -> Result<()> {
        let mut seen = HashSet::with_capacity(ids.len());
        let ids: Vec<String> = ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .cloned()
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        // make sure the subscription is active before reading statuses
        self.conn()
            .await
            .map_err(|e| self.command_error("SUBSCRIBE", &e))?;
        // register first, then read: a final status published in between is not lost
        let reg = self.notifier.register(&ids);
        let mut check = ids;
        loop {
            self.register_waiting().await?;
            for (id, fin) in check.iter().zip(self.finals_of(&check).await?) {
                if fin {
                    reg.wait.mark(id);
                }
            }
            // wait for the notifications; re-read the statuses only after a
            // reconnect, or when nothing arrived for WAIT_RECHECK (safety net)
            loop {
                let left = reg.wait.pending.lock().len();
                if left == 0 {
                    return Ok(());
                }
                let recheck = self.notifier.recheck.notified();
                // the registration in `waiters` is renewed before it runs out
                let renew = self
                    .waiting_since
                    .lock()
                    .map(|t| (WAITING_TTL / 2).saturating_sub(t.elapsed()))
                    .unwrap_or_default();
                tokio::select! {
                    _ = reg.wait.done.notified() => return Ok(()),
                    _ = recheck => break,
                    _ = tokio::time::sleep(renew) => break,
                    _ = tokio::time::sleep(WAIT_RECHECK) => {
                        if reg.wait.pending.lock().len() == left {
                            break;
                        }
                    }
                }
            }
            check = reg.wait.pending.lock().iter().cloned().collect();
            if check.is_empty() {
                return Ok(());
            }
        }
    }

    fn work_epoch(&self) -> u64 {
        self.notifier.work_epoch()
    }

    async fn wait_for_work(&self, epoch: u64, timeout: Duration) {
        if self.conns.get().is_none() {
            let _ = tokio::time::timeout(timeout, self.conn()).await;
            return;
        }
        self.notifier.wait_for_work(epoch, timeout).await
    }

    async fn promote_scheduled(&self) -> Result<usize> {
        let v = self
            .script(&scripts().promote, &[bytes("scheduler")])
            .await?;
        Ok(as_int(&v).unwrap_or(0).max(0) as usize)
    }

    async fn auto_purge(&self, older_than: Duration) -> Result<usize> {
        let mut total = 0;
        loop {
            let args = [bytes(micros(older_than)), bytes(PURGE_BATCH.to_string())];
            let v = self.script(&scripts().purge_final, &args).await?;
            let n = as_int(&v).unwrap_or(0).max(0) as usize;
            total += n;
            if n < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    async fn heartbeat(&self, runner_id: &str) -> Result<()> {
        self.script(&scripts().small, &[bytes("heartbeat"), bytes(runner_id)])
            .await
            .map(|_| ())
    }

    async fn remove_heartbeat(&self, runner_id: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.hdel(format!("{}heartbeats", self.prefix), runner_id)
            .ignore();
        self.query::<()>("HDEL heartbeats", &pipe).await
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let args = [
            bytes("lease"),
            bytes(name),
            bytes(holder),
            bytes(micros(ttl)),
        ];
        let v = self.script(&scripts().small, &args).await?;
        Ok(as_int(&v) == Some(1))
    }

    async fn recover(
        &self,
        actor: &str,
        dead_after: Duration,
        max_pending: Duration,
    ) -> Result<Vec<String>> {
        let args = [
            bytes(actor),
            bytes(micros(dead_after)),
            bytes(micros(max_pending)),
        ];
        let v = self.script(&scripts().recover, &args).await?;
        Ok(as_list(&v).iter().filter_map(as_string).collect())
    }

    async fn purge(&self) -> Result<()> {
        self.purge_all().await
    }
}

#[cfg(test)]
mod live_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_in_creation_order() {
        let ids: Vec<String> = (0..100).map(|_| ordered_invocation_id()).collect();
        assert!(ids
            .iter()
            .all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())));
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn prefixes_never_nest() {
        assert_eq!(escape_app_id("a:b"), "a%3Ab");
        assert_eq!(escape_app_id("a%3Ab"), "a%253Ab");
        assert_eq!(escape_glob("p:a*[x]?:"), "p:a\\*\\[x\\]\\?:");
    }
}
