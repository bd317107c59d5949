//! The query API of a Redis app ([`Queries`]): every answer from the
//! indexes the steps keep (`query.lua`), one script call per page section
//! or count, never a scan of the keyspace nor a round trip per row.

use std::collections::HashMap;

use async_trait::async_trait;
use pynenc_model::{
    Call, ErrorKindCount, InvocationId, InvocationQuery, InvocationStatus, InvocationSummary,
    LeaseHolder, Order, QueueStats, ReuseRecord, Reuses, RunnerId, RunnerInfo, StatusCount, TaskId,
    TaskTotals, Timestamp, TriggerRecord, WaitGraph, MAX_PAGE_SIZE,
};
use pynenc_store::{Queries, Result, StoreError};
use redis::Value;
use tracing::{debug, warn};

use crate::backend::{bytes, opt_bytes, unescape_app_id, RedisBackend};
use crate::decode::{corrupt, corrupt_by};
use crate::script::{as_int, as_list, as_string, scripts};

/// The fields of a row of `list` (`ROW_FIELDS` in query.lua, with the id first).
const ROW_LEN: usize = 10;

/// How many index entries one `list` call scans at most; a listing whose
/// filters reject more goes on in further calls from the last id scanned.
pub(crate) const SCAN_BUDGET: usize = 5000;

impl RedisBackend {
    /// The arguments of one `list` call: `query` after `after`, at most `want`.
    fn list_args(
        &self,
        query: &InvocationQuery,
        after: Option<&InvocationId>,
        want: usize,
    ) -> Vec<Vec<u8>> {
        let (low, high) = query.created_id_bounds();
        let time = |t: Option<Timestamp>| {
            t.map(|t| bytes(t.as_micros().to_string()))
                .unwrap_or_default()
        };
        let (call_task, call_hash) = match &query.call_id {
            // a call id is `task#hash` (the hash has no '#')
            Some(c) => match c.as_str().rsplit_once('#') {
                Some((task, hash)) => (bytes(task), bytes(hash)),
                None => (bytes(c.as_str()), bytes("-")),
            },
            None => (Vec::new(), Vec::new()),
        };
        let mut args = vec![
            bytes("list"),
            bytes(match query.order {
                Order::OldestFirst => "a",
                Order::NewestFirst => "d",
            }),
            opt_bytes(after.map(InvocationId::as_str)),
            bytes(want.to_string()),
            opt_bytes(low.as_ref().map(InvocationId::as_str)),
            opt_bytes(high.as_ref().map(InvocationId::as_str)),
            time(query.created.from),
            time(query.created.to),
            time(query.ended.from),
            time(query.ended.to),
            opt_bytes(query.parent.as_ref().map(InvocationId::as_str)),
            opt_bytes(query.owner.as_deref()),
            call_task,
            call_hash,
            bytes(SCAN_BUDGET.to_string()),
            bytes(query.task_ids.len().to_string()),
        ];
        args.extend(query.task_ids.iter().map(|t| bytes(t.as_str())));
        args.push(bytes(query.statuses.len().to_string()));
        args.extend(query.statuses.iter().map(|s| bytes(s.as_str())));
        args.push(bytes(query.key_arguments.len().to_string()));
        for (name, value) in &query.key_arguments {
            args.push(bytes(name.as_str()));
            args.push(bytes(value.as_str()));
        }
        args
    }

