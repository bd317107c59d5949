//! The Redis backend of pynenc: broker, orchestrator, state backend and
//! coordination on one Redis server, shared by any number of processes and
//! machines.
//!
//! An app selects it with `backend = "redis"` and either `redis.redis_url`
//! (`redis://[user][:password@]host[:port][/db]`, or `rediss://` for TLS with
//! the feature `tls` — `redis-tls` of the `pynenc` crate) or `redis_host`,
//! `redis_port`, `redis_db`, `redis_username` and `redis_password`; in code,
//! with [`RedisOptions`]:
//!
//! ```no_run
//! use pynenc_redis::{RedisBackend, RedisOptions};
//!
//! let options = RedisOptions::from_url("redis://127.0.0.1:6379/0");
//! let backend = RedisBackend::open(&options, "my-app", Default::default())?;
//! # Ok::<(), pynenc_store::StoreError>(())
//! ```
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
//! chunks, deletes, cancels, heartbeats, runners, leases and recovery, the
//! data store's claims, puts and sweep sections (`data.lua`), and the reads
//! of the query API (`query.lua`). Nothing is read, checked on the
//! client and written back, so two runners can never own one invocation.
//!
//! The state machine is not copied into Lua: the transition table, the
//! ownership rules and the status classes are generated from
//! [`pynenc_model::InvocationStatus`] when the library is built (see
//! `script.rs`) and prepended to it. The steps follow
//! [`pynenc_store::engine`] step by step, and every call reads the server
//! clock once (`TIME`), so all timestamps of a step — e.g. the `created_at_us`
//! of a routed batch — are equal.
//!
//! # Key layout
//!
//! Every key starts with `{redis_key_prefix}:{app_id}:` (`__pynenc__:{app_id}:`
//! by default; a `:` or `%` in the app id is written `%3A` / `%25`, so one
//! app's prefix never covers another's). One key is shared by the apps of a
//! server: `{redis_key_prefix}:apps`, the set of the (escaped) ids of the apps
//! that routed anything, kept by the route step and left by an app's purge
//! ([`pynenc_store::Queries::app_ids`]). After the prefix:
//!
//! | key | type | content |
//! |---|---|---|
//! | `inv:{id}` | hash | `call` (JSON), `tc` (the task id, `#` and 16 hex digits of the call's hash: the call id cut short), `parent`, `created`, `sched`, `gkey` / `call_id` / `graise` / `gscope` (registration key, the call id, `1` to raise on diff, the registration scope: empty, `a` active or `c{ttl_us}` cached), `rkey` / `reroute` (running key, `1` to re-route), `rerun` (the invocation it reruns), `status`, `owner` (empty once released), `retries`, `result`, `error` (JSON), `ekind` (the error kind of a `FAILED` one), `waited` (who waits on it: invocation ids, `(external)` for a caller outside any invocation, `-` once those are gone, separated by spaces; set at all once anything waited on it), `wo` (set while it waits on others), `cxl` (the runner asked to stop it, until it is final), `edges` (set once it called other tasks), `sw` (how many waits for its next status there are: while set, its status changes are published), `rn` (how many calls reused it, see `reuse:{id}`), `wd` (set once it has workflow data, `wfd:{id}`), `x` (set when any of `gkey`, `rkey`, `waited`, `edges`, `wo`, `cxl`, `sw`, `graise`, `rerun` is, so that transitions read those only then), and the history: `hn` fields `h1`, `h2`, …, each holding the entries one step wrote, `[status, owner, actor, timestamp_us, execution_context]` separated by commas |
//! | `queue` | list | the broker's FIFO of invocation ids (stale ids are skipped at pick-up; killed and recovered work goes to the head) |
//! | `reg:{registration key}` | zset | `REGISTERED` invocations of the key, by creation time |
//! | `gact:{registration key}` | zset | invocations of the key neither final nor `SCHEDULED` (score 0: id order), for registration scope `active` |
//! | `gok:{registration key}` | zset | `SUCCESS` invocations of the key by the time they ended, for registration scope `cached` |
//! | `run:{running key}` | set | invocations holding the key (`PENDING`, `RUNNING`, `PAUSED`, `RESUMED`) |
//! | `ctl:{running key}` | list | invocations parked `CONCURRENCY_CONTROLLED` until the key frees up |
//! | `blocking` | zset | waited-on invocations available for run, by creation time, then id (ids are time-ordered) — picked first |
//! | `edges:{call_id}` | hash | callee call id → count: the call graph of unfinished invocations (cycle control) |
//! | `iedges:{id}` | list | the edges an invocation added, as (caller call, callee call) pairs |
//! | `scheduled` | zset | `SCHEDULED` invocations by due time |
//! | `owned` | zset | invocations in `PENDING` … `RESUMED` by the time of their last status (recovery; the counts of those statuses), and one member with the score +inf that keeps the set a skip list (readers take the scores below +inf) |
//! | `idx:{task}` | zset | every invocation of the task, scored by its status *band* — 1 for `REGISTERED`, `PENDING`, `RUNNING`, `PAUSED` and `RESUMED`, one band for each other status — and in id (creation) order inside a band: the listings and the counts |
//! | `tasks` | set | the task ids that have invocations or totals |
//! | `finals:{status}` | list | per final status, one entry per step that made invocations final, `time id id …`, in time order (retention; ids deleted meanwhile are skipped) |
//! | `par:{parent}` | zset | the children of an invocation (score 0: id order) |
//! | `fk:{task}` | hash | error kind → how many `FAILED` invocations of the task failed with it |
//! | `wfd:{id}` | hash | the data of a workflow: key → value (the invocation's field `wd` is set while it has any) |
//! | `reuse:{id}` | list | the latest reuses of an invocation by registration concurrency (`ReuseRecord` JSON, oldest first; the invocation's field `rn` counts them all) |
//! | `tot:{task}` | hash | the task totals: code of a `pynenc_model::TotalKey` → how many (routed, started, ended, runs per run-time bucket, the run times' sum in µs); only grow, a retention purge leaves them |
//! | `totl:{task}` | list | what steps added to the task totals, not yet in `tot:{task}`: one entry per step, `code n code n ...`; the 32nd entry moves them into the hash, a reader adds them |
//! | `wo:{id}` | set | the invocations it waits on (until they, or it, are final or deleted; who waits on an invocation is its field `waited`) |
//! | `cxl:{runner}` | set | the invocations the runner was asked to stop (until they are final) |
//! | `heartbeats` | hash | runner id → last heartbeat (µs, server clock) |
//! | `runners` | hash | runner id → what it said of itself (`RunnerInfo` JSON; the listing takes the heartbeat from `heartbeats`) |
//! | `triggers` | hash | trigger name → the trigger a runner declared (`TriggerRecord` JSON) |
//! | `waiters` | hash | backend id → until when (µs) it waits for results (`wait_final`) |
//! | `lease:{name}` | hash | `holder`, `expires` |
//! | `lastpick:{runner}:{slot}` | string | the token and ids of a pick-up of the runner, one key per slot `0..64` (the runner's pick-ups counted modulo 64: its latest 64), 10 min, for a replay |
//! | `data:{digest}` | string | a value of the data store ([`pynenc_store::DataStore`]): the serialized text whose SHA-256 is `digest` (64 hex digits, [`pynenc_model::DataRef::key`]) |
//! | `dref:{digest}` | set | the invocations that refer to the value (a sweep forgets those that no longer exist) |
//! | `dclaim` | zset | every value's digest by the time it was last claimed (µs, server clock): the sweep's order |
//! | `dusage` | hash | `values`, `bytes`, `refs`: the data store's counters |
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
//! indexes (`queue`, `owned`, `idx:{task}`, `finals:{status}`, `tasks`) and
//! the `final` notification get one command per key and step, whatever the
//! batch size.
//!
//! # Query indexes
//!
//! The query API ([`pynenc_store::Queries`]) answers from indexes kept in
//! the same steps, at about two sorted-set operations per invocation on its
//! usual way: it enters `idx:{task}` (band 1) when routed, stays there
//! while picked and running, and moves once, to the band of its final
//! status. So the counts per task and status are the sizes of the bands
//! (`ZCOUNT`), those of `PENDING` … `RESUMED` come from `owned` (what
//! runners hold: small) and `REGISTERED` is the rest of band 1; a page of
//! one task and status is a range of one band, found by rank. A listing
//! (`query.lua`, one script call per page) walks the smallest index its
//! filters allow — the children of a parent, `owned` for the statuses
//! runners hold, the bands of the statuses asked for (of the tasks asked
//! for, of a call's task, or of every task, merged in id order) — from the
//! cursor, checks every filter on each invocation, and stops at the page
//! size; after 5,000 index entries scanned it returns what it found and
//! the client goes on from the last id scanned in a further call (filters
//! no index serves, such as `ended`, an owner of final invocations or key
//! arguments, may take several calls over a large task). Retention reads
//! the logs `finals:{status}` from their oldest entries; `delete_final`
//! deletes by id. Neither a query nor a purge scans the keyspace.
//! Invocations stored by a build before these indexes are listed and
//! counted once they change status; the retention purges the old log
//! `finals` with the longest of its times.
//!
//! Every step touches only the keys of the invocations it handles and
//! per-key indexes (hashes, sets, sorted sets, lists), so its cost does not
//! grow with the amount of data. Listing every id reads the per-task
//! indexes (`tasks`, then each `idx:{task}`); purging the app (`SCAN` on
//! the app prefix, then `UNLINK`) is the only scan;
//! the library never uses `KEYS`, `FLUSHDB`, `FLUSHALL`, `CONFIG`, `DEBUG` or any other
//! `@dangerous` command, so an ACL user limited to `~__pynenc__:*` and
//! `&__pynenc__:*` with `+@all -@dangerous` is enough. (The steps build key
//! names from the prefix passed as their one key; this is fine on a
//! standalone server or a replica set, not on Redis Cluster.)
//!
//! # Wake-ups, not polling
//!
//! Steps `PUBLISH` on three channels: `work` when they queue ids, `final`
//! with the ids that became final, `status` with the ids whose status
//! changed among those someone watches (field `sw`, set by
//! `wait_status_change` for the length of one wait). One pub/sub
//! connection per backend wakes local runners (a work epoch), `result()`
//! waiters and status waiters (maps from invocation id to waiters). The process that ran a step applies the
//! step's reply locally at once (work queued, ids that became final), so
//! the end of an invocation is published only while some *other* backend
//! waits for results: `wait_final` registers its backend in `waiters` for
//! a minute (renewed while it waits) before it reads any status. A waiter
//! registers first and then reads the status, so a wake-up is never lost;
//! after the pub/sub connection comes back every waiter re-reads its
//! statuses, and a waiter that heard nothing for 2 s re-reads them as a
//! safety net. The `work` channel is subscribed only once something of the
//! process waits for work (a runner, a live monitor page), and again after
//! every reconnection from then on; that first wait returns at once, so
//! the runner looks for what was queued before: a process that only calls
//! tasks hears neither its own calls nor those of other processes. A
//! `work` message names the backend whose step queued the ids; that
//! backend skips it (the step's reply moved its epoch already), so its
//! runners do not pick a second time for one call.
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
//! Calls routed at the same time by one process share route steps (a web
//! service whose request handlers each call a task): a call goes at once
//! while fewer than two route steps are in flight, and the calls that come
//! in while two are go together in the next one (two in flight keep the
//! server busy while the next step travels). Calls made by a task (cycle control) and calls
//! that raise on a registration conflict go alone, so that a refusal reaches
//! only its own caller.
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
//! handed out under its token (`lastpick:{runner}:{slot}`) instead of claiming
//! more, so a runner never owns work it did not receive. A call that finds
//! its function missing (a server restarted without its data) loads the
//! library again and calls once more; it had not run.
//! Every error is a [`pynenc_store::StoreError`] naming the server and the
//! command, with the driver's error as its source. With AOF (`appendfsync always`) nothing acknowledged is lost
//! across a Redis restart.

