//! Declaring triggers: [`Trigger`] (its condition, the call it makes, its
//! filters) and its check when the app builds.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{Arguments, InvocationStatus};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::condition::{describe, Combine, Condition, Resolved};
use super::cron::CronSchedule;
use super::when::When;
use super::{ResolvedArguments, ResolvedTrigger, TriggerSource};
use crate::exceptions::{PynencError, Result};
use crate::serializer::Serializer;
use crate::task::{IntoArguments, Task, TaskDefinition};

/// The most missed ticks a trigger may catch up on ([`Trigger::catch_up`]).
pub const MAX_CATCH_UP: usize = 1000;

type MakeArguments = Arc<dyn Fn(Serializer) -> Result<Arguments> + Send + Sync>;
/// Arguments made from what met the condition: a JSON object of parameter
/// name to value, or what is wrong.
pub(super) type FromSource =
    Arc<dyn Fn(&TriggerSource) -> std::result::Result<Map<String, Value>, String> + Send + Sync>;

/// A trigger as declared: a condition and the call it makes.
///
/// ```rust,ignore
/// use pynenc::{trigger_arguments, InvocationStatus, Trigger};
/// use serde_json::json;
///
/// let app = pynenc::Pynenc::builder()
///     // every five minutes, and on weekdays at 9 in Madrid
///     .trigger(Trigger::cron("0 */5 * * * *", report::task(), ("sales".to_string(),)).named("sales report"))
///     .trigger(Trigger::cron("0 9 * * MON-FRI", digest::task(), ()).timezone("Europe/Madrid"))
///     // an alert when a charge for the EU fails for good with a timeout
///     .trigger(
///         Trigger::on_exception(charge::task(), &["Timeout"], alert::task(), ("charge timed out".to_string(),))
///             .when_argument("region", |v| v == &json!("eu")),
///     )
///     // a receipt for every charge above 100, made from the charge's result
///     .trigger(
///         Trigger::on_result(charge::task(), |c: &Charge| c.amount > 100, receipt::task(), (0u64,))
///             .arguments_from(|src| Ok(trigger_arguments([("charge_id", src.result.clone().unwrap_or_default()["id"].clone())]))),
///     )
///     // a welcome mail for every `user.signed_up` event
///     .trigger(
///         Trigger::on_event("user.signed_up", welcome::task(), (String::new(),))
///             .arguments_from(|src| Ok(trigger_arguments([("email", src.event_payload("email"))]))),
///     )
///     .build()?;
/// app.emit_event("user.signed_up", json!({"email": "ana@example.com"})).await?;
/// ```
#[derive(Clone)]
pub struct Trigger {
    name: Option<String>,
    conditions: Vec<When>,
    combine: Combine,
    task: &'static TaskDefinition,
    arguments: MakeArguments,
    from_source: Option<FromSource>,
    catch_up: usize,
    /// A trigger-level filter on a trigger of several conditions (refused
    /// at build: filters go on each [`When`]).
    misplaced_filter: bool,
}

impl fmt::Debug for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trigger")
            .field("name", &self.name())
            .field("condition", &self.describe())
            .field("task", &self.task.task_id)
            .finish()
    }
}

impl Trigger {
    fn new<P, R, A>(conditions: Vec<When>, combine: Combine, task: Task<P, R>, args: A) -> Trigger
    where
        R: DeserializeOwned + Send + 'static,
        A: IntoArguments<P> + Clone + Send + Sync + 'static,
    {
        Trigger {
            name: None,
            conditions,
            combine,
            task: task.definition(),
            arguments: Arc::new(move |serializer| args.clone().into_arguments(serializer)),
            from_source: None,
            catch_up: 0,
            misplaced_filter: false,
        }
    }

    /// Calls `task` with `args` at every tick of the cron expression `expr`:
    /// five fields (minute, hour, day of month, month, day of week) or six
    /// with seconds first (`*/10 * * * * *`: every ten seconds), in UTC
    /// unless [`Trigger::timezone`] says otherwise.
    pub fn cron<P, R, A>(expr: &str, task: Task<P, R>, args: A) -> Trigger
    where
        R: DeserializeOwned + Send + 'static,
        A: IntoArguments<P> + Clone + Send + Sync + 'static,
    {
        let when = When::of(Condition::Cron {
            expr: expr.to_string(),
            timezone: None,
        });
        Trigger::new(vec![when], Combine::One, task, args)
    }

    /// Calls `task` once for every source that meets `when`.
    pub fn on<P, R, A>(when: When, task: Task<P, R>, args: A) -> Trigger
    where
        R: DeserializeOwned + Send + 'static,
        A: IntoArguments<P> + Clone + Send + Sync + 'static,
    {
        Trigger::new(vec![when], Combine::One, task, args)
    }

