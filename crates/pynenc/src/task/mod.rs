//! Tasks: the functions pynenc distributes.
//!
//! `#[pynenc::task]` turns a function into a [`TaskDefinition`] registered in
//! the process-wide registry (found by task id, never by anything a payload
//! names), and generates a module of the same name with a typed API:
//! `call`, `direct`, `parallelize`, `args` and `task()` (a [`Task`] handle).

pub(crate) mod definition;
mod registry;
mod shared;

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

pub use definition::{registered_tasks, IntoArguments, TaskDefinition};
pub(crate) use definition::{TaskBody, TaskInput, TaskOutput};
pub use pynenc_model::{ConcurrencyControl, OptionValue, TaskOptions, TaskOptionsSpec};
pub use registry::{RegisteredTask, TaskRegistry};
pub use shared::{ArgValue, Shared};

use crate::app::Pynenc;
use crate::context;
use crate::exceptions::Result;
use crate::invocation::{Invocation, InvocationGroup};
use pynenc_model::Arguments;

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
        app.call_task(self.definition, arguments)
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
        app.schedule_task(self.definition, arguments, at)
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

    /// Calls the task once per item, routing in batches of
    /// `parallel_batch_size`, up to four batches in flight at once (one at
    /// a time when the items carry values for the data store, which the
    /// first batch sends); the group's invocations are in the items' order.
    ///
    /// # Errors
    ///
    /// An item's arguments do not fit the task (nothing is routed), or
    /// routing failed: the batches routed before the failure, and those in
    /// flight with it, stay routed.
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
        let arguments = items.into_iter().map(|a| a.into_arguments(ser));
        let invocations = app.call_task_iter(self.definition, arguments).await?;
        Ok(InvocationGroup::new(
            self.task_id(),
            invocations
                .into_iter()
                .map(Invocation::from_untyped)
                .collect(),
        ))
    }
}