    /// One listed invocation from its row (see `ROW_FIELDS` in query.lua).
    fn decode_summary(&self, f: &[Value]) -> Result<InvocationSummary> {
        let s = |i: usize| f.get(i).and_then(as_string).filter(|v| !v.is_empty());
        let id = s(0).unwrap_or_default();
        let key = self.key("inv", &id);
        let invocation_id = InvocationId::parse(&id).map_err(|e| StoreError::bad_id(&key, e))?;
        let task_id = TaskId::from(s(1).ok_or_else(|| corrupt(&key, "task", "missing"))?);
        // the call id from the call (the index keeps 16 hex digits of its hash)
        let json = s(9).ok_or_else(|| corrupt(&key, "call", "missing"))?;
        let call: Call = serde_json::from_str(&json).map_err(|e| corrupt_by(&key, "call", e))?;
        let call_id = call.call_id();
        let status = self.parse_status(&invocation_id, &s(3).unwrap_or_default())?;
        let int = |i: usize, field: &str| -> Result<Option<i64>> {
            s(i).map(|v| v.parse::<i64>().map_err(|e| corrupt_by(&key, field, e)))
                .transpose()
        };
        let created = int(6, "created")?.ok_or_else(|| corrupt(&key, "created", "missing"))?;
        let parent = match s(5) {
            Some(p) => Some(InvocationId::parse(&p).map_err(|e| corrupt_by(&key, "parent", e))?),
            None => None,
        };
        let retries = match int(7, "retries")? {
            Some(r) => u32::try_from(r).map_err(|e| corrupt_by(&key, "retries", e))?,
            None => 0,
        };
        // the time of the last history entry is when the status was set
        let status_at = match s(8) {
            Some(h) => last_entry_time(&h)
                .ok_or_else(|| corrupt(&key, "history", "no readable last entry"))?,
            None => Timestamp::from_micros(created),
        };
        Ok(InvocationSummary {
            invocation_id,
            task_id,
            call_id,
            status,
            owner: s(4).map(RunnerId::from),
            parent_invocation_id: parent,
            created_at: Timestamp::from_micros(created),
            status_at,
            ended_at: status.is_final().then_some(status_at),
            retries,
        })
    }

    /// The task ids as arguments (count first; none: every task).
    fn task_args(op: &str, task_ids: &[TaskId]) -> Vec<Vec<u8>> {
        let mut args = vec![bytes(op), bytes(task_ids.len().to_string())];
        args.extend(task_ids.iter().map(|t| bytes(t.as_str())));
        args
    }
}

/// The timestamp of the last entry of a history field (entries
/// `[status, owner, actor, timestamp_us, execution_context]` separated by commas).
fn last_entry_time(field: &str) -> Option<Timestamp> {
    type Raw = (String, Option<String>, String, i64, Option<String>);
    let entries: Vec<Raw> = serde_json::from_str(&format!("[{field}]")).ok()?;
    entries.last().map(|e| Timestamp::from_micros(e.3))
}

/// `(task, name, count)` triples of a `counts` / `kinds` reply.
fn triples(v: &Value) -> Vec<(String, String, u64)> {
    as_list(v)
        .chunks(3)
        .filter_map(|t| {
            let count = u64::try_from(as_int(t.get(2)?)?).ok()?;
            Some((as_string(t.first()?)?, as_string(t.get(1)?)?, count))
        })
        .filter(|(_, _, c)| *c > 0)
        .collect()
}

#[async_trait]
impl Queries for RedisBackend {
    async fn list_invocations(&self, query: &InvocationQuery) -> Result<Vec<InvocationSummary>> {
        let mut out: Vec<InvocationSummary> = Vec::new();
        let mut after = query.after.map(|c| c.0);
        let mut calls = 0u32;
        while out.len() < query.limit {
            let want = (query.limit - out.len()).min(MAX_PAGE_SIZE);
            let args = self.list_args(query, after.as_ref(), want);
            let v = self.script(&scripts().query, &args).await?;
            calls += 1;
            let parts = as_list(&v);
            let rows = parts.first().map(as_list).unwrap_or_default();
            for row in rows.chunks(ROW_LEN) {
                let summary = self.decode_summary(row)?;
                // a listing by call compared 16 hex digits of the hash: the
                // whole id decides (a different call is left out)
                if query.call_id.as_ref().is_none_or(|c| *c == summary.call_id) {
                    out.push(summary);
                }
            }
            if parts.get(2).and_then(as_int) == Some(1) {
                // nothing is left after the last id scanned
                break;
            }
            // the scan budget ran out (or a row of another call was left
            // out): go on after the last id scanned
            let last = parts.get(1).and_then(as_string).filter(|s| !s.is_empty());
            match last.map(|l| InvocationId::parse(&l)) {
                Some(Ok(id)) => after = Some(id),
                Some(Err(e)) => {
                    return Err(StoreError::bad_id(
                        format!("redis at {}", self.address()),
                        e,
                    ))
                }
                None => break,
            }
        }
        if calls > 1 {
            debug!(
                calls,
                found = out.len(),
                "a listing scanned its index in several calls"
            );
        }
        Ok(out)
    }

