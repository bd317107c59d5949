//! Reuses: the calls that registration concurrency folded into an
//! existing invocation instead of creating one, and how their arguments
//! differed from the invocation's (Pynenc hands that difference to the
//! caller; here the backend also keeps it, so an operator sees it later).
//!
//! A backend keeps, per invocation, how many reuses there were and the
//! latest [`REUSES_KEPT`] of them, stored as [`ReuseRecord::to_text`], and
//! forgets them with the invocation.

use serde::{Deserialize, Serialize};

use crate::arguments::Arguments;
use crate::ids::InvocationId;
use crate::time::Timestamp;

/// How many reuses of one invocation are kept (the latest).
pub const REUSES_KEPT: usize = 20;

/// The largest argument value kept in a reuse, in bytes; a larger one is
/// kept as its size only.
pub const REUSE_VALUE_MAX_BYTES: usize = 4096;

/// One argument of a reusing call that differs from the invocation's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DifferingArgument {
    /// The parameter name.
    pub name: String,
    /// The reusing call's serialized value; `None` when the call had no
    /// such argument or the value was over [`REUSE_VALUE_MAX_BYTES`].
    pub value: Option<String>,
    /// The size of the reusing call's value in bytes (0 when it had none).
    pub size: usize,
}

/// One call folded into an existing invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReuseRecord {
    /// When it was routed.
    pub at: Timestamp,
    /// The invocation that made the call (`None`: a caller outside any
    /// invocation).
    pub caller: Option<InvocationId>,
    /// Its arguments that differ from the invocation's, by name (empty:
    /// the same call).
    pub differing: Vec<DifferingArgument>,
}

impl ReuseRecord {
    /// The reuse of an invocation called with `existing` by a call with
    /// `new` arguments.
    pub fn new(
        at: Timestamp,
        caller: Option<InvocationId>,
        existing: &Arguments,
        new: &Arguments,
    ) -> Self {
        let mut names: Vec<&str> = existing
            .serialized()
            .chain(new.serialized())
            .map(|(name, _)| name)
            .collect();
        names.sort_unstable();
        names.dedup();
        let differing = names
            .into_iter()
            .filter(|name| existing.get(name) != new.get(name))
            .map(|name| {
                let value = new.get(name);
                DifferingArgument {
                    name: name.to_string(),
                    value: value
                        .filter(|v| v.len() <= REUSE_VALUE_MAX_BYTES)
                        .map(str::to_string),
                    size: value.map_or(0, str::len),
                }
            })
            .collect();
        ReuseRecord {
            at,
            caller,
            differing,
        }
    }

    /// The text a backend stores.
    pub fn to_text(&self) -> String {
        // plain data: serializing cannot fail
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stored text read back; `None` for one this version cannot read.
    pub fn from_text(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// The reuses of one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reuses {
    /// How many calls reused it in all.
    pub total: u64,
    /// The latest of them (at most [`REUSES_KEPT`]), oldest first.
    pub latest: Vec<ReuseRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serializer::Serializer;

    #[test]
    fn only_the_differing_arguments_are_kept() {
        let s = Serializer::Json;
        let existing = Arguments::new()
            .with(s, "k", &1)
            .unwrap()
            .with(s, "note", &"first")
            .unwrap()
            .with(s, "gone", &true)
            .unwrap();
        let big = "x".repeat(REUSE_VALUE_MAX_BYTES + 10);
        let new = Arguments::new()
            .with(s, "k", &1)
            .unwrap()
            .with(s, "note", &"second")
            .unwrap()
            .with(s, "blob", &big)
            .unwrap();
        let r = ReuseRecord::new(Timestamp::from_micros(5), None, &existing, &new);
        let names: Vec<&str> = r.differing.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["blob", "gone", "note"]);
        assert_eq!(r.differing[0].value, None, "too large to keep");
        assert_eq!(r.differing[0].size, big.len() + 2);
        assert_eq!(r.differing[1].value, None, "missing in the new call");
        assert_eq!(r.differing[1].size, 0);
        assert_eq!(r.differing[2].value.as_deref(), Some("\"second\""));
        assert_eq!(ReuseRecord::from_text(&r.to_text()), Some(r));
        let same = ReuseRecord::new(Timestamp::from_micros(5), None, &existing, &existing);
        assert!(same.differing.is_empty());
        assert_eq!(ReuseRecord::from_text("not json"), None);
    }
}