#![deny(missing_docs)]

mod backend;
mod client;
mod coalesce;
mod components;
mod conn;
mod control;
mod data;
mod decode;
mod notify;
mod orchestrator;
mod queries;
mod script;
mod step;
mod workflow_data;

#[cfg(test)]
mod live_tests;

use std::path::PathBuf;

pub use backend::RedisBackend;

/// How to reach the server and where to keep the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// A connection URL (`redis://` or `rediss://` for TLS); when set it
    /// takes the place of host, port, db, username and password.
    pub url: Option<String>,
    /// The server host (default `localhost`).
    pub host: String,
    /// The server port (default 6379).
    pub port: u16,
    /// The database number (default 0).
    pub db: u32,
    /// The ACL user name.
    pub username: Option<String>,
    /// The password.
    pub password: Option<String>,
    /// The prefix of every key pynenc writes (default `__pynenc__`).
    pub key_prefix: String,
    /// How many connections a process keeps open (default 4).
    pub pool_size: usize,
    /// For `rediss://`: a PEM file of the certificate authorities to trust
    /// (default: the system's trust store).
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: None,
            host: "localhost".to_string(),
            port: 6379,
            db: 0,
            username: None,
            password: None,
            key_prefix: RedisOptions::DEFAULT_KEY_PREFIX.to_string(),
            pool_size: 4,
            tls_ca_file: None,
        }
    }
}

impl RedisOptions {
    /// The key prefix used when none is given.
    pub const DEFAULT_KEY_PREFIX: &'static str = "__pynenc__";

    /// The options of a server given by URL, the rest default.
    pub fn from_url(url: impl Into<String>) -> Self {
        RedisOptions {
            url: Some(url.into()),
            ..RedisOptions::default()
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    /// The password (and the password in the URL) are not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &self.url.as_deref().map(conn::mask_url))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}
