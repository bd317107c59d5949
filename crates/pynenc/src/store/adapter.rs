//! [`TxnBackend`]: any [`AtomicStore`] as broker, orchestrator and state backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{engine, AtomicStore};
use crate::broker::Broker;
use crate::exceptions::{PynencError, Result};
use crate::invocation::InvocationRecord;
use crate::orchestrator::{Ends, Orchestrator, Picked, RouteOutcome, RouteRequest, RunOutcome};
use crate::serializer::Serializer;
use crate::state_backend::{HistoryEntry, InvocationOutcome, StateBackend};
use crate::status::{InvocationStatus, StatusRecord};
use crate::util::now_us;

/// Exposes an [`AtomicStore`] as the three components of an app; every
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
    /// Wraps a store; `serializer` renders argument differences.
    pub fn new(store: Arc<S>, serializer: Serializer) -> Self {
        TxnBackend { store, serializer }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }
}

#[async_trait]
impl<S: AtomicStore> Broker for TxnBackend<S> {
    async fn route_invocations(&self, invocation_ids: &[String]) -> Result<()> {
        let ids = invocation_ids.to_vec();
        self.store
            .atomic(move |t| {
                for id in &ids {
                    t.enqueue(id)?;
                }
                Ok(())
            })
            .await
    }

    async fn retrieve_invocation(&self) -> Result<Option<String>> {
        self.store
            .atomic(|t| Ok(t.dequeue(1)?.into_iter().next()))
            .await
    }

    async fn queue_len(&self) -> Result<usize> {
        self.store.atomic(|t| t.queue_len()).await
    }

    async fn purge(&self) -> Result<()> {
        self.store.atomic(|t| t.purge()).await
    }
}

#[async_trait]
impl<S: AtomicStore> StateBackend for TxnBackend<S> {
    async fn get_invocation(&self, invocation_id: &str) -> Result<InvocationRecord> {
        let id = invocation_id.to_string();
        self.store
            .atomic(move |t| {
                t.get_invocation(&id)?.map(|r| (*r).clone()).ok_or(
                    PynencError::InvocationNotFound {
                        invocation_id: id,
                        message: String::new(),
                    },
                )
            })
            .await
    }

    async fn get_history(&self, invocation_id: &str) -> Result<Vec<HistoryEntry>> {
        let id = invocation_id.to_string();
        self.store.atomic(move |t| t.get_history(&id)).await
    }

    async fn get_outcomes(&self, invocation_ids: &[String]) -> Result<Vec<InvocationOutcome>> {
        if let Ok(out) = self
            .store
            .atomic_inline((), |t, ()| engine::outcomes(t, invocation_ids))
        {
            return out;
        }
        let ids = invocation_ids.to_vec();
        self.store.atomic(move |t| engine::outcomes(t, &ids)).await
    }

    async fn list_invocation_ids(&self) -> Result<Vec<String>> {
        self.store.atomic(|t| t.list_invocation_ids()).await
    }

    async fn purge(&self) -> Result<()> {
        self.store.atomic(|t| t.purge()).await
    }
}

#[async_trait]
impl<S: AtomicStore> Orchestrator for TxnBackend<S> {
    fn batches_finishes(&self) -> bool {
        self.store.batching_pays()
    }

    async fn route_calls(&self, requests: Vec<RouteRequest>) -> Result<Vec<RouteOutcome>> {
        let serializer = self.serializer;
        self.store
            .atomic(move |t| engine::route(t, requests, serializer, now_us()))
            .await
    }

    async fn get_invocations_to_run(
        &self,
        runner_id: &str,
        max: usize,
    ) -> Result<Vec<Arc<InvocationRecord>>> {
        let runner = runner_id.to_string();
        self.store
            .atomic(move |t| engine::pick(t, &runner, max, now_us()))
            .await
    }

    async fn get_invocations_to_start(
        &self,
        runner_id: &str,
        max: usize,
        execution_context: Option<String>,
    ) -> Result<Vec<Arc<InvocationRecord>>> {
        let runner = runner_id.to_string();
        self.store
            .atomic(move |t| {
                engine::pick_and_start(t, &runner, max, execution_context.as_deref(), now_us())
            })
            .await
    }

    async fn set_status(
        &self,
        invocation_id: &str,
        status: InvocationStatus,
        actor: &str,
        execution_context: Option<String>,
    ) -> Result<StatusRecord> {
        let id = invocation_id.to_string();
        let actor = actor.to_string();
        self.store
            .atomic(move |t| {
                engine::transition(
                    t,
                    &id,
                    status,
                    &actor,
                    execution_context.as_deref(),
                    now_us(),
                )
            })
            .await
    }

