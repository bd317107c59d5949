//! Firing the ticks that fell due: one route of every due firing, each
//! keyed by its trigger and tick.

use std::time::Duration;

use pynenc_model::{
    ConcurrencySpec, InvocationId, RouteOutcome, RouteRequest, RunnerId, Timestamp,
};
use tracing::{debug, info};

use super::ResolvedTrigger;
use crate::app::Pynenc;
use crate::exceptions::Result;

/// The most ticks of one trigger fired in one evaluation (a trigger that
/// ticks every second, late by the whole missed-tick window, has that many).
const MAX_TICKS: usize = 1000;

/// Routes the firings of every tick of `triggers` in `(now - window, now]`
/// that has not fired yet; returns the invocations it created (a tick that
/// fired before is routed again and creates nothing).
pub(crate) async fn fire_due(
    app: &Pynenc,
    triggers: &[ResolvedTrigger],
    window: Duration,
) -> Result<Vec<InvocationId>> {
    let now = Timestamp::now();
    let window = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
    let after = Timestamp::from_micros(now.as_micros().saturating_sub(window));
    let mut requests = Vec::new();
    let mut fired = Vec::new();
    for t in triggers {
        let options = app
            .registry()
            .options(t.task.task_id)
            .cloned()
            .unwrap_or_default();
        for tick in t.ticks(after, now, MAX_TICKS) {
            let call = t.call();
            requests.push(RouteRequest {
                concurrency: ConcurrencySpec::for_call(&call, &options),
                cycle_control: false,
                print_arguments: app.conf().print_arguments,
                invocation_id: Some(t.firing_id(tick)),
                ..RouteRequest::new(call, RunnerId::from(format!("trigger:{}", t.name)))
            });
            fired.push((t.name.as_str(), tick));
        }
    }
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let outcomes = app.route_requests(requests).await?;
    let mut created = Vec::new();
    for ((trigger, tick), outcome) in fired.into_iter().zip(outcomes) {
        match outcome {
            RouteOutcome::New(record) => {
                info!(trigger, tick = %tick, invocation_id = %record.invocation_id, task_id = %record.call.task_id, "trigger fired");
                created.push(record.invocation_id);
            }
            RouteOutcome::Reused { record, .. } => {
                debug!(trigger, tick = %tick, invocation_id = %record.invocation_id, "tick fired before");
            }
        }
    }
    Ok(created)
}