    async fn count_by_status(&self, task_ids: &[TaskId]) -> Result<Vec<StatusCount>> {
        let v = self
            .script(&scripts().query, &Self::task_args("counts", task_ids))
            .await?;
        let mut out = Vec::new();
        for (task, status, count) in triples(&v) {
            match status.parse::<InvocationStatus>() {
                Ok(status) => out.push(StatusCount {
                    task_id: TaskId::from(task),
                    status,
                    count,
                }),
                Err(e) => {
                    warn!(redis = %self.address(), error = %e, "a status index with an unknown status")
                }
            }
        }
        out.sort_by(|a, b| (a.task_id.as_str(), a.status).cmp(&(b.task_id.as_str(), b.status)));
        Ok(out)
    }

    async fn failed_by_kind(&self, task_ids: &[TaskId]) -> Result<Vec<ErrorKindCount>> {
        let v = self
            .script(&scripts().query, &Self::task_args("kinds", task_ids))
            .await?;
        let mut out: Vec<ErrorKindCount> = triples(&v)
            .into_iter()
            .map(|(task, kind, count)| ErrorKindCount {
                task_id: TaskId::from(task),
                kind,
                count,
            })
            .collect();
        out.sort_by(|a, b| (a.task_id.as_str(), &a.kind).cmp(&(b.task_id.as_str(), &b.kind)));
        Ok(out)
    }

