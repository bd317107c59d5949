//! The in-memory backend: every component in one process, behind one lock.
//!
//! Each atomic step takes the store's mutex once, so steps never interleave.
//! Runners are woken by a notification when work is queued, and `result()`
//! waiters when an invocation becomes final: nothing polls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use tokio::sync::Notify;

use crate::exceptions::{PynencError, Result, TaskError};
use crate::invocation::InvocationRecord;
use crate::state_backend::{HistoryEntry, HistoryStep, InvocationOutcome};
use crate::status::{InvocationStatus, StatusRecord};
use crate::store::{AtomicStore, StoreTxn, WorkSignal};

/// A process-wide home for memory stores, one per `app_id`: apps built on
/// the same `MemoryBackend` share data only with apps of the same id.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    stores: Arc<Mutex<HashMap<String, Arc<MemStore>>>>,
}

impl MemoryBackend {
    /// A new, empty memory backend.
    pub fn new() -> Self {
        MemoryBackend::default()
    }

    /// The store of `app_id` (created on first use).
    pub fn store(&self, app_id: &str) -> Arc<MemStore> {
        self.stores
            .lock()
            .entry(app_id.to_string())
            .or_insert_with(|| Arc::new(MemStore::default()))
            .clone()
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryBackend")
    }
}

/// Ordered-index key: a time and the invocation's insertion number (cheap to
/// compare, unique).
type OrderKey = (i64, u64);

/// One history step, with runner ids and contexts interned (a few runners
/// write millions of steps).
struct Step {
    status: InvocationStatus,
    timestamp_us: i64,
    owner: Option<Arc<str>>,
    actor: Arc<str>,
    execution_context: Option<Arc<str>>,
}

struct Entry {
    /// The invocation id, shared by the indexes that name it.
    id: Arc<str>,
    seq: u64,
    record: Arc<InvocationRecord>,
    status: StatusRecord,
    /// Inline up to the four steps of a plain run (registered, pending,
    /// running, final): no allocation of its own for most invocations.
    history: SmallVec<[Step; 4]>,
    retries: u32,
    result: Option<String>,
    error: Option<TaskError>,
    final_at: Option<i64>,
    status_at: i64,
    /// The `result()` waits on this invocation, released when it becomes final.
    waiters: Option<Waiters>,
}

struct GroupWait {
    remaining: AtomicUsize,
    done: Notify,
}

/// The waits on one invocation: almost always one.
enum Waiters {
    One(Arc<GroupWait>),
    Many(Vec<Arc<GroupWait>>),
}

impl Waiters {
    fn add(&mut self, w: Arc<GroupWait>) {
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

/// An invocation id as a map key: its 32 characters inline, so a lookup
/// compares them without following a pointer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct IdKey([u8; ID_LEN]);

/// The length of the ids this store makes (a UUID's 32 hexadecimal digits).
const ID_LEN: usize = 32;

impl IdKey {
    /// The key of `id`; `None` for a string that cannot be an id of this store.
    fn of(id: &str) -> Option<IdKey> {
        <[u8; ID_LEN]>::try_from(id.as_bytes()).ok().map(IdKey)
    }
}

/// The invocations: entries in a slab (in creation order, reused after
/// deletes, never moved when the index grows) and an index from id to slot.
#[derive(Default)]
struct Invocations {
    index: FxHashMap<IdKey, u32>,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
}

impl Invocations {
    fn get(&self, id: &str) -> Option<&Entry> {
        let slot = *self.index.get(&IdKey::of(id)?)?;
        self.slots.get(slot as usize)?.as_ref()
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        let slot = *self.index.get(&IdKey::of(id)?)?;
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Stores a new entry (its id must be new and [`ID_LEN`] characters long).
    fn insert(&mut self, entry: Entry) -> Result<()> {
        let key = IdKey::of(&entry.id).ok_or_else(|| {
            PynencError::backend(format!(
                "memory store: invocation id '{}' is not {ID_LEN} characters long",
                entry.id
            ))
        })?;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len()).map_err(|_| {
                    PynencError::backend("memory store: more than 4,294,967,295 invocations")
                })?;
                self.slots.push(Some(entry));
                slot
            }
        };
        if let Some(old) = self.index.insert(key, slot) {
            // an id made twice: keep the first entry, as if nothing happened
            self.index.insert(key, old);
            self.slots[slot as usize] = None;
            self.free.push(slot);
            return Err(PynencError::backend(
                "memory store: an invocation with this id already exists",
            ));
        }
        Ok(())
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let slot = self.index.remove(&IdKey::of(id)?)?;
        let entry = self.slots.get_mut(slot as usize)?.take();
        self.free.push(slot);
        entry
    }

