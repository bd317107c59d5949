//! Local `result()` waiters by invocation id, for the backends that learn
//! which invocations became final after their sections: SQLite after each
//! commit (and from its watch of other processes' finals), Redis from its
//! scripts' replies and messages, PostgreSQL from its commits and
//! notifications.

use std::sync::Arc;

use parking_lot::Mutex;
use pynenc_model::InvocationId;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// A wait for a group of invocations to become final: the ids not known to
/// be final yet, and the notification that wakes the waiter once none is
/// left (or when it must look again, after a purge or a lost connection).
pub struct GroupWait {
    pending: Mutex<FxHashSet<InvocationId>>,
    done: Notify,
}

impl GroupWait {
    /// A wait for `ids`, none of them known final yet.
    pub fn new(ids: &[InvocationId]) -> GroupWait {
        GroupWait {
            pending: Mutex::new(ids.iter().copied().collect()),
            done: Notify::new(),
        }
    }

    /// `id` is final: the waiter is woken when nothing is left.
    pub fn mark(&self, id: &InvocationId) {
        let mut pending = self.pending.lock();
        if pending.remove(id) && pending.is_empty() {
            self.done.notify_one();
        }
    }

    /// The ids not known to be final yet.
    pub fn pending(&self) -> Vec<InvocationId> {
        self.pending.lock().iter().copied().collect()
    }

    /// How many ids are not known to be final yet.
    pub fn left(&self) -> usize {
        self.pending.lock().len()
    }

    /// Wakes the waiter to look again, whatever is left.
    pub fn wake(&self) {
        self.done.notify_one();
    }

    /// Resolves once the waiter is woken: nothing is left, or it must look
    /// again (a wake-up given before this is called is kept for it).
    pub fn woken(&self) -> Notified<'_> {
        self.done.notified()
    }
}

impl FinalWaiters<GroupWait> {
    /// `id` became final: each of its waits is told. Whether it had any.
    pub fn mark_final(&self, id: &InvocationId) -> bool {
        let waits = self.take(id);
        for wait in &waits {
            wait.mark(id);
        }
        !waits.is_empty()
    }

    /// Everything may have changed (a purge, missed messages): every wait
    /// looks again.
    pub fn wake_all(&self) {
        for wait in self.take_all() {
            wait.wake();
        }
    }
}

impl FinalWaiters<Notify> {
    /// Wakes each waiter of `id`.
    pub fn notify(&self, id: &InvocationId) {
        for waiter in self.take(id) {
            waiter.notify_one();
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        for waiter in self.take_all() {
            waiter.notify_one();
        }
    }
}

/// The waits of this process, by the invocation id they wait on; `W` is
/// whatever a backend wakes (a notification, a group of ids).
pub struct FinalWaiters<W> {
    map: Mutex<FxHashMap<InvocationId, Vec<Arc<W>>>>,
}

impl<W> Default for FinalWaiters<W> {
    fn default() -> Self {
        FinalWaiters {
            map: Mutex::new(FxHashMap::default()),
        }
    }
}

impl<W> FinalWaiters<W> {
    /// Adds `waiter` to each of `ids`.
    pub fn add<'a>(&self, ids: impl IntoIterator<Item = &'a InvocationId>, waiter: &Arc<W>) {
        let mut map = self.map.lock();
        for id in ids {
            map.entry(*id).or_default().push(waiter.clone());
        }
    }

    /// Takes `waiter` off each of `ids` (a wait that ended or was dropped).
    pub fn remove<'a>(&self, ids: impl IntoIterator<Item = &'a InvocationId>, waiter: &Arc<W>) {
        let mut map = self.map.lock();
        for id in ids {
            if let Some(list) = map.get_mut(id) {
                list.retain(|w| !Arc::ptr_eq(w, waiter));
                if list.is_empty() {
                    map.remove(id);
                }
            }
        }
    }

    /// Takes every waiter of `id` (it became final).
    pub fn take(&self, id: &InvocationId) -> Vec<Arc<W>> {
        self.map.lock().remove(id).unwrap_or_default()
    }

    /// Takes every waiter (everything was purged).
    pub fn take_all(&self) -> Vec<Arc<W>> {
        self.map.lock().drain().flat_map(|(_, list)| list).collect()
    }

    /// Whether `id` has a waiter.
    pub fn is_waited(&self, id: &InvocationId) -> bool {
        self.map.lock().contains_key(id)
    }

    /// How many invocations have waiters.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether no invocation has a waiter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A waiter registered on ids in one of `owner`'s lists, taken off them
/// when it is dropped (its wait ended, failed or was given up): register
/// before reading what is waited for, so that a change in between wakes it.
pub struct Registered<O, W> {
    owner: Arc<O>,
    list: fn(&O) -> &FinalWaiters<W>,
    ids: Vec<InvocationId>,
    waiter: Arc<W>,
}

