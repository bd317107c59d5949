//! Triggers: calls the app makes by itself — on a cron schedule, or in
//! reaction to what happens to invocations (a status, a result, an error)
//! and to events — exactly once per tick or source however many runners
//! are up.
//!
//! A trigger is declared when the app is built
//! ([`crate::PynencBuilder::trigger`], [`Trigger`]) and checked then: an
//! invalid cron expression or time zone, arguments that do not fit the
//! task, a status no runner reacts to, a filter on an argument the source
//! task does not have, is a [`crate::PynencError::InvalidTrigger`] naming
//! the trigger and its task.
//!
//! Every firing is keyed: its invocation id is made from the trigger's
//! name and what fired it ([`pynenc_model::InvocationId::keyed`]), and
//! routing an id that exists creates nothing.
//!
//! - **Cron** (`fire.rs`): every runner that does upkeep takes part; one at
//!   a time holds the lease `triggers` and, every
//!   `triggers.evaluate_interval_seconds`, routes the calls of the ticks
//!   that fell due, keyed by trigger and tick. A tick fires once even when
//!   the lease moves in the middle of it or two runners evaluate the same
//!   tick. A tick is fired up to `triggers.missed_tick_window_seconds` late
//!   (after the evaluating runner died, or while no runner was up); older
//!   ticks are skipped.
//! - **Reactions** (`react.rs`): the runner that runs an invocation routes
//!   the calls of the triggers it meets — when it starts and before its
//!   end is recorded — keyed by trigger, invocation, status and attempt. A
//!   runner lost in between leaves the invocation to run again, and that
//!   run's calls have the same keys: one call per trigger and source.
//! - **Events** (`event.rs`): [`crate::Pynenc::emit_event`] routes an
//!   invocation of the built-in task [`EVENT_TASK_ID`]; its run is the
//!   source of the `on_event` reactions.

mod condition;
mod cron;
mod declare;
mod event;
mod fire;
mod look_back;
mod react;
mod when;

use std::fmt;

use pynenc_model::{Arguments, Call, InvocationId, TaskId, Timestamp, TriggerRecord};
use serde_json::Value;

use crate::serializer::Serializer;
use crate::task::TaskDefinition;
pub(crate) use condition::Happened;
use condition::{describe, Combine, Condition, Resolved};
pub use condition::{TriggerEvent, TriggerSource, REACTABLE_STATUSES};
use cron::CronSchedule;
use declare::FromSource;
pub use declare::{trigger_arguments, Trigger, MAX_CATCH_UP};
pub(crate) use event::EVENT_TASK;
pub use event::EVENT_TASK_ID;
pub(crate) use fire::{fire_due, TriggerState};
pub(crate) use react::{react, reacts_to, Phase};
pub use when::When;

/// Stores the app's triggers, so that every process of the app lists them
/// (a command line or a monitor without the tasks compiled in): when the
/// app is built inside a runtime, and when a runner starts.
pub(crate) async fn store_triggers(app: &crate::app::Pynenc) {
    let now = Timestamp::now();
    let records: Vec<_> = app
        .resolved_triggers()
        .iter()
        .map(|t| t.record(app.serializer(), now))
        .collect();
    if records.is_empty() {
        return;
    }
    if let Err(e) = app.coordination().register_triggers(&records).await {
        tracing::warn!(error = %e, triggers = records.len(), "could not store the app's triggers; they fire all the same");
    }
}

/// How many recent ticks [`crate::Pynenc::triggers`] shows per trigger.
pub const RECENT_TICKS: usize = 5;

/// The arguments of a checked trigger's calls.
#[derive(Clone)]
pub(crate) enum ResolvedArguments {
    /// The same for every firing.
    Static(Arguments),
    /// Made from the source of each firing.
    FromSource(FromSource),
}

/// A checked trigger of a built app.
#[derive(Clone)]
pub(crate) struct ResolvedTrigger {
    pub(crate) name: String,
    kind: Resolved,
    pub(crate) task: &'static TaskDefinition,
    pub(crate) arguments: ResolvedArguments,
    /// Missed ticks fired when a runner takes the evaluation over.
    pub(crate) catch_up: usize,
}

impl fmt::Debug for ResolvedTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedTrigger")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("task", &self.task.task_id)
            .finish()
    }
}

impl ResolvedTrigger {
    /// The invocation id of this trigger's firing at `tick`.
    pub(crate) fn firing_id(&self, tick: Timestamp) -> InvocationId {
        firing_id(&self.name, tick)
    }

    /// The call a cron firing makes.
    pub(crate) fn call(&self) -> Option<Call> {
        match &self.arguments {
            ResolvedArguments::Static(a) => Some(Call::new(self.task.task_id, a.clone())),
            ResolvedArguments::FromSource(_) => None,
        }
    }

    /// The cron schedule, for a cron trigger.
    fn schedule(&self) -> Option<&CronSchedule> {
        match &self.kind {
            Resolved::Cron { schedule, .. } => Some(schedule),
            Resolved::Reaction { .. } => None,
        }
    }

    /// Whether it is a cron trigger (fired by the runners' upkeep).
    pub(crate) fn is_cron(&self) -> bool {
        matches!(self.kind, Resolved::Cron { .. })
    }

    /// The conditions of a reaction and how they combine (`None`: cron).
    pub(crate) fn reaction(&self) -> Option<(&[When], &Combine)> {
        match &self.kind {
            Resolved::Cron { .. } => None,
            Resolved::Reaction {
                conditions,
                combine,
            } => Some((conditions, combine)),
        }
    }

