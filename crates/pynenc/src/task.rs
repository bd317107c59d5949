//! Tasks: the functions pynenc distributes.
//!
//! `#[pynenc::task]` turns a function into a [`TaskDefinition`] registered in
//! the process-wide registry (found by task id, never by anything a payload
//! names), and generates a module of the same name with a typed API:
//! `call`, `direct`, `parallelize`, `args` and `task()` (a [`Task`] handle).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::app::Pynenc;
use crate::arguments::Arguments;
use crate::call::Call;
use crate::context;
use crate::exceptions::{PynencError, Result, TaskError};
use crate::invocation::{Invocation, InvocationGroup};
use crate::serializer::Serializer;

/// How concurrency control groups invocations of a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyControl {
    /// No control (default).
    #[default]
    Disabled,
    /// One invocation per task.
    Task,
    /// One invocation per task and arguments.
    Arguments,
    /// One invocation per task and values of `key_arguments`.
    Keys,
}

impl ConcurrencyControl {
    /// Parses `disabled`, `task`, `arguments` or `keys` (any case).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "disabled" | "none" | "off" => Some(ConcurrencyControl::Disabled),
            "task" => Some(ConcurrencyControl::Task),
            "arguments" | "args" => Some(ConcurrencyControl::Arguments),
            "keys" | "key" => Some(ConcurrencyControl::Keys),
            _ => None,
        }
    }

    /// The name as written in configuration.
    pub fn name(self) -> &'static str {
        match self {
            ConcurrencyControl::Disabled => "disabled",
            ConcurrencyControl::Task => "task",
            ConcurrencyControl::Arguments => "arguments",
            ConcurrencyControl::Keys => "keys",
        }
    }
}

/// Task options as written in `#[task(...)]` (const, before configuration).
#[derive(Debug, Clone, Copy)]
pub struct TaskOptionsSpec {
    /// How many times a retriable error is retried.
    pub max_retries: u32,
    /// Error kinds that are retried (the retry error always is).
    pub retry_for: &'static [&'static str],
    /// Concurrency control when picking invocations to run.
    pub running_concurrency: ConcurrencyControl,
    /// Concurrency control when routing new calls.
    pub registration_concurrency: ConcurrencyControl,
    /// The arguments that identify an invocation for `Keys` concurrency.
    pub key_arguments: &'static [&'static str],
    /// Raise instead of reusing when a registered invocation has other non-key arguments.
    pub on_diff_non_key_args_raise: bool,
    /// Re-route instead of ending `CONCURRENCY_CONTROLLED_FINAL`.
    pub reroute_on_concurrency_control: bool,
    /// How many calls `parallelize` routes per batch.
    pub parallel_batch_size: usize,
}

impl TaskOptionsSpec {
    /// Pynenc's defaults.
    pub const DEFAULT: TaskOptionsSpec = TaskOptionsSpec {
        max_retries: 0,
        retry_for: &[],
        running_concurrency: ConcurrencyControl::Disabled,
        registration_concurrency: ConcurrencyControl::Disabled,
        key_arguments: &[],
        on_diff_non_key_args_raise: false,
        reroute_on_concurrency_control: true,
        parallel_batch_size: 100,
    };
}

impl Default for TaskOptionsSpec {
    fn default() -> Self {
        TaskOptionsSpec::DEFAULT
    }
}

/// The effective options of a task: its `#[task]` options with configuration applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOptions {
    /// How many times a retriable error is retried (default 0).
    pub max_retries: u32,
    /// Error kinds that are retried; the retry error always is.
    pub retry_for: Vec<String>,
    /// Concurrency control when picking invocations to run.
    pub running_concurrency: ConcurrencyControl,
    /// Concurrency control when routing new calls.
    pub registration_concurrency: ConcurrencyControl,
    /// The arguments that identify an invocation for `Keys` concurrency.
    pub key_arguments: Vec<String>,
    /// Raise instead of reusing when a registered invocation has other non-key arguments.
    pub on_diff_non_key_args_raise: bool,
    /// Re-route (default) instead of ending `CONCURRENCY_CONTROLLED_FINAL`.
    pub reroute_on_concurrency_control: bool,
    /// How many calls `parallelize` routes per batch (default 100).
    pub parallel_batch_size: usize,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions::from(&TaskOptionsSpec::DEFAULT)
    }
}

impl From<&TaskOptionsSpec> for TaskOptions {
    fn from(s: &TaskOptionsSpec) -> Self {
        TaskOptions {
            max_retries: s.max_retries,
            retry_for: s.retry_for.iter().map(|s| s.to_string()).collect(),
            running_concurrency: s.running_concurrency,
            registration_concurrency: s.registration_concurrency,
            key_arguments: s.key_arguments.iter().map(|s| s.to_string()).collect(),
            on_diff_non_key_args_raise: s.on_diff_non_key_args_raise,
            reroute_on_concurrency_control: s.reroute_on_concurrency_control,
            parallel_batch_size: s.parallel_batch_size,
        }
    }
}

