//! `all_of`: when a source meets one condition of the trigger, the newest
//! source that met each other condition within the window is looked up
//! through the query API (invocations of the condition's task that ended
//! in the window in the condition's final status, newest first, checked
//! against its filters). The firing is keyed by the set of sources, so the
//! runners of two sources that complete the set at once — each looking
//! again once its own end is recorded — make one call.

use std::time::Duration;

use pynenc_model::{
    InvocationId, InvocationQuery, InvocationRecord, Order, TaskId, TimeRange, Timestamp,
};
use tracing::{debug, warn};

use super::condition::Happened;
use super::react::event_of;
use super::{ResolvedTrigger, When};
use crate::app::Pynenc;
use crate::exceptions::Result;

/// How many ended invocations of a condition's task are checked against its
/// filters, newest first, per look-back.
const CANDIDATES: usize = 50;

/// The key of `t`'s firing when every condition of `conditions` is met:
/// those of `met` by `record`'s invocation, each other by the newest
/// source within `within`; `None` when one is not.
pub(super) async fn all_met(
    app: &Pynenc,
    t: &ResolvedTrigger,
    conditions: &[When],
    met: &[usize],
    record: &InvocationRecord,
    within: Duration,
) -> Option<(Timestamp, String)> {
    let mut sources = vec![record.invocation_id];
    for (j, when) in conditions.iter().enumerate() {
        if met.contains(&j) {
            continue;
        }
        match newest_met(app, when, within, &record.invocation_id).await {
            Ok(Some(id)) => sources.push(id),
            Ok(None) => {
                debug!(trigger = %t.name, condition = %when.describe(), "all_of: a condition is not met within the window");
                return None;
            }
            Err(e) => {
                warn!(trigger = %t.name, condition = %when.describe(), error = %e, "all_of: could not look back on a condition");
                return None;
            }
        }
    }
    sources.sort();
    sources.dedup();
    // the time of the newest source in the set: the same in every process
    let at = sources
        .iter()
        .map(InvocationId::time_micros)
        .max()
        .map_or(record.created_at, Timestamp::from_micros);
    let ids: Vec<String> = sources.iter().map(ToString::to_string).collect();
    Some((at, format!("{}@all:{}", t.name, ids.join(","))))
}

/// The newest invocation other than `except` that met `when` and ended
/// within `within` before now.
async fn newest_met(
    app: &Pynenc,
    when: &When,
    within: Duration,
    except: &InvocationId,
) -> Result<Option<InvocationId>> {
    let Some(task) = when.source_task() else {
        return Ok(None);
    };
    let mut query = InvocationQuery {
        task_ids: vec![TaskId::from(task)],
        statuses: when.condition.outcome_statuses(),
        ended: TimeRange {
            from: Some(Timestamp::now() - within),
            to: None,
        },
        order: Order::NewestFirst,
        limit: CANDIDATES,
        ..InvocationQuery::new()
    };
    if let Some(name) = when.condition.event_name() {
        let text = app.serializer().serialize(name, "an event name")?;
        query.key_arguments = vec![("name".to_string(), text)];
    }
    let candidates: Vec<InvocationId> = app
        .queries()
        .list_invocations(&query)
        .await?
        .into_iter()
        .map(|s| s.invocation_id)
        .filter(|id| id != except)
        .collect();
    if candidates.is_empty() {
        return Ok(None);
    }
    let outcomes = app.outcomes(&candidates).await?;
    let needs_record = !when.argument_filters.is_empty() || when.condition.event_name().is_some();
    for (id, outcome) in candidates.iter().zip(&outcomes) {
        let (arguments, event) = if needs_record {
            let record = app.state_backend().get_invocation(id).await?;
            // values kept in the data store are filtered on, not their references
            let stored = app
                .data()
                .resolve_arguments(app.data_store(), &record.call.arguments, id)
                .await?;
            let arguments = stored
                .as_ref()
                .unwrap_or(&record.call.arguments)
                .to_json(app.serializer());
            let event = event_of(task, &arguments);
            (arguments, event)
        } else {
            (serde_json::Map::new(), None)
        };
        let happened = Happened {
            status: outcome.status,
            result: outcome.result.as_deref(),
            error: outcome.error.as_ref(),
        };
        if when.is_met(&happened, app.serializer(), event.as_ref(), &arguments) {
            return Ok(Some(*id));
        }
    }
    Ok(None)
}