    /// Calls `task` once for every source that meets any of `conditions`
    /// (one call for a source that meets several).
    pub fn any_of<P, R, A>(conditions: Vec<When>, task: Task<P, R>, args: A) -> Trigger
    where
        R: DeserializeOwned + Send + 'static,
        A: IntoArguments<P> + Clone + Send + Sync + 'static,
    {
        Trigger::new(conditions, Combine::Any, task, args)
    }

    /// Calls `task` when a source meets one of `conditions` and each of the
    /// others was met by a source that ended within `within` before it:
    /// once per such set of sources (the newest that meets each condition).
    /// The conditions are outcomes a runner can look back on: results,
    /// errors, the statuses `success` and `failed`, and events. The
    /// arguments made from a source ([`Trigger::arguments_from`]) are made
    /// from the one that completed the set.
    pub fn all_of<P, R, A>(
        conditions: Vec<When>,
        within: Duration,
        task: Task<P, R>,
        args: A,
    ) -> Trigger
    where
        R: DeserializeOwned + Send + 'static,
        A: IntoArguments<P> + Clone + Send + Sync + 'static,
    {
        Trigger::new(conditions, Combine::All(within), task, args)
    }

    /// Calls `task` once for every invocation of `source` that reaches one
    /// of `statuses` ([`When::status`]).
    pub fn on_status<P0, R0, P, R, A>(
        source: Task<P0, R0>,
        statuses: &[InvocationStatus],
        task: Task<P, R>,
        args: A,
    ) -> Trigger
    where
        R0: DeserializeOwned + Send + 'static,
        R: DeserializeOwned + Send + 'static,
        A: IntoArguments<P> + Clone + Send + Sync + 'static,
    {
        Trigger::on(When::status(source, statuses), task, args)
    }

    /// Calls `task` once for every invocation of `source` that succeeds
    /// with a result `filter` accepts ([`When::result`]).
    pub fn on_result<P0, R0, P, R, A>(
        source: Task<P0, R0>,
        filter: impl Fn(&R0) -> bool + Send + Sync + 'static,
        task: Task<P, R>,
        args: A,
    ) -> Trigger
    where
        R0: DeserializeOwned + Send + 'static,
        R: DeserializeOwned + Send + 'static,
        A: IntoArguments<P> + Clone + Send + Sync + 'static,
    {
        Trigger::on(When::result(source, filter), task, args)
    }

    /// Calls `task` once for every invocation of `source` that succeeds
    /// ([`When::any_result`]).
    pub fn on_any_result<P0, R0, P, R, A>(
        source: Task<P0, R0>,
        task: Task<P, R>,
        args: A,
    ) -> Trigger
    where
        R0: DeserializeOwned + Send + 'static,
        R: DeserializeOwned + Send + 'static,
        A: IntoArguments<P> + Clone + Send + Sync + 'static,
    {
        Trigger::on(When::any_result(source), task, args)
    }

    /// Calls `task` once for every invocation of `source` that fails for
    /// good with an error of one of `kinds` ([`When::exception`]).
    pub fn on_exception<P0, R0, P, R, A>(
        source: Task<P0, R0>,
        kinds: &[&str],
        task: Task<P, R>,
        args: A,
    ) -> Trigger
    where
        R0: DeserializeOwned + Send + 'static,
        R: DeserializeOwned + Send + 'static,
        A: IntoArguments<P> + Clone + Send + Sync + 'static,
    {
        Trigger::on(When::exception(source, kinds), task, args)
    }

    /// Calls `task` once for every event `name` emitted with
    /// [`crate::Pynenc::emit_event`] ([`When::event`]).
    pub fn on_event<P, R, A>(name: &str, task: Task<P, R>, args: A) -> Trigger
    where
        R: DeserializeOwned + Send + 'static,
        A: IntoArguments<P> + Clone + Send + Sync + 'static,
    {
        Trigger::on(When::event(name), task, args)
    }

    /// The time zone of the cron expression (an IANA name, e.g.
    /// `Europe/Madrid`); ignored by other triggers.
    pub fn timezone(mut self, tz: &str) -> Trigger {
        if let [When {
            condition: Condition::Cron { timezone, .. },
            ..
        }] = self.conditions.as_mut_slice()
        {
            *timezone = Some(tz.to_string());
        }
        self
    }

    /// Only events whose payload `filter` accepts ([`When::when_payload`]
    /// on the trigger's one condition).
    pub fn when_payload(
        mut self,
        filter: impl Fn(&Value) -> bool + Send + Sync + 'static,
    ) -> Trigger {
        match self.conditions.as_mut_slice() {
            [one] => *one = one.clone().when_payload(filter),
            _ => self.misplaced_filter = true,
        }
        self
    }

    /// Only sources whose argument `name` `filter` accepts
    /// ([`When::when_argument`] on the trigger's one condition).
    pub fn when_argument(
        mut self,
        name: &str,
        filter: impl Fn(&Value) -> bool + Send + Sync + 'static,
    ) -> Trigger {
        match self.conditions.as_mut_slice() {
            [one] => *one = one.clone().when_argument(name, filter),
            _ => self.misplaced_filter = true,
        }
        self
    }

