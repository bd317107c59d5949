//! [`TxnBackend`]: any [`AtomicStore`] as broker, orchestrator, state backend
//! and coordination.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use pynenc_model::{
    CancelOutcome, DataClaim, DataRef, DataSweep, DataUsage, ErrorKindCount, HistoryEntry,
    InvocationId, InvocationOutcome, InvocationQuery, InvocationRecord, InvocationStatus,
    InvocationSummary, LeaseHolder, QueueStats, Reuses, RouteOutcome, RouteRequest, RunOutcome,
    RunnerId, RunnerInfo, Serializer, StatusCount, StatusRecord, TaskId, TaskTotals, Timestamp,
    TriggerRecord, WaitGraph,
};

use crate::atomic::{AtomicStore, Inline};
use crate::components::{
    Broker, Components, Coordination, DataStore, Orchestrator, ParkedPick, Queries, Retention,
    RunEnd, StateBackend, StepReport, WaitChange, WorkflowData,
};
use crate::engine;
use crate::error::{Result, StoreError};

/// Exposes an [`AtomicStore`] as the components of an app; every
/// method is one atomic section running the shared [`engine`] rules.
pub struct TxnBackend<S> {
    store: Arc<S>,
    serializer: Serializer,
}

impl<S> Clone for TxnBackend<S> {
    fn clone(&self) -> Self {
        TxnBackend {
            store: self.store.clone(),
            serializer: self.serializer,
        }
    }
}

impl<S: AtomicStore> TxnBackend<S> {
    /// Wraps a store; `serializer` renders argument differences and cycles.
    pub fn new(store: Arc<S>, serializer: Serializer) -> Self {
        TxnBackend { store, serializer }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The four components of an app on `store`: every one is this adapter.
    pub fn components(store: Arc<S>, serializer: Serializer) -> Components {
        Components::of(Arc::new(TxnBackend::new(store, serializer)))
    }
}

#[async_trait]
impl<S: AtomicStore> Broker for TxnBackend<S> {
    async fn queue_len(&self) -> Result<usize> {
        self.store.atomic(|t| t.queue_len()).await
    }
}

#[async_trait]
impl<S: AtomicStore> StateBackend for TxnBackend<S> {
    async fn get_invocation(&self, id: &InvocationId) -> Result<InvocationRecord> {
        let id = *id;
        self.store
            .atomic(move |t| {
                t.get_invocation(&id)?
                    .map(|r| (*r).clone())
                    .ok_or_else(|| StoreError::not_found(&id, ""))
            })
            .await
    }

