//! The Pynenc app: configuration, components and the task registry.

mod backend;
mod builder;
mod dev_mode;
mod lookup;
mod routing;

pub(crate) use routing::check_arguments;

use std::sync::Arc;

use pynenc_model::{InvocationId, RunnerId, Serializer};
use pynenc_store::{Broker, Components, Coordination, DataStore, Orchestrator, StateBackend};

pub use backend::Backend;
#[cfg(feature = "postgres")]
pub use backend::PostgresOptions;
#[cfg(feature = "redis")]
pub use backend::RedisOptions;
#[cfg(feature = "sqlite")]
pub use backend::SqliteOptions;
pub use builder::PynencBuilder;

use crate::conf::PynencConfig;
use crate::context;
use crate::data::{DataCacheStats, DataClient};
use crate::exceptions::Result;
use crate::task::TaskRegistry;
use crate::trigger::{ResolvedTrigger, TriggerInfo};

struct AppInner {
    conf: PynencConfig,
    serializer: Serializer,
    components: Components,
    registry: TaskRegistry,
    external_runner_id: RunnerId,
    data: DataClient,
    triggers: Vec<ResolvedTrigger>,
}

/// A Pynenc application: cheap to clone, shared by every task call.
#[derive(Clone)]
pub struct Pynenc {
    inner: Arc<AppInner>,
}

impl std::fmt::Debug for Pynenc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pynenc")
            .field("app_id", &self.app_id())
            .field("backend", &self.inner.conf.backend)
            .finish()
    }
}

impl Pynenc {
    /// A builder, in memory by default.
    pub fn builder() -> PynencBuilder {
        PynencBuilder::new()
    }

    /// The app id.
    pub fn app_id(&self) -> &str {
        &self.inner.conf.app_id
    }

    /// The resolved configuration (with the source of every value).
    pub fn conf(&self) -> &PynencConfig {
        &self.inner.conf
    }

    /// The serializer.
    pub fn serializer(&self) -> Serializer {
        self.inner.serializer
    }

