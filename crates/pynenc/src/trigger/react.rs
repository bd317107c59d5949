//! Reactions: the calls of the triggers an invocation meets, routed by the
//! runner that runs it — when it starts (`running`) and before its end is
//! recorded (`success`, `failed`, `retry`) — each keyed by the trigger, the
//! invocation, the status and the attempt. A runner that dies before the
//! end is recorded leaves the invocation to be run again; the run that
//! follows routes the same keys, which make nothing new: one call per
//! trigger and source, however many times it runs.

use std::time::Duration;

use pynenc_model::{
    Arguments, ConcurrencySpec, InvocationId, InvocationRecord, InvocationStatus, RouteOutcome,
    RouteRequest, RunnerId,
};
use serde_json::{Map, Value};
use tracing::{debug, error, info, warn};

use super::condition::Combine;
use super::condition::{Happened, TriggerEvent, TriggerSource};
use super::{ResolvedArguments, ResolvedTrigger};
use crate::app::Pynenc;
use crate::exceptions::{PynencError, Result};

/// Routing a reaction is tried this many times before the firing is
/// reported lost (the backend kept failing).
const ROUTE_ATTEMPTS: u32 = 3;

/// Whether any trigger reacts to invocations of `task_id`.
pub(crate) fn reacts_to(triggers: &[ResolvedTrigger], task_id: &str) -> bool {
    triggers.iter().any(|t| t.watches(task_id))
}

/// Whether `status` happens once per attempt (`running`, `retry`) rather
/// than once per invocation.
fn needs_attempt(status: InvocationStatus) -> bool {
    matches!(status, InvocationStatus::Running | InvocationStatus::Retry)
}

/// When a reaction is looked for in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before the source's status is recorded: every trigger.
    BeforeEnd,
    /// Once the source's end is recorded: `all_of` triggers again, whose
    /// other conditions may have been met meanwhile by sources that ended
    /// while this one ran its reactions (each of two sources ending at
    /// once sees the other then).
    AfterEnd,
}

/// The event an invocation of the event task is (from its arguments).
pub(super) fn event_of(task_id: &str, arguments: &Map<String, Value>) -> Option<TriggerEvent> {
    (task_id == super::EVENT_TASK_ID).then(|| TriggerEvent {
        name: arguments
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        payload: arguments.get("payload").cloned().unwrap_or(Value::Null),
    })
}

/// Routes the calls of the triggers `record` meets now that `happened`,
/// in `phase`. A firing that cannot be made is logged with the trigger's
/// name; the run goes on either way.
pub(crate) async fn react(
    app: &Pynenc,
    record: &InvocationRecord,
    happened: Happened<'_>,
    phase: Phase,
) {
    let triggers = app.resolved_triggers();
    let task_id = record.call.task_id.as_str();
    if !reacts_to(triggers, task_id) {
        return;
    }
    if phase == Phase::AfterEnd
        && !triggers
            .iter()
            .any(|t| t.watches(task_id) && matches!(t.reaction(), Some((_, Combine::All(_)))))
    {
        return;
    }
    // `running` and `retry` happen once per attempt: the retries so far
    // tell the attempts apart (a run again after a lost runner is the same
    // attempt)
    let attempt = if needs_attempt(happened.status) {
        match app
            .orchestrator()
            .get_num_retries(&record.invocation_id)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                warn!(invocation_id = %record.invocation_id, error = %e, "could not read the retries for the triggers' keys; taken as 0");
                0
            }
        }
    } else {
        0
    };
    let arguments = record.call.arguments.to_json(app.serializer());
    let event = event_of(task_id, &arguments);
    let mut requests = Vec::new();
    let mut names = Vec::new();
    for t in triggers.iter().filter(|t| t.watches(task_id)) {
        let Some((conditions, combine)) = t.reaction() else {
            continue;
        };
        let met: Vec<usize> = conditions
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                w.source_task() == Some(task_id)
                    && w.is_met(&happened, app.serializer(), event.as_ref(), &arguments)
            })
            .map(|(i, _)| i)
            .collect();
        if met.is_empty() {
            continue;
        }
        let key = match combine {
            Combine::One | Combine::Any if phase == Phase::BeforeEnd => {
                let attempt = if needs_attempt(happened.status) {
                    attempt
                } else {
                    0
                };
                Some((
                    record.created_at,
                    format!(
                        "{}@{}:{}#{attempt}",
                        t.name,
                        record.invocation_id,
                        happened.status.as_str()
                    ),
                ))
            }
            Combine::One | Combine::Any => None,
            Combine::All(within) => {
                super::look_back::all_met(app, t, conditions, &met, record, *within).await
            }
        };
        let Some((at, key)) = key else {
            continue;
        };
        let source = || TriggerSource {
            invocation_id: record.invocation_id,
            task_id: task_id.to_string(),
            status: happened.status,
            arguments: arguments.clone(),
            result: happened.result.and_then(|text| {
                app.serializer()
                    .deserialize::<Value>(text, "the source's result")
                    .ok()
            }),
            error: happened.error.cloned(),
            event: event.clone(),
        };
        match reaction_request(app, t, at, &key, source) {
            Ok(req) => {
                requests.push(req);
                names.push(t.name.as_str());
            }
            Err(e) => {
                error!(trigger = %t.name, source_invocation_id = %record.invocation_id, error = %e, "trigger met, but its call could not be made")
            }
        }
    }
    if requests.is_empty() {
        return;
    }
    route_with_retries(app, requests, &names, &record.invocation_id).await;
}

