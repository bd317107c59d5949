//! [`RedisBackend`]: one app's keys on one server, and how it is opened.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pynenc_model::{InvocationId, Serializer};
use pynenc_store::{Components, Result};
use redis::aio::ConnectionManager;

use crate::conn::{self, Settings};
use crate::notify::Notifier;
use crate::RedisOptions;

/// The broker, orchestrator, state backend and coordination of one app on
/// Redis (see the crate documentation).
pub struct RedisBackend {
    pub(crate) settings: Settings,
    pub(crate) prefix: String,
    /// The set of the apps that routed anything on this server
    /// (`{key_prefix}:apps`, of escaped app ids: the route step adds its app).
    pub(crate) apps_key: String,
    /// This app's member of `apps_key`: its escaped id.
    pub(crate) app_member: String,
    pub(crate) serializer: Serializer,
    pub(crate) pool_size: usize,
    pub(crate) conns: tokio::sync::OnceCell<Vec<ConnectionManager>>,
    pub(crate) next: AtomicUsize,
    pub(crate) notifier: Arc<Notifier>,
    /// This backend's id in the hash `waiters`.
    pub(crate) instance: String,
    /// The invocations this backend picked that have rarer fields (see
    /// [`RareEnds`]).
    pub(crate) rare_ends: RareEnds,
    /// The pick-ups this backend sent (a pick-up's token starts with the
    /// count: its slot among the runner's latest, `lastpick:{runner}:{slot}`).
    pub(crate) picks: AtomicU64,
    /// When this backend last registered in `waiters`.
    pub(crate) waiting_since: parking_lot::Mutex<Option<Instant>>,
    /// Whether the steps run as Redis functions ([`FUNCTIONS_ON`]), as
    /// scripts ([`FUNCTIONS_OFF`]), or not known yet.
    pub(crate) functions: AtomicU8,
    /// Calls routed at the same time share a step (see `coalesce.rs`).
    pub(crate) coalescer: crate::coalesce::RouteCoalescer,
    /// This backend, for the task that routes calls that waited.
    pub(crate) me: std::sync::Weak<RedisBackend>,
}

/// Functions not tried yet.
pub(crate) const FUNCTIONS_UNKNOWN: u8 = 0;
/// The library is loaded: steps run with `FCALL`.
pub(crate) const FUNCTIONS_ON: u8 = 1;
/// No functions on this server (or not for this user): steps run with `EVALSHA`.
pub(crate) const FUNCTIONS_OFF: u8 = 2;

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.settings.address)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisBackend {
    /// Opens the backend of the app `app_id`: resolves the connection
    /// settings and checks that the server answers `PING` with these
    /// credentials (a blocking check, see the crate documentation). The
    /// async connections are opened on first use. `serializer` renders
    /// argument differences and cycles in errors.
    ///
    /// # Errors
    ///
    /// [`pynenc_store::StoreError::InvalidOption`] for a URL or CA file that
    /// cannot be used; [`pynenc_store::StoreError::Backend`] when the server
    /// cannot be reached or refuses the credentials (naming the address).
    pub fn open(
        options: &RedisOptions,
        app_id: &str,
        serializer: Serializer,
    ) -> Result<Arc<RedisBackend>> {
        let settings = conn::settings(options)?;
        conn::check_reachable(&settings)?;
        let base = if options.key_prefix.is_empty() {
            RedisOptions::DEFAULT_KEY_PREFIX
        } else {
            options.key_prefix.as_str()
        };
        let app_member = escape_app_id(app_id);
        let prefix = format!("{base}:{app_member}:");
        let instance = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        Ok(Arc::new_cyclic(|me| RedisBackend {
            prefix,
            apps_key: format!("{base}:apps"),
            app_member,
            settings,
            serializer,
            pool_size: options.pool_size.max(1),
            conns: tokio::sync::OnceCell::new(),
            next: AtomicUsize::new(0),
            notifier: Arc::new(Notifier::for_instance(instance.clone())),
            functions: AtomicU8::new(FUNCTIONS_UNKNOWN),
            instance,
            picks: AtomicU64::new(0),
            rare_ends: RareEnds::default(),
            waiting_since: parking_lot::Mutex::new(None),
            coalescer: crate::coalesce::RouteCoalescer::default(),
            me: me.clone(),
        }))
    }

    /// Opens the backend and returns the components of the app `app_id` on it.
    ///
    /// # Errors
    ///
    /// As [`RedisBackend::open`].
    pub fn components(
        options: &RedisOptions,
        app_id: &str,
        serializer: Serializer,
    ) -> Result<Components> {
        Ok(Components::of(RedisBackend::open(
            options, app_id, serializer,
        )?))
    }

    /// The prefix of every key of this app (`{key_prefix}:{app_id}:`).
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of an invocation's record (for tools and tests).
    pub fn invocation_key(&self, id: &InvocationId) -> String {
        self.key("inv", id.as_str())
    }

    /// The server address (`host:port/db`, without credentials).
    pub fn address(&self) -> &str {
        &self.settings.address
    }

    pub(crate) fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }
}