    /// The broker (the queue of invocation ids).
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.components.broker
    }

    /// The orchestrator (statuses, routing, pick-up, control).
    pub fn orchestrator(&self) -> &Arc<dyn Orchestrator> {
        &self.inner.components.orchestrator
    }

    /// The state backend (records, history, results, errors).
    pub fn state_backend(&self) -> &Arc<dyn StateBackend> {
        &self.inner.components.state_backend
    }

    /// The data store: large arguments and results kept out of band.
    pub fn data_store(&self) -> &Arc<dyn DataStore> {
        &self.inner.components.data_store
    }

    /// The values kept per workflow (see [`mod@crate::workflow`]).
    pub fn workflow_data(&self) -> &Arc<dyn pynenc_store::WorkflowData> {
        &self.inner.components.workflow_data
    }

    /// The app's triggers — those this program declares, then those runners
    /// of the app stored that it does not (what a command line or a monitor
    /// without the tasks compiled in sees) — with, for cron triggers, the
    /// next tick and the last [`crate::trigger::RECENT_TICKS`] ticks with
    /// the status of the invocation each fired.
    ///
    /// # Errors
    ///
    /// The backend failed.
    pub async fn triggers(&self) -> Result<Vec<TriggerInfo>> {
        let now = pynenc_model::Timestamp::now();
        // the triggers runners stored, and those this program declares
        let mut stored: std::collections::BTreeMap<String, pynenc_model::TriggerRecord> = self
            .queries()
            .triggers()
            .await?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let mut infos = Vec::new();
        for t in &self.inner.triggers {
            let stored_at = stored.remove(&t.name).map(|s| s.declared_at);
            let record = t.record(self.serializer(), now);
            infos.push(TriggerInfo::of(
                &record,
                true,
                stored_at,
                now,
                crate::trigger::RECENT_TICKS,
            ));
        }
        for record in stored.values() {
            let stored_at = Some(record.declared_at);
            infos.push(TriggerInfo::of(
                record,
                false,
                stored_at,
                now,
                crate::trigger::RECENT_TICKS,
            ));
        }
        // the statuses of every trigger's recent firings, in one read
        let ids: Vec<pynenc_model::InvocationId> = infos
            .iter()
            .flat_map(|i| i.recent.iter().map(|f| f.invocation_id))
            .collect();
        let mut statuses = self.queries().statuses(&ids).await?.into_iter();
        for info in &mut infos {
            for firing in &mut info.recent {
                firing.status = statuses.next().flatten();
            }
        }
        Ok(infos)
    }

    /// The checked triggers (evaluated by the runners' upkeep).
    pub(crate) fn resolved_triggers(&self) -> &[ResolvedTrigger] {
        &self.inner.triggers
    }

    /// This process's side of the data store.
    pub(crate) fn data(&self) -> &DataClient {
        &self.inner.data
    }

    /// What this process's cache of stored values did: values fetched from
    /// the data store, reads answered from the cache, bytes held.
    pub fn data_cache_stats(&self) -> DataCacheStats {
        self.inner.data.cache_stats()
    }

    /// Removes the stored values no invocation refers to any more (and
    /// that nobody claimed within `data_store.grace_seconds`). Runners do
    /// this at every auto purge; call it after purging invocations by hand
    /// to free their values at once.
    ///
    /// # Errors
    ///
    /// The backend failed; what was removed before stays removed.
    pub async fn sweep_data_store(&self) -> Result<pynenc_model::DataSweep> {
        self.inner.data.sweep(self.data_store()).await
    }

    /// Heartbeats, leases and wake-ups.
    pub fn coordination(&self) -> &Arc<dyn Coordination> {
        &self.inner.components.coordination
    }

    /// The tasks of this app with their effective options.
    pub fn registry(&self) -> &TaskRegistry {
        &self.inner.registry
    }

    /// The owner id used for calls and waits made outside any runner.
    pub fn external_runner_id(&self) -> &RunnerId {
        &self.inner.external_runner_id
    }

    /// A new runner of the kind `runner.kind` names (`thread` by default:
    /// the in-process [`crate::ThreadRunner`]).
    pub fn runner(&self) -> crate::runner::Runner {
        crate::runner::Runner::for_app(self)
    }

    /// Makes this app the process default (used by `task::call(...)` outside tasks).
    pub fn set_as_default(&self) {
        context::set_default_app(self, false);
    }

    /// Removes every invocation of this app with everything attached to it
    /// (statuses, history, results, the queue, waits, heartbeats), in one
    /// purge of the backend. Other apps on the same backend are untouched.
    ///
    /// # Errors
    ///
    /// The backend failed; what it removed before failing stays removed.
    pub async fn purge(&self) -> Result<()> {
        Ok(self.state_backend().purge().await?)
    }

    /// Waits until every invocation in `ids` is final. Inside a runner the
    /// current invocation is paused meanwhile and the waited ones are picked
    /// first (blocking control); with `orchestrator.blocking_control =
    /// false` it keeps running and its slot, and the waited invocations
    /// wait their turn in the queue.
    ///
    /// # Errors
    ///
    /// An id that does not exist, or a backend failure.
    pub async fn wait_for(&self, ids: &[InvocationId]) -> Result<()> {
        self.wait_until_final(ids).await.map(|_| ())
    }

    /// The outcomes of `ids`, in that order, once every one is final (as
    /// [`Pynenc::wait_for`] waits for them): read by the step that resumes
    /// a waiting task, or after the wait.
    pub(crate) async fn final_outcomes(
        &self,
        ids: &[InvocationId],
    ) -> Result<Vec<pynenc_model::InvocationOutcome>> {
        match self.wait_until_final(ids).await? {
            Some(mut outcomes) => {
                self.inner
                    .data
                    .resolve_outcomes(self.data_store(), ids, &mut outcomes)
                    .await?;
                Ok(outcomes)
            }
            None => self.outcomes(ids).await,
        }
    }

    /// The final outcomes of `invocations`, in order: those already known
    /// (replayed workflow steps) without waiting or reading when all are,
    /// [`Pynenc::final_outcomes`] otherwise.
    pub(crate) async fn outcomes_of(
        &self,
        invocations: &[&crate::invocation::DistributedInvocation],
    ) -> Result<Vec<pynenc_model::InvocationOutcome>> {
        let ids: Vec<InvocationId> = invocations.iter().map(|d| d.record.invocation_id).collect();
        let known: Option<Vec<pynenc_model::InvocationOutcome>> =
            invocations.iter().map(|d| d.known.clone()).collect();
        match known {
            Some(mut outcomes) => {
                self.inner
                    .data
                    .resolve_outcomes(self.data_store(), &ids, &mut outcomes)
                    .await?;
                Ok(outcomes)
            }
            None => self.final_outcomes(&ids).await,
        }
    }

    /// The outcomes of `ids` as they are now (no wait), in that order, with
    /// results kept in the data store read back.
    ///
    /// # Errors
    ///
    /// An unknown id, a stored result that is missing, or a backend failure.
    pub async fn outcomes(
        &self,
        ids: &[InvocationId],
    ) -> Result<Vec<pynenc_model::InvocationOutcome>> {
        let mut outcomes = self.state_backend().get_outcomes(ids).await?;
        self.inner
            .data
            .resolve_outcomes(self.data_store(), ids, &mut outcomes)
            .await?;
        Ok(outcomes)
    }

    /// [`Pynenc::wait_for`], with the outcomes when the runner read them.
    async fn wait_until_final(
        &self,
        ids: &[InvocationId],
    ) -> Result<Option<Vec<pynenc_model::InvocationOutcome>>> {
        let ctx = context::current();
        let blocking_control = self.inner.conf.orchestrator.blocking_control;
        match ctx
            .as_deref()
            .filter(|_| blocking_control)
            .and_then(|c| c.runner.as_ref().map(|host| (c, host)))
        {
            Some((ctx, host)) => host.waiting_for_results(ctx, ids).await,
            // outside any runner nobody's slot is at stake (and without
            // blocking control the waiting invocation keeps its own): just wait
            None => {
                self.coordination().wait_final(ids).await?;
                Ok(None)
            }
        }
    }
}
