//! The data of one app's memory store and its [`StoreTxn`] primitives.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{
    CallId, HistoryEntry, HistoryStep, InvocationId, InvocationOutcome, InvocationRecord,
    InvocationStatus, LeaseHolder, ReuseRecord, Reuses, RunnerId, RunnerInfo, StatusRecord,
    TaskError, Timestamp, TriggerRecord, REUSES_KEPT,
};
use pynenc_store::{OwnedClaim, Result, StoreError, StoreTxn};

use crate::index::{OrderKey, QueryIndex};
use crate::names::{Names, NONE};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use tokio::sync::Notify;

/// One history step: its runner ids and execution context are numbers in
/// [`MemState`]'s names (24 bytes a step; a few runners write millions).
pub(crate) struct Step {
    timestamp: Timestamp,
    owner: u32,
    actor: u32,
    execution_context: u32,
    status: InvocationStatus,
}

pub(crate) struct Entry {
    pub(crate) seq: u64,
    /// The task's number in the query index.
    pub(crate) task: u32,
    pub(crate) record: Arc<InvocationRecord>,
    pub(crate) status: StatusRecord,
    /// Inline up to the four steps of a plain run (registered, pending,
    /// running, final): no allocation of its own for most invocations.
    history: SmallVec<[Step; 4]>,
    pub(crate) retries: u32,
    result: Option<String>,
    /// Why it failed (rare: boxed).
    pub(crate) error: Option<Box<TaskError>>,
    pub(crate) final_at: Option<Timestamp>,
    pub(crate) status_at: Timestamp,
    /// The `result()` waits on this invocation, released when it becomes final.
    pub(crate) waiters: Option<Waiters>,
    /// What few invocations have (boxed, allocated on first use).
    pub(crate) rare: Option<Box<Rare>>,
}

/// The parts of an entry few invocations have.
#[derive(Default)]
pub(crate) struct Rare {
    /// The calls registration concurrency folded into it.
    pub(crate) reuses: Reuses,
    /// Its data, when it is a workflow that keeps any.
    pub(crate) workflow_data: BTreeMap<String, String>,
}

impl Entry {
    /// The rare parts, made on first use.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Default::default)
    }
}

/// A `result()` wait on a group of invocations: how many are still open.
pub(crate) struct GroupWait {
    pub(crate) remaining: AtomicUsize,
    pub(crate) done: Notify,
}

/// The waits on one invocation: almost always one.
pub(crate) enum Waiters {
    One(Arc<GroupWait>),
    Many(Vec<Arc<GroupWait>>),
}

impl Waiters {
    pub(crate) fn add(&mut self, w: Arc<GroupWait>) {
        match self {
            Waiters::One(first) => *self = Waiters::Many(vec![first.clone(), w]),
            Waiters::Many(list) => list.push(w),
        }
    }

    /// Counts the invocation as final for every wait on it.
    fn release(self) {
        match self {
            Waiters::One(w) => release(&w),
            Waiters::Many(list) => list.iter().for_each(|w| release(w)),
        }
    }
}

fn release(w: &GroupWait) {
    if w.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
        w.done.notify_one();
    }
}

/// The invocations: entries in a slab (in creation order, reused after
/// deletes, never moved when the index grows) and an index from id to slot.
#[derive(Default)]
pub(crate) struct Invocations {
    index: FxHashMap<InvocationId, u32>,
    pub(crate) slots: Vec<Option<Entry>>,
    free: Vec<u32>,
}

