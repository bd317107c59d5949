//! Connection settings, the check at open, error mapping and retries.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, RedisError};

use pynenc_store::{Result, StoreError};

use crate::RedisOptions;

/// The backend's name in errors.
pub(crate) const BACKEND: &str = "redis";

/// How long the check at open waits for the server.
pub(crate) const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a command waits for its reply.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a step keeps retrying while the server is unreachable.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(30);

/// The resolved connection settings.
pub(crate) struct Settings {
    pub client: redis::Client,
    /// `host:port/db`, for messages (never the password).
    pub address: String,
    /// The ACL user, for messages.
    pub username: Option<String>,
}

/// An option that cannot be used, and why.
fn invalid(option: &'static str, reason: String) -> StoreError {
    StoreError::invalid_option(BACKEND, option, reason)
}

/// An option that cannot be used, and the error that says why.
fn invalid_caused(
    option: &'static str,
    reason: String,
    cause: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::invalid_option_caused(BACKEND, option, reason, cause)
}

/// `redis://user:pass@host` → `redis://user:***@host` (for messages).
pub(crate) fn mask_url(s: &str) -> String {
    pynenc_model::mask_url_password(s).unwrap_or_else(|| s.to_string())
}

/// Builds the client from the URL, or from host, port, db, username and
/// password when there is none.
pub(crate) fn settings(options: &RedisOptions) -> Result<Settings> {
    let url = options
        .url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    let info: ConnectionInfo = match url {
        None => {
            let mut redis = RedisConnectionInfo::default().set_db(i64::from(options.db));
            if let Some(user) = options.username.as_deref().filter(|u| !u.is_empty()) {
                redis = redis.set_username(user);
            }
            if let Some(password) = options.password.as_deref().filter(|p| !p.is_empty()) {
                redis = redis.set_password(password);
            }
            ConnectionAddr::Tcp(options.host.clone(), options.port)
                .into_connection_info()
                .map_err(|e| invalid_caused("host", e.to_string(), e))?
                .set_redis_settings(redis)
        }
        Some(url) => {
            let tls = url.starts_with("rediss://") || url.starts_with("valkeys://");
            if tls && !cfg!(feature = "tls") {
                return Err(invalid(
                    "url",
                    "a rediss:// (TLS) URL needs TLS support (the cargo feature `redis-tls` of pynenc, `tls` of pynenc-redis); enable it or use redis://".into(),
                ));
            }
            url.into_connection_info().map_err(|e| {
                let reason = format!(
                    "not a valid Redis URL ({e}); expected redis://[user][:password@]host[:port][/db]"
                );
                invalid_caused("url", reason, e)
            })?
        }
    };
    let address = format!("{}/{}", info.addr(), info.redis_settings().db());
    let username = info.redis_settings().username().map(str::to_string);
    let client = match &options.tls_ca_file {
        None => redis::Client::open(info),
        Some(ca_file) => tls_client(info, ca_file)?,
    }
    .map_err(|e| {
        StoreError::backend_caused(
            BACKEND,
            format!("redis at {address}: invalid connection settings: {e}"),
            e,
        )
    })?;
    Ok(Settings {
        client,
        address,
        username,
    })
}

/// A clear error for a failure to reach or log in to the server.
pub(crate) fn connect_error(s: &Settings, e: &RedisError) -> StoreError {
    let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(
            e.code(),
            Some("WRONGPASS") | Some("NOAUTH") | Some("NOPERM")
        )
        || e.to_string().contains("WRONGPASS");
    if auth {
        let who = match &s.username {
            Some(u) => format!("user '{u}'"),
            None => "the default user".into(),
        };
        StoreError::backend_caused(
            BACKEND,
            format!(
                "cannot connect to redis at {}: authentication failed for {who} (check redis_username / redis_password or the password in redis_url): {e}",
                s.address
            ),
            e.clone(),
        )
    } else {
        StoreError::backend_caused(
            BACKEND,
            format!("cannot connect to redis at {}: {e}", s.address),
            e.clone(),
        )
    }
}

/// Connects, authenticates and sends `PING` once, synchronously (the app
/// builder is synchronous), so a wrong address or password is reported when
/// the app is built rather than at the first call.
pub(crate) fn check_reachable(s: &Settings) -> Result<()> {
    let check = || -> std::result::Result<(), RedisError> {
        let mut con = s.client.get_connection_with_timeout(OPEN_TIMEOUT)?;
        con.set_read_timeout(Some(OPEN_TIMEOUT))?;
        con.set_write_timeout(Some(OPEN_TIMEOUT))?;
        let _: String = redis::cmd("PING").query(&mut con)?;
        Ok(())
    };
    let guarded = || {
        // a TLS library without a crypto provider panics while connecting
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|m| m.to_string()))
                .unwrap_or_default();
            Err(RedisError::from((
                redis::ErrorKind::Client,
                "the connection setup panicked",
                what,
            )))
        })
    };
    let res = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(guarded)
        }
        _ => guarded(),
    };
    res.map_err(|e| connect_error(s, &e))
}

/// What a failed command means for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The command was not executed (connection refused, server loading): retry.
    NotSent,
    /// The connection broke while the command was in flight: it may have run.
    Ambiguous,
    /// Any other error: do not retry.
    Fatal,
}

pub(crate) fn classify(e: &RedisError) -> Failure {
    use redis::ServerErrorKind as S;
    if e.is_connection_refusal() {
        return Failure::NotSent;
    }
    match e.kind() {
        redis::ErrorKind::Server(S::BusyLoading | S::TryAgain | S::MasterDown) => Failure::NotSent,
        redis::ErrorKind::Io => Failure::Ambiguous,
        _ => Failure::Fatal,
    }
}

/// A command failure as a store error, naming the server and the command.
pub(crate) fn command_error(address: &str, command: &str, e: &RedisError) -> StoreError {
    StoreError::backend_caused(
        BACKEND,
        format!("redis at {address}: {command} failed: {e}"),
        e.clone(),
    )
}

/// The backoff before the `attempt`-th retry.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((25u64 << attempt.min(5)).min(1000))
}

/// A client trusting the certificate authorities of `ca_file` (PEM).
#[cfg(feature = "tls")]
fn tls_client(
    info: ConnectionInfo,
    ca_file: &std::path::Path,
) -> Result<redis::RedisResult<redis::Client>> {
    let pem = std::fs::read(ca_file).map_err(|e| {
        let reason = format!("cannot read the CA file {}: {e}", ca_file.display());
        invalid_caused("tls_ca_file", reason, e)
    })?;
    Ok(redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    ))
}

/// Without TLS support a CA file cannot be used.
#[cfg(not(feature = "tls"))]
fn tls_client(
    _info: ConnectionInfo,
    _ca_file: &std::path::Path,
) -> Result<redis::RedisResult<redis::Client>> {
    Err(invalid(
        "tls_ca_file",
        "a CA file is for rediss:// connections, which need TLS support (the cargo feature `redis-tls` of pynenc, `tls` of pynenc-redis)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_passwords() {
        assert_eq!(mask_url("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(mask_url("redis://:secret@h"), "redis://:***@h");
        assert_eq!(mask_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(mask_url("not a url"), "not a url");
    }
}
