//! [`Inspector`]: what runs, what failed and why, who runs it.

use std::collections::BTreeMap;
use std::time::Duration;

use pynenc::Pynenc;
use pynenc_model::{
    Call, Cursor, ErrorKindCount, HistoryEntry, InvocationId, InvocationQuery, InvocationRecord,
    InvocationStatus, InvocationSummary, Order, Page, QueueStats, Reuses, RunnerInfo, StatusCount,
    TaskId, TaskTotals, Timestamp, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
};
use serde::{Deserialize, Serialize};

use crate::error::{OperateError, Result};

/// The name of the lease the runner doing recovery holds.
pub const RECOVERY_LEASE: &str = "recovery";

/// Status counts, per task and in total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// Per task and status (zero counts left out).
    pub by_task: Vec<StatusCount>,
    /// Per status over the tasks asked for.
    pub totals: BTreeMap<InvocationStatus, u64>,
}

impl StatusCounts {
    /// How many invocations in all.
    pub fn total(&self) -> u64 {
        self.totals.values().sum()
    }

    /// How many are in `status`.
    pub fn of(&self, status: InvocationStatus) -> u64 {
        self.totals.get(&status).copied().unwrap_or(0)
    }
}

/// An invocation with its relatives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    /// The invocation.
    pub invocation: InvocationSummary,
    /// Its call: the task and the serialized arguments.
    pub call: Call,
    /// Its status history, oldest first.
    pub history: Vec<HistoryEntry>,
    /// The invocation that called it.
    pub parent: Option<InvocationId>,
    /// The invocation it reruns.
    pub rerun_of: Option<InvocationId>,
    /// Its children, oldest first (the first page).
    pub children: Page,
    /// What it waits on (not final yet).
    pub waiting_on: Vec<InvocationId>,
    /// What waits on it.
    pub waited_by: Vec<InvocationId>,
    /// The other invocations of its call, newest first (the first page).
    pub same_call: Page,
}

/// A runner as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerView {
    /// What the runner said of itself, with its last heartbeat.
    pub info: RunnerInfo,
    /// Whether its last heartbeat is recent (within `runner_dead_after_seconds`).
    pub alive: bool,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// Whether it holds the recovery lease (it recovers dead runners' work).
    pub holds_recovery_lease: bool,
}

/// Reads an app's invocations and runners through the query API of its
/// backend: every answer comes from an index, never from a scan of every
/// invocation. Get one with [`crate::Operate::inspect`].
#[derive(Debug, Clone)]
pub struct Inspector {
    app: Pynenc,
}

impl Inspector {
    /// The inspector of `app`.
    pub fn new(app: &Pynenc) -> Self {
        Inspector { app: app.clone() }
    }

