//! What the PostgreSQL backend's tests share: options with short timeouts,
//! opening a store on a test database, a runner id.

// each test file uses its own part of it
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use pynenc_model::RunnerId;
use pynenc_postgres::{PostgresOptions, PostgresStore};
use pynenc_testservers::postgres::TestDatabase;

/// The options for `url`, with short timeouts (a test fails fast).
pub fn options(url: &str) -> PostgresOptions {
    PostgresOptions {
        connect_timeout: Duration::from_secs(3),
        retry_for: Duration::from_secs(2),
        ..PostgresOptions::new(url)
    }
}

/// The store of `app` on `db`.
pub fn open(db: &TestDatabase, app: &str) -> Arc<PostgresStore> {
    PostgresStore::open(&options(&db.url()), app).expect("open the store")
}

/// The runner the tests' steps run for.
pub fn runner() -> RunnerId {
    RunnerId::from("runner-1")
}