/// The option names accepted by `#[task]` and by per-task configuration.
pub const TASK_OPTION_NAMES: &[&str] = &[
    "max_retries",
    "retry_for",
    "running_concurrency",
    "registration_concurrency",
    "key_arguments",
    "on_diff_non_key_args_raise",
    "reroute_on_concurrency_control",
    "parallel_batch_size",
];

impl TaskOptions {
    /// Checks the options against the task's parameters.
    pub fn validate(&self, task_id: &str, params: &[&str]) -> Result<()> {
        let invalid = |option: &str, message: String| PynencError::InvalidTaskOptions {
            task_id: task_id.to_string(),
            option: option.to_string(),
            message,
        };
        if self.parallel_batch_size == 0 {
            return Err(invalid("parallel_batch_size", "must be at least 1".into()));
        }
        for key in &self.key_arguments {
            if !params.contains(&key.as_str()) {
                return Err(invalid(
                    "key_arguments",
                    format!(
                        "'{key}' is not a parameter of the task (parameters: {})",
                        params.join(", ")
                    ),
                ));
            }
        }
        let uses_keys = self.running_concurrency == ConcurrencyControl::Keys
            || self.registration_concurrency == ConcurrencyControl::Keys;
        if uses_keys && self.key_arguments.is_empty() {
            return Err(invalid(
                "key_arguments",
                "concurrency control 'keys' needs at least one key argument".into(),
            ));
        }
        for kind in &self.retry_for {
            if kind.trim().is_empty() {
                return Err(invalid("retry_for", "an error kind is empty".into()));
            }
        }
        Ok(())
    }

    /// Whether an error of `kind` is retried by this task (within `max_retries`).
    pub fn is_retriable(&self, error: &TaskError) -> bool {
        error.is_retry() || self.retry_for.iter().any(|k| k == &error.kind)
    }

    /// Whether `error`, after `retries` retries so far, is retried.
    pub fn should_retry(&self, error: &TaskError, retries: u32) -> bool {
        self.is_retriable(error) && retries < self.max_retries
    }

    /// The arguments that identify a call for `Keys` concurrency.
    pub fn key_args(&self) -> Vec<&str> {
        self.key_arguments.iter().map(String::as_str).collect()
    }
}

/// What a task body produces: its serialized result or its error.
pub type TaskOutput = std::result::Result<String, TaskError>;
/// The future of an async task body.
pub type TaskFuture = Pin<Box<dyn Future<Output = TaskOutput> + Send + 'static>>;

/// The body of a task, as generated by `#[task]`.
#[derive(Clone, Copy)]
pub enum TaskBody {
    /// An `async fn`, run on the runtime.
    Async(fn(TaskInput) -> TaskFuture),
    /// A plain `fn`, run on a blocking thread.
    Sync(fn(TaskInput) -> TaskOutput),
}

impl fmt::Debug for TaskBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskBody::Async(_) => f.write_str("Async"),
            TaskBody::Sync(_) => f.write_str("Sync"),
        }
    }
}

/// A task as compiled into the binary. Created by `#[task]`.
#[derive(Debug)]
pub struct TaskDefinition {
    /// The task id: module path and function name, e.g. `my_crate::jobs::add`.
    pub task_id: &'static str,
    /// The parameter names in declaration order.
    pub params: &'static [&'static str],
    /// The options written in `#[task(...)]`.
    pub options: TaskOptionsSpec,
    /// The function.
    pub body: TaskBody,
}

/// Submits a task to the process-wide registry (used by `#[task]`).
#[derive(Debug)]
pub struct TaskRegistration(pub &'static TaskDefinition);

inventory::collect!(TaskRegistration);

/// Every task compiled into this binary.
pub fn registered_tasks() -> impl Iterator<Item = &'static TaskDefinition> {
    inventory::iter::<TaskRegistration>.into_iter().map(|r| r.0)
}

/// The input of a task body: its arguments and how to decode them.
#[derive(Debug, Clone)]
pub struct TaskInput {
    /// The task.
    pub task_id: &'static str,
    /// The invocation being run (its id, call and arguments).
    pub record: std::sync::Arc<crate::invocation::InvocationRecord>,
    /// The app's serializer.
    pub serializer: Serializer,
}

