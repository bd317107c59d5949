//! [`PynencBuilder`]: configuration, backend and tasks, put together once.

use std::path::PathBuf;
use std::sync::Arc;

use pynenc_store::Components;
use tracing::{debug, warn};

use super::backend::Backend;
use super::{AppInner, Pynenc};
use crate::conf::{BackendKind, ConfigLoader, ConfigSource, PynencConfig};
use crate::context;
use crate::data::DataClient;
use crate::exceptions::{did_you_mean, Result};
use crate::runner::external_runner_id;
use crate::serializer::Serializer;
use crate::task::{registered_tasks, TaskOptions, TaskRegistry};
use crate::trigger::{ResolvedTrigger, Trigger};

/// Builds a [`Pynenc`] app. Every setting can also come from configuration
/// files and `PYNENC__…` environment variables; values set here win.
pub struct PynencBuilder {
    loader: ConfigLoader,
    backend: Option<Backend>,
    triggers: Vec<Trigger>,
}

impl std::fmt::Debug for PynencBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PynencBuilder")
            .field("backend", &self.backend)
            .field("triggers", &self.triggers)
            .finish()
    }
}

impl PynencBuilder {
    pub(crate) fn new() -> Self {
        PynencBuilder {
            loader: ConfigLoader::new(),
            backend: None,
            triggers: Vec::new(),
        }
    }

    /// Adds a trigger: calls the app makes by itself (see [`Trigger`]),
    /// checked when the app is built and fired by the runners.
    pub fn trigger(mut self, trigger: Trigger) -> Self {
        self.triggers.push(trigger);
        self
    }

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

    /// The backend, by value: a [`pynenc_memory::MemoryBackend`] shared with
    /// other apps, `SqliteOptions`, `RedisOptions`, or [`Backend::Custom`].
    /// It takes the place of the configured `backend`.
    ///
    /// ```
    /// use pynenc::{MemoryBackend, Pynenc};
    ///
    /// // two apps of one process on one in-memory backend, isolated by app id
    /// let shared = MemoryBackend::new();
    /// let shop = Pynenc::builder().app_id("shop").backend(shared.clone()).build()?;
    /// let mail = Pynenc::builder().app_id("mail").backend(shared).build()?;
    /// assert_eq!(shop.app_id(), "shop");
    /// assert_eq!(mail.app_id(), "mail");
    /// # Ok::<(), pynenc::PynencError>(())
    /// ```
    ///
    /// With the `sqlite` feature, `.backend(SqliteOptions::new("jobs.db"))`;
    /// with `redis`, `.backend(RedisOptions::from_url("redis://host:6379/0"))`.
    pub fn backend(mut self, backend: impl Into<Backend>) -> Self {
        self.backend = Some(backend.into());
        self
    }

    /// Uses a shared in-memory backend (apps with the same id on it share data).
    pub fn memory_backend(self, hub: pynenc_memory::MemoryBackend) -> Self {
        self.backend(hub)
    }

