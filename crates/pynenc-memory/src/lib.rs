//! The in-memory backend of pynenc: every component in one process, behind
//! one lock. It is the default backend: no server, no file.
//!
//! Each atomic step takes the store's mutex once, so steps never interleave.
//! Runners are woken by a notification when work is queued, and `result()`
//! waiters when an invocation becomes final: nothing polls.
//!
//! [`MemoryBackend`] is a home for stores, one per `app_id`; [`MemStore`]
//! is the [`pynenc_store::AtomicStore`] of one app, which
//! [`pynenc_store::TxnBackend`] turns into its components:
//!
//! ```
//! use pynenc_memory::MemoryBackend;
//!
//! let hub = MemoryBackend::new();
//! let components = hub.components("my-app", Default::default());
//! # let _ = components;
//! ```
#![deny(missing_docs)]

mod data;
mod index;
mod names;
mod queries;
mod state;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use pynenc_model::Serializer;
use pynenc_store::{Components, TxnBackend};

pub use store::MemStore;

/// A process-wide home for memory stores, one per `app_id`: apps built on
/// the same `MemoryBackend` share data only with apps of the same id.
/// Cloning it shares the stores.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    stores: Arc<Mutex<HashMap<String, Arc<MemStore>>>>,
}

impl MemoryBackend {
    /// A new, empty memory backend.
    pub fn new() -> Self {
        MemoryBackend::default()
    }

    /// The store of `app_id` (created on first use).
    pub fn store(&self, app_id: &str) -> Arc<MemStore> {
        self.stores
            .lock()
            .entry(app_id.to_string())
            .or_insert_with(|| Arc::new(MemStore::for_app(app_id)))
            .clone()
    }

    /// The components of the app `app_id`; `serializer` renders argument
    /// differences and cycles in errors.
    pub fn components(&self, app_id: &str, serializer: Serializer) -> Components {
        TxnBackend::components(self.store(app_id), serializer)
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryBackend")
    }
}
