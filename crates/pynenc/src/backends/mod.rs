//! Backends: where the broker, orchestrator and state backend keep their data.
//!
//! - [`memory`]: in one process, no server (the default).
//! - `sqlite` (feature `sqlite`): one file shared by many processes on one machine.
//! - `redis` (feature `redis`): many machines on one Redis server.

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;
