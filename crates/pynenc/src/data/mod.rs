//! Large arguments and results out of band: this process's side of the
//! data store (see [`pynenc_store::DataStore`]).
//!
//! - Routing: an argument whose serialized text is longer than the task's
//!   `data_store_min_size_bytes` (or the app's `data_store.min_size_bytes`),
//!   and not named in its `inline_arguments`, leaves the record: the record
//!   carries its [`DataRef`] marker, the value is stored once per content,
//!   claimed for the invocations that refer to it (their ids are chosen
//!   before routing), and put only when the data store does not have it.
//! - Running: a runner reads stored arguments through a local cache bounded
//!   by `data_store.local_cache_bytes`, so a value read by many invocations
//!   is fetched once per process.
//! - Results: a large result is stored the same way, referred to by its
//!   invocation; `result()` reads it back transparently.
//! - Retention: the runners' upkeep sweeps the values no invocation refers
//!   to any more (after `data_store.grace_seconds`), so stored values go
//!   with the last invocation that used them.

mod cache;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{
    Arguments, DataClaim, DataRef, DataSweep, InvocationId, InvocationOutcome, MovedText,
    RouteRequest, TaskOptions, Timestamp,
};
use pynenc_store::{DataStore, StoreError};
use tracing::{debug, warn};

pub use cache::DataCacheStats;
use cache::LocalCache;

use crate::conf::DataStoreConfig;
use crate::exceptions::{PynencError, Result};

/// Values moved out of the arguments of calls being routed, by reference:
/// one copy per content, however many calls carry it.
#[derive(Default)]
pub(crate) struct PendingValues {
    values: HashMap<DataRef, Arc<str>>,
}

impl PendingValues {
    /// The reference of a value moved out of a call's arguments, kept here
    /// unless it is pending already or in the local cache. A value seen
    /// before is recognised without hashing: the same shared text, or the
    /// same bytes.
    fn take(&mut self, moved: MovedText, cache: &LocalCache) -> DataRef {
        let text = moved.as_str();
        if let Some(r) = self
            .values
            .iter()
            .find_map(|(r, v)| same_text(v, text).then_some(*r))
        {
            return r;
        }
        if let Some((r, held)) = cache.find(text) {
            // kept here too: the cache may drop it before the put
            self.values.insert(r, held);
            return r;
        }
        let r = DataRef::of(text);
        self.values.insert(r, moved.into_shared());
        r
    }
}

/// Whether `held` and `text` are the same text: the same allocation, or
/// the same bytes.
pub(crate) fn same_text(held: &str, text: &str) -> bool {
    held.len() == text.len() && (held.as_ptr() == text.as_ptr() || held == text)
}

/// The data store settings of an app and its local cache.
pub(crate) struct DataClient {
    enabled: bool,
    min_size: usize,
    grace: Duration,
    cache: LocalCache,
}

impl DataClient {
    pub(crate) fn new(conf: &DataStoreConfig) -> Self {
        DataClient {
            enabled: conf.data_store_enabled,
            min_size: conf.min_size_bytes,
            grace: Duration::from_secs_f64(conf.grace_seconds.max(0.0)),
            cache: LocalCache::new(conf.local_cache_bytes),
        }
    }

    /// The size above which a value of a task with `options` is stored
    /// (`None`: the data store is off).
    fn min_size(&self, options: Option<&TaskOptions>) -> Option<usize> {
        if !self.enabled {
            return None;
        }
        Some(match options.map(|o| o.data_store_min_size_bytes) {
            Some(n) if n > 0 => n as usize,
            _ => self.min_size,
        })
    }

    /// Moves the large values of `arguments` into `pending` (see the
    /// module documentation); the arguments keep their id.
    pub(crate) fn externalize(
        &self,
        arguments: &mut Arguments,
        options: Option<&TaskOptions>,
        pending: &mut PendingValues,
    ) {
        let Some(min) = self.min_size(options) else {
            return;
        };
        let inline = options
            .map(|o| o.inline_arguments.as_slice())
            .unwrap_or(&[]);
        arguments.externalize(
            min,
            |name| inline.iter().any(|n| n == name),
            |moved| pending.take(moved, &self.cache),
        );
    }