    /// The arguments of each call made from what met the condition (its
    /// result, error, arguments or event), as a JSON object of parameter
    /// name to value, instead of the static arguments; checked against the
    /// task's parameters at each firing (a firing whose arguments do not
    /// fit is logged with the trigger's name and not made). Not for cron
    /// triggers.
    pub fn arguments_from(
        mut self,
        make: impl Fn(&TriggerSource) -> std::result::Result<Map<String, Value>, String>
            + Send
            + Sync
            + 'static,
    ) -> Trigger {
        self.from_source = Some(Arc::new(make));
        self
    }

    /// A cron trigger fires up to `max` ticks missed while no runner was up
    /// (older than `triggers.missed_tick_window_seconds`; the newest `max`),
    /// when a runner takes the evaluation over; by default such ticks are
    /// skipped. At most 1,000. Ticks that fired before are not fired again
    /// (each firing is keyed), unless their invocation was purged since.
    pub fn catch_up(mut self, max: usize) -> Trigger {
        self.catch_up = max;
        self
    }

    /// Names the trigger (its firings are keyed by this name: renaming a
    /// trigger makes its ticks and reactions new ones). The default name is
    /// its condition and task, e.g. `cron(<expression>[ <time zone>]) -> <task id>`.
    pub fn named(mut self, name: &str) -> Trigger {
        self.name = Some(name.to_string());
        self
    }

    /// The trigger's name.
    pub fn name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("{} -> {}", self.describe(), self.task.task_id),
        }
    }

    /// How the trigger's conditions read.
    fn describe(&self) -> String {
        describe(&self.conditions, &self.combine)
    }

    /// Checks the trigger for an app with `serializer`; `check_call`
    /// checks a call of a task against its parameters.
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
        if let Some(problem) = self.problem() {
            return Err(invalid(problem));
        }
        let kind = match self.conditions.as_slice() {
            [When {
                condition: Condition::Cron { expr, timezone },
                ..
            }] => {
                if self.catch_up > MAX_CATCH_UP {
                    return Err(invalid(format!(
                        "catch_up({}) is over the most a trigger catches up on ({MAX_CATCH_UP})",
                        self.catch_up
                    )));
                }
                if self.from_source.is_some() {
                    return Err(invalid(
                        "a cron trigger has no source to make arguments from".into(),
                    ));
                }
                let schedule = CronSchedule::parse(expr, timezone.as_deref()).map_err(&invalid)?;
                Resolved::Cron {
                    expr: expr.clone(),
                    timezone: timezone.clone(),
                    schedule: Box::new(schedule),
                }
            }
            _ if self.catch_up > 0 => {
                return Err(invalid(
                    "catch_up is for cron triggers: a reaction is made by the run of its source"
                        .into(),
                ))
            }
            conditions => Resolved::Reaction {
                conditions: conditions.to_vec(),
                combine: self.combine.clone(),
            },
        };
        let arguments = match &self.from_source {
            Some(make) => ResolvedArguments::FromSource(make.clone()),
            None => {
                let arguments = (self.arguments)(serializer)
                    .map_err(|e| invalid(format!("its arguments do not serialize: {e}")))?;
                check_call(self.task, &arguments).map_err(|e| invalid(e.to_string()))?;
                ResolvedArguments::Static(arguments)
            }
        };
        Ok(ResolvedTrigger {
            name,
            kind,
            task: self.task,
            arguments,
            catch_up: self.catch_up,
        })
    }

    /// What is wrong with the trigger's conditions, if anything.
    fn problem(&self) -> Option<String> {
        if self.conditions.is_empty() {
            return Some("a trigger needs at least one condition".into());
        }
        if self.misplaced_filter {
            return Some(
                "a trigger of several conditions takes its filters on each condition (When::when_argument, When::when_payload)"
                    .into(),
            );
        }
        if let Some(p) = self.conditions.iter().find_map(When::problem) {
            return Some(p);
        }
        let cron = self
            .conditions
            .iter()
            .any(|w| matches!(w.condition, Condition::Cron { .. }));
        if cron && self.conditions.len() > 1 {
            return Some("a cron schedule cannot be combined with other conditions".into());
        }
        if let Combine::All(within) = &self.combine {
            if within.is_zero() {
                return Some("all_of needs a time window longer than zero".into());
            }
            if let Some(w) = self.conditions.iter().find(|w| !w.condition.is_outcome()) {
                return Some(format!(
                    "all_of looks back on outcomes (results, errors, success and failed, events); {} is not one",
                    w.describe()
                ));
            }
        }
        None
    }
}

/// A JSON object of arguments from name/value pairs, for
/// [`Trigger::arguments_from`].
pub fn trigger_arguments<'a>(
    pairs: impl IntoIterator<Item = (&'a str, Value)>,
) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
