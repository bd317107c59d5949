//! The broker, state backend and coordination of a Redis app.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pynenc_model::{
    HistoryEntry, InvocationId, InvocationOutcome, InvocationRecord, InvocationStatus, RunnerId,
    RunnerInfo, SerializationError, TaskError, Timestamp, TriggerRecord,
};
use pynenc_store::{Broker, Coordination, Registered, Result, StateBackend, StoreError};
use redis::Value;
use tokio::sync::Notify;

use crate::backend::{bytes, escape_glob, micros, RedisBackend};
use crate::decode::{corrupt, corrupt_by, RECORD_FIELDS};
use crate::script::{as_int, as_list, as_string, scripts};

/// The safety-net re-check of `wait_final`.
const WAIT_RECHECK: Duration = Duration::from_secs(2);
/// How long a `wait_final` registration (hash `waiters`) lasts.
const WAITING_TTL: Duration = Duration::from_secs(60);

impl RedisBackend {
    /// An outcome from the fields `status`, `result`, `error` of an
    /// invocation's record (`status` missing: no such invocation).
    pub(crate) fn decode_outcome(
        &self,
        id: &InvocationId,
        status: Option<String>,
        result: Option<String>,
        error: Option<String>,
    ) -> Result<InvocationOutcome> {
        let status = status.ok_or_else(|| StoreError::not_found(id, "while reading its result"))?;
        let status = self.parse_status(id, &status)?;
        let error = match error {
            Some(e) => Some(
                serde_json::from_str::<TaskError>(&e)
                    .map_err(|err| corrupt_by(&self.invocation_key(id), "error", err))?,
            ),
            None => None,
        };
        Ok(InvocationOutcome {
            status,
            result,
            error,
        })
    }

    /// The outcomes of `waited` from a script's rows `{status, result,
    /// error}`, one per id in order (`what` names the step in the error of a
    /// reply with another count).
    pub(crate) fn decode_outcome_rows(
        &self,
        waited: &[InvocationId],
        rows: &[Value],
        what: &str,
    ) -> Result<Vec<InvocationOutcome>> {
        if rows.len() != waited.len() {
            return Err(self.bad_reply(format!(
                "{what} returned {} outcomes for {} invocations",
                rows.len(),
                waited.len()
            )));
        }
        waited
            .iter()
            .zip(rows)
            .map(|(id, row)| {
                let f = as_list(row);
                let field = |i: usize| f.get(i).and_then(as_string);
                self.decode_outcome(id, field(0), field(1), field(2))
            })
            .collect()
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

    /// One wait more (`delta` 1) or less (-1) for the next status of `id`
    /// (while any is registered, the scripts publish its status changes);
    /// its status, `None` when it does not exist.
    async fn watch_status(
        &self,
        id: &InvocationId,
        delta: i64,
    ) -> Result<Option<InvocationStatus>> {
        let args = [bytes("watch"), bytes(id.as_str()), bytes(delta.to_string())];
        let v = self.script(&scripts().small, &args).await?;
        if as_int(&v) == Some(0) {
            return Ok(None);
        }
        match as_string(&v) {
            Some(s) => self.parse_status(id, &s).map(Some),
            None => Ok(None),
        }
    }

    /// For each id: whether it is final (error if missing or corrupt).
    async fn finals_of(&self, ids: &[InvocationId]) -> Result<Vec<bool>> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.invocation_key(id), "status");
        }
        let statuses: Vec<Option<String>> = self.query("HGET status", &pipe).await?;
        ids.iter()
            .zip(statuses)
            .map(|(id, st)| match st {
                None => Err(StoreError::not_found(id, "while waiting for its result")),
                Some(st) => Ok(self.parse_status(id, &st)?.is_final()),
            })
            .collect()
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
}

#[async_trait]
impl Broker for RedisBackend {
    async fn queue_len(&self) -> Result<usize> {
        let mut pipe = redis::pipe();
        pipe.llen(format!("{}queue", self.prefix));
        let (n,): (usize,) = self.query("LLEN queue", &pipe).await?;
        Ok(n)
    }
}