    /// One page of the invocations matching `query`; `next` continues it.
    ///
    /// # Errors
    ///
    /// [`OperateError::Invalid`] for a limit over [`MAX_PAGE_SIZE`], a task
    /// this app neither registers nor has invocations of, key arguments
    /// without exactly one task, or an empty time range; nothing is read then.
    pub async fn list(&self, query: &InvocationQuery) -> Result<Page> {
        let mut query = self.checked(query).await?;
        let limit = query.limit;
        query.limit = limit + 1;
        let mut items = self.app.queries().list_invocations(&query).await?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|s| Cursor(s.invocation_id))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Every invocation matching `query`, page by page (`query.limit` per
    /// page), in the query's order; at most `max` of them.
    ///
    /// # Errors
    ///
    /// As [`Inspector::list`].
    pub async fn list_all(
        &self,
        query: &InvocationQuery,
        max: usize,
    ) -> Result<Vec<InvocationSummary>> {
        let mut query = query.clone();
        if query.limit == 0 {
            query.limit = MAX_PAGE_SIZE;
        }
        let mut out = Vec::new();
        loop {
            let page = self.list(&query).await?;
            out.extend(page.items);
            match page.next {
                Some(c) if out.len() < max => query.after = Some(c),
                _ => break,
            }
        }
        out.truncate(max);
        Ok(out)
    }

    /// The seed's `get_existing_invocations`: invocations of `task_id`
    /// whose key arguments were serialized to the values given, in any of
    /// `statuses` (any status when empty), oldest first; at most `max`.
    ///
    /// # Errors
    ///
    /// As [`Inspector::list`].
    pub async fn get_existing_invocations(
        &self,
        task_id: &TaskId,
        key_arguments: &[(String, String)],
        statuses: &[InvocationStatus],
        max: usize,
    ) -> Result<Vec<InvocationSummary>> {
        let query = InvocationQuery {
            task_ids: vec![task_id.clone()],
            statuses: statuses.to_vec(),
            key_arguments: key_arguments.to_vec(),
            order: Order::OldestFirst,
            limit: MAX_PAGE_SIZE,
            ..InvocationQuery::default()
        };
        self.list_all(&query, max).await
    }

    /// Counts by status of the tasks in `task_ids` (every task when empty).
    ///
    /// # Errors
    ///
    /// The backend failed.
    pub async fn counts(&self, task_ids: &[TaskId]) -> Result<StatusCounts> {
        let by_task = self.app.queries().count_by_status(task_ids).await?;
        let mut totals = BTreeMap::new();
        for c in &by_task {
            *totals.entry(c.status).or_insert(0) += c.count;
        }
        Ok(StatusCounts { by_task, totals })
    }

    /// What was routed, started, succeeded, failed, retried and cancelled
    /// per task since the app's data began, and the run times of the runs
    /// that ended, of the tasks in `task_ids` (every task when empty).
    /// Totals only grow: purging invocations keeps them (see
    /// [`pynenc_model::totals`]).
    ///
    /// # Errors
    ///
    /// The backend failed.
    pub async fn task_totals(&self, task_ids: &[TaskId]) -> Result<Vec<TaskTotals>> {
        Ok(self.app.queries().task_totals(task_ids).await?)
    }

    /// The calls registration concurrency folded into an invocation: how
    /// many, and the latest with their arguments that differed (none for an
    /// unknown invocation).
    ///
    /// # Errors
    ///
    /// The backend failed.
    pub async fn reuses(&self, id: &InvocationId) -> Result<Reuses> {
        Ok(self.app.queries().reuses(id).await?)
    }

    /// `FAILED` counts per task and error kind.
    ///
    /// # Errors
    ///
    /// The backend failed.
    pub async fn failed_by_kind(&self, task_ids: &[TaskId]) -> Result<Vec<ErrorKindCount>> {
        Ok(self.app.queries().failed_by_kind(task_ids).await?)
    }

    /// The queue: its depth and its oldest invocation.
    ///
    /// # Errors
    ///
    /// The backend failed.
    pub async fn queue(&self) -> Result<QueueStats> {
        Ok(self.app.queries().queue_stats().await?)
    }

    /// The ids of the apps that routed anything to this app's backend
    /// (this one included once it has), sorted.
    ///
    /// # Errors
    ///
    /// The backend failed.
    pub async fn apps(&self) -> Result<Vec<String>> {
        Ok(self.app.queries().app_ids().await?)
    }

    /// Every task id this app registers or has invocations of, sorted.
    ///
    /// # Errors
    ///
    /// The backend failed.
    pub async fn tasks(&self) -> Result<Vec<TaskId>> {
        let mut ids: Vec<TaskId> = self
            .app
            .registry()
            .task_ids()
            .into_iter()
            .map(TaskId::from)
            .collect();
        for c in self.app.queries().count_by_status(&[]).await? {
            if !ids.contains(&c.task_id) {
                ids.push(c.task_id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The summary of one invocation (what a listing shows of it).
    ///
    /// # Errors
    ///
    /// [`OperateError::NotFound`] for an unknown id; the backend failed.
    pub async fn summary(&self, id: &InvocationId) -> Result<InvocationSummary> {
        Ok(self.detail(id).await?.1)
    }

    /// The record, summary and history of one invocation.
    async fn detail(
        &self,
        id: &InvocationId,
    ) -> Result<(InvocationRecord, InvocationSummary, Vec<HistoryEntry>)> {
        let record = self.app.state_backend().get_invocation(id).await?;
        let history = self.app.state_backend().get_history(id).await?;
        let retries = self.app.orchestrator().get_num_retries(id).await?;
        // the last history entry is the current status, its owner and its time
        let last = history.last().ok_or_else(|| {
            OperateError::Store(pynenc_store::StoreError::corrupt(
                format!("invocation {id}"),
                "it has no history",
            ))
        })?;
        let summary = InvocationSummary {
            invocation_id: *id,
            task_id: record.call.task_id.clone(),
            call_id: record.call.call_id(),
            status: last.status,
            owner: last.owner.clone(),
            parent_invocation_id: record.parent_invocation_id,
            created_at: record.created_at,
            status_at: last.timestamp,
            ended_at: last.status.is_final().then_some(last.timestamp),
            retries,
        };
        Ok((record, summary, history))
    }

    /// An invocation with its call, history, parent, children, waits and
    /// the other invocations of its call.
    ///
    /// # Errors
    ///
    /// [`OperateError::NotFound`] for an unknown id; the backend failed.
    pub async fn family(&self, id: &InvocationId) -> Result<Family> {
        let (record, invocation, history) = self.detail(id).await?;
        let call_id = invocation.call_id.clone();
        let children = self
            .list(&InvocationQuery {
                parent: Some(*id),
                order: Order::OldestFirst,
                ..InvocationQuery::new()
            })
            .await?;
        let mut same_call = self
            .list(&InvocationQuery {
                call_id: Some(call_id),
                ..InvocationQuery::new()
            })
            .await?;
        same_call.items.retain(|s| s.invocation_id != *id);
        let waits = self.app.queries().wait_graph(id).await?;
        Ok(Family {
            invocation,
            call: record.call,
            history,
            parent: record.parent_invocation_id,
            rerun_of: record.rerun_of,
            children,
            waiting_on: waits.waiting_on,
            waited_by: waits.waited_by,
            same_call,
        })
    }

    /// Every registered runner, live or dead, with whether it is alive and
    /// which holds the recovery lease.
    ///
    /// # Errors
    ///
    /// The backend failed.
    pub async fn runners(&self) -> Result<Vec<RunnerView>> {
        let queries = self.app.queries();
        let lease = queries.lease(RECOVERY_LEASE).await?;
        let now = Timestamp::now();
        let dead_after =
            Duration::from_secs_f64(self.app.conf().runner.runner_dead_after_seconds.max(0.0));
        Ok(queries
            .runners()
            .await?
            .into_iter()
            .map(|info| {
                let age = now.since(info.heartbeat_at);
                RunnerView {
                    alive: age <= dead_after,
                    heartbeat_age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                    holds_recovery_lease: lease
                        .as_ref()
                        .is_some_and(|l| l.holder == info.runner_id && l.expires_at > now),
                    info,
                }
            })
            .collect())
    }

    /// `query` checked, with its default page size filled in.
    async fn checked(&self, query: &InvocationQuery) -> Result<InvocationQuery> {
        let mut q = query.clone();
        if q.limit == 0 {
            q.limit = DEFAULT_PAGE_SIZE;
        }
        if q.limit > MAX_PAGE_SIZE {
            return Err(OperateError::invalid(
                "limit",
                format!("{} is over the page cap of {MAX_PAGE_SIZE}", q.limit),
            ));
        }
        if !q.key_arguments.is_empty() && q.task_ids.len() != 1 {
            return Err(OperateError::invalid(
                "key_arguments",
                "a filter on key arguments needs exactly one task",
            ));
        }
        for (what, range) in [("created", q.created), ("ended", q.ended)] {
            if let (Some(from), Some(to)) = (range.from, range.to) {
                if from >= to {
                    return Err(OperateError::invalid(
                        what,
                        format!("the range starts at {from} but ends at {to}: it is empty"),
                    ));
                }
            }
        }
        self.check_tasks(&q.task_ids).await?;
        Ok(q)
    }

    /// Every task id must be registered here or have invocations stored.
    async fn check_tasks(&self, task_ids: &[TaskId]) -> Result<()> {
        let registry = self.app.registry();
        let unknown: Vec<&TaskId> = task_ids
            .iter()
            .filter(|t| !registry.contains(t.as_str()))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let seen = self.app.queries().count_by_status(&[]).await?;
        for t in unknown {
            if !seen.iter().any(|c| &c.task_id == t) {
                return Err(OperateError::invalid(
                    "task",
                    format!(
                        "'{t}' is neither registered in this app nor has invocations stored (known tasks: {})",
                        known_tasks(registry.task_ids(), &seen)
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn known_tasks(registered: Vec<&'static str>, seen: &[StatusCount]) -> String {
    let mut all: Vec<String> = registered.into_iter().map(str::to_string).collect();
    for c in seen {
        if !all.iter().any(|t| t == c.task_id.as_str()) {
            all.push(c.task_id.to_string());
        }
    }
    all.sort();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

/// Statuses from their names, comma separated, in either case.
///
/// # Errors
///
/// [`OperateError::Invalid`] naming the unknown status and the known ones.
pub fn parse_statuses(text: &str) -> Result<Vec<InvocationStatus>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<InvocationStatus>().map_err(|_| {
                OperateError::invalid(
                    "status",
                    format!(
                        "'{s}' is not a status (statuses: {})",
                        pynenc_model::status::ALL_STATUSES
                            .iter()
                            .map(|s| s.as_lower_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
        })
        .collect()
}

/// A cursor from the text a page's `next` was written as.
///
/// # Errors
///
/// [`OperateError::Invalid`] for text that is not a cursor.
pub fn parse_cursor(text: &str) -> Result<Cursor> {
    Cursor::parse(text).map_err(|e| OperateError::invalid("cursor", e.to_string()))
}
