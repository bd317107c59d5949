//! Firing the ticks that fell due, each keyed by its trigger and tick,
//! one trigger at a time.

use std::collections::HashMap;
use std::time::Duration;

use pynenc_model::{
    ConcurrencySpec, InvocationId, RouteOutcome, RouteRequest, RunnerId, Timestamp,
};
use tracing::{debug, info, warn};

use super::ResolvedTrigger;
use crate::app::Pynenc;

/// The most ticks of one trigger fired in one evaluation (a trigger that
/// ticks every second, late by a long missed-tick window, has that many).
const MAX_TICKS: usize = 1000;

/// What the runner evaluating the triggers remembers while it holds their
/// lease: per trigger, the last tick it routed. Ticks up to it are done (a
/// tick whose call was reused by registration concurrency too), so an
/// evaluation routes only the new ticks; a runner that takes the lease
/// starts from the whole missed-tick window.
#[derive(Debug, Default)]
pub(crate) struct TriggerState {
    routed_up_to: HashMap<String, Timestamp>,
}

impl TriggerState {
    /// Forgets every trigger's progress (the lease went to another runner).
    pub(crate) fn forget(&mut self) {
        self.routed_up_to.clear();
    }
}

/// Routes the firings of every tick of `triggers` in `(now - window, now]`
/// not routed yet by this evaluator; returns the invocations it created (a
/// tick that fired before is routed again and creates nothing). A trigger
/// whose routing fails is logged with its name and tried again at the next
/// evaluation; the others fire.
pub(crate) async fn fire_due(
    app: &Pynenc,
    triggers: &[ResolvedTrigger],
    window: Duration,
    state: &mut TriggerState,
) -> Vec<InvocationId> {
    let now = Timestamp::now();
    let window = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
    let window_start = Timestamp::from_micros(now.as_micros().saturating_sub(window));
    let mut created = Vec::new();
    for t in triggers {
        let resumed = state
            .routed_up_to
            .get(&t.name)
            .copied()
            .filter(|done| *done > window_start);
        // a runner that takes the evaluation over catches up on the ticks
        // before the window the trigger asks for (each keyed: those that
        // fired are not made again)
        let mut ticks = match resumed {
            None if t.catch_up > 0 => t.ticks_before(window_start, t.catch_up),
            _ => Vec::new(),
        };
        ticks.extend(t.ticks(resumed.unwrap_or(window_start), now, MAX_TICKS));
        let Some(&last) = ticks.last() else {
            continue;
        };
        let options = app
            .registry()
            .options(t.task.task_id)
            .cloned()
            .unwrap_or_default();
        let requests: Vec<RouteRequest> = ticks
            .iter()
            .filter_map(|&tick| {
                let call = t.call()?;
                Some(RouteRequest {
                    concurrency: ConcurrencySpec::for_call(&call, &options),
                    cycle_control: false,
                    print_arguments: app.conf().print_arguments,
                    invocation_id: Some(t.firing_id(tick)),
                    ..RouteRequest::new(call, RunnerId::from(format!("trigger:{}", t.name)))
                })
            })
            .collect();
        match app.route_requests(requests).await {
            Ok(outcomes) => {
                state.routed_up_to.insert(t.name.clone(), last);
                for (tick, outcome) in ticks.iter().zip(outcomes) {
                    match outcome {
                        RouteOutcome::New(record) => {
                            info!(trigger = %t.name, tick = %tick, invocation_id = %record.invocation_id, task_id = %record.call.task_id, "trigger fired");
                            created.push(record.invocation_id);
                        }
                        RouteOutcome::Reused { record, .. } => {
                            debug!(trigger = %t.name, tick = %tick, invocation_id = %record.invocation_id, "tick fired before, or its call was reused");
                        }
                    }
                }
            }
            Err(e) => {
                warn!(trigger = %t.name, ticks = ticks.len(), error = %e, "could not fire the trigger's due ticks; tried again at the next evaluation");
            }
        }
    }
    created
}