    fn ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.slots.iter().flatten().map(|e| &e.id)
    }
}

#[derive(Default)]
struct MemState {
    next_seq: u64,
    invocations: Invocations,
    queue: VecDeque<String>,
    registered_by_key: FxHashMap<String, BTreeMap<OrderKey, Arc<str>>>,
    running_keys: FxHashMap<String, usize>,
    controlled: FxHashMap<String, VecDeque<String>>,
    blocking_order: BTreeMap<OrderKey, Arc<str>>,
    edges: FxHashMap<String, FxHashMap<String, usize>>,
    edges_by_invocation: FxHashMap<String, Vec<(String, String)>>,
    scheduled: BTreeMap<OrderKey, Arc<str>>,
    finals: BTreeMap<OrderKey, Arc<str>>,
    owned: BTreeMap<OrderKey, Arc<str>>,
    heartbeats: HashMap<String, i64>,
    leases: HashMap<String, (String, i64)>,
    names: rustc_hash::FxHashSet<Arc<str>>,
    /// The names interned last, one per field of a step (owner, actor,
    /// context): steps come in runs of the same runner.
    last_names: [Option<Arc<str>>; 3],
    enqueued: bool,
}

/// The memory store of one app.
#[derive(Default)]
pub struct MemStore {
    state: Mutex<MemState>,
    work: WorkSignal,
}

impl MemState {
    fn intern(&mut self, field: usize, s: &str) -> Arc<str> {
        if let Some(last) = &self.last_names[field] {
            if &**last == s {
                return last.clone();
            }
        }
        let a = match self.names.get(s) {
            Some(a) => a.clone(),
            None => {
                let a: Arc<str> = Arc::from(s);
                self.names.insert(a.clone());
                a
            }
        };
        self.last_names[field] = Some(a.clone());
        a
    }

    fn entry(&mut self, id: &str) -> Result<&mut Entry> {
        self.invocations
            .get_mut(id)
            .ok_or_else(|| PynencError::InvocationNotFound {
                invocation_id: id.to_string(),
                message: "in the memory store".into(),
            })
    }

    /// Lists a `REGISTERED` invocation under its registration key.
    fn index_registered(&mut self, record: &InvocationRecord, seq: u64, id: &Arc<str>) {
        if let Some(key) = &record.concurrency.registration_key {
            self.registered_by_key
                .entry(key.clone())
                .or_default()
                .insert((record.created_at_us, seq), id.clone());
        }
    }

    /// Takes an invocation off its registration key's list.
    fn unindex_registered(&mut self, record: &InvocationRecord, seq: u64) {
        if let Some(key) = &record.concurrency.registration_key {
            if let Some(set) = self.registered_by_key.get_mut(key) {
                set.remove(&(record.created_at_us, seq));
                if set.is_empty() {
                    self.registered_by_key.remove(key);
                }
            }
        }
    }

    fn notify_final(&mut self, id: &str) {
        if let Some(waiters) = self.invocations.get_mut(id).and_then(|e| e.waiters.take()) {
            waiters.release();
        }
    }
}

impl StoreTxn for MemState {
    fn insert_invocation(
        &mut self,
        record: &Arc<InvocationRecord>,
        status: &StatusRecord,
    ) -> Result<()> {
        let id: Arc<str> = Arc::from(record.invocation_id.as_str());
        let seq = self.next_seq;
        self.invocations.insert(Entry {
            id: id.clone(),
            seq,
            record: record.clone(),
            status: status.clone(),
            history: SmallVec::new(),
            retries: 0,
            result: None,
            error: None,
            final_at: None,
            status_at: record.created_at_us,
            waiters: None,
        })?;
        self.next_seq += 1;
        if status.status == InvocationStatus::Scheduled {
            self.scheduled
                .insert((record.scheduled_at_us.unwrap_or(0), seq), id.clone());
        }
        if status.status == InvocationStatus::Registered {
            self.index_registered(record, seq, &id);
        }
        Ok(())
    }

    fn owner_id(&mut self, runner_id: &str) -> Arc<str> {
        self.intern(0, runner_id)
    }

