//! What can be asked about the invocations of an app, and the answers:
//! [`InvocationQuery`] with its [`Cursor`], [`InvocationSummary`], counts,
//! the queue, the blocking graph and the runners.
//!
//! Invocation ids are ordered by creation time (their high bits are the
//! creation time in microseconds, see [`InvocationId::time_ordered`]), so
//! every listing is in id order and a cursor is the last id of a page: a
//! page never repeats or skips an invocation that existed when the first
//! page was read, however many are added meanwhile.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::call::Call;
use crate::ids::{CallId, InvalidId, InvocationId, RunnerId, TaskId};
use crate::status::InvocationStatus;
use crate::time::Timestamp;

/// The largest page a listing returns.
pub const MAX_PAGE_SIZE: usize = 1000;

/// How far (µs) an invocation id's time may be from its record's
/// `created_at`; see [`InvocationQuery::created_id_bounds`].
pub const CREATED_ID_MARGIN_US: i64 = 5_000_000;

/// The page size when none is given.
pub const DEFAULT_PAGE_SIZE: usize = 50;

/// Which end of the listing comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// The oldest invocation first.
    OldestFirst,
    /// The newest invocation first.
    #[default]
    NewestFirst,
}

/// A time range: `from` included, `to` excluded; an open end is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TimeRange {
    /// The earliest time included.
    pub from: Option<Timestamp>,
    /// The first time excluded.
    pub to: Option<Timestamp>,
}

impl TimeRange {
    /// Whether neither end is set.
    pub fn is_open(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }

    /// Whether `t` is inside the range.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.from.is_none_or(|from| t >= from) && self.to.is_none_or(|to| t < to)
    }
}

/// Where a page continues: the last invocation of the previous page.
///
/// Written as text (`c1.` and the id) so that it can travel in a URL or a
/// command line; [`Cursor::parse`] refuses anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor(pub InvocationId);

impl Cursor {
    const PREFIX: &'static str = "c1.";

    /// Reads a cursor written by [`fmt::Display`].
    ///
    /// # Errors
    ///
    /// The text is not a cursor: it names what was wrong.
    pub fn parse(text: &str) -> Result<Cursor, InvalidId> {
        let invalid = |reason: &'static str| InvalidId {
            what: "page cursor",
            value: text.chars().take(80).collect(),
            reason,
        };
        let Some(id) = text.strip_prefix(Self::PREFIX) else {
            return Err(invalid("a cursor starts with 'c1.'"));
        };
        InvocationId::parse(id)
            .map(Cursor)
            .map_err(|_| invalid("a cursor is 'c1.' followed by an invocation id"))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Cursor::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Which invocations to list: every field set narrows the listing (an empty
/// list or `None` does not filter), then `order`, `after` and `limit` pick
/// the page.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct InvocationQuery {
    /// Invocations of any of these tasks.
    pub task_ids: Vec<TaskId>,
    /// Invocations currently in any of these statuses.
    pub statuses: Vec<InvocationStatus>,
    /// Created in this range.
    pub created: TimeRange,
    /// Became final in this range (only final invocations match a range
    /// that is not open).
    pub ended: TimeRange,
    /// Children of this invocation.
    pub parent: Option<InvocationId>,
    /// Currently owned by this runner.
    pub owner: Option<RunnerId>,
    /// Invocations of this call.
    pub call_id: Option<CallId>,
    /// Serialized values of key arguments (the seed's
    /// `get_existing_invocations(task, key_arguments)`): invocations whose
    /// argument `name` was serialized to exactly `value`. Needs exactly one
    /// task id.
    pub key_arguments: Vec<(String, String)>,
    /// Oldest or newest first.
    pub order: Order,
    /// Continue after this invocation (from the previous page's `next`).
    pub after: Option<Cursor>,
    /// At most this many invocations (1 to [`MAX_PAGE_SIZE`]).
    pub limit: usize,
}

impl InvocationQuery {
    /// Every invocation, newest first, [`DEFAULT_PAGE_SIZE`] at a time.
    pub fn new() -> Self {
        InvocationQuery {
            limit: DEFAULT_PAGE_SIZE,
            ..InvocationQuery::default()
        }
    }