    async fn find_invocations(
        &self,
        ids: &[InvocationId],
    ) -> Result<Vec<Option<(InvocationRecord, InvocationOutcome)>>> {
        let ids = ids.to_vec();
        self.store
            .read(move |t| {
                t.prefetch(&ids)?;
                let outcomes = t.get_outcomes(&ids)?;
                ids.iter()
                    .zip(outcomes)
                    .map(|(id, outcome)| {
                        Ok(match (t.get_invocation(id)?, outcome) {
                            (Some(record), Some(outcome)) => Some(((*record).clone(), outcome)),
                            _ => None,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn get_history(&self, id: &InvocationId) -> Result<Vec<HistoryEntry>> {
        let id = *id;
        self.store.atomic(move |t| t.get_history(&id)).await
    }

    async fn get_outcomes(&self, ids: &[InvocationId]) -> Result<Vec<InvocationOutcome>> {
        if let Inline::Ran(out) = self
            .store
            .atomic_inline((), |t, ()| engine::outcomes(t, ids))
        {
            return out;
        }
        if let Some(known) = self.store.known_outcomes(ids) {
            return Ok(known);
        }
        // committed outcomes: where the store reads apart from its steps
        // (PostgreSQL), a wait for results never queues behind them
        let ids = ids.to_vec();
        self.store.read(move |t| engine::outcomes(t, &ids)).await
    }

    async fn list_invocation_ids(&self) -> Result<Vec<InvocationId>> {
        self.store.atomic(|t| t.list_invocation_ids()).await
    }

    async fn purge(&self) -> Result<()> {
        self.store.atomic(|t| t.purge()).await
    }
}

#[async_trait]
impl<S: AtomicStore> Orchestrator for TxnBackend<S> {
    async fn route_calls(&self, requests: Vec<RouteRequest>) -> Result<Vec<RouteOutcome>> {
        let serializer = self.serializer;
        // an in-process store routes the caller's requests, not copies
        let inline = self.store.atomic_inline(requests, |t, requests| {
            engine::route(t, requests, serializer, Timestamp::now())
        });
        match inline {
            Inline::Ran(out) => out,
            Inline::NotHere(requests) => {
                self.store
                    .atomic(move |t| {
                        engine::route(t, requests.clone(), serializer, Timestamp::now())
                    })
                    .await
            }
        }
    }

    async fn get_invocations_to_run(
        &self,
        runner_id: &RunnerId,
        max: usize,
    ) -> Result<Vec<Arc<InvocationRecord>>> {
        let runner = runner_id.clone();
        self.store
            .atomic(move |t| {
                // lost in a crash, the invocations are taken again
                t.redone_if_lost();
                engine::pick(t, &runner, max, Timestamp::now())
            })
            .await
    }

    async fn get_invocations_to_start(
        &self,
        runner_id: &RunnerId,
        max: usize,
        execution_context: Option<&str>,
    ) -> Result<Vec<Arc<InvocationRecord>>> {
        let runner = runner_id.clone();
        let context = execution_context.map(str::to_string);
        self.store
            .atomic(move |t| {
                // lost in a crash, the invocations are taken and run again
                t.redone_if_lost();
                engine::pick_and_start(t, &runner, max, context.as_deref(), Timestamp::now())
            })
            .await
    }

    fn start_when_work<'s>(
        &'s self,
        runner_id: &RunnerId,
        max: usize,
        execution_context: Option<&str>,
        epoch: Option<u64>,
        timeout: Duration,
    ) -> Option<ParkedPick<'s>> {
        if !self.store.parks_sections() {
            return None;
        }
        let runner = runner_id.clone();
        let context = execution_context.map(str::to_string);
        Some(Box::pin(self.store.atomic_when_work(
            epoch,
            timeout,
            move |t| {
                t.redone_if_lost();
                engine::pick_and_start(t, &runner, max, context.as_deref(), Timestamp::now())
            },
        )))
    }

    async fn set_status(
        &self,
        id: &InvocationId,
        status: InvocationStatus,
        actor: &RunnerId,
        execution_context: Option<&str>,
    ) -> Result<StatusRecord> {
        let id = *id;
        let actor = actor.clone();
        let context = execution_context.map(str::to_string);
        self.store
            .atomic(move |t| {
                engine::transition(t, &id, status, &actor, context.as_deref(), Timestamp::now())
            })
            .await
    }

    async fn finish(
        &self,
        id: &InvocationId,
        runner_id: &RunnerId,
        outcome: RunOutcome,
    ) -> Result<InvocationStatus> {
        let id = *id;
        let runner = runner_id.clone();
        self.store
            .atomic(move |t| {
                engine::finish(t, &id, &runner, outcome.clone(), None, Timestamp::now())
            })
            .await
    }

    async fn runner_step(
        &self,
        runner_id: &RunnerId,
        ends: Vec<RunEnd>,
        waits: Vec<WaitChange>,
        max_next: usize,
        execution_context: Option<&str>,
    ) -> StepReport {
        let (n, w) = (ends.len(), waits.len());
        // an in-process store runs the section on the caller's values
        let inline = self.store.atomic_inline((ends, waits), |t, (ends, waits)| {
            engine::runner_step(
                t,
                runner_id,
                ends,
                waits,
                max_next,
                execution_context,
                Timestamp::now(),
            )
        });
        let out = match inline {
            Inline::Ran(out) => out,
            Inline::NotHere((ends, waits)) => {
                let runner = runner_id.clone();
                let context = execution_context.map(str::to_string);
                self.store
                    .atomic(move |t| {
                        engine::runner_step(
                            t,
                            &runner,
                            ends.clone(),
                            waits.clone(),
                            max_next,
                            context.as_deref(),
                            Timestamp::now(),
                        )
                    })
                    .await
            }
        };
        out.unwrap_or_else(|e| StepReport::failed_with_waits(n, w, e))
    }

    async fn kill_and_reroute(&self, id: &InvocationId, runner_id: &RunnerId) -> Result<()> {
        let id = *id;
        let runner = runner_id.clone();
        self.store
            .atomic(move |t| engine::kill_and_reroute(t, &id, &runner, Timestamp::now()))
            .await
    }

    async fn get_status(&self, id: &InvocationId) -> Result<StatusRecord> {
        let id = *id;
        self.store
            .atomic(move |t| {
                t.get_status(&id)?
                    .ok_or_else(|| StoreError::not_found(&id, ""))
            })
            .await
    }

    async fn get_num_retries(&self, id: &InvocationId) -> Result<u32> {
        let id = *id;
        self.store.atomic(move |t| t.get_retries(&id)).await
    }

    async fn waiting_for_results(
        &self,
        waiter: Option<&InvocationId>,
        waited: &[InvocationId],
    ) -> Result<()> {
        let waiter = waiter.copied();
        let waited = waited.to_vec();
        self.store
            .atomic(move |t| engine::waiting_for_results(t, waiter.as_ref(), &waited))
            .await
    }

    async fn pause_for_results(
        &self,
        waiter: &InvocationId,
        runner_id: &RunnerId,
        waited: &[InvocationId],
    ) -> Result<bool> {
        let waiter = *waiter;
        let runner_id = runner_id.clone();
        let waited = waited.to_vec();
        self.store
            .atomic(move |t| {
                engine::pause_for_results(t, &waiter, &runner_id, &waited, Timestamp::now())
            })
            .await
    }

    async fn resume_with_outcomes(
        &self,
        waiter: &InvocationId,
        runner_id: &RunnerId,
        waited: &[InvocationId],
    ) -> Result<Vec<InvocationOutcome>> {
        let waiter = *waiter;
        let runner_id = runner_id.clone();
        let waited = waited.to_vec();
        self.store
            .atomic(move |t| {
                engine::resume_with_outcomes(t, &waiter, &runner_id, &waited, Timestamp::now())
            })
            .await
    }

    async fn promote_scheduled(&self) -> Result<usize> {
        self.store
            .atomic(|t| {
                engine::promote_scheduled(t, &RunnerId::from("scheduler"), Timestamp::now())
            })
            .await
    }

    async fn run_scheduled_now(&self, id: &InvocationId, actor: &RunnerId) -> Result<()> {
        let id = *id;
        let actor = actor.clone();
        self.store
            .atomic(move |t| engine::run_scheduled_now(t, &id, &actor, Timestamp::now()))
            .await
    }

    async fn auto_purge(&self, retention: &Retention) -> Result<usize> {
        let now = Timestamp::now();
        let retention = *retention;
        engine::purge_in_batches(|max| {
            self.store
                .atomic(move |t| engine::auto_purge(t, &retention, now, max))
        })
        .await
    }

    async fn delete_final(&self, ids: &[InvocationId]) -> Result<usize> {
        let mut deleted = 0;
        for chunk in ids.chunks(engine::PURGE_BATCH) {
            let chunk = chunk.to_vec();
            deleted += self
                .store
                .atomic(move |t| engine::delete_final(t, &chunk))
                .await?;
        }
        Ok(deleted)
    }

    async fn cancel(&self, id: &InvocationId, actor: &RunnerId) -> Result<CancelOutcome> {
        let id = *id;
        let actor = actor.clone();
        self.store
            .atomic(move |t| engine::cancel(t, &id, &actor, Timestamp::now()))
            .await
    }

    async fn cancel_requests(&self, runner_id: &RunnerId) -> Result<Vec<InvocationId>> {
        let runner = runner_id.clone();
        self.store
            .atomic(move |t| t.cancel_requests_of(&runner))
            .await
    }

    async fn recover(
        &self,
        actor: &RunnerId,
        dead_after: Duration,
        max_pending: Duration,
    ) -> Result<Vec<InvocationId>> {
        let actor = actor.clone();
        self.store
            .atomic(move |t| engine::recover(t, &actor, Timestamp::now(), dead_after, max_pending))
            .await
    }
}

#[async_trait]
impl<S: AtomicStore> Coordination for TxnBackend<S> {
    async fn heartbeat(&self, runner_id: &RunnerId) -> Result<()> {
        self.store.heartbeat(runner_id).await
    }

    async fn register_runner(&self, info: &RunnerInfo) -> Result<()> {
        self.store.register_runner(info).await
    }

    async fn register_triggers(&self, triggers: &[TriggerRecord]) -> Result<()> {
        let triggers = triggers.to_vec();
        self.store
            .atomic(move |t| triggers.iter().try_for_each(|tr| t.put_trigger(tr)))
            .await
    }

    async fn remove_heartbeat(&self, runner_id: &RunnerId) -> Result<()> {
        let runner = runner_id.clone();
        self.store
            .atomic(move |t| t.remove_heartbeat(&runner))
            .await
    }

    async fn try_lease(&self, name: &str, holder: &RunnerId, ttl: Duration) -> Result<bool> {
        let name = name.to_string();
        let holder = holder.clone();
        self.store
            .atomic(move |t| t.try_lease(&name, &holder, Timestamp::now(), ttl))
            .await
    }

    fn work_epoch(&self) -> u64 {
        self.store.work_epoch()
    }

    async fn wait_for_work(&self, epoch: u64, timeout: Duration) {
        self.store.wait_for_work(epoch, timeout).await
    }

    async fn wait_final(&self, ids: &[InvocationId]) -> Result<()> {
        self.store.wait_final(ids).await
    }

    async fn wait_status_change(
        &self,
        id: &InvocationId,
        seen: InvocationStatus,
        timeout: Duration,
    ) -> Result<()> {
        self.store.wait_status_change(id, seen, timeout).await
    }
}

#[async_trait]
impl<S: AtomicStore> WorkflowData for TxnBackend<S> {
    async fn put_workflow_data(
        &self,
        id: &InvocationId,
        key: &str,
        value: &str,
        if_absent: bool,
    ) -> Result<String> {
        let (id, key, value) = (*id, key.to_string(), value.to_string());
        self.store
            .atomic(move |t| t.put_workflow_data(&id, &key, &value, if_absent))
            .await
    }

    async fn workflow_data(&self, id: &InvocationId, key: &str) -> Result<Option<String>> {
        let (id, key) = (*id, key.to_string());
        self.store
            .read(move |t| t.get_workflow_data(&id, &key))
            .await
    }
}

#[async_trait]
impl<S: AtomicStore> DataStore for TxnBackend<S> {
    async fn claim_values(&self, claims: &[DataClaim]) -> Result<Vec<bool>> {
        let claims = claims.to_vec();
        self.store
            .atomic(move |t| engine::claim_data(t, &claims, Timestamp::now()))
            .await
    }

    async fn put_values(&self, values: &[(DataClaim, String)]) -> Result<()> {
        let values = Arc::new(values.to_vec());
        self.store
            .atomic(move |t| engine::put_data(t, &values, Timestamp::now()))
            .await
    }

    async fn get_value(&self, data: &DataRef) -> Result<Option<String>> {
        let data = *data;
        self.store.atomic(move |t| t.get_data(&data)).await
    }

    async fn sweep_values(&self, claimed_before: Timestamp) -> Result<DataSweep> {
        engine::sweep_in_batches(|max| {
            self.store
                .atomic(move |t| engine::sweep_data(t, claimed_before, Timestamp::now(), max))
        })
        .await
    }

    async fn data_usage(&self) -> Result<DataUsage> {
        self.store.atomic(|t| t.data_usage()).await
    }
}

#[async_trait]
impl<S: AtomicStore> Queries for TxnBackend<S> {
    async fn list_invocations(&self, query: &InvocationQuery) -> Result<Vec<InvocationSummary>> {
        let query = query.clone();
        self.store.read(move |t| t.list_invocations(&query)).await
    }

    async fn count_by_status(&self, task_ids: &[TaskId]) -> Result<Vec<StatusCount>> {
        let task_ids = task_ids.to_vec();
        self.store.read(move |t| t.count_by_status(&task_ids)).await
    }

    async fn failed_by_kind(&self, task_ids: &[TaskId]) -> Result<Vec<ErrorKindCount>> {
        let task_ids = task_ids.to_vec();
        self.store.read(move |t| t.failed_by_kind(&task_ids)).await
    }

    async fn task_totals(&self, task_ids: &[TaskId]) -> Result<Vec<TaskTotals>> {
        let task_ids = task_ids.to_vec();
        self.store.read(move |t| t.task_totals(&task_ids)).await
    }

    async fn reuses(&self, id: &InvocationId) -> Result<Reuses> {
        let id = *id;
        self.store.read(move |t| t.reuses_of(&id)).await
    }

    async fn statuses(&self, ids: &[InvocationId]) -> Result<Vec<Option<InvocationStatus>>> {
        let ids = ids.to_vec();
        self.store
            .read(move |t| {
                t.prefetch(&ids)?;
                ids.iter()
                    .map(|id| Ok(t.get_status(id)?.map(|s| s.status)))
                    .collect()
            })
            .await
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        self.store.read(engine::queue_stats).await
    }

    async fn wait_graph(&self, id: &InvocationId) -> Result<WaitGraph> {
        let id = *id;
        self.store
            .read(move |t| {
                if t.get_status(&id)?.is_none() {
                    return Err(StoreError::not_found(&id, "while reading its waits"));
                }
                t.waits_of(&id)
            })
            .await
    }

    async fn runners(&self) -> Result<Vec<RunnerInfo>> {
        self.store.read(|t| t.list_runners()).await
    }

    async fn triggers(&self) -> Result<Vec<TriggerRecord>> {
        self.store.read(|t| t.list_triggers()).await
    }

    async fn lease(&self, name: &str) -> Result<Option<LeaseHolder>> {
        let name = name.to_string();
        self.store.read(move |t| t.get_lease(&name)).await
    }

    async fn app_ids(&self) -> Result<Vec<String>> {
        self.store.read(|t| t.app_ids()).await
    }
}