impl Invocations {
    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub(crate) fn get(&self, id: &InvocationId) -> Option<&Entry> {
        let slot = *self.index.get(id)?;
        self.slots.get(slot as usize)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: &InvocationId) -> Option<&mut Entry> {
        let slot = *self.index.get(id)?;
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Stores a new entry under `id`, which must be new.
    fn insert(&mut self, id: InvocationId, entry: Entry) -> Result<()> {
        let std::collections::hash_map::Entry::Vacant(vacant) = self.index.entry(id) else {
            return Err(StoreError::backend(
                "memory",
                format!("an invocation with id {id} already exists"),
            ));
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len()).map_err(|_| {
                    StoreError::backend("memory", "more than 4,294,967,295 invocations")
                })?;
                self.slots.push(Some(entry));
                slot
            }
        };
        vacant.insert(slot);
        Ok(())
    }

    fn remove(&mut self, id: &InvocationId) -> Option<Entry> {
        let slot = self.index.remove(id)?;
        let entry = self.slots.get_mut(slot as usize)?.take();
        self.free.push(slot);
        entry
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = InvocationId> + '_ {
        self.slots.iter().flatten().map(|e| e.record.invocation_id)
    }
}

/// Everything one app keeps in memory.
#[derive(Default)]
pub(crate) struct MemState {
    /// The id of the app this store holds (empty for a store made alone).
    pub(crate) app_id: String,
    next_seq: u64,
    pub(crate) invocations: Invocations,
    queue: VecDeque<InvocationId>,
    registered_by_key: FxHashMap<String, BTreeMap<OrderKey, InvocationId>>,
    running_keys: FxHashMap<String, usize>,
    controlled: FxHashMap<String, VecDeque<InvocationId>>,
    blocking_order: BTreeMap<OrderKey, InvocationId>,
    edges: FxHashMap<CallId, FxHashMap<CallId, usize>>,
    edges_by_invocation: FxHashMap<InvocationId, Vec<(CallId, CallId)>>,
    scheduled: BTreeMap<OrderKey, InvocationId>,
    owned: BTreeMap<OrderKey, InvocationId>,
    pub(crate) heartbeats: HashMap<RunnerId, Timestamp>,
    pub(crate) runners: HashMap<RunnerId, RunnerInfo>,
    /// The triggers runners declared, by name.
    pub(crate) triggers: BTreeMap<String, TriggerRecord>,
    pub(crate) leases: HashMap<String, (RunnerId, Timestamp)>,
    pub(crate) index: QueryIndex,
    /// Waited invocation → the invocations waiting on it.
    pub(crate) waited_by: FxHashMap<InvocationId, Vec<InvocationId>>,
    /// Waiting invocation → what it waits on.
    pub(crate) waiting_on: FxHashMap<InvocationId, Vec<InvocationId>>,
    /// Cancel requests: invocation → the owner asked to stop it, and the
    /// error naming who asked.
    pub(crate) cancels: FxHashMap<InvocationId, (RunnerId, TaskError)>,
    /// The runner ids of history steps, by number.
    runner_names: Names<RunnerId>,
    /// The execution contexts of history steps, by number.
    context_names: Names<Arc<str>>,
    /// Set by a section that queued work, so the store wakes runners after it.
    pub(crate) enqueued: bool,
    /// Waits for the next status change of an invocation
    /// (`wait_status_change`), woken and dropped by the change.
    pub(crate) status_watch: FxHashMap<InvocationId, Vec<Arc<Notify>>>,
    /// The data store's values.
    pub(crate) data: crate::data::MemData,
}

impl MemState {
    /// The number of a history step's runner id.
    fn runner_number(&mut self, runner: &RunnerId) -> Result<u32> {
        self.runner_names
            .number(runner, RunnerId::clone)
            .ok_or_else(|| StoreError::backend("memory", "more than 4,294,967,294 runner ids"))
    }

    /// The number of a history step's execution context.
    fn context_number(&mut self, context: &str) -> Result<u32> {
        self.context_names
            .number(context, |c| Arc::from(c))
            .ok_or_else(|| {
                StoreError::backend("memory", "more than 4,294,967,294 execution contexts")
            })
    }

    fn entry(&mut self, id: &InvocationId) -> Result<&mut Entry> {
        self.invocations
            .get_mut(id)
            .ok_or_else(|| StoreError::not_found(id, "in the memory store"))
    }

