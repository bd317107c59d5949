//! The local cache of stored values: bounded in bytes, and fetching each
//! value once however many invocations ask for it at the same time.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pynenc_model::DataRef;
use tokio::sync::OnceCell;

type Slot = Arc<OnceCell<Arc<str>>>;

#[derive(Default)]
struct Entries {
    slots: HashMap<DataRef, Slot>,
    /// Values held, oldest first: evicted in this order.
    order: VecDeque<DataRef>,
    bytes: u64,
}

/// What the cache did, for tests and figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataCacheStats {
    /// Values read from the data store.
    pub fetches: u64,
    /// Reads answered from the cache.
    pub hits: u64,
    /// Bytes held now.
    pub bytes: u64,
}

/// Stored values by reference, at most `capacity` bytes of them.
pub(crate) struct LocalCache {
    capacity: u64,
    entries: Mutex<Entries>,
    fetches: AtomicU64,
    hits: AtomicU64,
}

impl LocalCache {
    pub(crate) fn new(capacity: usize) -> Self {
        LocalCache {
            capacity: capacity as u64,
            entries: Mutex::default(),
            fetches: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // a panic while holding the lock leaves the map consistent
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value of `data`: from the cache, or from `fetch` (once, however
    /// many callers ask at the same time; a failed fetch is not kept).
    pub(crate) async fn get_or_fetch<E, F, Fut>(
        &self,
        data: DataRef,
        fetch: F,
    ) -> Result<Arc<str>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<str>, E>>,
    {
        let slot = self.lock().slots.entry(data).or_default().clone();
        if let Some(v) = slot.get() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(v.clone());
        }
        let mut fetched = false;
        let value = slot
            .get_or_try_init(|| {
                fetched = true;
                self.fetches.fetch_add(1, Ordering::Relaxed);
                fetch()
            })
            .await?
            .clone();
        if fetched {
            self.admit(data, &slot);
        } else {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(value)
    }

    /// Keeps a value this process has (it just stored it).
    pub(crate) fn insert(&self, data: DataRef, value: Arc<str>) {
        let slot = self.lock().slots.entry(data).or_default().clone();
        if slot.set(value).is_ok() {
            self.admit(data, &slot);
        }
    }

    /// The reference of a value the cache holds with this exact text (found
    /// by length, then compared byte for byte: cheaper than hashing it).
    pub(crate) fn find(&self, text: &str) -> Option<(DataRef, Arc<str>)> {
        let len = text.len() as u64;
        let e = self.lock();
        e.slots
            .iter()
            .filter(|(r, _)| r.len() == len)
            .find_map(|(r, s)| {
                let v = s.get()?;
                super::same_text(v, text).then(|| (*r, v.clone()))
            })
    }

    /// The value, if the cache holds it.
    pub(crate) fn get(&self, data: &DataRef) -> Option<Arc<str>> {
        self.lock().slots.get(data).and_then(|s| s.get().cloned())
    }

    /// Counts a value just set in `slot` and evicts the oldest values over
    /// the capacity (a value larger than the whole capacity is not kept).
    fn admit(&self, data: DataRef, slot: &Slot) {
        let mut e = self.lock();
        let still_ours = e.slots.get(&data).is_some_and(|s| Arc::ptr_eq(s, slot));
        if !still_ours {
            return;
        }
        if data.len() > self.capacity {
            e.slots.remove(&data);
            return;
        }
        e.bytes += data.len();
        e.order.push_back(data);
        while e.bytes > self.capacity {
            let Some(old) = e.order.pop_front() else {
                break;
            };
            if e.slots.remove(&old).is_some() {
                e.bytes -= old.len();
            }
        }
    }

    pub(crate) fn stats(&self) -> DataCacheStats {
        DataCacheStats {
            fetches: self.fetches.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            bytes: self.lock().bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(c: char, n: usize) -> (DataRef, Arc<str>) {
        let text = c.to_string().repeat(n);
        (DataRef::of(&text), Arc::from(text))
    }

    #[tokio::test]
    async fn fetches_once_for_concurrent_readers() {
        let cache = Arc::new(LocalCache::new(1000));
        let (r, v) = value('a', 100);
        let calls = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, v, calls) = (cache.clone(), v.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(r, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Ok::<_, String>(v)
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(&*t.await.unwrap().unwrap(), &*v);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stats = cache.stats();
        assert_eq!((stats.fetches, stats.hits, stats.bytes), (1, 15, 100));
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_kept_and_capacity_evicts_oldest() {
        let cache = LocalCache::new(250);
        let (r, v) = value('b', 100);
        let err = cache
            .get_or_fetch(r, || async { Err::<Arc<str>, _>("down") })
            .await;
        assert_eq!(err.unwrap_err(), "down");
        let got = cache
            .get_or_fetch(r, || async { Ok::<_, ()>(v.clone()) })
            .await;
        assert_eq!(&*got.unwrap(), &*v);
        let (r2, v2) = value('c', 100);
        let (r3, v3) = value('d', 100);
        cache.insert(r2, v2);
        cache.insert(r3, v3);
        // 300 bytes over a capacity of 250: the oldest went
        assert!(cache.get(&r).is_none());
        assert!(cache.get(&r2).is_some() && cache.get(&r3).is_some());
        assert_eq!(cache.stats().bytes, 200);
        let (big, vbig) = value('e', 300);
        cache.insert(big, vbig);
        assert!(cache.get(&big).is_none(), "larger than the whole cache");
        assert_eq!(cache.stats().bytes, 200);
    }
}
