//! The memory store's data store: values by digest, their references, and
//! an index of claim times for the sweep.

use std::collections::BTreeSet;

use pynenc_model::{DataRef, DataUsage, InvocationId, Timestamp};
use pynenc_store::{DataTxn, Result};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::state::MemState;

struct Stored {
    data: DataRef,
    text: String,
    claimed_at: Timestamp,
    references: FxHashSet<InvocationId>,
}

/// The values of one app.
#[derive(Default)]
pub(crate) struct MemData {
    values: FxHashMap<[u8; 32], Stored>,
    /// `(claim time, digest)` of every value: the sweep's order.
    by_claim: BTreeSet<(Timestamp, [u8; 32])>,
    references: u64,
}

impl MemData {
    fn claim(&mut self, data: &DataRef, referenced_by: &[InvocationId], now: Timestamp) -> bool {
        let Some(v) = self.values.get_mut(data.digest()) else {
            return false;
        };
        self.by_claim.remove(&(v.claimed_at, *data.digest()));
        v.claimed_at = now;
        self.by_claim.insert((now, *data.digest()));
        for id in referenced_by {
            if v.references.insert(*id) {
                self.references += 1;
            }
        }
        true
    }
}

impl DataTxn for MemState {
    fn claim_data(
        &mut self,
        data: &DataRef,
        referenced_by: &[InvocationId],
        now: Timestamp,
    ) -> Result<bool> {
        Ok(self.data.claim(data, referenced_by, now))
    }

    fn put_data(
        &mut self,
        data: &DataRef,
        value: &str,
        referenced_by: &[InvocationId],
        now: Timestamp,
    ) -> Result<()> {
        let d = &mut self.data;
        if !d.claim(data, referenced_by, now) {
            let references: FxHashSet<InvocationId> = referenced_by.iter().copied().collect();
            d.references += references.len() as u64;
            d.by_claim.insert((now, *data.digest()));
            d.values.insert(
                *data.digest(),
                Stored {
                    data: *data,
                    text: value.to_string(),
                    claimed_at: now,
                    references,
                },
            );
        }
        Ok(())
    }

    fn get_data(&mut self, data: &DataRef) -> Result<Option<String>> {
        Ok(self.data.values.get(data.digest()).map(|v| v.text.clone()))
    }

    fn unclaimed_data(&mut self, before: Timestamp, limit: usize) -> Result<Vec<DataRef>> {
        let d = &self.data;
        Ok(d.by_claim
            .iter()
            .take_while(|(at, _)| *at < before)
            .take(limit)
            .filter_map(|(_, digest)| d.values.get(digest).map(|v| v.data))
            .collect())
    }

    fn data_references(&mut self, data: &DataRef) -> Result<Vec<InvocationId>> {
        Ok(self
            .data
            .values
            .get(data.digest())
            .map(|v| v.references.iter().copied().collect())
            .unwrap_or_default())
    }

    fn forget_data_references(&mut self, data: &DataRef, ids: &[InvocationId]) -> Result<()> {
        let d = &mut self.data;
        if let Some(v) = d.values.get_mut(data.digest()) {
            for id in ids {
                if v.references.remove(id) {
                    d.references -= 1;
                }
            }
        }
        Ok(())
    }

    fn delete_data(&mut self, data: &DataRef) -> Result<()> {
        let d = &mut self.data;
        if let Some(v) = d.values.remove(data.digest()) {
            d.by_claim.remove(&(v.claimed_at, *data.digest()));
            d.references -= v.references.len() as u64;
        }
        Ok(())
    }

    fn data_usage(&mut self) -> Result<DataUsage> {
        let d = &self.data;
        Ok(DataUsage {
            values: d.values.len() as u64,
            bytes: d.values.values().map(|v| v.data.len()).sum(),
            references: d.references,
        })
    }
}