    /// Lists a `REGISTERED` invocation under its registration key.
    fn index_registered(&mut self, record: &InvocationRecord, seq: u64) {
        if let Some(key) = &record.concurrency.registration_key {
            self.registered_by_key
                .entry(key.clone())
                .or_default()
                .insert((record.created_at, seq), record.invocation_id);
        }
    }

    /// Takes an invocation off its registration key's list.
    fn unindex_registered(&mut self, record: &InvocationRecord, seq: u64) {
        if let Some(key) = &record.concurrency.registration_key {
            if let Some(set) = self.registered_by_key.get_mut(key) {
                set.remove(&(record.created_at, seq));
                if set.is_empty() {
                    self.registered_by_key.remove(key);
                }
            }
        }
    }

    /// Forgets the waits on `waited` and those `waited` made.
    fn forget_waits(&mut self, waited: &InvocationId) {
        if self.waited_by.is_empty() {
            return;
        }
        if let Some(waiters) = self.waited_by.remove(waited) {
            for w in waiters {
                if let Some(list) = self.waiting_on.get_mut(&w) {
                    list.retain(|x| x != waited);
                    if list.is_empty() {
                        self.waiting_on.remove(&w);
                    }
                }
            }
        }
        if let Some(on) = self.waiting_on.remove(waited) {
            for x in on {
                if let Some(list) = self.waited_by.get_mut(&x) {
                    list.retain(|w| w != waited);
                    if list.is_empty() {
                        self.waited_by.remove(&x);
                    }
                }
            }
        }
    }

    /// The queued ids, head first.
    pub(crate) fn queued(&self) -> impl Iterator<Item = &InvocationId> {
        self.queue.iter()
    }

    /// Every invocation that is not final, from where the store keeps them
    /// to run them: the queue (which may also hold ids that moved on, and
    /// one id twice), the owned, the scheduled and the parked ones.
    pub(crate) fn open_ids(&self) -> impl Iterator<Item = InvocationId> + '_ {
        self.queue
            .iter()
            .chain(self.owned.values())
            .chain(self.scheduled.values())
            .chain(self.controlled.values().flatten())
            .copied()
    }

    /// The holder of a lease.
    pub(crate) fn lease_holder(&self, name: &str) -> Option<LeaseHolder> {
        self.leases.get(name).map(|(holder, expires)| LeaseHolder {
            name: name.to_string(),
            holder: holder.clone(),
            expires_at: *expires,
        })
    }

    /// Wakes the waits for a status change of `id` (it changed or is gone).
    fn wake_status_watch(&mut self, id: &InvocationId) {
        if self.status_watch.is_empty() {
            return;
        }
        if let Some(list) = self.status_watch.remove(id) {
            list.iter().for_each(|n| n.notify_one());
        }
    }

    fn notify_final(&mut self, id: &InvocationId) {
        if let Some(waiters) = self.invocations.get_mut(id).and_then(|e| e.waiters.take()) {
            waiters.release();
        }
    }
}

fn scheduled_at(record: &InvocationRecord) -> Timestamp {
    record.scheduled_at.unwrap_or(Timestamp::EPOCH)
}

impl StoreTxn for MemState {
    fn insert_invocation(
        &mut self,
        record: &Arc<InvocationRecord>,
        status: &StatusRecord,
    ) -> Result<()> {
        let seq = self.next_seq;
        let task = self.index.task_number(&record.call.task_id);
        self.invocations.insert(
            record.invocation_id,
            Entry {
                seq,
                task,
                record: record.clone(),
                status: status.clone(),
                history: SmallVec::new(),
                retries: 0,
                result: None,
                error: None,
                final_at: None,
                status_at: record.created_at,
                waiters: None,
                rare: None,
            },
        )?;
        self.next_seq += 1;
        self.index.inserted(task, record, status.status, seq);
        if status.status == InvocationStatus::Scheduled {
            self.scheduled
                .insert((scheduled_at(record), seq), record.invocation_id);
        }
        if status.status == InvocationStatus::Registered {
            self.index_registered(record, seq);
        }
        Ok(())
    }

