//! Configuration: layered, typed, and with the source of every value.
//!
//! A [`PynencConfig`] is built from these layers, each overriding the ones
//! before it:
//!
//! 1. the defaults (see [`PynencConfig::fields`]);
//! 2. the project file: `pynenc.toml` in the project directory (the current
//!    directory unless [`ConfigLoader::project_dir`] says otherwise), if it exists;
//! 3. files given in code with [`ConfigLoader::file`] (TOML, YAML or JSON, by
//!    extension `.toml`, `.yaml`/`.yml` or `.json`);
//! 4. the file named by the environment variable `PYNENC__FILEPATH`;
//! 5. environment variables: `PYNENC__<FIELD>` for the global fields,
//!    `PYNENC__<SECTION>__<FIELD>` (e.g. `PYNENC__RUNNER__MAX_PARALLEL_SLOTS=4`)
//!    and, per task, `PYNENC__TASK__<task id>__<OPTION>` with the task id
//!    written shell-safe, `__` for `::` and in any case
//!    (`PYNENC__TASK__MY_CRATE__JOBS__ADD__MAX_RETRIES=3` for the task
//!    `my_crate::jobs::add`; see [`tasks`](self#per-task-options));
//! 6. values set in code with [`ConfigLoader::value`] (`field`,
//!    `section.field` or `task.<task id>.<option>`).
//!
//! A file looks like this (YAML and JSON take the same tree):
//!
//! ```toml
//! app_id = "my-app"
//! dev_mode_force_sync_tasks = false
//! [orchestrator]
//! blocking_control = true
//! [runner]
//! max_parallel_slots = 8
//! [task."my_crate::jobs::add"]
//! max_retries = 3
//! ```
//!
//! A field of a section may also be written at the top level
//! (`max_parallel_slots = 8`, or `PYNENC__MAX_PARALLEL_SLOTS=8`) when its name
//! is unique across sections; within one layer the value given in the section
//! wins over the top-level one. Field names in environment variables are
//! case-insensitive; their values are parsed into the field's type (booleans
//! accept `true/false/1/0/yes/no`, lists are comma separated or a JSON array).
//!
//! # Per-task options
//!
//! A task is named by its id (`my_crate::jobs::add`), with `.` accepted for
//! `::`, or in the shell-safe form of an environment variable (`__` for
//! `::`, any case): all spellings of one task meet, and override each other
//! in layer order. Settings for a task id that no task of the binary has
//! are reported when the app is built: a warning on standard error naming
//! the setting, its source and the registered tasks that look like it.
//!
//! Every value remembers where it came from ([`PynencConfig::source_of`],
//! [`PynencConfig::describe`]), and a value that cannot be accepted (unknown
//! key or section, wrong type, unreadable file) is a [`ConfigError`] naming
//! the source, the key and the reason.
//!
//! ```no_run
//! use pynenc::conf::ConfigLoader;
//!
//! let config = ConfigLoader::new()
//!     .file("config/pynenc.yaml")
//!     .value("runner.max_parallel_slots", 16)
//!     .load()?;
//! println!("{}", config.describe());
//! # Ok::<(), pynenc::exceptions::ConfigError>(())
//! ```

mod kinds;
mod layers;
mod loader;
mod table;
mod tasks;
#[cfg(test)]
mod tests;
mod value;

use serde_json::Value;

use crate::exceptions::PynencError;
pub use crate::exceptions::{ConfigError, ConfigSource};
pub use kinds::{BackendKind, RunnerKind};
use layers::{config_error, Layer};
pub use loader::ConfigLoader;
use pynenc_model::{ArgumentPrintMode, TaskOptions};
use table::{field_value, find_key, set_field, FIELDS};
pub use table::{
    ConfigField, DataStoreConfig, OrchestratorConfig, PynencConfig, RedisConfig, RetentionConfig,
    RunnerConfig, SqliteConfig, TriggersConfig,
};
pub(crate) use tasks::near_task_ids;
use tasks::{apply_task_option, normalize_task_id, shell_key, task_key};
use value::{mask_secret, quote, Raw};

