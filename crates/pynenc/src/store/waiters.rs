//! Local `result()` waiters by invocation id, for the backends that learn
//! which invocations became final after their sections: SQLite after each
//! commit, Redis from its scripts' replies and messages.

use std::sync::Arc;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

/// The waits of this process, by the invocation id they wait on; `W` is
/// whatever a backend wakes (a notification, a group of ids).
pub(crate) struct FinalWaiters<W> {
    map: Mutex<FxHashMap<String, Vec<Arc<W>>>>,
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
    pub(crate) fn add<'a>(&self, ids: impl IntoIterator<Item = &'a str>, waiter: &Arc<W>) {
        let mut map = self.map.lock();
        for id in ids {
            map.entry(id.to_string()).or_default().push(waiter.clone());
        }
    }

    /// Takes `waiter` off each of `ids` (a wait that ended or was dropped).
    pub(crate) fn remove<'a>(&self, ids: impl IntoIterator<Item = &'a str>, waiter: &Arc<W>) {
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
    pub(crate) fn take(&self, id: &str) -> Vec<Arc<W>> {
        self.map.lock().remove(id).unwrap_or_default()
    }

    /// Takes every waiter (everything was purged).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn take_all(&self) -> Vec<Arc<W>> {
        self.map.lock().drain().flat_map(|(_, list)| list).collect()
    }

    /// How many invocations have waiters.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_added_taken_and_removed_per_id() {
        let waiters = FinalWaiters::<u8>::default();
        let (a, b) = (Arc::new(1), Arc::new(2));
        waiters.add(["x", "y"], &a);
        waiters.add(["y"], &b);
        assert_eq!(waiters.len(), 2);
        let taken: Vec<u8> = waiters.take("y").iter().map(|w| **w).collect();
        assert_eq!(taken, vec![1, 2]);
        assert!(waiters.take("y").is_empty());
        waiters.remove(["x"], &b);
        assert_eq!(waiters.len(), 1, "only its own waiter leaves");
        waiters.remove(["x", "y"], &a);
        assert_eq!(waiters.len(), 0);
        waiters.add(["x"], &a);
        waiters.add(["z"], &b);
        assert_eq!(waiters.take_all().len(), 2);
        assert_eq!(waiters.len(), 0);
    }
}
