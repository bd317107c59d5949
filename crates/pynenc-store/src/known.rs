//! [`KnownOutcomes`]: the outcomes a process has just committed, kept for
//! its own waits, which read them next.
//!
//! A caller that waits for a result reads the outcome once the wait ends.
//! Where a read is a round trip to a server (PostgreSQL), a process that
//! wrote the outcome itself a moment earlier — its runner finished the
//! invocation its caller waits for — can hand the outcome over instead:
//! the store keeps it when the section that made the invocation final
//! commits, if a wait of the process is registered on it, and the read
//! takes it. Bounded in entries and in bytes (the oldest go first), so an
//! outcome nobody reads costs nothing for long.

use std::collections::VecDeque;

use parking_lot::Mutex;
use pynenc_model::{InvocationId, InvocationOutcome};
use rustc_hash::FxHashMap;

/// The most outcomes kept.
const KNOWN_ENTRIES: usize = 16_384;

/// The most bytes of results and error messages kept.
const KNOWN_BYTES: usize = 16 << 20;

#[derive(Default)]
struct Kept {
    map: FxHashMap<InvocationId, InvocationOutcome>,
    /// Ids in the order they were kept (some may have been taken since).
    order: VecDeque<InvocationId>,
    bytes: usize,
}

/// Outcomes committed by this process and waited for in it (see the
/// module documentation): at most 16,384 of them and 16 MiB of results and
/// error messages, the oldest dropped first.
#[derive(Default)]
pub struct KnownOutcomes {
    kept: Mutex<Kept>,
}

/// What an outcome costs to keep, roughly: its result and error texts.
fn weight(o: &InvocationOutcome) -> usize {
    o.result.as_ref().map_or(0, String::len)
        + o.error
            .as_ref()
            .map_or(0, |e| e.message.len() + e.kind.len())
}

impl KnownOutcomes {
    /// Keeps the final outcome of `id`, as committed; the oldest kept go
    /// when the bounds are reached. An outcome larger than every bound is
    /// not kept.
    pub fn keep(&self, id: InvocationId, outcome: InvocationOutcome) {
        let w = weight(&outcome);
        if w > KNOWN_BYTES {
            return;
        }
        let mut k = self.kept.lock();
        while k.map.len() >= KNOWN_ENTRIES || k.bytes + w > KNOWN_BYTES {
            let Some(old) = k.order.pop_front() else {
                break;
            };
            if let Some(o) = k.map.remove(&old) {
                k.bytes -= weight(&o);
            }
        }
        if let Some(previous) = k.map.insert(id, outcome) {
            k.bytes -= weight(&previous);
        }
        k.bytes += w;
        k.order.push_back(id);
        // ids taken since they were kept leave `order` as it turns over
        if k.order.len() > 2 * KNOWN_ENTRIES {
            let Kept { map, order, .. } = &mut *k;
            order.retain(|id| map.contains_key(id));
        }
    }

    /// The outcomes of every one of `ids`, taken, when all are kept;
    /// otherwise `None` and nothing is taken.
    pub fn take_all(&self, ids: &[InvocationId]) -> Option<Vec<InvocationOutcome>> {
        if ids.is_empty() {
            return None;
        }
        let mut k = self.kept.lock();
        // every one or none (an id given twice gets its outcome twice)
        let out = ids
            .iter()
            .map(|id| k.map.get(id).cloned())
            .collect::<Option<Vec<InvocationOutcome>>>()?;
        for id in ids {
            if let Some(o) = k.map.remove(id) {
                k.bytes -= weight(&o);
            }
        }
        Some(out)
    }

    /// Forgets the outcomes of `ids` (they ended again elsewhere, or were
    /// deleted).
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a InvocationId>) {
        let mut k = self.kept.lock();
        if k.map.is_empty() {
            return;
        }
        for id in ids {
            if let Some(o) = k.map.remove(id) {
                k.bytes -= weight(&o);
            }
        }
    }

    /// Forgets every outcome (invocations were purged).
    pub fn forget_all(&self) {
        *self.kept.lock() = Kept::default();
    }

    /// How many outcomes are kept.
    pub fn len(&self) -> usize {
        self.kept.lock().map.len()
    }

    /// Whether no outcome is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pynenc_model::{InvocationStatus, TaskError};

    fn id(n: u128) -> InvocationId {
        InvocationId::from_u128(n)
    }

    fn ok(result: &str) -> InvocationOutcome {
        InvocationOutcome {
            status: InvocationStatus::Success,
            result: Some(result.to_string()),
            error: None,
        }
    }

    #[test]
    fn outcomes_are_taken_once_and_only_all_together() {
        let known = KnownOutcomes::default();
        known.keep(id(1), ok("1"));
        known.keep(id(2), ok("2"));
        assert!(
            known.take_all(&[id(1), id(3)]).is_none(),
            "3 was never kept"
        );
        assert_eq!(known.len(), 2, "a refused take takes nothing");
        let taken = known.take_all(&[id(2), id(1)]).expect("both kept");
        assert_eq!(taken[0].result.as_deref(), Some("2"));
        assert_eq!(taken[1].result.as_deref(), Some("1"));
        assert!(known.take_all(&[id(1)]).is_none(), "taken already");
        assert!(known.is_empty());
        assert!(known.take_all(&[]).is_none());
    }

    #[test]
    fn the_oldest_go_first_when_the_entries_are_full() {
        let known = KnownOutcomes::default();
        for n in 0..(KNOWN_ENTRIES as u128 + 10) {
            known.keep(id(n), ok("x"));
        }
        assert_eq!(known.len(), KNOWN_ENTRIES);
        assert!(known.take_all(&[id(9)]).is_none(), "among the ten oldest");
        assert!(known.take_all(&[id(10)]).is_some());
        assert!(known.take_all(&[id(KNOWN_ENTRIES as u128 + 9)]).is_some());
    }

    #[test]
    fn the_oldest_go_first_when_the_bytes_are_full_and_a_huge_one_is_not_kept() {
        let known = KnownOutcomes::default();
        let big = "b".repeat(KNOWN_BYTES / 4);
        for n in 0..5 {
            known.keep(id(n), ok(&big));
        }
        assert_eq!(known.len(), 4, "four quarters fill the bytes");
        assert!(known.take_all(&[id(0)]).is_none());
        known.keep(id(9), ok(&"h".repeat(KNOWN_BYTES + 1)));
        assert!(known.take_all(&[id(9)]).is_none());
        let failed = InvocationOutcome {
            status: InvocationStatus::Failed,
            result: None,
            error: Some(TaskError::new("ValueError", "bad")),
        };
        known.keep(id(7), failed);
        let taken = known.take_all(&[id(7)]).expect("kept");
        assert_eq!(
            taken[0].error.as_ref().map(|e| e.message.as_str()),
            Some("bad")
        );
    }

    #[test]
    fn forget_takes_them_off() {
        let known = KnownOutcomes::default();
        known.keep(id(1), ok("1"));
        known.forget_all();
        assert!(known.take_all(&[id(1)]).is_none());
        known.keep(id(2), ok("2"));
        known.keep(id(3), ok("3"));
        known.forget(&[id(2)]);
        assert!(known.take_all(&[id(2)]).is_none());
        assert!(known.take_all(&[id(3)]).is_some());
    }
}