#[async_trait]
impl StateBackend for RedisBackend {
    async fn get_invocation(&self, id: &InvocationId) -> Result<InvocationRecord> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.invocation_key(id))
            .arg("status")
            .arg(&RECORD_FIELDS);
        let (mut fields,): (Vec<Value>,) = self.query("HMGET record", &pipe).await?;
        if matches!(fields.first(), None | Some(Value::Nil)) {
            return Err(StoreError::not_found(id, ""));
        }
        fields[0] = Value::BulkString(id.as_str().as_bytes().to_vec());
        self.decode_record(&fields)
    }

    async fn find_invocations(
        &self,
        ids: &[InvocationId],
    ) -> Result<Vec<Option<(InvocationRecord, InvocationOutcome)>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.invocation_key(id))
                .arg("status")
                .arg(&RECORD_FIELDS)
                .arg(&["result", "error"]);
        }
        let rows: Vec<Vec<Value>> = self.query("HMGET record and outcome", &pipe).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, mut fields) in ids.iter().zip(rows) {
            let status = match fields.first() {
                None | Some(Value::Nil) => {
                    out.push(None);
                    continue;
                }
                Some(v) => as_string(v),
            };
            let error = fields.pop().as_ref().and_then(as_string);
            let result = fields.pop().as_ref().and_then(as_string);
            let outcome = self.decode_outcome(id, status, result, error)?;
            fields[0] = Value::BulkString(id.as_str().as_bytes().to_vec());
            out.push(Some((self.decode_record(&fields)?, outcome)));
        }
        Ok(out)
    }

    async fn get_history(&self, id: &InvocationId) -> Result<Vec<HistoryEntry>> {
        let key = self.invocation_key(id);
        let v = self
            .script(&scripts().small, &[bytes("history"), bytes(id.as_str())])
            .await?;
        let Value::Array(fields) = v else {
            return Err(StoreError::not_found(id, ""));
        };
        type Raw = (String, Option<String>, String, i64, Option<String>);
        let mut out = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            // a field holds the entries of one step, separated by commas
            let field = format!("h{}", i + 1);
            let f = as_string(f).ok_or_else(|| corrupt(&key, &field, "missing"))?;
            let entries: Vec<Raw> = serde_json::from_str(&format!("[{f}]"))
                .map_err(|err| corrupt_by(&key, &field, err))?;
            for (status, owner, actor, timestamp_us, execution_context) in entries {
                let status = status.parse().map_err(|err| corrupt(&key, &field, err))?;
                out.push(HistoryEntry {
                    invocation_id: *id,
                    status,
                    owner: owner.map(RunnerId::from),
                    actor: RunnerId::from(actor),
                    timestamp: Timestamp::from_micros(timestamp_us),
                    execution_context,
                });
            }
        }
        Ok(out)
    }

    async fn get_outcomes(&self, ids: &[InvocationId]) -> Result<Vec<InvocationOutcome>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.invocation_key(id))
                .arg(&["status", "result", "error"]);
        }
        let rows: Vec<(Option<String>, Option<String>, Option<String>)> =
            self.query("HMGET outcome", &pipe).await?;
        ids.iter()
            .zip(rows)
            .map(|(id, (status, result, error))| self.decode_outcome(id, status, result, error))
            .collect()
    }

    async fn list_invocation_ids(&self) -> Result<Vec<InvocationId>> {
        // from the indexes the steps keep: the tasks, then each task's
        // invocations (`idx:{task}`), in two round trips and no key scan
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(format!("{}tasks", self.prefix));
        let (tasks,): (Vec<String>,) = self.query("SMEMBERS tasks", &pipe).await?;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for t in &tasks {
            pipe.cmd("ZRANGE").arg(self.key("idx", t)).arg(0).arg(-1);
        }
        let members: Vec<Vec<String>> = self.query("ZRANGE idx", &pipe).await?;
        let mut out = Vec::new();
        for (t, ids) in tasks.iter().zip(members) {
            for text in ids {
                out.push(
                    InvocationId::parse(&text)
                        .map_err(|e| StoreError::bad_id(self.key("idx", t), e))?,
                );
            }
        }
        // ids are time-ordered: creation order across tasks
        out.sort_unstable();
        Ok(out)
    }

    async fn purge(&self) -> Result<()> {
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
        // the app leaves the set its route steps put it in
        let mut srem = redis::pipe();
        srem.cmd("SREM")
            .arg(&self.apps_key)
            .arg(&self.app_member)
            .ignore();
        self.query::<()>("SREM apps", &srem).await?;
        self.notifier.recheck.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl Coordination for RedisBackend {
    async fn heartbeat(&self, runner_id: &RunnerId) -> Result<()> {
        self.script(
            &scripts().small,
            &[bytes("heartbeat"), bytes(runner_id.as_str())],
        )
        .await
        .map(|_| ())
    }

    async fn register_runner(&self, info: &RunnerInfo) -> Result<()> {
        let json = serde_json::to_string(info).map_err(|e| {
            SerializationError::serialize(format_args!("runner info of {}", info.runner_id), e)
        })?;
        self.script(
            &scripts().small,
            &[bytes("runner"), bytes(info.runner_id.as_str()), bytes(json)],
        )
        .await
        .map(|_| ())
    }

    async fn register_triggers(&self, triggers: &[TriggerRecord]) -> Result<()> {
        if triggers.is_empty() {
            return Ok(());
        }
        let key = format!("{}triggers", self.prefix);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for t in triggers {
            let json = serde_json::to_string(t).map_err(|e| {
                SerializationError::serialize(format_args!("trigger {}", t.name), e)
            })?;
            pipe.hset(&key, &t.name, json).ignore();
        }
        self.query::<()>("HSET triggers", &pipe).await
    }

    async fn remove_heartbeat(&self, runner_id: &RunnerId) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(format!("{}heartbeats", self.prefix), runner_id.as_str())
            .ignore()
            .hdel(format!("{}runners", self.prefix), runner_id.as_str())
            .ignore();
        self.query::<()>("HDEL heartbeats runners", &pipe).await
    }

    async fn try_lease(&self, name: &str, holder: &RunnerId, ttl: Duration) -> Result<bool> {
        let args = [
            bytes("lease"),
            bytes(name),
            bytes(holder.as_str()),
            bytes(micros(ttl)),
        ];
        let v = self.script(&scripts().small, &args).await?;
        Ok(as_int(&v) == Some(1))
    }

    fn work_epoch(&self) -> u64 {
        self.notifier.work_epoch()
    }

    async fn wait_for_work(&self, epoch: u64, timeout: Duration) {
        if self.conns.get().is_none() {
            let _ = tokio::time::timeout(timeout, self.conn()).await;
            return;
        }
        self.notifier
            .wait_for_work(epoch, timeout, &self.prefix)
            .await
    }

    async fn wait_status_change(
        &self,
        id: &InvocationId,
        seen: InvocationStatus,
        timeout: Duration,
    ) -> Result<()> {
        // make sure the subscription is active before reading the status
        self.conn()
            .await
            .map_err(|e| self.command_error("SUBSCRIBE", &e))?;
        // register here first, then on the server with the read: a change
        // published in between is not lost
        let local = Registered::new(&self.notifier, |n| &n.status_waiters, &[*id], Notify::new());
        let status = self.watch_status(id, 1).await?;
        let waited = match status {
            None => Err(StoreError::not_found(id, "while waiting for a status")),
            Some(s) if s != seen => Ok(()),
            Some(_) => {
                // a change wakes it; a reconnect too (messages may be lost),
                // and the caller reads again at least every WAIT_RECHECK
                tokio::select! {
                    _ = local.waiter().notified() => {}
                    _ = self.notifier.recheck.notified() => {}
                    _ = tokio::time::sleep(timeout.min(WAIT_RECHECK)) => {}
                }
                Ok(())
            }
        };
        drop(local);
        if status.is_some() {
            // a wait dropped before this point leaves the field counted:
            // its invocation's changes are published (harmless, rare)
            self.watch_status(id, -1).await?;
        }
        waited
    }

    async fn wait_final(&self, ids: &[InvocationId]) -> Result<()> {
        let mut seen = HashSet::with_capacity(ids.len());
        let ids: Vec<InvocationId> = ids.iter().filter(|id| seen.insert(**id)).copied().collect();
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
                    reg.waiter().mark(id);
                }
            }
            // wait for the notifications; re-read the statuses only after a
            // reconnect, or when nothing arrived for WAIT_RECHECK (safety net)
            loop {
                let left = reg.waiter().left();
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
                    _ = reg.waiter().woken() => return Ok(()),
                    _ = recheck => break,
                    _ = tokio::time::sleep(renew) => break,
                    _ = tokio::time::sleep(WAIT_RECHECK) => {
                        if reg.waiter().left() == left {
                            break;
                        }
                    }
                }
            }
            check = reg.waiter().pending();
            if check.is_empty() {
                return Ok(());
            }
        }
    }
}