impl<O, W> Registered<O, W> {
    /// Registers `waiter` on each of `ids` in the list `list` of `owner`.
    pub fn new(
        owner: &Arc<O>,
        list: fn(&O) -> &FinalWaiters<W>,
        ids: &[InvocationId],
        waiter: W,
    ) -> Registered<O, W> {
        let waiter = Arc::new(waiter);
        list(owner).add(ids, &waiter);
        Registered {
            owner: owner.clone(),
            list,
            ids: ids.to_vec(),
            waiter,
        }
    }

    /// The registered waiter.
    pub fn waiter(&self) -> &W {
        &self.waiter
    }

    /// Registers the waiter again, on `ids` alone (a wake-up of every
    /// waiter took it off them all; the others are done).
    pub fn renew(&mut self, ids: &[InvocationId]) {
        let list = (self.list)(&self.owner);
        list.remove(ids, &self.waiter);
        list.add(ids, &self.waiter);
        self.ids = ids.to_vec();
    }
}

impl<O, W> Drop for Registered<O, W> {
    fn drop(&mut self) {
        (self.list)(&self.owner).remove(&self.ids, &self.waiter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_added_taken_and_removed_per_id() {
        let waiters = FinalWaiters::<u8>::default();
        let (a, b) = (Arc::new(1), Arc::new(2));
        let (x, y, z) = (
            InvocationId::from_u128(1),
            InvocationId::from_u128(2),
            InvocationId::from_u128(3),
        );
        waiters.add([&x, &y], &a);
        waiters.add([&y], &b);
        assert_eq!(waiters.len(), 2);
        let taken: Vec<u8> = waiters.take(&y).iter().map(|w| **w).collect();
        assert_eq!(taken, vec![1, 2]);
        assert!(waiters.take(&y).is_empty());
        waiters.remove([&x], &b);
        assert_eq!(waiters.len(), 1, "only its own waiter leaves");
        waiters.remove([&x, &y], &a);
        assert!(waiters.is_empty());
        waiters.add([&x], &a);
        waiters.add([&z], &b);
        assert_eq!(waiters.take_all().len(), 2);
        assert_eq!(waiters.len(), 0);
    }

    #[tokio::test]
    async fn a_group_wait_is_woken_once_every_id_is_final() {
        let (x, y) = (InvocationId::from_u128(1), InvocationId::from_u128(2));
        let waiters = FinalWaiters::<GroupWait>::default();
        let wait = Arc::new(GroupWait::new(&[x, y]));
        waiters.add([&x, &y], &wait);
        assert!(waiters.mark_final(&x));
        assert_eq!(wait.pending(), vec![y]);
        let woken = tokio::time::timeout(std::time::Duration::from_millis(20), wait.woken());
        assert!(woken.await.is_err(), "woken with an id left");
        assert!(!waiters.mark_final(&x), "told once");
        waiters.mark_final(&y);
        assert_eq!(wait.left(), 0);
        // the wake-up given before the waiter listens is kept for it
        tokio::time::timeout(std::time::Duration::from_secs(5), wait.woken())
            .await
            .expect("woken once nothing is left");
        assert!(waiters.is_empty());
    }

    #[test]
    fn a_registered_waiter_leaves_its_ids_when_dropped() {
        struct Owner {
            waiters: FinalWaiters<u8>,
        }
        let owner = Arc::new(Owner {
            waiters: FinalWaiters::default(),
        });
        let (x, y) = (InvocationId::from_u128(1), InvocationId::from_u128(2));
        let mut reg = Registered::new(&owner, |o| &o.waiters, &[x, y], 7);
        assert_eq!(*reg.waiter(), 7);
        assert_eq!(owner.waiters.len(), 2);
        // everything taken (a purge), then registered again on `y` alone
        assert_eq!(owner.waiters.take_all().len(), 2);
        reg.renew(&[y]);
        assert_eq!(owner.waiters.len(), 1);
        assert_eq!(owner.waiters.take(&y).len(), 1);
        reg.renew(&[y]);
        drop(reg);
        assert!(owner.waiters.is_empty(), "dropped, it left `y`");
    }

    #[tokio::test]
    async fn waking_all_reaches_every_wait_with_ids_left() {
        let x = InvocationId::from_u128(1);
        let waiters = FinalWaiters::<GroupWait>::default();
        let wait = Arc::new(GroupWait::new(&[x]));
        waiters.add([&x], &wait);
        waiters.wake_all();
        tokio::time::timeout(std::time::Duration::from_secs(5), wait.woken())
            .await
            .expect("woken to look again");
        assert_eq!(wait.left(), 1, "the id is still pending");
        assert!(waiters.is_empty());
    }
}
