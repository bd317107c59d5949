//! The conformance suite on the SQLite backend (a fresh file per test).

#![cfg(feature = "sqlite")]

pynenc_testkit::conformance_tests!(pynenc_testkit::SqliteFactory::new());