    fn get_invocation(&mut self, invocation_id: &str) -> Result<Option<Arc<InvocationRecord>>> {
        Ok(self
            .invocations
            .get(invocation_id)
            .map(|e| e.record.clone()))
    }

    fn get_status(&mut self, invocation_id: &str) -> Result<Option<StatusRecord>> {
        Ok(self
            .invocations
            .get(invocation_id)
            .map(|e| e.status.clone()))
    }

    fn put_status(
        &mut self,
        invocation_id: &str,
        status: &StatusRecord,
        now_us: i64,
    ) -> Result<()> {
        let entry = self.entry(invocation_id)?;
        let id = entry.id.clone();
        let old = std::mem::replace(&mut entry.status, status.clone()).status;
        let new = status.status;
        let record = entry.record.clone();
        let seq = entry.seq;
        let old_at = std::mem::replace(&mut entry.status_at, now_us);
        if new.is_final() {
            entry.final_at = Some(now_us);
        }
        if old.is_owned_running() {
            self.owned.remove(&(old_at, seq));
        }
        if new.is_owned_running() {
            self.owned.insert((now_us, seq), id.clone());
        }
        if old == InvocationStatus::Registered && new != InvocationStatus::Registered {
            self.unindex_registered(&record, seq);
        }
        if new == InvocationStatus::Registered && old != InvocationStatus::Registered {
            self.index_registered(&record, seq, &id);
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
            self.scheduled
                .remove(&(record.scheduled_at_us.unwrap_or(0), seq));
        }
        if new.is_final() {
            self.finals.insert((now_us, seq), id);
        }
        Ok(())
    }

    fn append_history(&mut self, entry: HistoryStep<'_>) -> Result<()> {
        let step = Step {
            status: entry.status,
            timestamp_us: entry.timestamp_us,
            owner: entry.owner.map(|o| self.intern(0, o)),
            actor: self.intern(1, entry.actor),
            execution_context: entry.execution_context.map(|c| self.intern(2, c)),
        };
        match self.invocations.get_mut(entry.invocation_id) {
            Some(e) => {
                e.history.push(step);
                Ok(())
            }
            None => Err(PynencError::InvocationNotFound {
                invocation_id: entry.invocation_id.to_string(),
                message: "in the memory store, while recording its history".into(),
            }),
        }
    }

    fn get_history(&mut self, invocation_id: &str) -> Result<Vec<HistoryEntry>> {
        Ok(self
            .entry(invocation_id)?
            .history
            .iter()
            .map(|s| HistoryEntry {
                invocation_id: invocation_id.to_string(),
                status: s.status,
                owner: s.owner.as_deref().map(str::to_string),
                actor: s.actor.to_string(),
                timestamp_us: s.timestamp_us,
                execution_context: s.execution_context.as_deref().map(str::to_string),
            })
            .collect())
    }

    fn get_retries(&mut self, invocation_id: &str) -> Result<u32> {
        Ok(self.entry(invocation_id)?.retries)
    }

    fn increment_retries(&mut self, invocation_id: &str) -> Result<u32> {
        let e = self.entry(invocation_id)?;
        e.retries += 1;
        Ok(e.retries)
    }

    fn set_result(&mut self, invocation_id: &str, result: String) -> Result<()> {
        self.entry(invocation_id)?.result = Some(result);
        Ok(())
    }

    fn set_error(&mut self, invocation_id: &str, error: &TaskError) -> Result<()> {
        self.entry(invocation_id)?.error = Some(error.clone());
        Ok(())
    }

    fn get_outcome(&mut self, invocation_id: &str) -> Result<Option<InvocationOutcome>> {
        Ok(self
            .invocations
            .get(invocation_id)
            .map(|e| InvocationOutcome {
                status: e.status.status,
                result: e.result.clone(),
                error: e.error.clone(),
            }))
    }

    fn list_invocation_ids(&mut self) -> Result<Vec<String>> {
        Ok(self.invocations.ids().map(|k| k.to_string()).collect())
    }

    fn find_registered(&mut self, registration_key: &str) -> Result<Option<String>> {
        Ok(self
            .registered_by_key
            .get(registration_key)
            .and_then(|s| s.values().next())
            .map(|id| id.to_string()))
    }

    fn running_key_in_use(&mut self, running_key: &str) -> Result<bool> {
        Ok(self.running_keys.get(running_key).copied().unwrap_or(0) > 0)
    }

