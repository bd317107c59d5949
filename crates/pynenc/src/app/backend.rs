//! The backend an app runs on, chosen by value, and the one place where the
//! configuration (`backend` and its section) is mapped to it.

use std::sync::Arc;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use std::time::Duration;

use pynenc_memory::MemoryBackend;
use pynenc_model::Serializer;
use pynenc_store::{Components, StoreError};
use serde_json::Value;

use crate::conf::{BackendKind, PynencConfig};
use crate::exceptions::{PynencError, Result};

#[cfg(feature = "postgres")]
pub use pynenc_postgres::PostgresOptions;
#[cfg(feature = "redis")]
pub use pynenc_redis::RedisOptions;
#[cfg(feature = "sqlite")]
pub use pynenc_sqlite::SqliteOptions;

/// Builds the components of an app from its resolved configuration.
pub type ComponentsFactory = dyn Fn(&PynencConfig) -> Result<Components> + Send + Sync;

/// Where an app keeps its broker, orchestrator and state: chosen in code
/// with [`crate::PynencBuilder::backend`], or by the configuration
/// (`backend = "sqlite"` and the `[sqlite]` section, ...).
#[derive(Clone)]
pub enum Backend {
    /// In this process; apps of the same id on one [`MemoryBackend`] share data.
    Memory(MemoryBackend),
    /// One SQLite file shared by the processes of one machine.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteOptions),
    /// A Redis server shared by many machines.
    #[cfg(feature = "redis")]
    Redis(RedisOptions),
    /// A PostgreSQL database shared by many machines.
    #[cfg(feature = "postgres")]
    Postgres(PostgresOptions),
    /// Components built by the caller (any implementation of the traits).
    Custom(Arc<ComponentsFactory>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Memory(_) => f.write_str("Backend::Memory"),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(o) => write!(f, "Backend::Sqlite({o:?})"),
            #[cfg(feature = "redis")]
            Backend::Redis(o) => write!(f, "Backend::Redis({o:?})"),
            #[cfg(feature = "postgres")]
            Backend::Postgres(o) => write!(f, "Backend::Postgres({o:?})"),
            Backend::Custom(_) => f.write_str("Backend::Custom"),
        }
    }
}

impl From<MemoryBackend> for Backend {
    fn from(hub: MemoryBackend) -> Self {
        Backend::Memory(hub)
    }
}

#[cfg(feature = "sqlite")]
impl From<SqliteOptions> for Backend {
    fn from(options: SqliteOptions) -> Self {
        Backend::Sqlite(options)
    }
}

#[cfg(feature = "redis")]
impl From<RedisOptions> for Backend {
    fn from(options: RedisOptions) -> Self {
        Backend::Redis(options)
    }
}

