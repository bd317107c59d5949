//! The query indexes of the memory store, kept by the same primitives that
//! change statuses: per task, the invocations in each final status (in id
//! order, which is creation order), counts per status, `FAILED` counts per
//! error kind, children per parent, and the registration-scope lookups.
//!
//! Invocations that are not final are found where the store keeps them to
//! run them (the queue, the owned, scheduled and parked ones: see
//! [`crate::state::MemState::open_ids`]), so a plain run adds one
//! ordered-set insertion and a few array counters to its steps.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::RangeBounds;

use pynenc_model::query::InvocationQuery;
use pynenc_model::status::ALL_STATUSES;
use pynenc_model::{
    ErrorKindCount, InvocationId, InvocationRecord, InvocationStatus, Order, StatusCount,
    TaskCounter, TaskId, TaskTotals, Timestamp,
};
use rustc_hash::FxHashMap;

/// How many statuses there are.
const N: usize = ALL_STATUSES.len();

/// Ordered-index key: a time and the invocation's insertion number.
pub(crate) type OrderKey = (Timestamp, u64);

/// An invocation id as its number ([`InvocationId::as_u128`]): the sets
/// below compare these, cheaper than the 32 digits.
type Key = u128;

/// The indexes of one task.
struct TaskIndex {
    task_id: TaskId,
    counts: [u64; N],
    /// What was routed, started and ended, and run times (only grow).
    totals: TaskTotals,
    /// Final invocations, by final status.
    ended: [BTreeSet<Key>; N],
}

/// Every query index of one app.
#[derive(Default)]
pub(crate) struct QueryIndex {
    tasks: Vec<TaskIndex>,
    numbers: FxHashMap<TaskId, u32>,
    /// The task numbered last: calls of one task share its id, so most
    /// lookups are a pointer comparison.
    last: Option<(TaskId, u32)>,
    children: FxHashMap<InvocationId, Vec<InvocationId>>,
    failed_kinds: FxHashMap<(u32, String), u64>,
    /// Per registration key, invocations neither final nor scheduled.
    active_by_key: FxHashMap<String, BTreeMap<OrderKey, InvocationId>>,
    /// Per registration key, its newest `SUCCESS` and when it ended.
    last_success: FxHashMap<String, (Timestamp, InvocationId)>,
    /// Final invocations by status, in the order they ended: appended as
    /// they end; an invocation deleted since is left in place, skipped by
    /// readers and dropped once it reaches the front (a retention purge
    /// takes the oldest first).
    finals: [VecDeque<(OrderKey, InvocationId)>; N],
}

impl QueryIndex {
    /// The number of a task (given on first sight).
    pub(crate) fn task_number(&mut self, task_id: &TaskId) -> u32 {
        if let Some((last, n)) = &self.last {
            if last.ptr_eq(task_id) {
                return *n;
            }
        }
        if let Some(n) = self.numbers.get(task_id).copied() {
            self.last = Some((task_id.clone(), n));
            return n;
        }
        let n = u32::try_from(self.tasks.len()).unwrap_or(u32::MAX);
        self.tasks.push(TaskIndex {
            task_id: task_id.clone(),
            counts: [0; N],
            totals: TaskTotals::new(task_id.clone()),
            ended: Default::default(),
        });
        self.numbers.insert(task_id.clone(), n);
        self.last = Some((task_id.clone(), n));
        n
    }

    fn task(&mut self, n: u32) -> Option<&mut TaskIndex> {
        self.tasks.get_mut(n as usize)
    }

    /// A new invocation in `status`.
    pub(crate) fn inserted(
        &mut self,
        task: u32,
        record: &InvocationRecord,
        status: InvocationStatus,
        seq: u64,
    ) {
        let id = record.invocation_id;
        if let Some(t) = self.task(task) {
            t.counts[status.index()] += 1;
            t.totals.counts[TaskCounter::Routed.index()] += 1;
        }
        if let Some(parent) = record.parent_invocation_id {
            self.children.entry(parent).or_default().push(id);
        }
        if status != InvocationStatus::Scheduled {
            if let Some(key) = &record.concurrency.registration_key {
                self.active_by_key
                    .entry(key.clone())
                    .or_default()
                    .insert((record.created_at, seq), id);
            }
        }
    }

