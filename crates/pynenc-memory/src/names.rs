//! Names kept once and referred to by number: history steps hold a 4-byte
//! number for their runner ids and execution context instead of a shared
//! string (16 bytes and an atomic count on a line every runner thread
//! writes). A few runners and processes write millions of steps.

use std::borrow::Borrow;
use std::hash::Hash;

use rustc_hash::FxHashMap;

/// The number that stands for "none".
pub(crate) const NONE: u32 = u32::MAX;

/// Values numbered in the order first seen; never forgotten (runner ids
/// and execution contexts: a new one per runner or process started).
pub(crate) struct Names<T> {
    values: Vec<T>,
    numbers: FxHashMap<T, u32>,
    /// The number given last: steps come in runs of one runner.
    last: u32,
}

impl<T> Default for Names<T> {
    fn default() -> Self {
        Names {
            values: Vec::new(),
            numbers: FxHashMap::default(),
            last: NONE,
        }
    }
}

impl<T: Clone + Eq + Hash> Names<T> {
    /// The number of `value`, given on first sight (`make` makes the kept
    /// value from it then); `None` when `u32::MAX` values are numbered.
    pub(crate) fn number<Q>(&mut self, value: &Q, make: impl FnOnce(&Q) -> T) -> Option<u32>
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(last) = self.values.get(self.last as usize) {
            if last.borrow() == value {
                return Some(self.last);
            }
        }
        let n = match self.numbers.get(value) {
            Some(n) => *n,
            None => {
                let n = u32::try_from(self.values.len())
                    .ok()
                    .filter(|n| *n != NONE)?;
                let kept = make(value);
                self.values.push(kept.clone());
                self.numbers.insert(kept, n);
                n
            }
        };
        self.last = n;
        Some(n)
    }

    /// The value numbered `n` (`None` for [`NONE`]).
    pub(crate) fn get(&self, n: u32) -> Option<&T> {
        self.values.get(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn numbers_are_stable_and_give_back_the_value() {
        let mut names: Names<Arc<str>> = Names::default();
        let a = names.number("host:1", |s| Arc::from(s)).unwrap();
        let b = names.number("host:2", |s| Arc::from(s)).unwrap();
        assert_ne!(a, b);
        assert_eq!(names.number("host:1", |s| Arc::from(s)), Some(a));
        assert_eq!(names.number("host:2", |s| Arc::from(s)), Some(b));
        assert_eq!(names.get(a).map(|s| &**s), Some("host:1"));
        assert_eq!(names.get(b).map(|s| &**s), Some("host:2"));
        assert_eq!(names.get(NONE), None);
    }
}