impl TaskInput {
    /// Decodes the argument `name`. A missing or undecodable argument is a
    /// `SerializationError` task error naming the argument and invocation.
    pub fn arg<T: DeserializeOwned>(&self, name: &str) -> std::result::Result<T, TaskError> {
        let what = format_args!(
            "argument '{name}' of task {} (invocation {})",
            self.task_id, self.record.invocation_id
        );
        let text = self
            .record
            .call
            .arguments
            .get(name)
            .ok_or_else(|| TaskError::new("SerializationError", format!("missing {what}")))?;
        self.serializer
            .deserialize(text, what)
            .map_err(|e| TaskError::new("SerializationError", e.to_string()))
    }

    /// Serializes a task's return value.
    pub fn output<R: Serialize>(&self, value: &R) -> TaskOutput {
        self.serializer
            .serialize(value, format_args!("result of task {}", self.task_id))
            .map_err(|e| TaskError::new("SerializationError", e.to_string()))
    }

    /// Serializes a fallible task's return value, turning its error into a [`TaskError`].
    pub fn output_result<R: Serialize, E: fmt::Display + 'static>(
        &self,
        value: std::result::Result<R, E>,
    ) -> TaskOutput {
        match value {
            Ok(v) => self.output(&v),
            Err(e) => Err(TaskError::from_error(e)),
        }
    }
}

/// Turns a call's arguments, in any of the accepted forms, into [`Arguments`].
///
/// `#[task]` implements it for the task's `Params` struct (named arguments),
/// the tuple of its parameters, and the bare value for one-parameter tasks;
/// [`Arguments`] implements it for every task.
pub trait IntoArguments<P> {
    /// Serializes the arguments.
    fn into_arguments(self, serializer: Serializer) -> Result<Arguments>;
}

impl<P> IntoArguments<P> for Arguments {
    fn into_arguments(self, _serializer: Serializer) -> Result<Arguments> {
        Ok(self)
    }
}

/// A typed handle on a task: `P` are its parameters, `R` its result.
pub struct Task<P, R> {
    definition: &'static TaskDefinition,
    _marker: PhantomData<fn(P) -> R>,
}

impl<P, R> Clone for Task<P, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P, R> Copy for Task<P, R> {}

impl<P, R> fmt::Debug for Task<P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Task({})", self.definition.task_id)
    }
}

impl<P, R> Task<P, R>
where
    R: DeserializeOwned + Send + 'static,
{
    /// A handle on a definition (used by `#[task]`).
    pub const fn new(definition: &'static TaskDefinition) -> Self {
        Task {
            definition,
            _marker: PhantomData,
        }
    }

    /// The task id.
    pub fn task_id(&self) -> &'static str {
        self.definition.task_id
    }

    /// The task's definition.
    pub fn definition(&self) -> &'static TaskDefinition {
        self.definition
    }

    /// Serializes arguments with the current app's serializer.
    pub fn args(&self, args: impl IntoArguments<P>) -> Result<Arguments> {
        args.into_arguments(context::current_app()?.serializer())
    }

    /// Calls the task on the current app (the app of the running invocation,
    /// or the default app outside a runner) and returns the invocation.
    pub async fn call(&self, args: impl IntoArguments<P>) -> Result<Invocation<R>> {
        let app = context::current_app()?;
        self.call_on(&app, args).await
    }

    /// Calls the task on a given app.
    pub async fn call_on(
        &self,
        app: &Pynenc,
        args: impl IntoArguments<P>,
    ) -> Result<Invocation<R>> {
        let arguments = args.into_arguments(app.serializer())?;
        app.call_task(self.definition, Call::new(self.task_id(), arguments))
            .await
            .map(Invocation::from_untyped)
    }

    /// Calls the task to run at `at` (it stays `SCHEDULED` until then), on the current app.
    pub async fn schedule(
        &self,
        at: std::time::SystemTime,
        args: impl IntoArguments<P>,
    ) -> Result<Invocation<R>> {
        let app = context::current_app()?;
        self.schedule_on(&app, at, args).await
    }

    /// [`Task::schedule`] on a given app.
    pub async fn schedule_on(
        &self,
        app: &Pynenc,
        at: std::time::SystemTime,
        args: impl IntoArguments<P>,
    ) -> Result<Invocation<R>> {
        let arguments = args.into_arguments(app.serializer())?;
        app.schedule_task(self.definition, Call::new(self.task_id(), arguments), at)
            .await
            .map(Invocation::from_untyped)
    }

    /// Calls the task to run once `delay` has passed (`SCHEDULED` until then).
    pub async fn schedule_after(
        &self,
        delay: std::time::Duration,
        args: impl IntoArguments<P>,
    ) -> Result<Invocation<R>> {
        self.schedule(std::time::SystemTime::now() + delay, args)
            .await
    }

    /// [`Task::schedule_after`] on a given app.
    pub async fn schedule_after_on(
        &self,
        app: &Pynenc,
        delay: std::time::Duration,
        args: impl IntoArguments<P>,
    ) -> Result<Invocation<R>> {
        self.schedule_on(app, std::time::SystemTime::now() + delay, args)
            .await
    }

    /// Calls the task and waits for its result.
    pub async fn direct(&self, args: impl IntoArguments<P>) -> Result<R> {
        self.call(args).await?.result().await
    }

    /// Calls the task once per item, routing in batches of `parallel_batch_size`.
    pub async fn parallelize<A, I>(&self, items: I) -> Result<InvocationGroup<R>>
    where
        A: IntoArguments<P>,
        I: IntoIterator<Item = A>,
    {
        let app = context::current_app()?;
        self.parallelize_on(&app, items).await
    }

    /// [`Task::parallelize`] on a given app.
    pub async fn parallelize_on<A, I>(&self, app: &Pynenc, items: I) -> Result<InvocationGroup<R>>
    where
        A: IntoArguments<P>,
        I: IntoIterator<Item = A>,
    {
        let ser = app.serializer();
        let calls = items
            .into_iter()
            .map(|a| Ok(Call::new(self.task_id(), a.into_arguments(ser)?)))
            .collect::<Result<Vec<Call>>>()?;
        let invocations = app.call_task_many(self.definition, calls).await?;
        Ok(InvocationGroup::new(
            self.task_id(),
            invocations
                .into_iter()
                .map(Invocation::from_untyped)
                .collect(),
        ))
    }
}

