//! Connection settings, the check at open, error mapping and retries.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, RedisError};

use crate::conf::PynencConfig;
use crate::exceptions::{ConfigError, ConfigSource, PynencError, Result};

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

fn config_error(conf: &PynencConfig, key: &str, reason: String) -> PynencError {
    PynencError::Config(ConfigError {
        source: conf
            .source_of(key)
            .cloned()
            .unwrap_or(ConfigSource::Default),
        key: key.into(),
        reason,
    })
}

/// Builds the client from `redis_url`, or from host, port, db, username and
/// password when the URL is empty.
pub(crate) fn settings(conf: &PynencConfig) -> Result<Settings> {
    let rc = &conf.redis;
    let info: ConnectionInfo = if rc.redis_url.trim().is_empty() {
        let mut redis = RedisConnectionInfo::default().set_db(rc.redis_db as i64);
        if !rc.redis_username.is_empty() {
            redis = redis.set_username(&rc.redis_username);
        }
        if !rc.redis_password.is_empty() {
            redis = redis.set_password(&rc.redis_password);
        }
        ConnectionAddr::Tcp(rc.redis_host.clone(), rc.redis_port)
            .into_connection_info()
            .map_err(|e| config_error(conf, "redis.redis_host", e.to_string()))?
            .set_redis_settings(redis)
    } else {
        let url = rc.redis_url.trim();
        let tls = url.starts_with("rediss://") || url.starts_with("valkeys://");
        if tls && !cfg!(feature = "redis-tls") {
            return Err(config_error(
                conf,
                "redis.redis_url",
                "a rediss:// (TLS) URL needs the cargo feature `redis-tls` of pynenc; enable it or use redis://".into(),
            ));
        }
        url.into_connection_info().map_err(|e| {
            config_error(
                conf,
                "redis.redis_url",
                format!("not a valid Redis URL ({e}); expected redis://[user][:password@]host[:port][/db]"),
            )
        })?
    };
    let address = format!("{}/{}", info.addr(), info.redis_settings().db());
    let username = info.redis_settings().username().map(str::to_string);
    let ca_file = rc.redis_tls_ca_file.trim();
    let client = if ca_file.is_empty() {
        redis::Client::open(info)
    } else {
        tls_client(conf, info, ca_file)?
    }
    .map_err(|e| {
        PynencError::backend(format!(
            "redis at {address}: invalid connection settings: {e}"
        ))
    })?;
    Ok(Settings {
        client,
        address,
        username,
    })
}

/// A clear error for a failure to reach or log in to the server.
pub(crate) fn connect_error(s: &Settings, e: &RedisError) -> PynencError {
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
        PynencError::backend(format!(
            "cannot connect to redis at {}: authentication failed for {who} (check redis_username / redis_password or the password in redis_url): {e}",
            s.address
        ))
    } else {
        PynencError::backend(format!("cannot connect to redis at {}: {e}", s.address))
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

/// A command failure as a pynenc error, naming the server and the command.
pub(crate) fn command_error(address: &str, command: &str, e: &RedisError) -> PynencError {
    PynencError::backend(format!("redis at {address}: {command} failed: {e}"))
}

/// The backoff before the `attempt`-th retry.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((25u64 << attempt.min(5)).min(1000))
}

/// A client trusting the certificate authorities of `ca_file` (PEM).
#[cfg(feature = "redis-tls")]
fn tls_client(
    conf: &PynencConfig,
    info: ConnectionInfo,
    ca_file: &str,
) -> Result<redis::RedisResult<redis::Client>> {
    let pem = std::fs::read(ca_file).map_err(|e| {
        config_error(
            conf,
            "redis.redis_tls_ca_file",
            format!("cannot read the CA file {ca_file}: {e}"),
        )
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
#[cfg(not(feature = "redis-tls"))]
fn tls_client(
    conf: &PynencConfig,
    _info: ConnectionInfo,
    _ca_file: &str,
) -> Result<redis::RedisResult<redis::Client>> {
    Err(config_error(
        conf,
        "redis.redis_tls_ca_file",
        "a CA file is for rediss:// connections, which need the cargo feature `redis-tls` of pynenc".into(),
    ))
}
