//! The conformance suite on the PostgreSQL backend: each test gets a fresh
//! database on a server the test process starts itself (skipped, with a
//! message, when the server binaries are not installed; a failure with
//! `PYNENC_REQUIRE_POSTGRES=1`).
#![cfg(feature = "postgres")]

pynenc_testkit::conformance_tests!(pynenc_testkit::PostgresFactory::new());