/// Per-task options after configuration, for every task of an app.
#[derive(Debug, Clone, Default)]
pub struct TaskRegistry {
    tasks: BTreeMap<String, (&'static TaskDefinition, TaskOptions)>,
}

impl TaskRegistry {
    /// Adds a task with its effective options.
    pub fn insert(&mut self, def: &'static TaskDefinition, options: TaskOptions) {
        self.tasks.insert(def.task_id.to_string(), (def, options));
    }

    /// Finds a task by id.
    pub fn get(&self, task_id: &str) -> Result<(&'static TaskDefinition, &TaskOptions)> {
        self.tasks
            .get(task_id)
            .map(|(d, o)| (*d, o))
            .ok_or_else(|| PynencError::TaskNotRegistered {
                task_id: task_id.to_string(),
                known: self.known(),
            })
    }

    /// The effective options of a task, if registered.
    pub fn options(&self, task_id: &str) -> Option<&TaskOptions> {
        self.tasks.get(task_id).map(|(_, o)| o)
    }

    /// Whether a task id is registered.
    pub fn contains(&self, task_id: &str) -> bool {
        self.tasks.contains_key(task_id)
    }

    /// The registered task ids.
    pub fn task_ids(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    fn known(&self) -> String {
        let ids: Vec<&str> = self.task_ids().take(20).collect();
        if ids.is_empty() {
            "none".into()
        } else {
            ids.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_validation_names_task_and_option() {
        let mut o = TaskOptions {
            registration_concurrency: ConcurrencyControl::Keys,
            ..TaskOptions::default()
        };
        let err = o.validate("m::t", &["x", "y"]).unwrap_err();
        assert!(
            matches!(err, PynencError::InvalidTaskOptions { ref option, .. } if option == "key_arguments")
        );
        assert!(err.to_string().contains("m::t"));
        o.key_arguments = vec!["z".into()];
        let err = o.validate("m::t", &["x", "y"]).unwrap_err();
        assert!(err.to_string().contains("'z' is not a parameter"), "{err}");
        o.key_arguments = vec!["x".into()];
        assert!(o.validate("m::t", &["x", "y"]).is_ok());
        o.parallel_batch_size = 0;
        assert!(o.validate("m::t", &["x", "y"]).is_err());
    }

    #[test]
    fn retriable_kinds() {
        let o = TaskOptions {
            retry_for: vec!["Timeout".into()],
            ..TaskOptions::default()
        };
        assert!(o.is_retriable(&TaskError::new("Timeout", "slow")));
        assert!(o.is_retriable(&TaskError::retry("again")));
        assert!(!o.is_retriable(&TaskError::new("ValueError", "bad")));
    }

    #[test]
    fn concurrency_names() {
        for c in [
            ConcurrencyControl::Disabled,
            ConcurrencyControl::Task,
            ConcurrencyControl::Arguments,
            ConcurrencyControl::Keys,
        ] {
            assert_eq!(ConcurrencyControl::from_name(c.name()), Some(c));
        }
        assert_eq!(ConcurrencyControl::from_name("bogus"), None);
    }
}