    /// Stores or claims every value the arguments of `requests` refer to,
    /// for the invocations they will create (a request that refers to one
    /// gets its invocation id chosen here). Values the data store does not
    /// have are put from `pending` or the local cache.
    ///
    /// # Errors
    ///
    /// The data store failed, or a referenced value is neither stored nor
    /// at hand (a rerun of a call whose values were swept).
    pub(crate) async fn claim_for(
        &self,
        ds: &Arc<dyn DataStore>,
        requests: &mut [RouteRequest],
        pending: &PendingValues,
    ) -> Result<()> {
        let mut claims: Vec<DataClaim> = Vec::new();
        let mut index: HashMap<DataRef, usize> = HashMap::new();
        for req in requests.iter_mut() {
            if !req.call.arguments.has_stored() {
                continue;
            }
            let id = *req
                .invocation_id
                .get_or_insert_with(InvocationId::time_ordered);
            for (_, data) in req.call.arguments.stored() {
                let i = *index.entry(data).or_insert_with(|| {
                    claims.push(DataClaim {
                        data,
                        referenced_by: Vec::new(),
                    });
                    claims.len() - 1
                });
                claims[i].referenced_by.push(id);
            }
        }
        if claims.is_empty() {
            return Ok(());
        }
        let found = ds.claim_values(&claims).await?;
        let mut puts = Vec::new();
        for (claim, found) in claims.into_iter().zip(found) {
            if found {
                continue;
            }
            let text = match pending.values.get(&claim.data) {
                Some(text) => text.clone(),
                None => match self.cache.get(&claim.data) {
                    Some(text) => text,
                    None => {
                        return Err(PynencError::StateBackend(StoreError::corrupt(
                            format!("stored value {}", claim.data),
                            "a call refers to it, but the data store no longer has it \
                             (it was swept) and this process does not have its text",
                        )))
                    }
                },
            };
            puts.push((claim, text));
        }
        if !puts.is_empty() {
            let values: Vec<(DataClaim, String)> = puts
                .iter()
                .map(|(claim, text)| (claim.clone(), text.to_string()))
                .collect();
            ds.put_values(&values).await?;
            for (claim, text) in puts {
                debug!(data = %claim.data, invocations = claim.referenced_by.len(), "stored a value");
                self.cache.insert(claim.data, text);
            }
        }
        Ok(())
    }

    /// The text of a stored value, through the local cache.
    async fn read(&self, ds: &Arc<dyn DataStore>, data: DataRef, what: &str) -> Result<Arc<str>> {
        self.cache
            .get_or_fetch(data, || async move {
                match ds.get_value(&data).await? {
                    Some(text) => Ok(Arc::from(text)),
                    None => Err(PynencError::StateBackend(StoreError::corrupt(
                        format!("stored value {data} of {what}"),
                        "it is not in the data store",
                    ))),
                }
            })
            .await
    }

    /// The arguments with every stored value read back (`None` if none is
    /// stored: the record's arguments are the values).
    pub(crate) async fn resolve_arguments(
        &self,
        ds: &Arc<dyn DataStore>,
        arguments: &Arguments,
        invocation_id: &InvocationId,
    ) -> Result<Option<Arguments>> {
        if !arguments.has_stored() {
            return Ok(None);
        }
        let mut resolved = arguments.clone();
        for (name, data) in arguments.stored() {
            let what = format!("argument '{name}' of invocation {invocation_id}");
            let text = self.read(ds, data, &what).await?;
            resolved.insert_shared(name, text);
        }
        Ok(Some(resolved))
    }

    /// A result to record for `invocation_id`: stored (and its marker
    /// returned) when it is large; kept inline when the data store fails,
    /// so a result is never lost.
    pub(crate) async fn store_result(
        &self,
        ds: &Arc<dyn DataStore>,
        invocation_id: &InvocationId,
        options: Option<&TaskOptions>,
        result: String,
    ) -> String {
        match self.min_size(options) {
            Some(min) if result.len() > min => {}
            _ => return result,
        }
        let data = self
            .cache
            .find(&result)
            .map_or_else(|| DataRef::of(&result), |(r, _)| r);
        let claim = DataClaim {
            data,
            referenced_by: vec![*invocation_id],
        };
        match ds.put_values(&[(claim, result.clone())]).await {
            Ok(()) => {
                self.cache.insert(data, Arc::from(result));
                data.marker()
            }
            Err(e) => {
                warn!(error = %e, %invocation_id, "could not store a large result in the data store; it stays in the record");
                result
            }
        }
    }

    /// Reads back the stored results of `outcomes`.
    pub(crate) async fn resolve_outcomes(
        &self,
        ds: &Arc<dyn DataStore>,
        ids: &[InvocationId],
        outcomes: &mut [InvocationOutcome],
    ) -> Result<()> {
        for (id, outcome) in ids.iter().zip(outcomes.iter_mut()) {
            if let Some(data) = outcome.result.as_deref().and_then(DataRef::parse) {
                let what = format!("the result of invocation {id}");
                outcome.result = Some(self.read(ds, data, &what).await?.to_string());
            }
        }
        Ok(())
    }

    /// Sweeps the values no invocation refers to any more and nobody
    /// claimed within the grace period.
    pub(crate) async fn sweep(&self, ds: &Arc<dyn DataStore>) -> Result<DataSweep> {
        let grace = i64::try_from(self.grace.as_micros()).unwrap_or(i64::MAX);
        let before = Timestamp::from_micros(Timestamp::now().as_micros().saturating_sub(grace));
        Ok(ds.sweep_values(before).await?)
    }

    pub(crate) fn cache_stats(&self) -> DataCacheStats {
        self.cache.stats()
    }
}
