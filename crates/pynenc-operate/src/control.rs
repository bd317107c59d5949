//! [`Controller`]: cancel, rerun, retry and purge — each one transition (or
//! one new invocation) made by the engine, recorded with its actor.

use std::collections::VecDeque;
use std::sync::Arc;

use pynenc::Pynenc;
use pynenc_model::{
    CancelOutcome, InvocationId, InvocationQuery, InvocationStatus, InvocationSummary, Order,
    RouteOutcome, RouteRequest, RunnerId, TaskId, TimeRange, Timestamp, MAX_PAGE_SIZE,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::{OperateError, Result};
use crate::inspect::Inspector;

/// What a cancel did to each invocation it reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReport {
    /// Each invocation reached, with what became of it.
    pub outcomes: Vec<(InvocationId, CancelOutcome)>,
}

impl CancelReport {
    /// How many were cancelled at once.
    pub fn cancelled(&self) -> usize {
        self.count(|o| matches!(o, CancelOutcome::Cancelled))
    }

    /// How many runners were asked to stop a running invocation.
    pub fn requested(&self) -> usize {
        self.count(|o| matches!(o, CancelOutcome::Requested { .. }))
    }

    /// How many were already final (left as they were).
    pub fn already_final(&self) -> usize {
        self.count(|o| matches!(o, CancelOutcome::AlreadyFinal { .. }))
    }

    fn count(&self, f: impl Fn(&CancelOutcome) -> bool) -> usize {
        self.outcomes.iter().filter(|(_, o)| f(o)).count()
    }
}

/// A rerun: the original invocation and the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rerun {
    /// The invocation rerun.
    pub original: InvocationId,
    /// The new invocation of the same call.
    pub new: InvocationId,
}

/// Changes an app's invocations: every change is made by the engine's
/// steps, so the history of each invocation records it with the actor
/// ([`Controller::as_actor`]; `operator` by default). Get one with
/// [`crate::Operate::control`].
#[derive(Clone)]
pub struct Controller {
    app: Pynenc,
    actor: RunnerId,
    progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("app", &self.app.app_id())
            .field("actor", &self.actor)
            .finish()
    }
}

impl Controller {
    /// The controller of `app`, acting as `operator`.
    pub fn new(app: &Pynenc) -> Self {
        Controller {
            app: app.clone(),
            actor: RunnerId::from("operator"),
            progress: None,
        }
    }