    /// Whether it reacts to invocations of `task_id`.
    pub(crate) fn watches(&self, task_id: &str) -> bool {
        self.reaction().is_some_and(|(conditions, _)| {
            conditions.iter().any(|w| w.source_task() == Some(task_id))
        })
    }
}

/// What an app's trigger is, for operators ([`crate::Pynenc::triggers`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TriggerInfo {
    /// The trigger's name (its firings are keyed by it).
    pub name: String,
    /// What makes it fire, e.g. `cron(0 */5 * * * *)`,
    /// `on_exception(shop::charge: Timeout)`, `on_event(user.signed_up)`.
    pub condition: String,
    /// Its cron expression (empty for a trigger that reacts to invocations
    /// or events).
    pub cron: String,
    /// The task it calls.
    pub task_id: String,
    /// The arguments of its calls as JSON text, when they are static.
    pub arguments: Option<String>,
    /// Whether the program that lists it declares it.
    pub declared_here: bool,
    /// When a runner last declared it (stored for every process of the
    /// app); `None` when no runner has yet.
    pub declared_at: Option<Timestamp>,
    /// Its next tick after now (a cron trigger).
    pub next_tick: Option<Timestamp>,
    /// Its latest ticks, newest first, with what each fired (a cron
    /// trigger; the reactions of other triggers are invocations of their
    /// task, listed with the actor `trigger:<name>` in their history).
    pub recent: Vec<TriggerFiring>,
}

/// One tick of a trigger and the invocation it fired.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TriggerFiring {
    /// The tick.
    pub tick: Timestamp,
    /// The invocation of this tick (keyed by the trigger and the tick).
    pub invocation_id: InvocationId,
    /// Its status; `None` when the tick did not fire (no runner was up, or
    /// the invocation was purged since).
    pub status: Option<pynenc_model::InvocationStatus>,
}

impl TriggerInfo {
    /// What a trigger is, with its last `recent` ticks when it is a cron
    /// trigger (their statuses still to be read). `declared_here`: this
    /// program declares it; `stored_at`: when a runner last stored it.
    pub(crate) fn of(
        record: &TriggerRecord,
        declared_here: bool,
        stored_at: Option<Timestamp>,
        now: Timestamp,
        recent: usize,
    ) -> TriggerInfo {
        let schedule = record
            .cron
            .as_deref()
            .and_then(|expr| CronSchedule::parse(expr, record.timezone.as_deref()).ok());
        TriggerInfo {
            name: record.name.clone(),
            condition: record.condition.clone(),
            cron: record.cron.clone().unwrap_or_default(),
            task_id: record.task_id.to_string(),
            arguments: record.arguments.clone(),
            declared_here,
            declared_at: stored_at,
            next_tick: schedule.as_ref().and_then(|s| s.next_after(now)),
            recent: schedule
                .map(|s| s.previous(now, recent))
                .unwrap_or_default()
                .into_iter()
                .map(|tick| TriggerFiring {
                    tick,
                    invocation_id: firing_id(&record.name, tick),
                    status: None,
                })
                .collect(),
        }
    }
}

/// The invocation id of the firing of the cron trigger `name` at `tick`.
fn firing_id(name: &str, tick: Timestamp) -> InvocationId {
    InvocationId::keyed(tick, &format!("{name}@{}", tick.as_micros()))
}

impl ResolvedTrigger {
    /// What is stored of the trigger for every process of the app to list.
    pub(crate) fn record(&self, serializer: Serializer, now: Timestamp) -> TriggerRecord {
        let (cron, timezone) = match &self.kind {
            Resolved::Cron { expr, timezone, .. } => (Some(expr.clone()), timezone.clone()),
            Resolved::Reaction { .. } => (None, None),
        };
        let arguments = match &self.arguments {
            ResolvedArguments::Static(a) => Some(Value::Object(a.to_json(serializer)).to_string()),
            ResolvedArguments::FromSource(_) => None,
        };
        TriggerRecord {
            name: self.name.clone(),
            condition: self.condition(),
            cron,
            timezone,
            task_id: TaskId::from(self.task.task_id),
            arguments,
            declared_at: now,
        }
    }

    /// How the trigger's condition reads.
    fn condition(&self) -> String {
        match &self.kind {
            Resolved::Cron { expr, timezone, .. } => Condition::Cron {
                expr: expr.clone(),
                timezone: timezone.clone(),
            }
            .describe(),
            Resolved::Reaction {
                conditions,
                combine,
            } => describe(conditions, combine),
        }
    }

    /// The last `n` ticks at or before `at`, oldest first (none for a
    /// trigger that is not a cron trigger).
    pub(crate) fn ticks_before(&self, at: Timestamp, n: usize) -> Vec<Timestamp> {
        let mut ticks = self
            .schedule()
            .map(|s| s.previous(at, n))
            .unwrap_or_default();
        ticks.reverse();
        ticks
    }

    /// The ticks in `(after, until]`, at most `max` (the newest); none for
    /// a trigger that is not a cron trigger.
    pub(crate) fn ticks(&self, after: Timestamp, until: Timestamp, max: usize) -> Vec<Timestamp> {
        self.schedule()
            .map(|s| s.ticks(after, until, max))
            .unwrap_or_default()
    }
}
