//! Connections: the URL (shown without its password), connecting with a
//! timeout, and the connection task.

use std::str::FromStr;
use std::time::Duration;

use pynenc_store::{Result, StoreError};
use tokio_postgres::{Client, Config, NoTls};
use tracing::warn;

use crate::error::{describe, BACKEND};

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

/// The parsed connection settings of `url`.
pub(crate) fn config(url: &str, connect_timeout: Duration) -> Result<Config> {
    let mut config = Config::from_str(url).map_err(|e| {
        StoreError::invalid_option_caused(
            BACKEND,
            "url",
            format!("'{}' is not a PostgreSQL URL: {e}", redact(url)),
            e,
        )
    })?;
    config.connect_timeout(connect_timeout);
    config.application_name("pynenc");
    Ok(config)
}

/// A connected client, its connection driven by a task of the current
/// runtime (it ends when the client is dropped or the server goes away).
pub(crate) async fn connect(config: &Config, shown: &str) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        let message = format!("cannot connect to PostgreSQL {shown}: {}", describe(&e));
        StoreError::backend_caused(BACKEND, message, e)
    })?;
    let shown = shown.to_string();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(postgres = %shown, error = %describe(&e), "PostgreSQL connection ended");
        }
    });
    Ok(client)
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