    fn get_invocation(&mut self, id: &InvocationId) -> Result<Option<Arc<InvocationRecord>>> {
        Ok(self.invocations.get(id).map(|e| e.record.clone()))
    }

    fn get_status(&mut self, id: &InvocationId) -> Result<Option<StatusRecord>> {
        Ok(self.invocations.get(id).map(|e| e.status.clone()))
    }

    fn put_status(
        &mut self,
        id: &InvocationId,
        status: &StatusRecord,
        now: Timestamp,
    ) -> Result<()> {
        self.wake_status_watch(id);
        let entry = self.entry(id)?;
        let old = std::mem::replace(&mut entry.status, status.clone()).status;
        let new = status.status;
        let record = entry.record.clone();
        let seq = entry.seq;
        let task = entry.task;
        let old_at = std::mem::replace(&mut entry.status_at, now);
        if new.is_final() {
            entry.final_at = Some(now);
        }
        let error_kind = (new == InvocationStatus::Failed)
            .then(|| entry.error.as_ref().map(|e| e.kind.clone()))
            .flatten();
        self.index
            .status_changed(task, &record, seq, old, new, now, error_kind.as_deref());
        if new.is_final() && !self.cancels.is_empty() {
            self.cancels.remove(id);
        }
        if old.is_owned_running() {
            self.owned.remove(&(old_at, seq));
        }
        if new.is_owned_running() {
            self.owned.insert((now, seq), *id);
        }
        if old == InvocationStatus::Registered && new != InvocationStatus::Registered {
            self.unindex_registered(&record, seq);
        }
        if new == InvocationStatus::Registered && old != InvocationStatus::Registered {
            self.index_registered(&record, seq);
        }
        if let Some(key) = &record.concurrency.running_key {
            match (old.is_owned_running(), new.is_owned_running()) {
                (false, true) => *self.running_keys.entry(key.clone()).or_default() += 1,
                (true, false) => {
                    if let Some(n) = self.running_keys.get_mut(key) {
                        *n -= 1;
                        if *n == 0 {
                            self.running_keys.remove(key);
                        }
                    }
                }
                _ => {}
            }
        }
        if old == InvocationStatus::Scheduled && new != InvocationStatus::Scheduled {
            self.scheduled.remove(&(scheduled_at(&record), seq));
        }
        Ok(())
    }

    fn append_history(&mut self, step: HistoryStep<'_>) -> Result<()> {
        let execution_context = match step.execution_context {
            Some(c) => self.context_number(c)?,
            None => NONE,
        };
        let owner = match step.owner {
            Some(o) => self.runner_number(o)?,
            None => NONE,
        };
        let actor = self.runner_number(step.actor)?;
        let entry = self
            .invocations
            .get_mut(step.invocation_id)
            .ok_or_else(|| {
                StoreError::not_found(
                    step.invocation_id,
                    "in the memory store, while recording its history",
                )
            })?;
        entry.history.push(Step {
            timestamp: step.timestamp,
            owner,
            actor,
            execution_context,
            status: step.status,
        });
        Ok(())
    }

    fn get_history(&mut self, id: &InvocationId) -> Result<Vec<HistoryEntry>> {
        let history = &self
            .invocations
            .get(id)
            .ok_or_else(|| StoreError::not_found(id, "in the memory store"))?
            .history;
        let (runners, contexts) = (&self.runner_names, &self.context_names);
        history
            .iter()
            .map(|s| {
                Ok(HistoryEntry {
                    invocation_id: *id,
                    status: s.status,
                    owner: runners.get(s.owner).cloned(),
                    actor: runners.get(s.actor).cloned().ok_or_else(|| {
                        StoreError::backend(
                            "memory",
                            format!("a history step of {id} names no known runner"),
                        )
                    })?,
                    timestamp: s.timestamp,
                    execution_context: contexts.get(s.execution_context).map(|c| c.to_string()),
                })
            })
            .collect()
    }

