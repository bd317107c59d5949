//! The data store on Redis (see [`pynenc_store::DataStore`]): the step
//! `data.lua` claims, puts and sweeps values, each call one atomic step;
//! reads are plain commands.
//!
//! Keys, after the app prefix (`DataRef::key`: 64 hex digits):
//! `data:{key}` (string: the serialized text), `dref:{key}` (set: the ids of
//! the invocations that refer to it), `dclaim` (sorted set: key → claim
//! time, µs, server clock: the sweep's order) and `dusage` (hash: `values`,
//! `bytes`, `refs`, kept by the step). An app's purge removes them with its
//! other keys.

use async_trait::async_trait;
use redis::Value;

use pynenc_model::{DataClaim, DataRef, DataSweep, DataUsage, Timestamp};
use pynenc_store::engine::DATA_SWEEP_BATCH;
use pynenc_store::{DataStore, Result};

use crate::backend::{bytes, RedisBackend};
use crate::script::{as_int, as_list, scripts};

/// The references one sweep section checks before it takes no further
/// value (a value is always checked whole), so that a section stays short
/// whatever the number of references.
pub(crate) const SWEEP_REFERENCES: usize = 10_000;

/// What one sweep section did, and whether values may be left.
pub(crate) struct SweepSection {
    /// Its counts.
    pub sweep: DataSweep,
    /// The section stopped at its batch or its reference budget.
    pub more: bool,
    /// The bound it used: `claimed_before`, or the server's time if earlier
    /// (values it claimed again are not examined by the next section).
    pub bound: i64,
}

/// The arguments of a claim: the value's key, the number of references, the
/// references.
fn push_claim(args: &mut Vec<Vec<u8>>, claim: &DataClaim, text: Option<&str>) {
    args.push(bytes(claim.data.key()));
    if let Some(text) = text {
        args.push(text.as_bytes().to_vec());
    }
    args.push(bytes(claim.referenced_by.len().to_string()));
    args.extend(claim.referenced_by.iter().map(|id| bytes(id.as_str())));
}

/// A count from a reply (0 for anything negative).
fn count(v: Option<&Value>) -> Option<u64> {
    v.and_then(as_int).map(|n| u64::try_from(n).unwrap_or(0))
}

impl RedisBackend {
    /// The key of a value's text.
    fn data_key(&self, data: &DataRef) -> String {
        self.key("data", &data.key())
    }

    /// One sweep section (see `data.lua`): at most `batch` values claimed
    /// before `before` (µs), and no further value once `budget` references
    /// were checked.
    pub(crate) async fn sweep_section(
        &self,
        before: i64,
        batch: usize,
        budget: usize,
    ) -> Result<SweepSection> {
        let args = [
            bytes("sweep"),
            bytes(before.to_string()),
            bytes(batch.to_string()),
            bytes(budget.to_string()),
        ];
        let v = self.script(&scripts().data, &args).await?;
        let items = as_list(&v);
        let shape = || self.bad_reply(format!("FCALL data: unexpected sweep reply {v:?}"));
        let (Some(examined), Some(removed), Some(bytes_freed), Some(more), Some(bound)) = (
            count(items.first()),
            count(items.get(1)),
            count(items.get(2)),
            count(items.get(3)),
            items.get(4).and_then(as_int),
        ) else {
            return Err(shape());
        };
        Ok(SweepSection {
            sweep: DataSweep {
                examined,
                removed,
                bytes_freed,
            },
            more: more != 0,
            bound,
        })
    }
}

#[async_trait]
impl DataStore for RedisBackend {
    async fn claim_values(&self, claims: &[DataClaim]) -> Result<Vec<bool>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![bytes("claim")];
        for c in claims {
            push_claim(&mut args, c, None);
        }
        let v = self.script(&scripts().data, &args).await?;
        let found: Vec<bool> = as_list(&v).iter().map(|x| as_int(x) == Some(1)).collect();
        if found.len() != claims.len() {
            return Err(self.bad_reply(format!(
                "FCALL data: {} answers to {} claims",
                found.len(),
                claims.len()
            )));
        }
        Ok(found)
    }

    async fn put_values(&self, values: &[(DataClaim, String)]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let mut args = vec![bytes("put")];
        for (c, text) in values {
            push_claim(&mut args, c, Some(text));
        }
        self.script(&scripts().data, &args).await.map(|_| ())
    }

    async fn get_value(&self, data: &DataRef) -> Result<Option<String>> {
        let mut pipe = redis::pipe();
        pipe.get(self.data_key(data));
        let (text,): (Option<String>,) = self.query("GET data", &pipe).await?;
        Ok(text)
    }

    async fn sweep_values(&self, claimed_before: Timestamp) -> Result<DataSweep> {
        let mut total = DataSweep::default();
        let mut before = claimed_before.as_micros();
        loop {
            let s = self
                .sweep_section(before, DATA_SWEEP_BATCH, SWEEP_REFERENCES)
                .await?;
            total.examined += s.sweep.examined;
            total.removed += s.sweep.removed;
            total.bytes_freed += s.sweep.bytes_freed;
            if !s.more {
                return Ok(total);
            }
            // the same bound for every section: values claimed again by
            // one are not examined by the next
            before = s.bound;
        }
    }

    async fn data_usage(&self) -> Result<DataUsage> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(format!("{}dusage", self.prefix))
            .arg(&["values", "bytes", "refs"]);
        let (fields,): (Vec<Value>,) = self.query("HMGET dusage", &pipe).await?;
        let at = |i: usize| count(fields.get(i)).unwrap_or(0);
        Ok(DataUsage {
            values: at(0),
            bytes: at(1),
            references: at(2),
        })
    }
}
