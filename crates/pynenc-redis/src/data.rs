//! The data store on Redis (see [`pynenc_store::DataStore`]).

use async_trait::async_trait;

use pynenc_model::{DataClaim, DataRef, DataSweep, DataUsage, Timestamp};
use pynenc_store::{DataStore, Result, StoreError};

use crate::backend::RedisBackend;

fn missing() -> StoreError {
    StoreError::backend("data store", "not implemented on this backend yet")
}

#[async_trait]
impl DataStore for RedisBackend {
    async fn claim_values(&self, _: &[DataClaim]) -> Result<Vec<bool>> {
        Err(missing())
    }
    async fn put_values(&self, _: &[(DataClaim, String)]) -> Result<()> {
        Err(missing())
    }
    async fn get_value(&self, _: &DataRef) -> Result<Option<String>> {
        Err(missing())
    }
    async fn sweep_values(&self, _: Timestamp) -> Result<DataSweep> {
        Err(missing())
    }
    async fn data_usage(&self) -> Result<DataUsage> {
        Err(missing())
    }
}