    fn get_retries(&mut self, id: &InvocationId) -> Result<u32> {
        Ok(self.entry(id)?.retries)
    }

    fn increment_retries(&mut self, id: &InvocationId) -> Result<u32> {
        let e = self.entry(id)?;
        e.retries += 1;
        Ok(e.retries)
    }

    fn put_workflow_data(
        &mut self,
        id: &InvocationId,
        key: &str,
        value: &str,
        if_absent: bool,
    ) -> Result<String> {
        let data = &mut self.entry(id)?.rare_mut().workflow_data;
        if if_absent {
            if let Some(kept) = data.get(key) {
                return Ok(kept.clone());
            }
        }
        data.insert(key.to_string(), value.to_string());
        Ok(value.to_string())
    }

    fn get_workflow_data(&mut self, id: &InvocationId, key: &str) -> Result<Option<String>> {
        Ok(self
            .invocations
            .get(id)
            .and_then(|e| e.rare.as_ref())
            .and_then(|r| r.workflow_data.get(key).cloned()))
    }

    fn add_reuse(&mut self, id: &InvocationId, reuse: &ReuseRecord) -> Result<()> {
        let reuses = &mut self.entry(id)?.rare_mut().reuses;
        reuses.total += 1;
        if reuses.latest.len() >= REUSES_KEPT {
            reuses.latest.remove(0);
        }
        reuses.latest.push(reuse.clone());
        Ok(())
    }

    fn add_run_time(&mut self, id: &InvocationId, micros: u64) -> Result<()> {
        let task = self.entry(id)?.task;
        self.index.add_run_time(task, micros);
        Ok(())
    }

    fn set_result(&mut self, id: &InvocationId, result: String) -> Result<()> {
        self.entry(id)?.result = Some(result);
        Ok(())
    }

    fn set_error(&mut self, id: &InvocationId, error: &TaskError) -> Result<()> {
        self.entry(id)?.error = Some(Box::new(error.clone()));
        Ok(())
    }

    fn get_outcome(&mut self, id: &InvocationId) -> Result<Option<InvocationOutcome>> {
        Ok(self.invocations.get(id).map(|e| InvocationOutcome {
            status: e.status.status,
            result: e.result.clone(),
            error: e.error.as_deref().cloned(),
        }))
    }

    fn list_invocation_ids(&mut self) -> Result<Vec<InvocationId>> {
        Ok(self.invocations.ids().collect())
    }

    fn find_registered(&mut self, registration_key: &str) -> Result<Option<InvocationId>> {
        Ok(self
            .registered_by_key
            .get(registration_key)
            .and_then(|s| s.values().next())
            .copied())
    }

    fn running_key_in_use(&mut self, running_key: &str) -> Result<bool> {
        Ok(self.running_keys.get(running_key).copied().unwrap_or(0) > 0)
    }

    fn park_controlled(&mut self, running_key: &str, id: &InvocationId) -> Result<()> {
        self.controlled
            .entry(running_key.to_string())
            .or_default()
            .push_back(*id);
        Ok(())
    }

    fn take_controlled(&mut self, running_key: &str) -> Result<Vec<InvocationId>> {
        Ok(self
            .controlled
            .remove(running_key)
            .map(Vec::from)
            .unwrap_or_default())
    }

    fn enqueue(&mut self, id: &InvocationId) -> Result<()> {
        self.queue.push_back(*id);
        self.enqueued = true;
        Ok(())
    }

    fn enqueue_front(&mut self, id: &InvocationId) -> Result<()> {
        self.queue.push_front(*id);
        self.enqueued = true;
        Ok(())
    }

