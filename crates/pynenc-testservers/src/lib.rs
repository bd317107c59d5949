//! Real servers for pynenc's tests, started by the tests themselves on free
//! ports of 127.0.0.1, in temporary directories, and stopped when dropped:
//! a test never touches the data of a server it did not start.
//!
//! - [`redis`]: `redis-server` (skipped with a message where it is not
//!   installed; a failure with `PYNENC_REQUIRE_REDIS=1`).
//! - [`postgres`]: PostgreSQL (`initdb` + `postgres`, run as an unprivileged
//!   user when the tests run as root) and fresh test databases on a server
//!   shared by the test process ([`postgres::test_database`]), or on the
//!   server of `PYNENC_POSTGRES_URL` (skipped with a message where neither is
//!   available; a failure with `PYNENC_REQUIRE_POSTGRES=1`).
//!
//! - [`certs`]: a certificate authority and a server certificate for
//!   127.0.0.1, for TLS tests (made with the `openssl` command).
//!
//! This crate does not depend on pynenc, so every crate of the workspace
//! (the backends included) can use it in its tests.
#![deny(missing_docs)]
// test support: a failure to start a server fails the test
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod certs;
pub mod postgres;
pub mod redis;