    /// Whether `id` comes after the cursor in this query's order.
    pub fn is_after_cursor(&self, id: &InvocationId) -> bool {
        match (&self.after, self.order) {
            (None, _) => true,
            (Some(c), Order::OldestFirst) => *id > c.0,
            (Some(c), Order::NewestFirst) => *id < c.0,
        }
    }

    /// The id bounds that `created` implies: every invocation created in
    /// the range has an id in `[low, high)`; `None` for an open end. Ids
    /// start with the time they were made, which may differ from the
    /// record's `created_at` by the length of a routing step, so the bounds
    /// are widened by [`CREATED_ID_MARGIN_US`]: a backend narrows its scan
    /// with them, then filters on `created_at`.
    pub fn created_id_bounds(&self) -> (Option<InvocationId>, Option<InvocationId>) {
        let bound = |t: Timestamp, shift: i64| {
            let micros = t.as_micros().saturating_add(shift).max(0);
            let us = u128::try_from(micros).unwrap_or(0) & 0x00FF_FFFF_FFFF_FFFF;
            InvocationId::from_u128(us << 72)
        };
        (
            self.created.from.map(|t| bound(t, -CREATED_ID_MARGIN_US)),
            self.created.to.map(|t| bound(t, CREATED_ID_MARGIN_US)),
        )
    }

    /// Whether an invocation with this summary matches every filter of the
    /// query but the key arguments and the cursor (see
    /// [`InvocationQuery::matches_with`]).
    pub fn matches(&self, s: &InvocationSummary) -> bool {
        self.matches_with(
            &s.task_id,
            s.status,
            s.created_at,
            s.ended_at,
            s.parent_invocation_id.as_ref(),
            s.owner.as_ref(),
            || s.call_id.clone(),
        )
    }

    /// The one definition of the filters (the key arguments and the cursor
    /// aside), for backends that filter what they read: `call_id` is only
    /// asked for when the query filters on it (it is a hash of every argument).
    #[allow(clippy::too_many_arguments)]
    pub fn matches_with(
        &self,
        task_id: &TaskId,
        status: InvocationStatus,
        created_at: Timestamp,
        ended_at: Option<Timestamp>,
        parent: Option<&InvocationId>,
        owner: Option<&RunnerId>,
        call_id: impl FnOnce() -> CallId,
    ) -> bool {
        (self.task_ids.is_empty() || self.task_ids.contains(task_id))
            && (self.statuses.is_empty() || self.statuses.contains(&status))
            && self.created.contains(created_at)
            && (self.ended.is_open() || ended_at.is_some_and(|t| self.ended.contains(t)))
            && self.parent.as_ref().is_none_or(|p| parent == Some(p))
            && self.owner.as_ref().is_none_or(|o| owner == Some(o))
            && self.call_id.as_ref().is_none_or(|c| &call_id() == c)
    }
}

impl InvocationQuery {
    /// Whether a call's arguments have every value of `key_arguments`.
    pub fn matches_arguments(&self, call: &Call) -> bool {
        self.key_arguments
            .iter()
            .all(|(name, value)| call.arguments.get(name) == Some(value.as_str()))
    }
}

/// One invocation as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationSummary {
    /// The invocation.
    pub invocation_id: InvocationId,
    /// Its task.
    pub task_id: TaskId,
    /// Its call.
    pub call_id: CallId,
    /// Its current status.
    pub status: InvocationStatus,
    /// The runner that owns it, if any.
    pub owner: Option<RunnerId>,
    /// The invocation that called it, if any.
    pub parent_invocation_id: Option<InvocationId>,
    /// When it was created.
    #[serde(rename = "created_at_us")]
    pub created_at: Timestamp,
    /// When its current status was set.
    #[serde(rename = "status_at_us")]
    pub status_at: Timestamp,
    /// When it became final, if it is.
    #[serde(rename = "ended_at_us")]
    pub ended_at: Option<Timestamp>,
    /// How many times it was retried.
    pub retries: u32,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Page {
    /// The invocations, in the query's order.
    pub items: Vec<InvocationSummary>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// How many invocations of one task are in one status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCount {
    /// The task.
    pub task_id: TaskId,
    /// The status.
    pub status: InvocationStatus,
    /// How many (never zero in an answer).
    pub count: u64,
}

/// How many `FAILED` invocations of one task failed with one error kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorKindCount {
    /// The task.
    pub task_id: TaskId,
    /// The error kind.
    pub kind: String,
    /// How many (never zero in an answer).
    pub count: u64,
}