    fn dequeue(&mut self, max: usize) -> Result<Vec<InvocationId>> {
        let n = max.min(self.queue.len());
        Ok(self.queue.drain(..n).collect())
    }

    fn queue_len(&mut self) -> Result<usize> {
        Ok(self.queue.len())
    }

    fn add_waits(&mut self, waiter: Option<&InvocationId>, waited: &[InvocationId]) -> Result<()> {
        for id in waited {
            let key = match self.invocations.get(id) {
                Some(e) => (e.record.created_at, e.seq),
                None => continue,
            };
            self.blocking_order.entry(key).or_insert(*id);
            if let Some(w) = waiter {
                let by = self.waited_by.entry(*id).or_default();
                if !by.contains(w) {
                    by.push(*w);
                    self.waiting_on.entry(*w).or_default().push(*id);
                }
            }
        }
        Ok(())
    }

    fn blocking_candidates(&mut self, max: usize) -> Result<Vec<InvocationId>> {
        let mut out = Vec::new();
        for id in self.blocking_order.values() {
            if out.len() >= max {
                break;
            }
            if let Some(e) = self.invocations.get(id) {
                if e.status.status.is_available_for_run() {
                    out.push(*id);
                }
            }
        }
        Ok(out)
    }

    fn release_waited(&mut self, waited: &InvocationId) -> Result<()> {
        if let Some(e) = self.invocations.get(waited) {
            let key = (e.record.created_at, e.seq);
            self.blocking_order.remove(&key);
        }
        self.forget_waits(waited);
        Ok(())
    }

    fn add_edge(
        &mut self,
        caller_invocation_id: &InvocationId,
        caller_call_id: &CallId,
        callee_call_id: &CallId,
    ) -> Result<()> {
        *self
            .edges
            .entry(caller_call_id.clone())
            .or_default()
            .entry(callee_call_id.clone())
            .or_default() += 1;
        self.edges_by_invocation
            .entry(*caller_invocation_id)
            .or_default()
            .push((caller_call_id.clone(), callee_call_id.clone()));
        Ok(())
    }