    /// A status change; `error_kind` is the stored error's kind (for `FAILED`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn status_changed(
        &mut self,
        task: u32,
        record: &InvocationRecord,
        seq: u64,
        old: InvocationStatus,
        new: InvocationStatus,
        now: Timestamp,
        error_kind: Option<&str>,
    ) {
        let id = record.invocation_id;
        if let Some(t) = self.task(task) {
            t.counts[old.index()] = t.counts[old.index()].saturating_sub(1);
            t.counts[new.index()] += 1;
            if let Some(counter) = TaskCounter::of_status(new) {
                t.totals.counts[counter.index()] += 1;
            }
            if new.is_final() {
                t.ended[new.index()].insert(id.as_u128());
            }
        }
        if !new.is_final() {
            if old == InvocationStatus::Scheduled {
                if let Some(key) = &record.concurrency.registration_key {
                    self.active_by_key
                        .entry(key.clone())
                        .or_default()
                        .insert((record.created_at, seq), id);
                }
            }
            return;
        }
        self.finals[new.index()].push_back(((now, seq), id));
        if new == InvocationStatus::Failed {
            let kind = error_kind.unwrap_or("").to_string();
            *self.failed_kinds.entry((task, kind)).or_default() += 1;
        }
        if let Some(key) = &record.concurrency.registration_key {
            self.unindex_active(key, (record.created_at, seq));
            if new == InvocationStatus::Success {
                self.last_success.insert(key.clone(), (now, id));
            }
        }
    }

    fn unindex_active(&mut self, key: &str, order: OrderKey) {
        if let Some(set) = self.active_by_key.get_mut(key) {
            set.remove(&order);
            if set.is_empty() {
                self.active_by_key.remove(key);
            }
        }
    }

    /// An invocation deleted while in `status` (its entry in `finals`, if
    /// final, is skipped from now on: see [`QueryIndex::final_before`]).
    pub(crate) fn deleted(
        &mut self,
        task: u32,
        record: &InvocationRecord,
        seq: u64,
        status: InvocationStatus,
        error_kind: Option<&str>,
    ) {
        let id = record.invocation_id;
        if let Some(t) = self.task(task) {
            t.counts[status.index()] = t.counts[status.index()].saturating_sub(1);
            t.ended[status.index()].remove(&id.as_u128());
        }
        if status == InvocationStatus::Failed {
            let key = (task, error_kind.unwrap_or("").to_string());
            if let Some(n) = self.failed_kinds.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.failed_kinds.remove(&key);
                }
            }
        }
        if let Some(parent) = record.parent_invocation_id {
            if let Some(list) = self.children.get_mut(&parent) {
                list.retain(|c| *c != id);
                if list.is_empty() {
                    self.children.remove(&parent);
                }
            }
        }
        if let Some(key) = &record.concurrency.registration_key {
            self.unindex_active(key, (record.created_at, seq));
            if self.last_success.get(key).is_some_and(|(_, s)| *s == id) {
                self.last_success.remove(key);
            }
        }
    }

    /// The oldest active invocation with this registration key.
    pub(crate) fn find_active(&self, key: &str) -> Option<InvocationId> {
        self.active_by_key
            .get(key)
            .and_then(|s| s.values().next())
            .copied()
    }

    /// The newest success with this key that ended at or after `since`.
    pub(crate) fn find_success_since(&self, key: &str, since: Timestamp) -> Option<InvocationId> {
        self.last_success
            .get(key)
            .filter(|(at, _)| *at >= since)
            .map(|(_, id)| *id)
    }

    /// Up to `max` final invocations in `statuses` (any final status when
    /// empty) that ended before `before`, earliest end first. `is_current`
    /// tells whether an entry's invocation is still stored with that end
    /// (the entries of deleted ones are skipped, and dropped from the front).
    pub(crate) fn final_before(
        &mut self,
        statuses: &[InvocationStatus],
        before: Timestamp,
        max: usize,
        is_current: impl Fn(&InvocationId, OrderKey) -> bool,
    ) -> Vec<InvocationId> {
        let mut found: Vec<(OrderKey, InvocationId)> = Vec::new();
        for status in ALL_STATUSES {
            if !status.is_final() || !(statuses.is_empty() || statuses.contains(&status)) {
                continue;
            }
            let ended = &mut self.finals[status.index()];
            while ended.front().is_some_and(|(k, id)| !is_current(id, *k)) {
                ended.pop_front();
            }
            found.extend(
                ended
                    .iter()
                    .filter(|(k, id)| is_current(id, *k))
                    .take_while(|((at, _), _)| *at < before)
                    .take(max)
                    .copied(),
            );
        }
        found.sort_unstable();
        found.into_iter().take(max).map(|(_, id)| id).collect()
    }

    /// Counts per task and status (zero counts left out).
    pub(crate) fn count_by_status(&self, task_ids: &[TaskId]) -> Vec<StatusCount> {
        let mut out = Vec::new();
        for t in self.selected(task_ids) {
            for status in ALL_STATUSES {
                let count = t.counts[status.index()];
                if count > 0 {
                    out.push(StatusCount {
                        task_id: t.task_id.clone(),
                        status,
                        count,
                    });
                }
            }
        }
        out
    }

    /// A run of `micros` microseconds of the task numbered `task`.
    pub(crate) fn add_run_time(&mut self, task: u32, micros: u64) {
        if let Some(t) = self.task(task) {
            t.totals.run_times.observe(micros);
        }
    }

    /// The totals of the tasks in `task_ids` (all when empty), by task id.
    pub(crate) fn task_totals(&self, task_ids: &[TaskId]) -> Vec<TaskTotals> {
        let mut out: Vec<TaskTotals> = self.selected(task_ids).map(|t| t.totals.clone()).collect();
        out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        out
    }

    /// `FAILED` counts per task and error kind (zero counts left out).
    pub(crate) fn failed_by_kind(&self, task_ids: &[TaskId]) -> Vec<ErrorKindCount> {
        let mut out: Vec<ErrorKindCount> = self
            .failed_kinds
            .iter()
            .filter(|(_, n)| **n > 0)
            .filter_map(|((task, kind), count)| {
                let t = self.tasks.get(*task as usize)?;
                (task_ids.is_empty() || task_ids.contains(&t.task_id)).then(|| ErrorKindCount {
                    task_id: t.task_id.clone(),
                    kind: kind.clone(),
                    count: *count,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.task_id, &a.kind).cmp(&(&b.task_id, &b.kind)));
        out
    }

    fn selected<'a>(&'a self, task_ids: &'a [TaskId]) -> impl Iterator<Item = &'a TaskIndex> {
        self.tasks
            .iter()
            .filter(move |t| task_ids.is_empty() || task_ids.contains(&t.task_id))
    }

    /// Candidate ids for `query`, in its order from its cursor: each
    /// source set contributes up to what `accept` takes of it, and the
    /// sources are merged. `accept` applies every filter and stops a source
    /// once `query.limit` ids of it matched. `open` gives the invocations
    /// that are not final (asked only when the query wants such a status).
    pub(crate) fn candidates<O>(
        &self,
        query: &InvocationQuery,
        open: impl FnOnce() -> O,
        mut accept: impl FnMut(&InvocationId) -> bool,
    ) -> Vec<InvocationId>
    where
        O: Iterator<Item = InvocationId>,
    {
        let limit = query.limit;
        let mut out: Vec<InvocationId> = Vec::new();
        if let Some(parent) = &query.parent {
            let mut kids: Vec<InvocationId> =
                self.children.get(parent).cloned().unwrap_or_default();
            kids.sort_unstable();
            if query.order == Order::NewestFirst {
                kids.reverse();
            }
            out.extend(
                kids.into_iter()
                    .filter(|id| query.is_after_cursor(id))
                    .filter(|id| accept(id))
                    .take(limit),
            );
            return out;
        }
        let (low, high) = query.created_id_bounds();
        let task_ids: Vec<TaskId> = match (&query.call_id, query.task_ids.is_empty()) {
            // a call id starts with its task id
            (Some(call), true) => call
                .as_str()
                .split_once('#')
                .map(|(task, _)| vec![TaskId::from(task)])
                .unwrap_or_default(),
            _ => query.task_ids.clone(),
        };
        let wants = |s: InvocationStatus| query.statuses.is_empty() || query.statuses.contains(&s);
        let wants_open = ALL_STATUSES.iter().any(|s| !s.is_final() && wants(*s));
        if wants_open && query.ended.is_open() {
            // the open ones, from where the store keeps them to run them
            let (lower, upper) = range_of(query, low, high);
            let mut ids: Vec<InvocationId> = open()
                .filter(|id| {
                    let k = id.as_u128();
                    (lower, upper).contains(&k)
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            if query.order == Order::NewestFirst {
                ids.reverse();
            }
            out.extend(ids.into_iter().filter(|id| accept(id)).take(limit));
        }
        for t in self.selected(&task_ids) {
            let sets = ALL_STATUSES
                .iter()
                .filter(|s| s.is_final() && wants(**s))
                .map(|s| &t.ended[s.index()]);
            for set in sets {
                let range = set
                    .range(range_of(query, low, high))
                    .map(|k| InvocationId::from_u128(*k));
                let taken: Vec<InvocationId> = if query.order == Order::NewestFirst {
                    range.rev().filter(|id| accept(id)).take(limit).collect()
                } else {
                    range.filter(|id| accept(id)).take(limit).collect()
                };
                out.extend(taken);
            }
        }
        out.sort_unstable();
        out.dedup();
        if query.order == Order::NewestFirst {
            out.reverse();
        }
        out.truncate(limit);
        out
    }
}

/// The key range of a query: its created bounds narrowed by its cursor.
fn range_of(
    query: &InvocationQuery,
    low: Option<InvocationId>,
    high: Option<InvocationId>,
) -> (std::ops::Bound<Key>, std::ops::Bound<Key>) {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let (low, high) = (low.map(|l| l.as_u128()), high.map(|h| h.as_u128()));
    let mut lower = low.map_or(Unbounded, Included);
    let mut upper = high.map_or(Unbounded, Excluded);
    if let Some(c) = query.after {
        let c = c.0.as_u128();
        match query.order {
            Order::OldestFirst => {
                if low.is_none_or(|l| c >= l) {
                    lower = Excluded(c);
                }
            }
            Order::NewestFirst => {
                if high.is_none_or(|h| c < h) {
                    upper = Excluded(c);
                }
            }
        }
    }
    if let (Included(l) | Excluded(l), Excluded(u)) = (lower, upper) {
        if l >= u {
            // an empty range (BTreeSet::range panics on an inverted one)
            return (Included(u), Excluded(u));
        }
    }
    (lower, upper)
}
