//! Backends: where the broker, orchestrator and state backend keep their data.
//!
//! - [`memory`]: in one process, no server (the default).
//! - `sqlite` (feature `sqlite`): one file shared by many processes on one machine.

pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;
