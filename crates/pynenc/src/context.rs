//! The invocation context: which invocation the current code runs for.
//!
//! Inside a task body, sub-calls pick up their parent (for cycle control and
//! the call graph) and their app from this context, as pynenc's thread-local
//! context does. Async bodies carry it in a tokio task-local, sync bodies in
//! a thread-local of their blocking thread.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use pynenc_model::{CallId, InvocationId, InvocationRecord, RunnerId};

use crate::app::Pynenc;
use crate::exceptions::{PynencError, Result};
use crate::runner::{InvocationHost, SlotState};

/// What is known about the invocation being run.
pub struct InvocationContext {
    /// The app running it.
    pub app: Pynenc,
    /// Its record (call, parent, creation time).
    pub record: Arc<InvocationRecord>,
    /// Its task.
    pub task_id: &'static str,
    /// The runner executing it (`None` in dev mode's synchronous calls).
    pub(crate) runner: Option<Arc<dyn InvocationHost>>,
    /// The slot and pause state held by the invocation in its runner.
    pub(crate) slot: tokio::sync::Mutex<SlotState>,
    /// The invocation that called this one in the same process (dev mode's
    /// synchronous calls, whose cycles are found by walking this chain).
    pub(crate) caller: Option<Arc<InvocationContext>>,
    /// For a workflow (task option `workflow`): this run's steps.
    pub(crate) workflow: Option<WorkflowRun>,
}

/// One run of a workflow: how many steps it made so far (numbered from 1),
/// and whether it is still replaying steps an earlier run recorded.
#[derive(Debug)]
pub(crate) struct WorkflowRun {
    steps: std::sync::atomic::AtomicU32,
    replaying: std::sync::atomic::AtomicBool,
}