    async fn statuses(&self, ids: &[InvocationId]) -> Result<Vec<Option<InvocationStatus>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGET")
                .arg(self.key("inv", id.as_str()))
                .arg("status");
        }
        let found: Vec<Option<String>> = self.query("HGET status", &pipe).await?;
        ids.iter()
            .zip(found)
            .map(|(id, status)| match status {
                None => Ok(None),
                Some(s) => s.parse::<InvocationStatus>().map(Some).map_err(|e| {
                    StoreError::corrupt(self.key("inv", id.as_str()), format!("status: {e}"))
                }),
            })
            .collect()
    }

    async fn reuses(&self, id: &InvocationId) -> Result<Reuses> {
        let v = self
            .script(&scripts().small, &[bytes("reuses"), bytes(id.as_str())])
            .await?;
        let items = as_list(&v);
        let total = items.first().and_then(as_int).unwrap_or(0);
        Ok(Reuses {
            total: u64::try_from(total).unwrap_or(0),
            // a note this version cannot read is left out
            latest: items
                .get(1..)
                .unwrap_or_default()
                .iter()
                .filter_map(as_string)
                .filter_map(|text| ReuseRecord::from_text(&text))
                .collect(),
        })
    }

    async fn task_totals(&self, task_ids: &[TaskId]) -> Result<Vec<TaskTotals>> {
        let v = self
            .script(&scripts().query, &Self::task_args("totals", task_ids))
            .await?;
        Ok(TaskTotals::from_rows(triples(&v).into_iter().filter_map(
            |(task, code, n)| Some((task, code.parse::<i16>().ok()?, n)),
        )))
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        let v = self.script(&scripts().query, &[bytes("queue")]).await?;
        let parts = as_list(&v);
        let depth = parts.first().and_then(as_int).unwrap_or(0);
        let oldest = match parts.get(1).and_then(as_string) {
            Some(id) => {
                let key = self.key("inv", &id);
                let id = InvocationId::parse(&id).map_err(|e| StoreError::bad_id(&key, e))?;
                let created = parts
                    .get(2)
                    .and_then(as_int)
                    .ok_or_else(|| corrupt(&key, "created", "missing"))?;
                Some((id, Timestamp::from_micros(created)))
            }
            None => None,
        };
        Ok(QueueStats {
            depth: u64::try_from(depth).unwrap_or(0),
            oldest,
        })
    }

    async fn wait_graph(&self, invocation_id: &InvocationId) -> Result<WaitGraph> {
        let v = self
            .script(
                &scripts().query,
                &[bytes("waits"), bytes(invocation_id.as_str())],
            )
            .await?;
        let Value::Array(parts) = v else {
            return Err(StoreError::not_found(
                invocation_id,
                "while reading its waits",
            ));
        };
        let mut waiting_on = parts
            .first()
            .map(|v| self.ids_of(v, "a wait"))
            .unwrap_or_default();
        let mut waited_by = parts
            .get(1)
            .map(|v| self.ids_of(v, "a wait"))
            .unwrap_or_default();
        waiting_on.sort();
        waited_by.sort();
        Ok(WaitGraph {
            waiting_on,
            waited_by,
        })
    }

    async fn runners(&self) -> Result<Vec<RunnerInfo>> {
        let mut pipe = redis::pipe();
        pipe.hgetall(format!("{}runners", self.prefix))
            .hgetall(format!("{}heartbeats", self.prefix));
        let (infos, beats): (HashMap<String, String>, HashMap<String, i64>) =
            self.query("HGETALL runners heartbeats", &pipe).await?;
        let key = format!("{}runners", self.prefix);
        let mut out = Vec::with_capacity(infos.len());
        for (runner, json) in infos {
            let mut info: RunnerInfo = match serde_json::from_str(&json) {
                Ok(info) => info,
                Err(e) => return Err(corrupt_by(&key, &runner, e)),
            };
            if let Some(at) = beats.get(&runner) {
                info.heartbeat_at = Timestamp::from_micros(*at);
            }
            out.push(info);
        }
        out.sort_by(|a, b| a.runner_id.as_str().cmp(b.runner_id.as_str()));
        Ok(out)
    }

    async fn triggers(&self) -> Result<Vec<TriggerRecord>> {
        let key = format!("{}triggers", self.prefix);
        let mut pipe = redis::pipe();
        pipe.hgetall(&key);
        let (records,): (HashMap<String, String>,) = self.query("HGETALL triggers", &pipe).await?;
        let mut out = Vec::with_capacity(records.len());
        for (name, json) in records {
            match serde_json::from_str::<TriggerRecord>(&json) {
                Ok(t) => out.push(t),
                Err(e) => return Err(corrupt_by(&key, &name, e)),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn app_ids(&self) -> Result<Vec<String>> {
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(&self.apps_key);
        let (members,): (Vec<String>,) = self.query("SMEMBERS apps", &pipe).await?;
        let mut ids: Vec<String> = members.iter().map(|m| unescape_app_id(m)).collect();
        ids.sort();
        Ok(ids)
    }

    async fn lease(&self, name: &str) -> Result<Option<LeaseHolder>> {
        let v = self
            .script(&scripts().query, &[bytes("lease"), bytes(name)])
            .await?;
        let parts = as_list(&v);
        let (Some(holder), Some(expires)) = (
            parts.first().and_then(as_string),
            parts.get(1).and_then(as_int),
        ) else {
            return Ok(None);
        };
        Ok(Some(LeaseHolder {
            name: name.to_string(),
            holder: RunnerId::from(holder),
            expires_at: Timestamp::from_micros(expires),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_entry_of_a_history_field_gives_the_time() {
        let f = r#"["PENDING","r,1","r,1",100,null],["RUNNING","r,1","r,1",170,"host:1"]"#;
        assert_eq!(last_entry_time(f), Some(Timestamp::from_micros(170)));
        assert_eq!(last_entry_time("garbage"), None);
    }

    #[test]
    fn triples_leave_out_zero_counts() {
        let v = Value::Array(vec![
            Value::BulkString(b"t".to_vec()),
            Value::BulkString(b"SUCCESS".to_vec()),
            Value::Int(3),
            Value::BulkString(b"t".to_vec()),
            Value::BulkString(b"FAILED".to_vec()),
            Value::Int(0),
        ]);
        assert_eq!(triples(&v), vec![("t".into(), "SUCCESS".into(), 3)]);
    }
}
