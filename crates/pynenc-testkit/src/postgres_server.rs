//! The PostgreSQL backend for the conformance suite: a fresh database per
//! factory, on a server the test process started itself (or on the server
//! of `PYNENC_POSTGRES_URL`), see [`pynenc_testservers::postgres`].

use pynenc::{Pynenc, PynencBuilder};
pub use pynenc_testservers::postgres::*;

use crate::BackendFactory;

/// Apps in a fresh database (one per factory, so every conformance test
/// gets its own tables).
pub struct PostgresFactory {
    db: Option<TestDatabase>,
    skip: Option<String>,
}

impl Default for PostgresFactory {
    fn default() -> Self {
        PostgresFactory::new()
    }
}

impl PostgresFactory {
    /// A fresh database on the shared test server (or why PostgreSQL tests
    /// are skipped).
    pub fn new() -> Self {
        PostgresFactory::from_db(skip_reason(), test_database)
    }

    /// A fresh database on a server of its own, which the test may stop
    /// and restart.
    pub fn with_own_server() -> Self {
        PostgresFactory::from_db(skip_reason(), TestDatabase::own_server)
    }

    fn from_db(skip: Option<String>, open: fn() -> Option<TestDatabase>) -> Self {
        if skip.is_some() {
            return PostgresFactory { db: None, skip };
        }
        match open() {
            Some(db) => PostgresFactory {
                db: Some(db),
                skip: None,
            },
            None => PostgresFactory {
                db: None,
                skip: Some(SKIP_MESSAGE.to_string()),
            },
        }
    }

    /// Why PostgreSQL tests are skipped here, if they are.
    pub fn skip_reason(&self) -> Option<String> {
        self.skip.clone()
    }

    /// The database (`None` when skipped).
    pub fn database(&mut self) -> Option<&mut TestDatabase> {
        self.db.as_mut()
    }

    /// The database's URL. Panics when skipped.
    pub fn url(&self) -> String {
        match &self.db {
            Some(db) => db.url(),
            None => panic!("{}", self.skip.clone().unwrap_or_default()),
        }
    }
}

impl BackendFactory for PostgresFactory {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn builder(&self, app_id: &str) -> PynencBuilder {
        Pynenc::builder()
            .env_vars(Vec::new())
            .app_id(app_id)
            .config_value("backend", "postgres")
            .config_value("postgres.postgres_url", self.url())
    }

    fn skip_reason(&self) -> Option<String> {
        self.skip.clone()
    }

    fn stored_bytes(&self) -> Option<u64> {
        let db = self.db.as_ref()?;
        db.psql("SELECT pg_database_size(current_database())")
            .trim()
            .parse()
            .ok()
    }
}
