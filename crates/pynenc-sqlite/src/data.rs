//! The data store's primitives (see [`pynenc_store::DataTxn`]).

use pynenc_model::{DataRef, DataUsage, InvocationId, Timestamp};
use pynenc_store::{DataTxn, Result, StoreError};

use crate::txn::SqliteTxn;

fn missing() -> StoreError {
    StoreError::backend("data store", "not implemented on this backend yet")
}

impl DataTxn for SqliteTxn<'_> {
    fn claim_data(&mut self, _: &DataRef, _: &[InvocationId], _: Timestamp) -> Result<bool> {
        Err(missing())
    }
    fn put_data(&mut self, _: &DataRef, _: &str, _: &[InvocationId], _: Timestamp) -> Result<()> {
        Err(missing())
    }
    fn get_data(&mut self, _: &DataRef) -> Result<Option<String>> {
        Err(missing())
    }
    fn unclaimed_data(&mut self, _: Timestamp, _: usize) -> Result<Vec<DataRef>> {
        Err(missing())
    }
    fn data_references(&mut self, _: &DataRef) -> Result<Vec<InvocationId>> {
        Err(missing())
    }
    fn forget_data_references(&mut self, _: &DataRef, _: &[InvocationId]) -> Result<()> {
        Err(missing())
    }
    fn delete_data(&mut self, _: &DataRef) -> Result<()> {
        Err(missing())
    }
    fn data_usage(&mut self) -> Result<DataUsage> {
        Err(missing())
    }
}