#[cfg(feature = "postgres")]
impl From<PostgresOptions> for Backend {
    fn from(options: PostgresOptions) -> Self {
        Backend::Postgres(options)
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[cfg(any(feature = "redis", feature = "postgres"))]
fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl Backend {
    /// The kind of backend, as the configuration names it (`None` for custom components).
    pub fn kind(&self) -> Option<BackendKind> {
        match self {
            Backend::Memory(_) => Some(BackendKind::Memory),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => Some(BackendKind::Sqlite),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => Some(BackendKind::Redis),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => Some(BackendKind::Postgres),
            Backend::Custom(_) => None,
        }
    }

    /// The backend the configuration names: `backend` and its section.
    ///
    /// # Errors
    ///
    /// A backend this build was compiled without (its cargo feature is off).
    pub fn from_config(conf: &PynencConfig) -> Result<Backend> {
        match conf.backend {
            BackendKind::Memory => Ok(Backend::Memory(MemoryBackend::new())),
            #[cfg(feature = "sqlite")]
            BackendKind::Sqlite => {
                let s = &conf.sqlite;
                Ok(Backend::Sqlite(SqliteOptions {
                    path: s.sqlite_path.clone().into(),
                    busy_timeout: ms(s.busy_timeout_ms),
                    poll_min: ms(s.poll_min_ms),
                    poll_max: ms(s.poll_max_ms),
                }))
            }
            #[cfg(feature = "redis")]
            BackendKind::Redis => {
                let r = &conf.redis;
                Ok(Backend::Redis(RedisOptions {
                    url: non_empty(&r.redis_url),
                    host: r.redis_host.clone(),
                    port: r.redis_port,
                    db: r.redis_db,
                    username: non_empty(&r.redis_username),
                    password: non_empty(&r.redis_password),
                    key_prefix: r.redis_key_prefix.clone(),
                    pool_size: r.redis_pool_size,
                    tls_ca_file: non_empty(&r.redis_tls_ca_file).map(Into::into),
                }))
            }
            #[cfg(feature = "postgres")]
            BackendKind::Postgres => {
                let p = &conf.postgres;
                Ok(Backend::Postgres(PostgresOptions {
                    url: p.postgres_url.clone(),
                    connect_timeout: ms(p.postgres_connect_timeout_ms),
                    retry_for: ms(p.postgres_retry_for_ms),
                    tls_ca_file: non_empty(&p.postgres_tls_ca_file).map(Into::into),
                    pool_size: p.postgres_pool_size,
                }))
            }
            #[allow(unreachable_patterns)]
            other => Err(PynencError::Config(conf.error_at(
                "backend",
                format!(
                    "backend '{other}' is not available in this build (enable the cargo feature '{other}' of pynenc)"
                ),
            ))),
        }
    }

    /// The configuration values that select this backend, so that the
    /// effective configuration (and a child process built from it) names
    /// the backend set in code.
    pub(crate) fn config_values(&self) -> Vec<(&'static str, Value)> {
        match self {
            Backend::Memory(_) => vec![("backend", Value::from("memory"))],
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(o) => vec![
                ("backend", Value::from("sqlite")),
                (
                    "sqlite.sqlite_path",
                    Value::from(o.path.to_string_lossy().into_owned()),
                ),
                (
                    "sqlite.busy_timeout_ms",
                    Value::from(millis(o.busy_timeout)),
                ),
                ("sqlite.poll_min_ms", Value::from(millis(o.poll_min))),
                ("sqlite.poll_max_ms", Value::from(millis(o.poll_max))),
            ],
            #[cfg(feature = "redis")]
            Backend::Redis(o) => vec![
                ("backend", Value::from("redis")),
                (
                    "redis.redis_url",
                    Value::from(o.url.clone().unwrap_or_default()),
                ),
                ("redis.redis_host", Value::from(o.host.clone())),
                ("redis.redis_port", Value::from(o.port)),
                ("redis.redis_db", Value::from(o.db)),
                (
                    "redis.redis_username",
                    Value::from(o.username.clone().unwrap_or_default()),
                ),
                (
                    "redis.redis_password",
                    Value::from(o.password.clone().unwrap_or_default()),
                ),
                ("redis.redis_key_prefix", Value::from(o.key_prefix.clone())),
                ("redis.redis_pool_size", Value::from(o.pool_size)),
                ("redis.redis_tls_ca_file", path_value(&o.tls_ca_file)),
            ],
            #[cfg(feature = "postgres")]
            Backend::Postgres(o) => vec![
                ("backend", Value::from("postgres")),
                ("postgres.postgres_url", Value::from(o.url.clone())),
                (
                    "postgres.postgres_connect_timeout_ms",
                    Value::from(millis(o.connect_timeout)),
                ),
                (
                    "postgres.postgres_retry_for_ms",
                    Value::from(millis(o.retry_for)),
                ),
                ("postgres.postgres_tls_ca_file", path_value(&o.tls_ca_file)),
                ("postgres.postgres_pool_size", Value::from(o.pool_size)),
            ],
            Backend::Custom(_) => Vec::new(),
        }
    }

    /// Opens the backend for the app of `conf`.
    ///
    /// # Errors
    ///
    /// The backend cannot be opened; an option it refuses is reported as a
    /// configuration error on the key that set it.
    pub(crate) fn open(&self, conf: &PynencConfig) -> Result<Components> {
        let app_id = conf.app_id.as_str();
        let serializer: Serializer = conf.serializer;
        let opened = match self {
            Backend::Memory(hub) => Ok(hub.components(app_id, serializer)),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(o) => pynenc_sqlite::SqliteStore::components(o, app_id, serializer),
            #[cfg(feature = "redis")]
            Backend::Redis(o) => pynenc_redis::RedisBackend::components(o, app_id, serializer),
            #[cfg(feature = "postgres")]
            Backend::Postgres(o) => {
                pynenc_postgres::PostgresStore::components(o, app_id, serializer)
            }
            Backend::Custom(factory) => return factory(conf),
        };
        opened.map_err(|e| option_error(conf, e))
    }
}

/// An optional file as a configuration value (empty: none).
#[cfg(any(feature = "redis", feature = "postgres"))]
fn path_value(path: &Option<std::path::PathBuf>) -> Value {
    Value::from(
        path.as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A backend's refusal of one of its options, as an error on the
/// configuration key that set it, caused by the refusal (other errors pass
/// through). Options are named `<backend>.<backend>_<option>`
/// (`redis.redis_url` for the option `url` of the Redis backend).
fn option_error(conf: &PynencConfig, e: StoreError) -> PynencError {
    let StoreError::InvalidOption {
        backend,
        option,
        reason,
        ..
    } = &e
    else {
        return e.into();
    };
    let key = format!("{backend}.{backend}_{option}");
    let error = conf.error_at(&key, reason.clone());
    PynencError::Config(error.caused_by(e))
}

#[cfg(all(test, any(feature = "sqlite", feature = "redis", feature = "postgres")))]
mod tests {
    use super::*;

    /// The configuration's defaults (`conf/table.rs`) and the backends' own
    /// defaults are written in two crates: they must agree.
    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_defaults_agree_with_the_configuration() {
        let conf = PynencConfig {
            backend: BackendKind::Sqlite,
            ..PynencConfig::default()
        };
        let Ok(Backend::Sqlite(options)) = Backend::from_config(&conf) else {
            panic!("expected SQLite options");
        };
        assert_eq!(options, SqliteOptions::new(&conf.sqlite.sqlite_path));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_defaults_agree_with_the_configuration() {
        let conf = PynencConfig {
            backend: BackendKind::Redis,
            ..PynencConfig::default()
        };
        let Ok(Backend::Redis(options)) = Backend::from_config(&conf) else {
            panic!("expected Redis options");
        };
        assert_eq!(options, RedisOptions::default());
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_defaults_agree_with_the_configuration() {
        let conf = PynencConfig {
            backend: BackendKind::Postgres,
            ..PynencConfig::default()
        };
        let Ok(Backend::Postgres(options)) = Backend::from_config(&conf) else {
            panic!("expected PostgreSQL options");
        };
        assert_eq!(options, PostgresOptions::new(&conf.postgres.postgres_url));
    }
}
