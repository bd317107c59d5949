//! The data store: large argument and result values kept out of band,
//! once per content digest (see [`pynenc_model::data`]).

use async_trait::async_trait;

use pynenc_model::{DataClaim, DataRef, DataSweep, DataUsage, Timestamp};

use crate::error::Result;

/// Values stored once under their content digest, each with the
/// invocations whose records refer to it.
///
/// A value is written with [`DataStore::put_values`] (or found already
/// there by [`DataStore::claim_values`]) before any record refers to it,
/// naming the invocations that will; [`DataStore::sweep_values`] removes a
/// value only once none of them exists and nobody claimed it for the whole
/// grace period. Each method is one atomic step.
#[async_trait]
pub trait DataStore: Send + Sync {
    /// For each claim, in order: whether its value is stored. A stored
    /// value gets the claim's invocations as references and its grace
    /// period starts again; a missing one must be put.
    async fn claim_values(&self, claims: &[DataClaim]) -> Result<Vec<bool>>;

    /// Stores each value (once per digest: a value already stored is left
    /// as it is) with its claim's references, and starts its grace period.
    async fn put_values(&self, values: &[(DataClaim, String)]) -> Result<()>;

    /// The serialized text of a stored value, `None` if it is not stored.
    async fn get_value(&self, data: &DataRef) -> Result<Option<String>>;

    /// Removes the values no existing invocation refers to and nobody
    /// claimed since `claimed_before`; forgets references to invocations
    /// that no longer exist.
    async fn sweep_values(&self, claimed_before: Timestamp) -> Result<DataSweep>;

    /// How many values, bytes and references are stored.
    async fn data_usage(&self) -> Result<DataUsage>;
}
