//! Local `result()` waiters by invocation id, for the backends that learn
//! which invocations became final after their sections: SQLite after each
//! commit, Redis from its scripts' replies and messages.

use std::sync::Arc;

use parking_lot::Mutex;
use pynenc_model::InvocationId;
use rustc_hash::FxHashMap;

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

    /// How many invocations have waiters.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether no invocation has a waiter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}
