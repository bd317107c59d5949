//! A real PostgreSQL server for tests: `initdb` into its own temporary
//! directory, then `postgres` listening only on 127.0.0.1 at a free port
//! (never 5432) with test-speed settings (`fsync=off`,
//! `synchronous_commit=off`, `full_page_writes=off`), stopped and removed
//! when dropped. Only the server's own binaries are used (`initdb`,
//! `postgres`, `psql`): this crate has no PostgreSQL client library.
//!
//! Most tests want [`test_database`]: a fresh database of their own on one
//! server shared by the whole test process, or, when `PYNENC_POSTGRES_URL`
//! is set, on that external server. A test that stops, kills or restarts
//! the server uses [`TestDatabase::own_server`], so it never disturbs the
//! others.
//!
//! Without the binaries (looked for on `PATH`, then in the highest
//! `/usr/lib/postgresql/*/bin`) and without `PYNENC_POSTGRES_URL`, the
//! PostgreSQL tests are skipped with a message, or fail when the
//! environment sets `PYNENC_REQUIRE_POSTGRES=1`.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, `initdb`
//! and `postgres` run as the `postgres` system user (or `nobody`), and the
//! temporary directory belongs to that user.
//!
//! # Nothing is left behind
//!
//! A [`PostgresServer`] stops its server and removes its directory when
//! dropped, also while a test panics. The shared server of
//! [`test_database`] lives in a `static`, which is never dropped, and a test
//! process may also be killed; so every server is covered twice:
//! - the postmaster is spawned with `PR_SET_PDEATHSIG = SIGQUIT` (Linux) by
//!   a keeper thread that lives as long as the process, so the kernel asks
//!   it for an immediate shutdown when the test process ends, however it
//!   ends. SIGQUIT rather than SIGKILL: the postmaster then stops and reaps
//!   its backends itself, where a killed postmaster would leave them to the
//!   init process (which, in some containers, never reaps them);
//! - each server has a "reaper": a small `sh` child that blocks reading a
//!   pipe whose only writer is the test process; when the process drops the
//!   server or ends (even by SIGKILL) the pipe closes, and the reaper waits
//!   for the postmaster to go (sending it SIGQUIT itself where there is no
//!   `PR_SET_PDEATHSIG`, SIGKILL after 10 s), then removes the directory.
//!   It is in a process group of its own, so a Ctrl-C or a test runner
//!   killing the test's process group does not stop it before it is done.
//!
//! Leftover directories are therefore not searched for at start.

mod database;
mod process;
mod server;
mod sql;
#[cfg(test)]
mod tests;

pub use database::{test_database, TestDatabase};
use process::*;
pub use server::PostgresServer;
use sql::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The message of a skipped PostgreSQL test.
pub const SKIP_MESSAGE: &str = "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH nor in /usr/lib/postgresql/*/bin; install them (Debian: apt-get install postgresql), or set PYNENC_POSTGRES_URL to a server where the user may create databases, or set PYNENC_REQUIRE_POSTGRES=1 to make this a failure";

/// A server (`postgres://user:password@host:port/database`) on which the
/// tests create their databases instead of starting their own.
const URL_VAR: &str = "PYNENC_POSTGRES_URL";
/// `1`: a missing PostgreSQL is a failure, not a skip.
const REQUIRE_VAR: &str = "PYNENC_REQUIRE_POSTGRES";
/// The superuser `initdb` creates (trusted, no password, 127.0.0.1 only).
const SUPERUSER: &str = "pynenc";
/// The port of a system PostgreSQL service: never ours.
const STANDARD_PORT: u16 = 5432;
/// How long a server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory holding `initdb` and `pg_ctl`: the first such directory of
/// `PATH`, else the highest version of `/usr/lib/postgresql/*/bin` (Debian,
/// where they are not on `PATH`) or `/usr/pgsql-*/bin` (Red Hat).
pub fn bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|dir| has_server(dir)) {
            return Some(dir);
        }
    }
    versioned_bin_dirs().into_iter().find(|dir| has_server(dir))
}

/// `/usr/lib/postgresql/<version>/bin` and `/usr/pgsql-<version>/bin`,
/// highest version first.
fn versioned_bin_dirs() -> Vec<PathBuf> {
    fn version(name: &str) -> Option<Vec<u32>> {
        name.split('.').map(|part| part.parse().ok()).collect()
    }
    let mut found: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    for (parent, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(v) = name.strip_prefix(prefix).and_then(version) {
                found.push((v, entry.path().join("bin")));
            }
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, dir)| dir).collect()
}

/// Where the PostgreSQL program `name` is: in [`bin_dir`], in the directory
/// its `initdb` links to (Debian's `psql` is there, `/usr/bin/psql` being a
/// wrapper script), in the versioned directories, then on `PATH`.
fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = bin_dir() {
        if let Some(real) = dir
            .join("initdb")
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            dirs.push(dir);
            dirs.push(real);
        } else {
            dirs.push(dir);
        }
    }
    dirs.extend(versioned_bin_dirs());
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The programs missing to start a server (`local`) or only to use an
/// external one.
fn missing_programs(local: bool) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if local {
        if bin_dir().is_none() {
            missing.extend(["initdb", "pg_ctl"]);
        }
        if tool("postgres").is_none() {
            missing.push("postgres");
        }
    }
    if tool("psql").is_none() {
        missing.push("psql");
    }
    missing
}

/// `PYNENC_POSTGRES_URL`, when set and not empty.
fn external_url() -> Option<String> {
    std::env::var(URL_VAR)
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// Why PostgreSQL tests cannot run here (`None` when they can: the server
/// binaries are installed, or `PYNENC_POSTGRES_URL` is set and `psql` is
/// installed). Panics when they cannot and `PYNENC_REQUIRE_POSTGRES=1`.
pub fn skip_reason() -> Option<String> {
    let external = external_url().is_some();
    let missing = missing_programs(!external);
    if missing.is_empty() {
        return None;
    }
    let required = std::env::var(REQUIRE_VAR).as_deref() == Ok("1");
    let reason = if external {
        format!("{URL_VAR} is set but psql is not found on PATH nor in /usr/lib/postgresql/*/bin; install it (Debian: apt-get install postgresql-client)")
    } else if bin_dir().is_none() {
        SKIP_MESSAGE.to_string()
    } else {
        format!(
            "the PostgreSQL programs {} are not found (initdb is in {}); install the whole server (Debian: apt-get install postgresql) or set {REQUIRE_VAR}=1 to make this a failure",
            missing.join(", "),
            bin_dir().unwrap_or_default().display()
        )
    };
    if required {
        panic!(
            "{REQUIRE_VAR}=1 but PostgreSQL cannot be used: {}",
            if reason == SKIP_MESSAGE {
                "initdb and pg_ctl are not found on PATH nor in /usr/lib/postgresql/*/bin; install them (Debian: apt-get install postgresql) or set PYNENC_POSTGRES_URL".to_string()
            } else {
                reason
            }
        );
    }
    Some(reason)
}