    /// The same controller calling `f` with how many invocations each step
    /// of an action by filter handled (a page cancelled, retried or
    /// purged), for a progress display.
    pub fn on_progress(mut self, f: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    fn report(&self, n: usize) {
        if let Some(f) = &self.progress {
            f(n as u64);
        }
    }

    /// The same controller acting as `actor` (who the histories name).
    pub fn as_actor(mut self, actor: impl Into<RunnerId>) -> Self {
        self.actor = actor.into();
        self
    }

    /// Who the histories name for the changes made here.
    pub fn actor(&self) -> &RunnerId {
        &self.actor
    }

    /// Cancels one invocation (see [`pynenc_store::Orchestrator::cancel`]):
    /// a waiting one is `CANCELLED` at once, a running one is stopped by
    /// its runner. With `with_children`, its descendants are cancelled too.
    /// Cancelling a `CANCELLED` invocation again is harmless.
    ///
    /// # Errors
    ///
    /// [`OperateError::NotFound`] for an unknown id;
    /// [`OperateError::WrongStatus`] for an invocation that already ended
    /// otherwise (`SUCCESS`, `FAILED`...): nothing changes.
    pub async fn cancel(&self, id: &InvocationId, with_children: bool) -> Result<CancelReport> {
        let outcome = self.app.orchestrator().cancel(id, &self.actor).await?;
        if let CancelOutcome::AlreadyFinal { status } = outcome {
            if status != InvocationStatus::Cancelled {
                return Err(OperateError::WrongStatus {
                    invocation_id: *id,
                    status,
                    reason: "it already ended, so it cannot be cancelled",
                });
            }
        }
        info!(invocation_id = %id, actor = %self.actor, ?outcome, "cancel");
        let mut report = CancelReport {
            outcomes: vec![(*id, outcome)],
        };
        if with_children {
            self.cancel_descendants(id, &mut report).await?;
        }
        Ok(report)
    }

    /// Cancels every invocation matching `query` (final ones are skipped),
    /// with their descendants when `with_children`.
    ///
    /// # Errors
    ///
    /// An invalid query; the backend failed (what was cancelled before stays cancelled).
    pub async fn cancel_matching(
        &self,
        query: &InvocationQuery,
        with_children: bool,
    ) -> Result<CancelReport> {
        let mut report = CancelReport::default();
        let mut walk = Walk::new(query);
        while let Some(page) = self.next_page(&mut walk).await? {
            self.report(page.len());
            for s in page {
                if !self.cancel_open(&s, &mut report).await? {
                    continue;
                }
                if with_children {
                    self.cancel_descendants(&s.invocation_id, &mut report)
                        .await?;
                }
            }
        }
        info!(actor = %self.actor, cancelled = report.cancelled(), requested = report.requested(), "cancel by filter");
        Ok(report)
    }

    /// Cancels every descendant of `id` that is not final, breadth first.
    async fn cancel_descendants(&self, id: &InvocationId, report: &mut CancelReport) -> Result<()> {
        let inspector = Inspector::new(&self.app);
        let mut todo = VecDeque::from([*id]);
        while let Some(parent) = todo.pop_front() {
            let children = inspector
                .list_all(
                    &InvocationQuery {
                        parent: Some(parent),
                        order: Order::OldestFirst,
                        limit: MAX_PAGE_SIZE,
                        ..InvocationQuery::default()
                    },
                    usize::MAX,
                )
                .await?;
            for child in children {
                todo.push_back(child.invocation_id);
                self.cancel_open(&child, report).await?;
            }
        }
        Ok(())
    }

    /// Cancels `s` into `report` unless it is final; whether it was asked.
    async fn cancel_open(&self, s: &InvocationSummary, report: &mut CancelReport) -> Result<bool> {
        if s.status.is_final() {
            return Ok(false);
        }
        let outcome = self
            .app
            .orchestrator()
            .cancel(&s.invocation_id, &self.actor)
            .await?;
        report.outcomes.push((s.invocation_id, outcome));
        Ok(true)
    }

    /// Routes a new invocation of the same call as `id`, linked to it
    /// (`rerun_of`); it never reuses another invocation. Works on any
    /// invocation, whatever its status.
    ///
    /// # Errors
    ///
    /// [`OperateError::NotFound`] for an unknown id; routing failed.
    pub async fn rerun(&self, id: &InvocationId) -> Result<Rerun> {
        let record = self.app.state_backend().get_invocation(id).await?;
        let request = RouteRequest {
            concurrency: record.concurrency.clone(),
            cycle_control: false,
            print_arguments: self.app.conf().print_arguments,
            rerun_of: Some(*id),
            ..RouteRequest::new(record.call.clone(), self.actor.clone())
        };
        let new = self.route_one(request).await?;
        info!(invocation_id = %id, rerun = %new, actor = %self.actor, "rerun");
        Ok(Rerun { original: *id, new })
    }

    /// Routes a call of `task_id` with JSON arguments from a program that
    /// does not have the task (a standalone command line): the task is
    /// known by its stored invocations, the newest of which gives the
    /// parameter names to check against. A task with concurrency control is
    /// refused (its keys come from options only its program has).
    ///
    /// # Errors
    ///
    /// [`OperateError::Invalid`] for a task with no stored invocation, an
    /// argument it has no parameter for or a parameter with no argument, a
    /// task with concurrency control, or a value that does not serialize;
    /// routing failed. Nothing is routed then.
    pub async fn call_by_stored_name(
        &self,
        task_id: &TaskId,
        arguments: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<InvocationId> {
        let newest = Inspector::new(&self.app)
            .list(&InvocationQuery {
                task_ids: vec![task_id.clone()],
                limit: 1,
                ..InvocationQuery::new()
            })
            .await?
            .items
            .pop()
            .ok_or_else(|| {
                OperateError::invalid(
                    "task",
                    format!("no invocation of '{task_id}' is stored, so its parameters are unknown here: call it from the program that defines it"),
                )
            })?;
        let record = self
            .app
            .state_backend()
            .get_invocation(&newest.invocation_id)
            .await?;
        let c = &record.concurrency;
        if c.registration_key.is_some() || c.running_key.is_some() {
            return Err(OperateError::invalid(
                "task",
                format!("'{task_id}' has concurrency control, whose keys only its program computes: call it from there"),
            ));
        }
        let params: Vec<&str> = record.call.arguments.serialized().map(|(k, _)| k).collect();
        let unknown: Vec<&str> = arguments
            .keys()
            .map(String::as_str)
            .filter(|k| !params.contains(k))
            .collect();
        let missing: Vec<&str> = params
            .iter()
            .copied()
            .filter(|p| !arguments.contains_key(*p))
            .collect();
        if !unknown.is_empty() || !missing.is_empty() {
            return Err(OperateError::invalid(
                "arguments",
                format!(
                    "'{task_id}' takes ({}): unknown [{}], missing [{}]",
                    params.join(", "),
                    unknown.join(", "),
                    missing.join(", ")
                ),
            ));
        }
        let args = pynenc_model::Arguments::from_json(self.app.serializer(), arguments)
            .map_err(|e| OperateError::invalid("arguments", e.to_string()))?;
        let request = RouteRequest {
            print_arguments: self.app.conf().print_arguments,
            ..RouteRequest::new(
                pynenc_model::Call::new(task_id.clone(), args),
                self.actor.clone(),
            )
        };
        let id = self.route_one(request).await?;
        info!(task_id = %task_id, invocation_id = %id, actor = %self.actor, "called by stored name");
        Ok(id)
    }

    /// Routes one request; the id of the invocation it made (or reused).
    async fn route_one(&self, request: RouteRequest) -> Result<InvocationId> {
        let outcome = self
            .app
            .route_requests(vec![request])
            .await?
            .pop()
            .ok_or_else(|| {
                OperateError::Store(pynenc_store::StoreError::backend(
                    "orchestrator",
                    "route_calls returned no outcome for a request",
                ))
            })?;
        Ok(match outcome {
            RouteOutcome::New(r) | RouteOutcome::Reused { record: r, .. } => r.invocation_id,
        })
    }

    /// Runs a `SCHEDULED` invocation now: it becomes `REGISTERED` and is
    /// queued, without waiting for its time (the same invocation, in its
    /// history with this controller's actor).
    ///
    /// # Errors
    ///
    /// [`OperateError::NotFound`] for an unknown id;
    /// [`OperateError::WrongStatus`] when it is not `SCHEDULED`: nothing
    /// changes.
    pub async fn run_scheduled_now(&self, id: &InvocationId) -> Result<()> {
        let status = self.app.orchestrator().get_status(id).await?.status;
        if status != InvocationStatus::Scheduled {
            return Err(OperateError::WrongStatus {
                invocation_id: *id,
                status,
                reason: "only a SCHEDULED invocation can be run now",
            });
        }
        // the step refuses it too if its status moved meanwhile
        self.app
            .orchestrator()
            .run_scheduled_now(id, &self.actor)
            .await?;
        info!(invocation_id = %id, actor = %self.actor, "scheduled call run now");
        Ok(())
    }

    /// Retries a `FAILED` invocation now: a rerun of its call.
    ///
    /// # Errors
    ///
    /// [`OperateError::WrongStatus`] when it is not `FAILED`; as [`Controller::rerun`].
    pub async fn retry_failed(&self, id: &InvocationId) -> Result<Rerun> {
        let status = self.app.orchestrator().get_status(id).await?.status;
        if status != InvocationStatus::Failed {
            return Err(OperateError::WrongStatus {
                invocation_id: *id,
                status,
                reason: "only a FAILED invocation can be retried (rerun it instead)",
            });
        }
        self.rerun(id).await
    }

    /// Reruns every invocation matching `query`, whatever its status.
    ///
    /// # Errors
    ///
    /// An invalid query; the backend failed (what was rerun stays rerun).
    pub async fn rerun_matching(&self, query: &InvocationQuery) -> Result<Vec<Rerun>> {
        let mut out = Vec::new();
        // the walk ends at its start time: the reruns made by this call are
        // newer, so none is rerun again
        let mut walk = Walk::new(query);
        while let Some(page) = self.next_page(&mut walk).await? {
            for s in page {
                out.push(self.rerun(&s.invocation_id).await?);
                self.report(1);
            }
        }
        Ok(out)
    }

    /// Retries every `FAILED` invocation matching `query` (its status
    /// filter is replaced by `FAILED`).
    ///
    /// # Errors
    ///
    /// An invalid query; the backend failed (what was retried stays retried).
    pub async fn retry_failed_matching(&self, query: &InvocationQuery) -> Result<Vec<Rerun>> {
        self.rerun_matching(&InvocationQuery {
            statuses: vec![InvocationStatus::Failed],
            ..query.clone()
        })
        .await
    }

    /// The final invocations a purge of `query` would delete (at most `max`).
    ///
    /// # Errors
    ///
    /// An invalid query; the backend failed.
    pub async fn purge_preview(
        &self,
        query: &InvocationQuery,
        max: usize,
    ) -> Result<Vec<InvocationSummary>> {
        match final_only(query) {
            Some(query) => Inspector::new(&self.app).list_all(&query, max).await,
            None => Ok(Vec::new()),
        }
    }

    /// Deletes every final invocation matching `query` (record, result,
    /// history); invocations that are not final are never deleted. Returns
    /// how many were deleted. Then sweeps the data store, so the stored
    /// values only those invocations used go too (once unclaimed for
    /// `data_store.grace_seconds`; a failed sweep is logged, and the
    /// runners' next auto purge sweeps again).
    ///
    /// # Errors
    ///
    /// An invalid query; the backend failed (what was deleted stays deleted).
    pub async fn purge_matching(&self, query: &InvocationQuery) -> Result<usize> {
        let Some(query) = final_only(query) else {
            return Ok(0);
        };
        let mut deleted = 0;
        let mut walk = Walk::new(&query);
        while let Some(page) = self.next_page(&mut walk).await? {
            let ids: Vec<InvocationId> = page.into_iter().map(|s| s.invocation_id).collect();
            let n = self.app.orchestrator().delete_final(&ids).await?;
            self.report(n);
            deleted += n;
        }
        info!(actor = %self.actor, deleted, "purge by filter");
        if deleted > 0 {
            match self.app.sweep_data_store().await {
                Ok(s) if s.removed > 0 => {
                    info!(
                        values = s.removed,
                        bytes = s.bytes_freed,
                        "data store swept"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "could not sweep the data store after a purge"),
            }
        }
        Ok(deleted)
    }

    /// The next page of a walk, `None` once it is over.
    async fn next_page(&self, walk: &mut Walk) -> Result<Option<Vec<InvocationSummary>>> {
        if walk.done {
            return Ok(None);
        }
        let page = Inspector::new(&self.app).list(&walk.query).await?;
        match page.next {
            Some(c) => walk.query.after = Some(c),
            None => walk.done = true,
        }
        Ok((!page.items.is_empty()).then_some(page.items))
    }
}

/// A walk over the invocations matching a query that existed when it began
/// (created before then), oldest first, a page at a time: an action by
/// filter never holds every match in memory, and never reaches the
/// invocations it creates itself.
struct Walk {
    query: InvocationQuery,
    done: bool,
}

impl Walk {
    fn new(query: &InvocationQuery) -> Self {
        let now = Timestamp::from_micros(Timestamp::now().as_micros() + 1);
        let to = query.created.to.map_or(now, |t| t.min(now));
        Walk {
            query: InvocationQuery {
                order: Order::OldestFirst,
                limit: MAX_PAGE_SIZE,
                after: None,
                created: TimeRange {
                    from: query.created.from,
                    to: Some(to),
                },
                ..query.clone()
            },
            done: false,
        }
    }
}

/// `query` narrowed to final statuses; `None` when it asks for none of them.
fn final_only(query: &InvocationQuery) -> Option<InvocationQuery> {
    let statuses: Vec<InvocationStatus> = pynenc_model::status::ALL_STATUSES
        .into_iter()
        .filter(|s| s.is_final())
        .filter(|s| query.statuses.is_empty() || query.statuses.contains(s))
        .collect();
    (!statuses.is_empty()).then(|| InvocationQuery {
        statuses,
        ..query.clone()
    })
}