/// The name of the project configuration file, looked for in the project directory.
pub const PROJECT_FILE_NAME: &str = "pynenc.toml";
/// The prefix of every pynenc environment variable.
pub const ENV_PREFIX: &str = "PYNENC__";
/// The environment variable naming a configuration file.
pub const FILEPATH_ENV_VAR: &str = "PYNENC__FILEPATH";

/// The key reported for errors about a whole file (unreadable, unparsable).
pub(crate) const FILE_KEY: &str = "(file)";
/// The name of the per-task section.
pub(crate) const TASK_SECTION: &str = "task";

static DEFAULT_SOURCE: ConfigSource = ConfigSource::Default;

/// One effective configuration value, as [`PynencConfig::described`] lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigEntry {
    /// The key (`runner.max_parallel_slots`, `task."<task id>".<option>`).
    pub key: String,
    /// The value, secrets masked.
    pub value: Value,
    /// Where the value came from.
    pub source: ConfigSource,
}

/// A per-task setting that names no task of this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmatchedTaskSetting {
    /// The task id as written.
    pub task_id: String,
    /// Where its options came from.
    pub sources: Vec<ConfigSource>,
    /// Registered task ids that look like it, best first.
    pub suggestions: Vec<String>,
}

impl PynencConfig {
    /// Loads the configuration from the process environment, `./pynenc.toml`
    /// and `PYNENC__FILEPATH`: `ConfigLoader::new().load()`.
    pub fn load() -> Result<PynencConfig, ConfigError> {
        ConfigLoader::new().load()
    }