/// The call of trigger `t`, keyed by `key` and made at `at`.
fn reaction_request(
    app: &Pynenc,
    t: &ResolvedTrigger,
    at: pynenc_model::Timestamp,
    key: &str,
    source: impl FnOnce() -> TriggerSource,
) -> Result<RouteRequest> {
    let arguments = match &t.arguments {
        ResolvedArguments::Static(a) => a.clone(),
        ResolvedArguments::FromSource(make) => {
            let map = make(&source()).map_err(|message| PynencError::TaskRouting {
                task_id: t.task.task_id.to_string(),
                message: format!(
                    "trigger '{}' could not make its arguments: {message}",
                    t.name
                ),
            })?;
            let args = Arguments::from_json(app.serializer(), &map)?;
            crate::app::check_arguments(app.registry().get(t.task.task_id)?, &args)?;
            args
        }
    };
    let call = pynenc_model::Call::new(t.task.task_id, arguments);
    let options = app
        .registry()
        .options(t.task.task_id)
        .cloned()
        .unwrap_or_default();
    Ok(RouteRequest {
        concurrency: ConcurrencySpec::for_call(&call, &options),
        cycle_control: false,
        print_arguments: app.conf().print_arguments,
        invocation_id: Some(InvocationId::keyed(at, key)),
        ..RouteRequest::new(call, RunnerId::from(format!("trigger:{}", t.name)))
    })
}

/// Routes the reactions, trying again on a backend failure.
async fn route_with_retries(
    app: &Pynenc,
    requests: Vec<RouteRequest>,
    names: &[&str],
    source: &InvocationId,
) {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=ROUTE_ATTEMPTS {
        match app.route_requests(requests.clone()).await {
            Ok(outcomes) => {
                for (name, outcome) in names.iter().zip(outcomes) {
                    match outcome {
                        RouteOutcome::New(r) => {
                            info!(trigger = %name, source_invocation_id = %source, invocation_id = %r.invocation_id, task_id = %r.call.task_id, "trigger fired")
                        }
                        RouteOutcome::Reused { record, .. } => {
                            debug!(trigger = %name, source_invocation_id = %source, invocation_id = %record.invocation_id, "reaction routed before (a run again), or its call was reused")
                        }
                    }
                }
                return;
            }
            Err(e) if attempt < ROUTE_ATTEMPTS => {
                warn!(source_invocation_id = %source, error = %e, attempt, "could not route the triggers' calls; trying again");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            Err(e) => {
                error!(source_invocation_id = %source, triggers = ?names, error = %e, "could not route the triggers' calls: these firings are lost");
            }
        }
    }
}