    /// Uses the SQLite backend with the database file at `path`; its other
    /// settings (`[sqlite]`) come from the configuration. It takes the
    /// place of a backend set before.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(mut self, path: impl Into<PathBuf>) -> Self {
        self.backend = None;
        let path = path.into().to_string_lossy().into_owned();
        self.config_value("backend", "sqlite")
            .config_value("sqlite.sqlite_path", path)
    }

    /// Uses custom components, built from the resolved configuration.
    pub fn components(
        self,
        factory: impl Fn(&PynencConfig) -> Result<Components> + Send + Sync + 'static,
    ) -> Self {
        self.backend(Backend::Custom(Arc::new(factory)))
    }

    /// The effective configuration this builder would build the app with
    /// (files, environment and values set here), without opening the
    /// backend: what a tool checks before it connects.
    ///
    /// # Errors
    ///
    /// A configuration value that cannot be accepted, naming its source and key.
    pub fn config(&self) -> Result<PynencConfig> {
        let mut loader = self.loader.clone();
        if let Some(backend) = &self.backend {
            for (key, value) in backend.config_values() {
                loader = loader.value(key, value);
            }
        }
        let mut conf = loader.load()?;
        // process runners need a backend other processes reach: SQLite by default
        if self.backend.is_none()
            && conf.runner.kind.uses_processes()
            && matches!(
                conf.source_of("backend"),
                None | Some(ConfigSource::Default)
            )
        {
            conf.backend = BackendKind::Sqlite;
        }
        Ok(conf)
    }

    /// Resolves the configuration, opens the backend, registers every task
    /// compiled into the binary (with per-task configuration applied) and
    /// returns the app. The first app built becomes the process default.
    ///
    /// # Errors
    ///
    /// A configuration value that cannot be accepted (naming its source and
    /// key), invalid task options, or a backend that cannot be opened.
    pub fn build(self) -> Result<Pynenc> {
        let conf = self.config()?;
        let backend = match self.backend {
            Some(backend) => backend,
            None => Backend::from_config(&conf)?,
        };
        let components = backend.open(&conf)?;
        let registry = register_tasks(&conf)?;
        let triggers = resolve_triggers(&self.triggers, &conf, &registry)?;
        let conf_data = conf.data_store.clone();
        let app = Pynenc {
            inner: Arc::new(AppInner {
                serializer: conf.serializer,
                conf,
                components,
                registry,
                external_runner_id: external_runner_id(),
                data: DataClient::new(&conf_data),
                triggers,
            }),
        };
        context::set_default_app(&app, true);
        // the triggers are stored for every process of the app to list
        // (best effort, in the background; a runner stores them again when
        // it starts)
        if !app.resolved_triggers().is_empty() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let stored = app.clone();
                runtime.spawn(async move { crate::trigger::store_triggers(&stored).await });
            }
        }
        debug!(app_id = %app.app_id(), backend = ?backend.kind(), "app built");
        Ok(app)
    }
}

/// Every task compiled into the binary with its configured options; a
/// per-task setting naming no task is reported.
fn register_tasks(conf: &PynencConfig) -> Result<TaskRegistry> {
    let mut registry = TaskRegistry::default();
    // the built-in tasks (events, workflows' sleeps), then every task compiled in
    let built_in = [
        &crate::trigger::EVENT_TASK,
        &crate::workflow::SLEEP_TASK,
        &crate::workflow::SIGNAL_TASK,
    ];
    for def in built_in.into_iter().chain(registered_tasks()) {
        let options =
            conf.task_options(def.task_id, def.params, TaskOptions::from(&def.options))?;
        registry.insert(def, options);
    }
    for unmatched in conf.unmatched_task_settings(registry.task_ids()) {
        let sources: Vec<String> = unmatched.sources.iter().map(ToString::to_string).collect();
        let hint = did_you_mean(&unmatched.suggestions)
            .map(|question| format!("; {question}"))
            .unwrap_or_default();
        let message = format!(
            "pynenc: configuration has options for task '{}' (from {}), which is not registered in this binary; they are ignored{hint}",
            unmatched.task_id,
            sources.join(", ")
        );
        // logged, and printed when no subscriber records warnings: it must be seen
        if !tracing::enabled!(tracing::Level::WARN) {
            eprintln!("{message}");
        }
        warn!(task_id = %unmatched.task_id, "{message}");
    }
    Ok(registry)
}

/// Checks every trigger against the app's serializer and tasks; two
/// triggers with one name are refused (their firings would share keys).
fn resolve_triggers(
    triggers: &[Trigger],
    conf: &PynencConfig,
    registry: &TaskRegistry,
) -> Result<Vec<ResolvedTrigger>> {
    let mut out: Vec<ResolvedTrigger> = Vec::with_capacity(triggers.len());
    for t in triggers {
        let resolved = t.resolve(conf.serializer, |def, arguments| {
            super::routing::check_arguments(registry.get(def.task_id)?, arguments)
        })?;
        if out.iter().any(|o| o.name == resolved.name) {
            return Err(crate::PynencError::InvalidTrigger {
                trigger: resolved.name.clone(),
                task_id: resolved.task.task_id.to_string(),
                message: "another trigger has this name: name one of them (Trigger::named)".into(),
            });
        }
        out.push(resolved);
    }
    Ok(out)
}