impl WorkflowRun {
    /// A run that has made no step yet (it may replay an earlier run's).
    pub(crate) fn new() -> Self {
        WorkflowRun {
            steps: std::sync::atomic::AtomicU32::new(0),
            replaying: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Whether the steps so far were all recorded by an earlier run (the
    /// next one may be too: it is looked up before it is routed).
    pub(crate) fn replaying(&self) -> bool {
        self.replaying.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A step was not recorded: this run makes the rest.
    pub(crate) fn stop_replaying(&self) {
        self.replaying
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for InvocationContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationContext")
            .field("invocation_id", &self.invocation_id())
            .field("task_id", &self.task_id)
            .finish()
    }
}

impl InvocationContext {
    /// The id of the invocation of the next step of this workflow, and its
    /// number; `None` when the invocation is not a workflow. The id is the
    /// same every time the workflow runs (keyed by the workflow and the
    /// step's number), so routing a recorded step again gives back the
    /// invocation it made.
    pub(crate) fn next_workflow_step(&self) -> Option<(InvocationId, u32)> {
        let n = self.next_workflow_number()?;
        let key = format!("{}#step{n}", self.invocation_id());
        Some((InvocationId::keyed(self.record.created_at, &key), n))
    }

    /// The number of this workflow's next step (calls and recorded values
    /// share the numbering: a workflow makes them in the same order every
    /// time it runs); `None` when the invocation is not a workflow.
    pub(crate) fn next_workflow_number(&self) -> Option<u32> {
        let run = self.workflow.as_ref()?;
        Some(run.steps.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }

    /// The id of the running invocation.
    pub fn invocation_id(&self) -> &InvocationId {
        &self.record.invocation_id
    }

    /// The call id of the running invocation.
    pub fn call_id(&self) -> CallId {
        self.record.call.call_id()
    }

    /// Whether this invocation was cancelled while it runs (see
    /// [`crate::store::Orchestrator::cancel`]). A sync task body cannot be
    /// interrupted: it should check this at convenient points and return
    /// early; whatever it returns then, the run ends `CANCELLED`. An async
    /// body is dropped at its next await instead, so it rarely needs this.
    ///
    /// Always `false` outside a runner (dev mode's synchronous calls) and in
    /// the child processes of the process runners, which are stopped with
    /// `SIGTERM` / `SIGKILL` instead.
    pub fn is_cancelled(&self) -> bool {
        self.runner
            .as_ref()
            .and_then(|host| host.cancel_signal())
            .is_some_and(|signal| signal.is_cancelled(self.invocation_id()))
    }

    /// The id that acts for this code in histories: the runner's id, or the app's external id.
    pub fn actor_id(&self) -> RunnerId {
        match &self.runner {
            Some(r) => r.runner_id().clone(),
            None => self.app.external_runner_id().clone(),
        }
    }
}

tokio::task_local! {
    static CURRENT: Arc<InvocationContext>;
}

thread_local! {
    static SYNC_CURRENT: RefCell<Option<Arc<InvocationContext>>> = const { RefCell::new(None) };
}

static DEFAULT_APP: OnceLock<RwLock<Option<Pynenc>>> = OnceLock::new();

fn default_slot() -> &'static RwLock<Option<Pynenc>> {
    DEFAULT_APP.get_or_init(|| RwLock::new(None))
}

/// The context of the invocation running on this task or thread, if any.
pub fn current() -> Option<Arc<InvocationContext>> {
    CURRENT
        .try_with(|c| c.clone())
        .ok()
        .or_else(|| SYNC_CURRENT.with(|c| c.borrow().clone()))
}

/// Whether the invocation running on this task or thread was cancelled
/// (`false` outside any invocation); see [`InvocationContext::is_cancelled`].
///
/// ```ignore
/// #[pynenc::task]
/// fn crunch(n: u64) -> u64 {
///     let mut acc = 0;
///     for i in 0..n {
///         if i % 1_000 == 0 && pynenc::context::is_cancelled() {
///             break; // the run ends CANCELLED whatever is returned
///         }
///         acc += i;
///     }
///     acc
/// }
/// ```
pub fn is_cancelled() -> bool {
    CURRENT
        .try_with(|ctx| ctx.is_cancelled())
        .ok()
        .or_else(|| SYNC_CURRENT.with(|c| c.borrow().as_ref().map(|ctx| ctx.is_cancelled())))
        .unwrap_or(false)
}

/// The app to call tasks on: the running invocation's app, else the default app.
pub fn current_app() -> Result<Pynenc> {
    if let Some(ctx) = current() {
        return Ok(ctx.app.clone());
    }
    default_slot().read().clone().ok_or_else(|| PynencError::TaskRouting {
        task_id: "(none)".into(),
        message: "no app to call the task on: build one with Pynenc::builder()...build() (the first app built becomes the default) or call `task::call_on(&app, ...)`".into(),
    })
}

/// Makes `app` the default app of this process.
pub(crate) fn set_default_app(app: &Pynenc, only_if_unset: bool) {
    let mut slot = default_slot().write();
    if !only_if_unset || slot.is_none() {
        *slot = Some(app.clone());
    }
}

/// Runs `fut` with `ctx` as the current invocation.
pub(crate) async fn scope<F: std::future::Future>(
    ctx: Arc<InvocationContext>,
    fut: F,
) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// Runs `f` on this thread with `ctx` as the current invocation.
pub(crate) fn sync_scope<R>(ctx: Arc<InvocationContext>, f: impl FnOnce() -> R) -> R {
    let prev = SYNC_CURRENT.with(|c| c.replace(Some(ctx)));
    struct Restore(Option<Arc<InvocationContext>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            SYNC_CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
    let _restore = Restore(prev);
    f()
}

/// Runs a future to completion from synchronous task code (a sync task body
/// runs on a blocking thread, where this is allowed). Use it to call or wait
/// for other tasks from a plain `fn` task:
/// `pynenc::block_on(add::call(1, 2))`.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let ctx = current();
    let fut = async move {
        match ctx {
            Some(c) => scope(c, fut).await,
            None => fut.await,
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(fut),
        Err(_) => futures::executor::block_on(fut),
    }
}