    fn park_controlled(&mut self, running_key: &str, invocation_id: &str) -> Result<()> {
        self.controlled
            .entry(running_key.to_string())
            .or_default()
            .push_back(invocation_id.to_string());
        Ok(())
    }

    fn take_controlled(&mut self, running_key: &str) -> Result<Vec<String>> {
        Ok(self
            .controlled
            .remove(running_key)
            .map(Vec::from)
            .unwrap_or_default())
    }

    fn enqueue(&mut self, invocation_id: &str) -> Result<()> {
        self.queue.push_back(invocation_id.to_string());
        self.enqueued = true;
        Ok(())
    }

    fn enqueue_front(&mut self, invocation_id: &str) -> Result<()> {
        self.queue.push_front(invocation_id.to_string());
        self.enqueued = true;
        Ok(())
    }

    fn dequeue(&mut self, max: usize) -> Result<Vec<String>> {
        let n = max.min(self.queue.len());
        Ok(self.queue.drain(..n).collect())
    }

    fn queue_len(&mut self) -> Result<usize> {
        Ok(self.queue.len())
    }

    fn add_waits(&mut self, _waiter: Option<&str>, waited: &[String]) -> Result<()> {
        for id in waited {
            let (key, id) = match self.invocations.get(id.as_str()) {
                Some(e) => ((e.record.created_at_us, e.seq), e.id.clone()),
                None => continue,
            };
            self.blocking_order.entry(key).or_insert(id);
        }
        Ok(())
    }

    fn blocking_candidates(&mut self, max: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for id in self.blocking_order.values() {
            if out.len() >= max {
                break;
            }
            if let Some(e) = self.invocations.get(id) {
                if e.status.status.is_available_for_run() {
                    out.push(id.to_string());
                }
            }
        }
        Ok(out)
    }

    fn release_waited(&mut self, waited: &str) -> Result<()> {
        if let Some(e) = self.invocations.get(waited) {
            self.blocking_order.remove(&(e.record.created_at_us, e.seq));
        }
        Ok(())
    }

    fn add_edge(
        &mut self,
        caller_invocation_id: &str,
        caller_call_id: &str,
        callee_call_id: &str,
    ) -> Result<()> {
        *self
            .edges
            .entry(caller_call_id.to_string())
            .or_default()
            .entry(callee_call_id.to_string())
            .or_default() += 1;
        self.edges_by_invocation
            .entry(caller_invocation_id.to_string())
            .or_default()
            .push((caller_call_id.to_string(), callee_call_id.to_string()));
        Ok(())
    }

