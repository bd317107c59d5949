//! The schema: created when missing, its version checked, the app's number.

use pynenc_store::{Result, StoreError};
use tokio_postgres::Client;
use tracing::info;

use crate::error::{describe, BACKEND};

/// The schema version this library writes and understands.
pub const SCHEMA_VERSION: i64 = 8;

/// The tables and indexes.
const SCHEMA: &str = include_str!("sql/schema.sql");

/// The version upgraded in place to [`SCHEMA_VERSION`] when found, and how
/// (version 8 only changed an index: nothing stored is rewritten).
const UPGRADED: (i64, &str) = (7, include_str!("sql/upgrade_7.sql"));

/// The key of the session lock held while the schema is checked or created
/// (so two processes opening a new database do not both create it).
const SCHEMA_LOCK: i64 = 0x7079_6e65_6e63_0001;

/// Creates the schema if the database has none, checks its version, and
/// returns the number of the app `app_id` (registered if new).
pub(crate) async fn init(client: &Client, shown: &str, app_id: &str) -> Result<i32> {
    let fail = |e: tokio_postgres::Error, op: &str| {
        let message = format!("PostgreSQL {shown}: {op}: {}", describe(&e));
        StoreError::backend_caused(BACKEND, message, e)
    };
    client
        .query("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(|e| fail(e, "waiting for the schema lock"))?;
    let result = init_locked(client, shown, app_id).await;
    let unlocked = client
        .query("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(|e| fail(e, "releasing the schema lock"));
    let app = result?;
    unlocked?;
    Ok(app)
}

async fn init_locked(client: &Client, shown: &str, app_id: &str) -> Result<i32> {
    let fail = |e: tokio_postgres::Error, op: &str| {
        let message = format!("PostgreSQL {shown}: {op}: {}", describe(&e));
        StoreError::backend_caused(BACKEND, message, e)
    };
    let exists: bool = client
        .query_one("SELECT to_regclass('pynenc_meta') IS NOT NULL", &[])
        .await
        .map_err(|e| fail(e, "looking for the schema"))?
        .get(0);
    if exists {
        let found = client
            .query_opt(
                "SELECT value FROM pynenc_meta WHERE key = 'schema_version'",
                &[],
            )
            .await
            .map_err(|e| fail(e, "reading the schema version"))?;
        let mut version: Option<i64> = found.and_then(|r| r.get::<_, String>(0).parse().ok());
        if version == Some(UPGRADED.0) {
            upgrade(client, shown).await?;
            version = Some(SCHEMA_VERSION);
        }
        if version != Some(SCHEMA_VERSION) {
            let found = version.map_or("none or unreadable".to_string(), |v| v.to_string());
            return Err(StoreError::backend(
                BACKEND,
                format!(
                    "PostgreSQL {shown}: the database holds pynenc schema version {found}, \
                     this library uses version {SCHEMA_VERSION}; nothing was written. \
                     Version {} is upgraded in place; other versions are not migrated \
                     (pynenc keeps transient work state): drop the pynenc_* tables or use \
                     another database",
                    UPGRADED.0
                ),
            ));
        }
    } else {
        let create = format!(
            "BEGIN;\n{SCHEMA}\nINSERT INTO pynenc_meta (key, value) \
             VALUES ('schema_version', '{SCHEMA_VERSION}');\nCOMMIT;"
        );
        if let Err(e) = client.batch_execute(&create).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(fail(e, "creating the schema"));
        }
    }
    client
        .execute(
            "INSERT INTO pynenc_apps (app_id) VALUES ($1) ON CONFLICT (app_id) DO NOTHING",
            &[&app_id],
        )
        .await
        .map_err(|e| fail(e, "registering the app"))?;
    let row = client
        .query_one("SELECT app FROM pynenc_apps WHERE app_id = $1", &[&app_id])
        .await
        .map_err(|e| fail(e, "reading the app's number"))?;
    Ok(row.get(0))
}

/// Upgrades a schema of version [`UPGRADED`] to [`SCHEMA_VERSION`] in one
/// transaction (the caller holds the schema lock).
async fn upgrade(client: &Client, shown: &str) -> Result<()> {
    info!(
        from = UPGRADED.0,
        to = SCHEMA_VERSION,
        "PostgreSQL {shown}: upgrading the pynenc schema in place"
    );
    let sql = format!("BEGIN;\n{}\nCOMMIT;", UPGRADED.1);
    if let Err(e) = client.batch_execute(&sql).await {
        let _ = client.batch_execute("ROLLBACK").await;
        let message = format!(
            "PostgreSQL {shown}: upgrading the schema from version {} to {SCHEMA_VERSION}: {}",
            UPGRADED.0,
            describe(&e)
        );
        return Err(StoreError::backend_caused(BACKEND, message, e));
    }
    Ok(())
}
