//! The data store's rules: claims, puts and the sweep of values no
//! invocation refers to any more.

use pynenc_model::{DataClaim, DataSweep, InvocationId, Timestamp};

use crate::error::Result;
use crate::txn::StoreTxn;

/// The most values one sweep section examines (the rest wait for the next
/// section, so other steps go between them).
pub const DATA_SWEEP_BATCH: usize = 100;

/// Claims each value (see [`crate::DataStore::claim_values`]).
pub fn claim_data(
    txn: &mut dyn StoreTxn,
    claims: &[DataClaim],
    now: Timestamp,
) -> Result<Vec<bool>> {
    claims
        .iter()
        .map(|c| txn.claim_data(&c.data, &c.referenced_by, now))
        .collect()
}

/// Stores each value (see [`crate::DataStore::put_values`]).
pub fn put_data(
    txn: &mut dyn StoreTxn,
    values: &[(DataClaim, String)],
    now: Timestamp,
) -> Result<()> {
    for (claim, value) in values {
        txn.put_data(&claim.data, value, &claim.referenced_by, now)?;
    }
    Ok(())
}

/// One sweep section over at most `max` values unclaimed since
/// `claimed_before`: references to invocations that no longer exist are
/// forgotten; a value left with none is removed; a value still referred to
/// is claimed again (`now`), so that it is examined again only after
/// another grace period.
pub fn sweep_data(
    txn: &mut dyn StoreTxn,
    claimed_before: Timestamp,
    now: Timestamp,
    max: usize,
) -> Result<DataSweep> {
    let mut sweep = DataSweep::default();
    for data in txn.unclaimed_data(claimed_before, max)? {
        sweep.examined += 1;
        let refs = txn.data_references(&data)?;
        txn.prefetch(&refs)?;
        let mut gone: Vec<InvocationId> = Vec::new();
        for id in &refs {
            if txn.get_status(id)?.is_none() {
                gone.push(*id);
            }
        }
        if gone.len() == refs.len() {
            txn.delete_data(&data)?;
            sweep.removed += 1;
            sweep.bytes_freed += data.len();
        } else {
            if !gone.is_empty() {
                txn.forget_data_references(&data, &gone)?;
            }
            txn.claim_data(&data, &[], now)?;
        }
    }
    Ok(sweep)
}

/// Runs sweep sections (`section` gets the batch size) until one examines
/// fewer than [`DATA_SWEEP_BATCH`] values; the totals of all of them.
pub async fn sweep_in_batches<F, Fut>(mut section: F) -> Result<DataSweep>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<DataSweep>>,
{
    let mut total = DataSweep::default();
    loop {
        let s = section(DATA_SWEEP_BATCH).await?;
        total.examined += s.examined;
        total.removed += s.removed;
        total.bytes_freed += s.bytes_freed;
        if s.examined < DATA_SWEEP_BATCH as u64 {
            return Ok(total);
        }
    }
}