    async fn finish(
        &self,
        invocation_id: &str,
        runner_id: &str,
        outcome: RunOutcome,
    ) -> Result<InvocationStatus> {
        let id = invocation_id.to_string();
        let runner = runner_id.to_string();
        self.store
            .atomic(move |t| engine::finish(t, &id, &runner, outcome, now_us()))
            .await
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
        let n = outcomes.len();
        // an in-process store runs the section on the caller's strings
        let inline = self.store.atomic_inline(outcomes, |t, outcomes| {
            engine::finish_many_and_start(
                t,
                runner_id,
                outcomes,
                max_next,
                execution_context,
                now_us(),
            )
        });
        let out = match inline {
            Ok(out) => out,
            Err(outcomes) => {
                let runner = runner_id.to_string();
                let context = execution_context.map(str::to_string);
                self.store
                    .atomic(move |t| {
                        engine::finish_many_and_start(
                            t,
                            &runner,
                            outcomes,
                            max_next,
                            context.as_deref(),
                            now_us(),
                        )
                    })
                    .await
            }
        };
        match out {
            Ok((results, next)) => (results, Ok(next)),
            Err(e) => ((0..n).map(|_| Err(e.clone())).collect(), Err(e)),
        }
    }

    async fn kill_and_reroute(&self, invocation_id: &str, runner_id: &str) -> Result<()> {
        let id = invocation_id.to_string();
        let runner = runner_id.to_string();
        self.store
            .atomic(move |t| engine::kill_and_reroute(t, &id, &runner, now_us()))
            .await
    }

    async fn get_status(&self, invocation_id: &str) -> Result<StatusRecord> {
        let id = invocation_id.to_string();
        self.store
            .atomic(move |t| {
                t.get_status(&id)?.ok_or(PynencError::InvocationNotFound {
                    invocation_id: id,
                    message: String::new(),
                })
            })
            .await
    }

    async fn get_num_retries(&self, invocation_id: &str) -> Result<u32> {
        let id = invocation_id.to_string();
        self.store.atomic(move |t| t.get_retries(&id)).await
    }

    async fn waiting_for_results(&self, waiter: Option<&str>, waited: &[String]) -> Result<()> {
        let waiter = waiter.map(str::to_string);
        let waited = waited.to_vec();
        self.store
            .atomic(move |t| engine::waiting_for_results(t, waiter.as_deref(), &waited))
            .await
    }

    async fn wait_final(&self, ids: &[String]) -> Result<()> {
        self.store.wait_final(ids).await
    }

    fn work_epoch(&self) -> u64 {
        self.store.work_epoch()
    }

    async fn wait_for_work(&self, epoch: u64, timeout: Duration) {
        self.store.wait_for_work(epoch, timeout).await
    }

    async fn promote_scheduled(&self) -> Result<usize> {
        self.store
            .atomic(|t| engine::promote_scheduled(t, "scheduler", now_us()))
            .await
    }

    async fn auto_purge(&self, older_than: Duration) -> Result<usize> {
        let before = now_us() - crate::util::micros(older_than);
        let mut total = 0;
        loop {
            let n = self
                .store
                .atomic(move |t| engine::auto_purge(t, before, engine::PURGE_BATCH))
                .await?;
            total += n;
            if n < engine::PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    async fn heartbeat(&self, runner_id: &str) -> Result<()> {
        let runner = runner_id.to_string();
        self.store
            .atomic(move |t| t.put_heartbeat(&runner, now_us()))
            .await
    }

    async fn remove_heartbeat(&self, runner_id: &str) -> Result<()> {
        let runner = runner_id.to_string();
        self.store
            .atomic(move |t| t.remove_heartbeat(&runner))
            .await
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let name = name.to_string();
        let holder = holder.to_string();
        let ttl_us = crate::util::micros(ttl);
        self.store
            .atomic(move |t| t.try_lease(&name, &holder, now_us(), ttl_us))
            .await
    }

    async fn recover(
        &self,
        actor: &str,
        dead_after: Duration,
        max_pending: Duration,
    ) -> Result<Vec<String>> {
        let actor = actor.to_string();
        let dead = crate::util::micros(dead_after);
        let pending = crate::util::micros(max_pending);
        self.store
            .atomic(move |t| engine::recover(t, &actor, now_us(), dead, pending))
            .await
    }

    async fn purge(&self) -> Result<()> {
        self.store.atomic(|t| t.purge()).await
    }
}