/// The queue as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueStats {
    /// Invocations waiting for a runner (`REGISTERED`, `REROUTED`, `RETRY`).
    pub depth: u64,
    /// The oldest invocation waiting in the queue and when it was created.
    pub oldest: Option<(InvocationId, Timestamp)>,
}

/// The blocking graph around one invocation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WaitGraph {
    /// The invocations it waits on (not final yet).
    pub waiting_on: Vec<InvocationId>,
    /// The invocations that wait on it.
    pub waited_by: Vec<InvocationId>,
}

/// What a runner says of itself when it starts and at every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerInfo {
    /// The runner.
    pub runner_id: RunnerId,
    /// Its kind (`thread`, `persistent_process`...).
    pub kind: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started.
    #[serde(rename = "started_at_us")]
    pub started_at: Timestamp,
    /// Its last heartbeat (set by the store when it records one).
    #[serde(rename = "heartbeat_at_us")]
    pub heartbeat_at: Timestamp,
    /// How many invocations it can run at once.
    pub slots: u32,
    /// The invocations it runs now.
    pub running: Vec<InvocationId>,
}

/// A trigger as a runner declared it, stored so that every process of the
/// app — a command line or a monitor without the tasks compiled in —
/// lists it. Its closures (filters, arguments made from a source) stay
/// with the processes that declare it; what is stored describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRecord {
    /// Its name (its firings are keyed by it).
    pub name: String,
    /// What makes it fire, e.g. `cron(0 */5 * * * *)` or
    /// `on_exception(shop::charge: Timeout)`.
    pub condition: String,
    /// Its cron expression (`None`: a reaction).
    pub cron: Option<String>,
    /// Its cron expression's time zone (`None`: UTC).
    pub timezone: Option<String>,
    /// The task it calls.
    pub task_id: TaskId,
    /// The arguments of its calls as JSON text, when they are static.
    pub arguments: Option<String>,
    /// When it was last declared (a runner started with it).
    #[serde(rename = "declared_at_us")]
    pub declared_at: Timestamp,
}

/// Who holds a lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// The lease's name.
    pub name: String,
    /// Its holder.
    pub holder: RunnerId,
    /// When it expires unless renewed.
    #[serde(rename = "expires_at_us")]
    pub expires_at: Timestamp,
}

/// What a cancel did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum CancelOutcome {
    /// It was waiting: it is `CANCELLED` now.
    Cancelled,
    /// It is running: its owner was asked to stop it (it ends `CANCELLED`).
    Requested {
        /// The runner asked to stop it.
        owner: RunnerId,
    },
    /// It was already final in this status (nothing changed; cancelling a
    /// `CANCELLED` invocation again is harmless).
    AlreadyFinal {
        /// Its status.
        status: InvocationStatus,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let id = InvocationId::time_ordered();
        let c = Cursor(id);
        assert_eq!(Cursor::parse(&c.to_string()).unwrap(), c);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), c);
        for bad in ["", "c1.", "c1.xyz", "c2.0123", id.as_str()] {
            let err = Cursor::parse(bad).unwrap_err();
            assert!(err.to_string().contains("page cursor"), "{err}");
        }
    }

    #[test]
    fn created_bounds_enclose_ids_made_in_the_range() {
        let before = Timestamp::now();
        let id = InvocationId::time_ordered();
        let after = Timestamp::from_micros(Timestamp::now().as_micros() + 1);
        let q = InvocationQuery {
            created: TimeRange {
                from: Some(before),
                to: Some(after),
            },
            ..InvocationQuery::new()
        };
        let (low, high) = q.created_id_bounds();
        assert!(low.unwrap() <= id && id < high.unwrap());
    }

    #[test]
    fn cursor_direction_follows_order() {
        let a = InvocationId::from_u128(1);
        let b = InvocationId::from_u128(2);
        let mut q = InvocationQuery {
            after: Some(Cursor(a)),
            order: Order::OldestFirst,
            ..InvocationQuery::new()
        };
        assert!(q.is_after_cursor(&b));
        q.order = Order::NewestFirst;
        assert!(!q.is_after_cursor(&b));
    }
}