    fn callees_of(&mut self, call_id: &CallId) -> Result<Vec<CallId>> {
        Ok(self
            .edges
            .get(call_id)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn remove_edges_of(&mut self, caller_invocation_id: &InvocationId) -> Result<()> {
        if let Some(list) = self.edges_by_invocation.remove(caller_invocation_id) {
            for (from, to) in list {
                if let Some(m) = self.edges.get_mut(&from) {
                    if let Some(n) = m.get_mut(&to) {
                        *n -= 1;
                        if *n == 0 {
                            m.remove(&to);
                        }
                    }
                    if m.is_empty() {
                        self.edges.remove(&from);
                    }
                }
            }
        }
        Ok(())
    }

    fn due_scheduled(&mut self, now: Timestamp, max: usize) -> Result<Vec<InvocationId>> {
        Ok(self
            .scheduled
            .iter()
            .take_while(|((at, _), _)| *at <= now)
            .take(max)
            .map(|(_, id)| *id)
            .collect())
    }

    fn final_before(
        &mut self,
        statuses: &[InvocationStatus],
        before: Timestamp,
        max: usize,
    ) -> Result<Vec<InvocationId>> {
        let invocations = &self.invocations;
        Ok(self
            .index
            .final_before(statuses, before, max, |id, (at, seq)| {
                invocations
                    .get(id)
                    .is_some_and(|e| e.seq == seq && e.final_at == Some(at))
            }))
    }

    fn find_active(&mut self, registration_key: &str) -> Result<Option<InvocationId>> {
        Ok(self.index.find_active(registration_key))
    }

    fn find_success_since(
        &mut self,
        registration_key: &str,
        since: Timestamp,
    ) -> Result<Option<InvocationId>> {
        Ok(self.index.find_success_since(registration_key, since))
    }

    fn request_cancel(
        &mut self,
        id: &InvocationId,
        owner: &RunnerId,
        error: &TaskError,
    ) -> Result<()> {
        self.cancels.insert(*id, (owner.clone(), error.clone()));
        Ok(())
    }

    fn cancel_requested(&mut self, id: &InvocationId) -> Result<Option<TaskError>> {
        Ok(self.cancels.get(id).map(|(_, error)| error.clone()))
    }

    fn cancel_requests_of(&mut self, runner: &RunnerId) -> Result<Vec<InvocationId>> {
        let mut ids: Vec<InvocationId> = self
            .cancels
            .iter()
            .filter(|(_, (owner, _))| owner == runner)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn put_runner(&mut self, info: &RunnerInfo, now: Timestamp) -> Result<()> {
        let mut info = info.clone();
        info.heartbeat_at = now;
        self.heartbeats.insert(info.runner_id.clone(), now);
        self.runners.insert(info.runner_id.clone(), info);
        Ok(())
    }

    fn delete_invocation(&mut self, id: &InvocationId) -> Result<()> {
        let Some(e) = self.invocations.remove(id) else {
            return Ok(());
        };
        self.index.deleted(
            e.task,
            &e.record,
            e.seq,
            e.status.status,
            e.error.as_ref().map(|err| err.kind.as_str()),
        );
        self.cancels.remove(id);
        self.forget_waits(id);
        self.owned.remove(&(e.status_at, e.seq));
        self.scheduled.remove(&(scheduled_at(&e.record), e.seq));
        self.unindex_registered(&e.record, e.seq);
        self.blocking_order.remove(&(e.record.created_at, e.seq));
        self.remove_edges_of(id)?;
        if let Some(waiters) = e.waiters {
            waiters.release();
        }
        self.wake_status_watch(id);
        Ok(())
    }

    fn purge(&mut self) -> Result<()> {
        for list in self.status_watch.values() {
            list.iter().for_each(|n| n.notify_one());
        }
        for entry in self.invocations.slots.iter_mut().flatten() {
            if let Some(waiters) = entry.waiters.take() {
                waiters.release();
            }
        }
        *self = MemState {
            app_id: std::mem::take(&mut self.app_id),
            ..MemState::default()
        };
        Ok(())
    }

    fn put_trigger(&mut self, trigger: &TriggerRecord) -> Result<()> {
        self.triggers.insert(trigger.name.clone(), trigger.clone());
        Ok(())
    }

    fn put_heartbeat(&mut self, runner_id: &RunnerId, now: Timestamp) -> Result<()> {
        self.heartbeats.insert(runner_id.clone(), now);
        Ok(())
    }

    fn get_heartbeat(&mut self, runner_id: &RunnerId) -> Result<Option<Timestamp>> {
        Ok(self.heartbeats.get(runner_id).copied())
    }

    fn remove_heartbeat(&mut self, runner_id: &RunnerId) -> Result<()> {
        self.heartbeats.remove(runner_id);
        self.runners.remove(runner_id);
        Ok(())
    }

    fn owned_claims_before(&mut self, before: Timestamp, max: usize) -> Result<Vec<OwnedClaim>> {
        Ok(self
            .owned
            .iter()
            .take_while(|((at, _), _)| *at < before)
            .take(max)
            .filter_map(|((at, _), id)| {
                self.invocations.get(id).map(|e| OwnedClaim {
                    invocation_id: *id,
                    status: e.status.clone(),
                    since: *at,
                })
            })
            .collect())
    }

    fn try_lease(
        &mut self,
        name: &str,
        holder: &RunnerId,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<bool> {
        let free = match self.leases.get(name) {
            None => true,
            Some((h, expires)) => h == holder || *expires <= now,
        };
        if free {
            self.leases
                .insert(name.to_string(), (holder.clone(), now + ttl));
        }
        Ok(free)
    }

    fn on_final(&mut self, id: &InvocationId) {
        self.notify_final(id);
    }
}
