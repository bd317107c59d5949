//! Running one task body: context, panics, sync bodies on blocking threads,
//! async bodies dropped when their invocation is cancelled.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use super::cancel::CancelSignal;
use crate::context::{self, InvocationContext};
use crate::task::{TaskBody, TaskInput, TaskOutput};
use pynenc_model::{TaskError, PANIC_KIND};

/// The task error for a panic with `payload`.
fn panic_error(payload: &(dyn std::any::Any + Send)) -> TaskError {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    };
    TaskError::new(PANIC_KIND, format!("task panicked: {message}"))
}

/// Runs a task body with `ctx` as its context. A panic becomes a task error
/// of kind `Panic`; it never escapes.
pub(crate) async fn run_body(
    body: TaskBody,
    input: TaskInput,
    ctx: Arc<InvocationContext>,
) -> TaskOutput {
    match body {
        TaskBody::Async(f) => {
            let fut = context::scope(
                ctx,
                AssertUnwindSafe(async move { f(input).await }).catch_unwind(),
            );
            match fut.await {
                Ok(out) => out,
                Err(payload) => Err(panic_error(payload.as_ref())),
            }
        }
        TaskBody::Sync(f) => {
            let joined = tokio::task::spawn_blocking(move || {
                context::sync_scope(ctx, || {
                    std::panic::catch_unwind(AssertUnwindSafe(|| f(input)))
                })
            })
            .await;
            match joined {
                Ok(Ok(out)) => out,
                Ok(Err(payload)) => Err(panic_error(payload.as_ref())),
                Err(e) => Err(TaskError::new(
                    PANIC_KIND,
                    format!("task thread failed: {e}"),
                )),
            }
        }
    }
}

/// [`run_body`] for a run that can be cancelled through `cancel`: an async
/// body is dropped at its next await once its invocation is cancelled, and
/// `None` is returned. A sync body cannot be interrupted: it runs to its end
/// (it can check [`crate::context::is_cancelled`]), and the caller checks
/// the signal afterwards.
pub(crate) async fn run_body_cancellable(
    body: TaskBody,
    input: TaskInput,
    ctx: Arc<InvocationContext>,
    cancel: Option<&CancelSignal>,
) -> Option<TaskOutput> {
    match (cancel, &body) {
        (Some(signal), TaskBody::Async(_)) => {
            let id = *ctx.invocation_id();
            signal
                .dropped_on_cancel(&id, run_body(body, input, ctx))
                .await
        }
        _ => Some(run_body(body, input, ctx).await),
    }
}