/// `app_id` with `%` and `:` escaped, so prefixes of different apps never nest.
pub(crate) fn escape_app_id(app_id: &str) -> String {
    app_id.replace('%', "%25").replace(':', "%3A")
}

/// The app id of its escaped form ([`escape_app_id`] undone).
pub(crate) fn unescape_app_id(escaped: &str) -> String {
    // every `%` of an escaped id starts `%25` or `%3A`: `%3A` first
    escaped.replace("%3A", ":").replace("%25", "%")
}

/// `s` with the glob characters of `SCAN MATCH` escaped.
pub(crate) fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The bytes of a text argument.
pub(crate) fn bytes(s: impl Into<String>) -> Vec<u8> {
    s.into().into_bytes()
}

/// The bytes of an optional text argument (empty for none).
pub(crate) fn opt_bytes(s: Option<&str>) -> Vec<u8> {
    s.unwrap_or_default().as_bytes().to_vec()
}

/// A duration as microseconds, as the scripts take it.
pub(crate) fn micros(d: Duration) -> String {
    pynenc_model::time::micros(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_in_creation_order() {
        let ids: Vec<InvocationId> = (0..100).map(|_| InvocationId::time_ordered()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn prefixes_never_nest() {
        assert_eq!(escape_app_id("a:b"), "a%3Ab");
        assert_eq!(escape_app_id("a%3Ab"), "a%253Ab");
        for id in ["a:b", "a%3Ab", "%25:%", "plain", ":%:"] {
            assert_eq!(unescape_app_id(&escape_app_id(id)), id);
        }
        assert_eq!(escape_glob("p:a*[x]?:"), "p:a\\*\\[x\\]\\?:");
    }
}

/// The invocations this backend picked whose records have rarer fields (a
/// parent, a key of concurrency control...: a pick-up replies them), until
/// their end is sent: the step reads the record of such an end whole in one
/// command instead of two. Only a hint: an end without it reads the record
/// as usual, and the set forgets everything past [`RareEnds::MOST`]
/// (invocations picked here that ended elsewhere).
#[derive(Default)]
pub(crate) struct RareEnds(parking_lot::Mutex<std::collections::HashSet<InvocationId>>);

impl RareEnds {
    /// The most invocations remembered.
    const MOST: usize = 65_536;

    /// `id` was picked, and its record has rarer fields.
    pub(crate) fn note(&self, id: InvocationId) {
        let mut set = self.0.lock();
        if set.len() >= Self::MOST {
            set.clear();
        }
        set.insert(id);
    }

    /// Whether `id` was noted (forgotten from now on).
    pub(crate) fn take(&self, id: &InvocationId) -> bool {
        self.0.lock().remove(id)
    }
}
