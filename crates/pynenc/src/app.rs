//! The Pynenc app: configuration, components and the task registry.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::debug;

use crate::backends::memory::MemoryBackend;
use crate::broker::Broker;
use crate::call::Call;
use crate::conf::{ConfigLoader, PynencConfig};
use crate::context::{self, InvocationContext};
use crate::exceptions::{ConfigError, ConfigSource, PynencError, Result};
use crate::invocation::{SynchronousInvocation, UntypedInvocation};
use crate::orchestrator::{ConcurrencySpec, Orchestrator, RouteOutcome, RouteRequest};
use crate::runner::{run_body, SlotState};
use crate::serializer::Serializer;
use crate::state_backend::StateBackend;
use crate::store::{AtomicStore, TxnBackend};
use crate::task::{registered_tasks, TaskDefinition, TaskInput, TaskOptions, TaskRegistry};
use crate::util;

/// The three components an app works with.
#[derive(Clone)]
pub struct Components {
    /// The queue of invocation ids.
    pub broker: Arc<dyn Broker>,
    /// Statuses, routing, pick-up and the control features.
    pub orchestrator: Arc<dyn Orchestrator>,
    /// Records, history, results and errors.
    pub state_backend: Arc<dyn StateBackend>,
}

impl Components {
    /// The components of an [`AtomicStore`] (one object serving as all three).
    pub fn from_store<S: AtomicStore>(store: Arc<S>, serializer: Serializer) -> Self {
        Components::from_backend(Arc::new(TxnBackend::new(store, serializer)))
    }

    /// The components of one backend that is broker, orchestrator and
    /// state backend at once.
    pub fn from_backend<B: Broker + Orchestrator + StateBackend + 'static>(
        backend: Arc<B>,
    ) -> Self {
        Components {
            broker: backend.clone(),
            orchestrator: backend.clone(),
            state_backend: backend,
        }
    }
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Components")
    }
}

type ComponentsFactory = Box<dyn FnOnce(&PynencConfig) -> Result<Components> + Send>;

/// Builds a [`Pynenc`] app. Every setting can also come from configuration
/// files and `PYNENC__…` environment variables; values set here win.
pub struct PynencBuilder {
    loader: ConfigLoader,
    memory: Option<MemoryBackend>,
    components: Option<ComponentsFactory>,
}

impl std::fmt::Debug for PynencBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PynencBuilder")
    }
}

impl PynencBuilder {
    /// Sets the app id (isolates apps sharing a backend).
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.loader = self.loader.value("app_id", app_id.into());
        self
    }

    /// Sets any configuration value: `field`, `section.field` or `task.<task id>.<option>`.
    pub fn config_value(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.loader = self.loader.value(key, value);
        self
    }

    /// Reads a configuration file (TOML, YAML or JSON) above the project file.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.loader = self.loader.file(path);
        self
    }

    /// Uses these environment variables instead of the process environment.
    pub fn env_vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.loader = self.loader.env_vars(vars);
        self
    }

    /// Where the project file `pynenc.toml` is looked for (default: the current directory).
    pub fn project_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.loader = self.loader.project_dir(dir);
        self
    }

    /// The serializer (JSON by default).
    pub fn serializer(self, serializer: Serializer) -> Self {
        self.config_value("serializer", serializer.name())
    }

    /// Runs every call synchronously in the caller (development only).
    pub fn dev_mode_force_sync_tasks(self, on: bool) -> Self {
        self.config_value("dev_mode_force_sync_tasks", on)
    }

    /// The number of parallel slots of runners built from this app.
    pub fn max_parallel_slots(self, slots: usize) -> Self {
        self.config_value("runner.max_parallel_slots", slots as u64)
    }

    /// Uses a shared in-memory backend (apps with the same id on it share data).
    pub fn memory_backend(mut self, backend: MemoryBackend) -> Self {
        self.memory = Some(backend);
        self.config_value("backend", "memory")
    }

    /// Uses the SQLite backend with the database file at `path`.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(self, path: impl Into<PathBuf>) -> Self {
        let path: PathBuf = path.into();
        self.config_value("backend", "sqlite")
            .config_value("sqlite.sqlite_path", path.to_string_lossy().to_string())
    }

    /// Uses custom components, built from the resolved configuration.
    pub fn components(
        mut self,
        factory: impl FnOnce(&PynencConfig) -> Result<Components> + Send + 'static,
    ) -> Self {
        self.components = Some(Box::new(factory));
        self
    }

    /// Resolves the configuration, opens the backend, registers every task
    /// compiled into the binary (with per-task configuration applied) and
    /// returns the app. The first app built becomes the process default.
    pub fn build(self) -> Result<Pynenc> {
        let mut conf = self.loader.load()?;
        let process_kind = conf.runner.kind != "thread";
        let backend_defaulted = matches!(
            conf.source_of("backend"),
            None | Some(ConfigSource::Default)
        );
        if process_kind && backend_defaulted && self.memory.is_none() && self.components.is_none() {
            // process runners need a backend other processes reach: SQLite by default
            conf.backend = "sqlite".into();
        }
        let components = match self.components {
            Some(factory) => factory(&conf)?,
            None => open_backend(&conf, self.memory)?,
        };
        let mut registry = TaskRegistry::default();
        for def in registered_tasks() {
            let options =
                conf.task_options(def.task_id, def.params, TaskOptions::from(&def.options))?;
            registry.insert(def, options);
        }
        for task_id in conf.task_ids_configured() {
            if !registry.contains(&task_id) {
                tracing::warn!(%task_id, "configuration has options for a task that is not registered in this binary");
            }
        }
        let external_runner_id: Arc<str> =
            Arc::from(format!("ExternalRunner@{}", util::process_context()));
        let app = Pynenc {
            inner: Arc::new(AppInner {
                serializer: conf.serializer,
                conf,
                components,
                registry,
                external_runner_id,
            }),
        };
        context::set_default_app(&app, true);
        debug!(app_id = %app.app_id(), backend = %app.conf().backend, "app built");
        Ok(app)
    }
}