    /// Every configuration field with its kind and documentation, in table order.
    pub fn fields() -> &'static [ConfigField] {
        FIELDS
    }

    /// Where the value of `key` came from: `runner.max_parallel_slots`,
    /// `app_id`, `max_parallel_slots` (unique field name) or
    /// `task.<task id>.<option>`. `None` for an unknown key or a task option
    /// that is not configured.
    pub fn source_of(&self, key: &str) -> Option<&ConfigSource> {
        if let Some(spec) = key.strip_prefix("task.") {
            let (task_id, option) = spec.rsplit_once('.')?;
            return self
                .task_overrides
                .get(&shell_key(&normalize_task_id(task_id)))?
                .options
                .get(option)
                .map(|(_, source)| source);
        }
        let field = find_key(key)?;
        Some(self.sources.get(&field.key()).unwrap_or(&DEFAULT_SOURCE))
    }

    /// The effective configuration, one entry per field, global fields
    /// first then by section, then the per-task overrides, each with where
    /// its value came from. Secrets (passwords) are masked (`***`, or the
    /// URL with its password masked).
    pub fn described(&self) -> Vec<ConfigEntry> {
        let mut fields: Vec<&ConfigField> = FIELDS.iter().collect();
        fields.sort_by_key(|f| (!f.section.is_empty(), f.section));
        let mut out = Vec::new();
        for field in fields {
            let mut value = field_value(self, field);
            if field.secret {
                value = mask_secret(&value);
            }
            let source = self.sources.get(&field.key()).unwrap_or(&DEFAULT_SOURCE);
            out.push(ConfigEntry {
                key: field.key(),
                value,
                source: source.clone(),
            });
        }
        for task in self.task_overrides.values() {
            for (option, (value, source)) in &task.options {
                out.push(ConfigEntry {
                    key: format!("{TASK_SECTION}.{}.{option}", quote(&task.spelling)),
                    value: value.clone(),
                    source: source.clone(),
                });
            }
        }
        out
    }

    /// The effective configuration, one line per entry of
    /// [`PynencConfig::described`]:
    /// `runner.max_parallel_slots = 8    (environment variable PYNENC__RUNNER__MAX_PARALLEL_SLOTS)`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for e in self.described() {
            out.push_str(&format!("{} = {}    ({})\n", e.key, e.value, e.source));
        }
        out
    }

    /// Every effective value as `(key, value)`, task overrides as
    /// `task.<task id>.<option>`: feeding them to [`ConfigLoader::value`]
    /// rebuilds the same configuration (used to configure child processes).
    pub fn effective_values(&self) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = FIELDS
            .iter()
            .map(|f| (f.key(), field_value(self, f)))
            .collect();
        for task in self.task_overrides.values() {
            for (option, (value, _)) in &task.options {
                out.push((task_key(&task.spelling, option), value.clone()));
            }
        }
        out
    }

    /// The options of task `task_id`: the per-task overrides of the
    /// configuration applied on top of `base` (its `#[task]` options), then
    /// checked against its parameters with [`TaskOptions::validate`].
    ///
    /// A bad value is a [`PynencError::InvalidTaskOptions`] naming the task,
    /// the option and where the value came from.
    pub fn task_options(
        &self,
        task_id: &str,
        params: &[&str],
        base: TaskOptions,
    ) -> Result<TaskOptions, PynencError> {
        let mut options = base;
        let overrides = self
            .task_overrides
            .get(&shell_key(task_id))
            .map(|t| &t.options);
        if let Some(overrides) = overrides {
            for (option, (value, source)) in overrides {
                apply_task_option(&mut options, option, Raw::Json(value)).map_err(|reason| {
                    PynencError::InvalidTaskOptions {
                        task_id: task_id.to_string(),
                        option: option.clone(),
                        message: format!("from {source}: {reason}"),
                    }
                })?;
            }
        }
        options.validate(params).map_err(|problem| {
            let message = match overrides.and_then(|o| o.get(problem.option)) {
                Some((_, source)) => format!("{} (value from {source})", problem.message),
                None => problem.message,
            };
            PynencError::InvalidTaskOptions {
                task_id: task_id.to_string(),
                option: problem.option.to_string(),
                message,
            }
        })?;
        Ok(options)
    }

    /// The task ids that have options in the configuration, as written.
    pub fn task_ids_configured(&self) -> Vec<String> {
        self.task_overrides
            .values()
            .map(|t| t.spelling.clone())
            .collect()
    }

    /// The per-task settings that name none of `registered` (the tasks of
    /// this binary): each with where it came from and the registered ids
    /// that look like it, for a warning.
    pub fn unmatched_task_settings<'a>(
        &self,
        registered: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Vec<UnmatchedTaskSetting> {
        let keys: std::collections::HashSet<String> =
            registered.clone().into_iter().map(shell_key).collect();
        self.task_overrides
            .iter()
            .filter(|(key, _)| !keys.contains(*key))
            .map(|(_, task)| {
                let mut sources: Vec<ConfigSource> =
                    task.options.values().map(|(_, s)| s.clone()).collect();
                sources.dedup();
                UnmatchedTaskSetting {
                    task_id: task.spelling.clone(),
                    sources,
                    suggestions: near_task_ids(&task.spelling, registered.clone()),
                }
            })
            .collect()
    }

    /// The `[retention]` settings as the store's auto purge takes them.
    pub fn retention_policy(&self) -> pynenc_store::Retention {
        let hours = |h: f64| std::time::Duration::from_secs_f64(h.max(0.0) * 3600.0);
        pynenc_store::Retention {
            success: hours(self.retention.success_hours),
            failed: hours(self.retention.failed_hours),
            cancelled: hours(self.retention.cancelled_hours),
            max_final: (self.retention.max_final_invocations > 0)
                .then_some(self.retention.max_final_invocations),
        }
    }

    /// `runner.max_parallel_slots`, with 0 (auto) resolved to 8 per CPU core.
    pub fn effective_max_parallel_slots(&self) -> usize {
        match self.runner.max_parallel_slots {
            0 => 8 * available_cpus(),
            n => n,
        }
    }

    /// `runner.max_processes`, with 0 resolved to the number of CPUs (and
    /// never below `runner.min_processes`).
    pub fn effective_max_processes(&self) -> usize {
        match self.runner.max_processes {
            0 => available_cpus().max(self.runner.min_processes),
            n => n,
        }
    }

    /// Applies one layer: top-level values first, so that section values of
    /// the same layer win.
    pub(crate) fn apply(&mut self, mut layer: Layer) -> Result<(), ConfigError> {
        layer.settings.sort_by_key(|s| !s.top_level);
        for setting in &layer.settings {
            let key = setting.field.key();
            set_field(self, setting.field, setting.value.as_raw())
                .map_err(|reason| config_error(&setting.source, key.as_str(), reason))?;
            self.sources.insert(key, setting.source.clone());
        }
        for task in layer.tasks {
            let key = task_key(&task.task_id, &task.option);
            let mut scratch = TaskOptions::default();
            let value = apply_task_option(&mut scratch, &task.option, task.value.as_raw())
                .map_err(|reason| config_error(&task.source, key, reason))?;
            let entry = self
                .task_overrides
                .entry(shell_key(&task.task_id))
                .or_default();
            entry.spelling = task.task_id;
            entry.options.insert(task.option, (value, task.source));
        }
        Ok(())
    }

    /// Fills in the values derived from others.
    fn resolve_derived(&mut self) {
        if let ArgumentPrintMode::Truncated(_) = self.print_arguments {
            self.print_arguments = ArgumentPrintMode::Truncated(self.truncate_arguments_length);
        }
    }

    /// Derived values and the checks that involve several fields.
    pub(crate) fn finish(&mut self) -> Result<(), ConfigError> {
        self.resolve_derived();
        if self.sqlite.poll_min_ms > self.sqlite.poll_max_ms {
            return Err(self.pair_error(
                "sqlite.poll_min_ms",
                "sqlite.poll_max_ms",
                format!(
                    "poll_min_ms ({}) must not exceed poll_max_ms ({})",
                    self.sqlite.poll_min_ms, self.sqlite.poll_max_ms
                ),
            ));
        }
        if self.runner.max_processes != 0 && self.runner.min_processes > self.runner.max_processes {
            return Err(self.pair_error(
                "runner.min_processes",
                "runner.max_processes",
                format!(
                    "min_processes ({}) must not exceed max_processes ({}; 0 means the number of CPUs)",
                    self.runner.min_processes, self.runner.max_processes
                ),
            ));
        }
        let t = &self.triggers;
        // the lease of a dead evaluator lasts 3 intervals: the next one must
        // still find its ticks in the window
        if t.missed_tick_window_seconds < 3.0 * t.evaluate_interval_seconds + 1.0 {
            return Err(self.pair_error(
                "triggers.missed_tick_window_seconds",
                "triggers.evaluate_interval_seconds",
                format!(
                    "missed_tick_window_seconds ({}) must be at least 3 × evaluate_interval_seconds + 1 ({}): \
                     the ticks of an evaluator that died are fired by the next one within that window",
                    t.missed_tick_window_seconds,
                    3.0 * t.evaluate_interval_seconds + 1.0
                ),
            ));
        }
        Ok(())
    }

    /// An error about two fields that do not fit together, reported on the
    /// one that was set (the first if both were).
    fn pair_error(&self, first: &str, second: &str, reason: String) -> ConfigError {
        let key = match (self.sources.get(first), self.sources.get(second)) {
            (None, Some(_)) => second,
            _ => first,
        };
        self.error_at(key, reason)
    }

    /// An error about the value of `key`, at the source that set it (the
    /// default when none did).
    pub(crate) fn error_at(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        let source = self.source_of(key).unwrap_or(&DEFAULT_SOURCE);
        ConfigError::new(source.clone(), key, reason)
    }
}

fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
