//! Triggers: calls the app makes by itself, on a cron schedule, exactly once
//! per tick however many runners are up.
//!
//! A trigger is declared when the app is built
//! ([`crate::PynencBuilder::trigger`]) and checked then: an invalid cron
//! expression or time zone, or arguments that do not fit the task, is a
//! [`crate::PynencError::InvalidTrigger`] naming the trigger and its task.
//!
//! Every runner that does upkeep takes part; one at a time holds the lease
//! `triggers` and, every `triggers.evaluate_interval_seconds`, routes the
//! calls of the ticks that fell due. Each firing is keyed: its invocation id
//! is made from the trigger's name and the tick
//! ([`pynenc_model::InvocationId::keyed`]), and routing an id that exists
//! creates nothing. So a tick fires once even when the lease moves in the
//! middle of it or two runners evaluate the same tick. A tick is fired up to
//! `triggers.missed_tick_window_seconds` late (after the evaluating runner
//! died, or while no runner was up); older ticks are skipped.

mod cron;
mod fire;

use std::fmt;
use std::sync::Arc;

use pynenc_model::{Arguments, Call, InvocationId, Timestamp};

use crate::exceptions::{PynencError, Result};
use crate::serializer::Serializer;
use crate::task::{IntoArguments, Task, TaskDefinition};
use cron::CronSchedule;
pub(crate) use fire::{fire_due, TriggerState};

/// How many recent ticks [`crate::Pynenc::triggers`] shows per trigger.
pub const RECENT_TICKS: usize = 5;

type MakeArguments = Arc<dyn Fn(Serializer) -> Result<Arguments> + Send + Sync>;

/// A trigger as declared: a condition and the call it makes.
///
/// ```rust,ignore
/// let app = pynenc::Pynenc::builder()
///     .trigger(Trigger::cron("0 */5 * * * *", report::task(), ("sales",)).named("sales report"))
///     .trigger(Trigger::cron("0 9 * * MON-FRI", digest::task(), ()).timezone("Europe/Madrid"))
///     .build()?;
/// ```
#[derive(Clone)]
pub struct Trigger {
    name: Option<String>,
    expr: String,
    timezone: Option<String>,
    task: &'static TaskDefinition,
    arguments: MakeArguments,
}

impl fmt::Debug for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trigger")
            .field("name", &self.name())
            .field("cron", &self.expr)
            .field("timezone", &self.timezone)
            .field("task", &self.task.task_id)
            .finish()
    }
}

impl Trigger {
    /// Calls `task` with `args` at every tick of the cron expression `expr`:
    /// five fields (minute, hour, day of month, month, day of week) or six
    /// with seconds first (`*/10 * * * * *`: every ten seconds), in UTC
    /// unless [`Trigger::timezone`] says otherwise.
    pub fn cron<P, R, A>(expr: &str, task: Task<P, R>, args: A) -> Trigger
    where
        R: serde::de::DeserializeOwned + Send + 'static,
        A: IntoArguments<P> + Clone + Send + Sync + 'static,
    {
        Trigger {
            name: None,
            expr: expr.to_string(),
            timezone: None,
            task: task.definition(),
            arguments: Arc::new(move |serializer| args.clone().into_arguments(serializer)),
        }
    }

    /// The time zone of the cron expression (an IANA name, e.g.
    /// `Europe/Madrid`).
    pub fn timezone(mut self, tz: &str) -> Trigger {
        self.timezone = Some(tz.to_string());
        self
    }

    /// Names the trigger (its firings are keyed by this name: renaming a
    /// trigger makes its ticks new ones). The default name is
    /// `cron(<expression>[ <time zone>]) <task id>`.
    pub fn named(mut self, name: &str) -> Trigger {
        self.name = Some(name.to_string());
        self
    }

    /// The trigger's name.
    pub fn name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => match &self.timezone {
                Some(tz) => format!("cron({} {tz}) {}", self.expr, self.task.task_id),
                None => format!("cron({}) {}", self.expr, self.task.task_id),
            },
        }
    }

    /// Checks the trigger for an app with `serializer` whose tasks are
    /// `registered`.
    pub(crate) fn resolve(
        &self,
        serializer: Serializer,
        check_call: impl Fn(&'static TaskDefinition, &Arguments) -> Result<()>,
    ) -> Result<ResolvedTrigger> {
        let name = self.name();
        let invalid = |message: String| PynencError::InvalidTrigger {
            trigger: name.clone(),
            task_id: self.task.task_id.to_string(),
            message,
        };
        let schedule =
            CronSchedule::parse(&self.expr, self.timezone.as_deref()).map_err(&invalid)?;
        let arguments = (self.arguments)(serializer)
            .map_err(|e| invalid(format!("its arguments do not serialize: {e}")))?;
        check_call(self.task, &arguments).map_err(|e| invalid(e.to_string()))?;
        Ok(ResolvedTrigger {
            name,
            expr: self.expr.clone(),
            schedule,
            task: self.task,
            arguments,
        })
    }
}

/// A checked trigger of a built app.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedTrigger {
    pub(crate) name: String,
    pub(crate) expr: String,
    schedule: CronSchedule,
    pub(crate) task: &'static TaskDefinition,
    pub(crate) arguments: Arguments,
}

impl ResolvedTrigger {
    /// The invocation id of this trigger's firing at `tick`.
    pub(crate) fn firing_id(&self, tick: Timestamp) -> InvocationId {
        InvocationId::keyed(tick, &format!("{}@{}", self.name, tick.as_micros()))
    }

    /// The call a firing makes.
    pub(crate) fn call(&self) -> Call {
        Call::new(self.task.task_id, self.arguments.clone())
    }
}

/// What an app's trigger is, for operators ([`crate::Pynenc::triggers`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TriggerInfo {
    /// The trigger's name (its firings are keyed by it).
    pub name: String,
    /// Its cron expression.
    pub cron: String,
    /// The task it calls.
    pub task_id: String,
    /// Its next tick after now.
    pub next_tick: Option<Timestamp>,
    /// Its latest ticks, newest first, with what each fired.
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

impl ResolvedTrigger {
    /// What the trigger is, with its last `recent` ticks (their statuses
    /// still to be read).
    pub(crate) fn info(&self, now: Timestamp, recent: usize) -> TriggerInfo {
        TriggerInfo {
            name: self.name.clone(),
            cron: self.expr.clone(),
            task_id: self.task.task_id.to_string(),
            next_tick: self.schedule.next_after(now),
            recent: self
                .schedule
                .previous(now, recent)
                .into_iter()
                .map(|tick| TriggerFiring {
                    tick,
                    invocation_id: self.firing_id(tick),
                    status: None,
                })
                .collect(),
        }
    }

    /// The ticks in `(after, until]`, at most `max` (the newest).
    pub(crate) fn ticks(&self, after: Timestamp, until: Timestamp, max: usize) -> Vec<Timestamp> {
        self.schedule.ticks(after, until, max)
    }
}