fn open_backend(conf: &PynencConfig, memory: Option<MemoryBackend>) -> Result<Components> {
    match conf.backend.as_str() {
        "memory" => {
            let hub = memory.unwrap_or_default();
            Ok(Components::from_store(hub.store(&conf.app_id), conf.serializer))
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Components::from_store(
            crate::backends::sqlite::SqliteStore::open(conf)?,
            conf.serializer,
        )),
        #[cfg(feature = "redis")]
        "redis" => Ok(Components::from_backend(
            crate::backends::redis::RedisBackend::open(conf)?,
        )),
        other => Err(PynencError::Config(ConfigError {
            source: conf
                .source_of("backend")
                .cloned()
                .unwrap_or(ConfigSource::Default),
            key: "backend".into(),
            reason: format!(
                "backend '{other}' is not available in this build (enable the cargo feature '{other}' of pynenc)"
            ),
        })),
    }
}

/// The parent invocation (inside a task) and the actor of calls made
/// from one context: worked out once for a whole group of calls.
struct Caller {
    parent_invocation_id: Option<String>,
    parent_call_id: Option<String>,
    actor: Arc<str>,
}

struct AppInner {
    conf: PynencConfig,
    serializer: Serializer,
    components: Components,
    registry: TaskRegistry,
    external_runner_id: Arc<str>,
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
        PynencBuilder {
            loader: ConfigLoader::new(),
            memory: None,
            components: None,
        }
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

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.components.broker
    }

    /// The orchestrator.
    pub fn orchestrator(&self) -> &Arc<dyn Orchestrator> {
        &self.inner.components.orchestrator
    }

    /// The state backend.
    pub fn state_backend(&self) -> &Arc<dyn StateBackend> {
        &self.inner.components.state_backend
    }

    /// The tasks of this app with their effective options.
    pub fn registry(&self) -> &TaskRegistry {
        &self.inner.registry
    }

    /// The owner id used for calls and waits made outside any runner.
    pub fn external_runner_id(&self) -> &str {
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

    /// Removes every invocation, queued id and result of this app.
    pub async fn purge(&self) -> Result<()> {
        self.orchestrator().purge().await?;
        self.broker().purge().await?;
        self.state_backend().purge().await
    }

    fn options_of(&self, def: &'static TaskDefinition) -> TaskOptions {
        self.inner
            .registry
            .options(def.task_id)
            .cloned()
            .unwrap_or_else(|| TaskOptions::from(&def.options))
    }

    /// Who makes calls from the current context.
    fn caller(&self) -> Caller {
        match context::current() {
            Some(ctx) => Caller {
                parent_invocation_id: Some(ctx.invocation_id().to_string()),
                parent_call_id: Some(ctx.call_id()),
                actor: ctx.actor_id(),
            },
            None => Caller {
                parent_invocation_id: None,
                parent_call_id: None,
                actor: self.inner.external_runner_id.clone(),
            },
        }
    }

    fn route_request(
        &self,
        options: &TaskOptions,
        caller: &Caller,
        call: Call,
        scheduled_at_us: Option<i64>,
    ) -> Result<RouteRequest> {
        let max = self.inner.conf.max_argument_bytes;
        for (name, value) in call.arguments.serialized() {
            if value.len() > max {
                return Err(PynencError::TaskRouting {
                    task_id: call.task_id.clone(),
                    message: format!(
                        "argument '{name}' is {} bytes serialized, over max_argument_bytes = {max}",
                        value.len()
                    ),
                });
            }
        }
        Ok(RouteRequest {
            concurrency: ConcurrencySpec::for_call(&call, options),
            call,
            parent_invocation_id: caller.parent_invocation_id.clone(),
            parent_call_id: caller.parent_call_id.clone(),
            scheduled_at_us,
            cycle_control: self.inner.conf.orchestrator.cycle_control,
            actor: caller.actor.clone(),
        })
    }

    fn outcome_to_invocation(&self, outcome: RouteOutcome) -> UntypedInvocation {
        match outcome {
            RouteOutcome::New(record) => UntypedInvocation::distributed(self.clone(), record, None),
            RouteOutcome::Reused { record, diff } => {
                UntypedInvocation::distributed(self.clone(), record, Some(diff))
            }
        }
    }

    /// Routes one call of `def` (or runs it in the caller in dev mode).
    pub async fn call_task(
        &self,
        def: &'static TaskDefinition,
        call: Call,
    ) -> Result<UntypedInvocation> {
        let options = self.options_of(def);
        if self.inner.conf.dev_mode_force_sync_tasks {
            return self.run_synchronously(def, &options, call).await;
        }
        let inv = self.route_one(&options, call, None).await?;
        debug!(
            task_id = %def.task_id,
            invocation_id = %inv.invocation_id(),
            arguments = %inv.call().arguments.render(self.inner.conf.print_arguments, self.serializer()),
            "routed"
        );
        Ok(inv)
    }

    /// Routes many calls of `def` in batches of its `parallel_batch_size`.
    pub async fn call_task_many(
        &self,
        def: &'static TaskDefinition,
        calls: Vec<Call>,
    ) -> Result<Vec<UntypedInvocation>> {
        let options = self.options_of(def);
        let mut out = Vec::with_capacity(calls.len());
        if self.inner.conf.dev_mode_force_sync_tasks {
            for call in calls {
                out.push(self.run_synchronously(def, &options, call).await?);
            }
            return Ok(out);
        }
        let caller = self.caller();
        let batch = options.parallel_batch_size.max(1);
        let mut calls = calls.into_iter().peekable();
        while calls.peek().is_some() {
            let reqs = calls
                .by_ref()
                .take(batch)
                .map(|c| self.route_request(&options, &caller, c, None))
                .collect::<Result<Vec<_>>>()?;
            for outcome in self.orchestrator().route_calls(reqs).await? {
                out.push(self.outcome_to_invocation(outcome));
            }
        }
        debug!(task_id = %def.task_id, count = out.len(), "routed group");
        Ok(out)
    }

    /// Routes a call that stays `SCHEDULED` until `at`.
    pub async fn schedule_task(
        &self,
        def: &'static TaskDefinition,
        call: Call,
        at: SystemTime,
    ) -> Result<UntypedInvocation> {
        let options = self.options_of(def);
        let at_us = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_micros() as i64;
        self.route_one(&options, call, Some(at_us)).await
    }

    /// Routes one call made from the current context.
    async fn route_one(
        &self,
        options: &TaskOptions,
        call: Call,
        scheduled_at_us: Option<i64>,
    ) -> Result<UntypedInvocation> {
        let req = self.route_request(options, &self.caller(), call, scheduled_at_us)?;
        let outcome = self
            .orchestrator()
            .route_calls(vec![req])
            .await?
            .pop()
            .ok_or_else(|| PynencError::backend("route_calls returned no outcome"))?;
        Ok(self.outcome_to_invocation(outcome))
    }

    /// Waits until every invocation in `ids` is final. Inside a runner the
    /// current invocation is paused meanwhile (blocking control).
    pub async fn wait_for(&self, ids: &[String]) -> Result<()> {
        let ctx = context::current();
        match ctx
            .as_deref()
            .and_then(|c| c.runner.as_ref().map(|host| (c, host)))
        {
            Some((ctx, host)) => host.waiting_for_results(ctx, ids).await,
            // outside any runner nobody's slot is at stake: just wait
            None => self.orchestrator().wait_final(ids).await,
        }
    }

    async fn run_synchronously(
        &self,
        def: &'static TaskDefinition,
        options: &TaskOptions,
        call: Call,
    ) -> Result<UntypedInvocation> {
        let invocation_id = util::new_invocation_id();
        let record = Arc::new(crate::invocation::InvocationRecord {
            invocation_id: invocation_id.clone(),
            call: call.clone(),
            parent_invocation_id: context::current().map(|c| c.invocation_id().to_string()),
            created_at_us: util::now_us(),
            scheduled_at_us: None,
            concurrency: ConcurrencySpec::default(),
        });
        let ctx = Arc::new(InvocationContext {
            app: self.clone(),
            record: record.clone(),
            task_id: def.task_id,
            runner: None,
            slot: tokio::sync::Mutex::new(SlotState::default()),
        });
        let mut num_retries = 0;
        let outcome = loop {
            let input = TaskInput {
                task_id: def.task_id,
                record: record.clone(),
                serializer: self.serializer(),
            };
            match run_body(def.body, input, ctx.clone()).await {
                Err(e) if options.should_retry(&e, num_retries) => {
                    num_retries += 1;
                }
                other => break other,
            }
        };
        Ok(UntypedInvocation::Synchronous(SynchronousInvocation {
            invocation_id,
            call,
            outcome,
            num_retries,
            serializer: self.serializer(),
        }))
    }
}
