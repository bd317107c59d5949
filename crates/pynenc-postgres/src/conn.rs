//! Connections: the URL (shown without its password), connecting with a
//! timeout, with TLS when the URL asks for it (`sslmode=require`, see
//! [`crate::tls`]), and the connection task.

use std::path::Path;
use std::str::FromStr;

use pynenc_store::{Result, StoreError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket};
use tracing::warn;

use crate::error::{describe, BACKEND};
use crate::PostgresOptions;

/// `url` with its password replaced by `***` (the `user:password@` of a
/// URL, or a `password=` pair of the `key=value` form).
pub(crate) fn redact(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let scheme = &url[..url.len() - rest.len()];
        if let Some(at) = rest.find('@') {
            let (userinfo, host) = rest.split_at(at);
            if let Some(colon) = userinfo.find(':') {
                return format!("{scheme}{}:***{host}", &userinfo[..colon]);
            }
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|pair| {
            if pair.starts_with("password=") {
                "password=***".to_string()
            } else {
                pair.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How connections are made: in the clear, or over TLS.
#[derive(Clone)]
pub(crate) enum Tls {
    /// No TLS (`sslmode=prefer`, the default, or `disable`).
    Plain,
    /// TLS with the server's certificate verified (`sslmode=require`).
    #[cfg(feature = "tls")]
    Rustls(crate::tls::MakeRustls),
}

impl Tls {
    /// What `config` asks for, trusting `ca_file` (or the system's trust
    /// store) for TLS.
    fn of(config: &Config, ca_file: Option<&Path>) -> Result<Tls> {
        if config.get_ssl_mode() != SslMode::Require {
            return match ca_file {
                None => Ok(Tls::Plain),
                Some(_) => Err(StoreError::invalid_option(
                    BACKEND,
                    "tls_ca_file",
                    "a CA file is for TLS connections: add sslmode=require to the URL",
                )),
            };
        }
        #[cfg(feature = "tls")]
        {
            Ok(Tls::Rustls(crate::tls::MakeRustls::new(ca_file)?))
        }
        #[cfg(not(feature = "tls"))]
        {
            Err(StoreError::invalid_option(
                BACKEND,
                "url",
                "sslmode=require needs TLS support (the cargo feature `postgres-tls` of pynenc, \
                 `tls` of pynenc-postgres)",
            ))
        }
    }
}

/// The server to connect to: the parsed URL and how to secure it.
#[derive(Clone)]
pub(crate) struct Server {
    pub(crate) config: Config,
    pub(crate) tls: Tls,
}

impl Server {
    /// The connection settings of `options`.
    pub(crate) fn of(options: &PostgresOptions) -> Result<Server> {
        let url = &options.url;
        let mut config = Config::from_str(url).map_err(|e| {
            StoreError::invalid_option_caused(
                BACKEND,
                "url",
                format!("'{}' is not a PostgreSQL URL: {e}", redact(url)),
                e,
            )
        })?;
        config.connect_timeout(options.connect_timeout);
        config.application_name("pynenc");
        let tls = Tls::of(&config, options.tls_ca_file.as_deref())?;
        Ok(Server { config, tls })
    }
}

/// A connected client, its connection driven by a task of the current
/// runtime (it ends when the client is dropped or the server goes away).
pub(crate) async fn connect(server: &Server, shown: &str) -> Result<Client> {
    match &server.tls {
        Tls::Plain => spawned(server.config.connect(NoTls).await, shown),
        #[cfg(feature = "tls")]
        Tls::Rustls(make) => spawned(server.config.connect(make.clone()).await, shown),
    }
}

/// Runs the future `task` makes on a thread named `name` with a runtime of
/// its own (the threads of a store's own connections besides the writer);
/// a runtime that cannot start is logged with `failed` and `task` dropped
/// unrun.
pub(crate) fn spawn_with_runtime<F, Fut>(
    name: &str,
    failed: &'static str,
    task: F,
) -> std::io::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(task()),
                Err(e) => warn!(error = %e, "{failed}"),
            }
        })
        .map(|_| ())
}

/// The client of a connection attempt, its connection spawned.
fn spawned<T>(
    connected: std::result::Result<(Client, Connection<Socket, T>), tokio_postgres::Error>,
    shown: &str,
) -> Result<Client>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = connected.map_err(|e| connect_error(e, shown))?;
    let shown = shown.to_string();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(postgres = %shown, error = %describe(&e), "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The error of a failed connection attempt, naming the server.
fn connect_error(e: tokio_postgres::Error, shown: &str) -> StoreError {
    let message = format!("cannot connect to PostgreSQL {shown}: {}", describe(&e));
    StoreError::backend_caused(BACKEND, message, e)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/jobs"),
            "postgres://app:***@db:5432/jobs"
        );
        assert_eq!(
            redact("postgresql://app@db/jobs"),
            "postgresql://app@db/jobs"
        );
        assert_eq!(
            redact("host=db user=app password=s3cret dbname=jobs"),
            "host=db user=app password=*** dbname=jobs"
        );
    }
}
