//! The command line run as real processes: the standalone `pynenc` binary
//! against real SQLite files and a real `redis-server` (started by the
//! test), and the embedded form through the `embedded` example. Every
//! command's `--json` is parsed; bad inputs give a message on stderr, a
//! documented exit code, and change nothing.

// a test: a failed expectation fails it
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod backends;
mod commands;
mod embedded;
mod help;
mod monitor;
mod support;
mod terminal;