    fn callees_of(&mut self, call_id: &str) -> Result<Vec<String>> {
        Ok(self
            .edges
            .get(call_id)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn remove_edges_of(&mut self, caller_invocation_id: &str) -> Result<()> {
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

    fn due_scheduled(&mut self, now_us: i64, max: usize) -> Result<Vec<String>> {
        Ok(self
            .scheduled
            .iter()
            .take_while(|((at, _), _)| *at <= now_us)
            .take(max)
            .map(|(_, id)| id.to_string())
            .collect())
    }

    fn final_before(&mut self, before_us: i64, max: usize) -> Result<Vec<String>> {
        Ok(self
            .finals
            .iter()
            .take_while(|((at, _), _)| *at < before_us)
            .take(max)
            .map(|(_, id)| id.to_string())
            .collect())
    }

    fn delete_invocation(&mut self, invocation_id: &str) -> Result<()> {
        let Some(e) = self.invocations.remove(invocation_id) else {
            return Ok(());
        };
        let id = invocation_id.to_string();
        if let Some(at) = e.final_at {
            self.finals.remove(&(at, e.seq));
        }
        self.owned.remove(&(e.status_at, e.seq));
        self.scheduled
            .remove(&(e.record.scheduled_at_us.unwrap_or(0), e.seq));
        self.unindex_registered(&e.record, e.seq);
        self.blocking_order.remove(&(e.record.created_at_us, e.seq));
        self.remove_edges_of(&id)?;
        if let Some(waiters) = e.waiters {
            waiters.release();
        }
        Ok(())
    }

    fn purge(&mut self) -> Result<()> {
        for entry in self.invocations.slots.iter_mut().flatten() {
            if let Some(waiters) = entry.waiters.take() {
                waiters.release();
            }
        }
        *self = MemState::default();
        Ok(())
    }

    fn put_heartbeat(&mut self, runner_id: &str, now_us: i64) -> Result<()> {
        self.heartbeats.insert(runner_id.to_string(), now_us);
        Ok(())
    }

    fn get_heartbeat(&mut self, runner_id: &str) -> Result<Option<i64>> {
        Ok(self.heartbeats.get(runner_id).copied())
    }

    fn remove_heartbeat(&mut self, runner_id: &str) -> Result<()> {
        self.heartbeats.remove(runner_id);
        Ok(())
    }

    fn owned_claims_before(
        &mut self,
        before_us: i64,
        max: usize,
    ) -> Result<Vec<(String, StatusRecord, i64)>> {
        Ok(self
            .owned
            .iter()
            .take_while(|((at, _), _)| *at < before_us)
            .take(max)
            .filter_map(|((at, _), id)| {
                self.invocations
                    .get(id)
                    .map(|e| (id.to_string(), e.status.clone(), *at))
            })
            .collect())
    }

    fn try_lease(&mut self, name: &str, holder: &str, now_us: i64, ttl_us: i64) -> Result<bool> {
        let free = match self.leases.get(name) {
            None => true,
            Some((h, expires)) => h == holder || *expires <= now_us,
        };
        if free {
            self.leases
                .insert(name.to_string(), (holder.to_string(), now_us + ttl_us));
        }
        Ok(free)
    }

    fn on_final(&mut self, invocation_id: &str) {
        self.notify_final(invocation_id);
    }
}

impl MemStore {
    /// Runs `f` under the lock; wakes runners if it queued work.
    fn locked<R>(&self, f: impl FnOnce(&mut dyn StoreTxn) -> Result<R>) -> Result<R> {
        let (out, enqueued) = {
            let mut state = self.state.lock();
            state.enqueued = false;
            let out = f(&mut *state);
            (out, std::mem::take(&mut state.enqueued))
        };
        if enqueued {
            self.work.bump();
        }
        out
    }
}

impl AtomicStore for MemStore {
    fn batching_pays(&self) -> bool {
        false
    }

    fn atomic<R, F>(&self, f: F) -> impl Future<Output = Result<R>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn StoreTxn) -> Result<R> + Send + 'static,
    {
        std::future::ready(self.locked(f))
    }

    fn atomic_inline<A, R, F>(&self, input: A, f: F) -> std::result::Result<Result<R>, A>
    where
        F: FnOnce(&mut dyn StoreTxn, A) -> Result<R>,
    {
        Ok(self.locked(|t| f(t, input)))
    }

    fn work_epoch(&self) -> u64 {
        self.work.epoch()
    }

    async fn wait_for_work(&self, epoch: u64, timeout: Duration) {
        self.work.wait(epoch, timeout).await
    }

    fn wait_final(&self, ids: &[String]) -> impl Future<Output = Result<()>> + Send {
        let wait = {
            let mut state = self.state.lock();
            let mut open = 0;
            let mut missing = None;
            for id in ids {
                match state.invocations.get(id) {
                    Some(e) if e.status.status.is_final() => {}
                    Some(_) => open += 1,
                    None => {
                        missing = Some(id.clone());
                        break;
                    }
                }
            }
            match missing {
                Some(id) => Err(PynencError::InvocationNotFound {
                    invocation_id: id,
                    message: "while waiting for its result".into(),
                }),
                None if open == 0 => Ok(None),
                None => {
                    let w = Arc::new(GroupWait {
                        remaining: AtomicUsize::new(open),
                        done: Notify::new(),
                    });
                    // the same section: the open invocations found above are still open
                    for id in ids {
                        if let Some(e) = state.invocations.get_mut(id) {
                            if !e.status.status.is_final() {
                                match &mut e.waiters {
                                    Some(waiters) => waiters.add(w.clone()),
                                    None => e.waiters = Some(Waiters::One(w.clone())),
                                }
                            }
                        }
                    }
                    Ok(Some(w))
                }
            }
        };
        async move {
            if let Some(w) = wait? {
                while w.remaining.load(Ordering::Acquire) > 0 {
                    w.done.notified().await;
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arguments::Arguments;
    use crate::call::Call;
    use crate::orchestrator::ConcurrencySpec;
    use futures::FutureExt;

    fn record(id: &str) -> Arc<InvocationRecord> {
        Arc::new(InvocationRecord {
            invocation_id: id.to_string(),
            call: Call::new("tests::t", Arguments::new()),
            parent_invocation_id: None,
            created_at_us: 1,
            scheduled_at_us: None,
            concurrency: ConcurrencySpec::default(),
        })
    }

    fn registered() -> StatusRecord {
        StatusRecord::initial(InvocationStatus::Registered).unwrap()
    }

    #[test]
    fn ids_of_another_length_are_refused_and_never_found() {
        let mut state = MemState::default();
        let err = state
            .insert_invocation(&record("short"), &registered())
            .unwrap_err();
        assert!(
            err.to_string().contains("'short' is not 32 characters"),
            "{err}"
        );
        assert!(state.get_status("short").unwrap().is_none());
        assert!(state.list_invocation_ids().unwrap().is_empty());
    }

    #[test]
    fn a_second_invocation_with_the_same_id_is_refused_and_the_first_stays() {
        let mut state = MemState::default();
        let id = state.new_invocation_id();
        state
            .insert_invocation(&record(&id), &registered())
            .unwrap();
        state
            .put_status(
                &id,
                &StatusRecord {
                    status: InvocationStatus::Pending,
                    owner: Some(Arc::from("r")),
                },
                2,
            )
            .unwrap();
        let err = state
            .insert_invocation(&record(&id), &registered())
            .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        let status = state.get_status(&id).unwrap().unwrap();
        assert_eq!(status.status, InvocationStatus::Pending);
        assert_eq!(state.list_invocation_ids().unwrap(), vec![id]);
    }

    #[test]
    fn deleted_slots_are_reused_without_mixing_invocations() {
        let mut state = MemState::default();
        let first = state.new_invocation_id();
        let second = state.new_invocation_id();
        state
            .insert_invocation(&record(&first), &registered())
            .unwrap();
        state.delete_invocation(&first).unwrap();
        state
            .insert_invocation(&record(&second), &registered())
            .unwrap();
        assert!(state.get_invocation(&first).unwrap().is_none());
        let found = state.get_invocation(&second).unwrap().unwrap();
        assert_eq!(found.invocation_id, second);
        assert_eq!(
            state.invocations.slots.len(),
            1,
            "the freed slot was reused"
        );
    }

    fn finish_now(store: &MemStore, id: &str) {
        let mut state = store.state.lock();
        for (status, owner) in [
            (InvocationStatus::Pending, Some(Arc::from("r"))),
            (InvocationStatus::Running, Some(Arc::from("r"))),
            (InvocationStatus::Success, None),
        ] {
            state
                .put_status(id, &StatusRecord { status, owner }, 3)
                .unwrap();
        }
        state.on_final(id);
    }

    #[tokio::test]
    async fn waits_end_when_their_invocations_end_or_are_deleted_or_purged() {
        let store = MemStore::default();
        let ids: Vec<String> = {
            let mut state = store.state.lock();
            (0..3)
                .map(|_| {
                    let id = state.new_invocation_id();
                    state
                        .insert_invocation(&record(&id), &registered())
                        .unwrap();
                    id
                })
                .collect()
        };
        let pending = |w: &mut futures::future::BoxFuture<'_, Result<()>>| {
            w.as_mut().now_or_never().is_none()
        };
        // a wait on the first; one on all three, naming the third twice
        let mut first = store.wait_final(&ids[..1]).boxed();
        let named = [
            ids[0].clone(),
            ids[1].clone(),
            ids[2].clone(),
            ids[2].clone(),
        ];
        let mut all = store.wait_final(&named).boxed();
        assert!(pending(&mut first) && pending(&mut all));
        finish_now(&store, &ids[0]);
        assert!(matches!(first.as_mut().now_or_never(), Some(Ok(()))));
        assert!(pending(&mut all), "two of three still open");
        // a final invocation needs no wait
        assert!(matches!(
            store.wait_final(&ids[..1]).now_or_never(),
            Some(Ok(()))
        ));
        store.state.lock().delete_invocation(&ids[1]).unwrap();
        assert!(pending(&mut all), "one still open");
        store.state.lock().purge().unwrap();
        assert!(matches!(all.as_mut().now_or_never(), Some(Ok(()))));
        // an unknown invocation is an error naming it
        let err = store.wait_final(&ids[..1]).await.unwrap_err();
        assert!(err.to_string().contains(&ids[0]), "{err}");
    }
}
