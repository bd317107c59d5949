//! [`TestDatabase`]: a fresh database per test, on the process's shared
//! server, on a server of its own, or on `PYNENC_POSTGRES_URL`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::*;

/// The server of [`test_database`], shared by the tests of the process.
/// Never dropped: see the module's documentation for how it ends.
pub(super) static SHARED: OnceLock<PostgresServer> = OnceLock::new();

pub(super) fn shared_server() -> &'static PostgresServer {
    SHARED.get_or_init(PostgresServer::start)
}

/// `pynenc_test_<pid>_<n>_<random>`: unique on a server shared by several
/// test processes.
pub(super) fn unique_database_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "pynenc_test_{}_{}_{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        random_u32()
    )
}

/// Where a [`TestDatabase`] is.
#[derive(Debug)]
pub(super) enum Place {
    /// On the process's shared server.
    Shared,
    /// On a server of its own.
    Own(PostgresServer),
    /// On the server of `PYNENC_POSTGRES_URL`.
    External,
}

/// A fresh, empty database for one test, dropped with it (`DROP DATABASE
/// … WITH (FORCE)`, or with its whole server for
/// [`TestDatabase::own_server`]).
pub struct TestDatabase {
    pub(super) name: String,
    /// The fresh database's URL.
    pub(super) url: String,
    /// Where to connect to drop it.
    pub(super) admin_url: String,
    pub(super) place: Place,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the URL of PYNENC_POSTGRES_URL may hold a password
        write!(f, "TestDatabase({} on {:?})", redact(&self.url), self.place)
    }
}

/// A fresh database for a test, or `None` (after printing why on stderr)
/// when PostgreSQL tests cannot run here (see [`skip_reason`]).
///
/// It is made on the server of `PYNENC_POSTGRES_URL` when that is set
/// (whose user must be allowed to create databases), else on a server
/// started on first use and shared by all the tests of the process: its
/// start costs about 0.6 to 1.4 s, mostly `initdb`, paid once per test under
/// nextest, which runs each test in a process of its own; each database
/// then costs about 0.25 s to create. Tests must not stop that server: use
/// [`TestDatabase::own_server`] for that.
pub fn test_database() -> Option<TestDatabase> {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return None;
    }
    Some(match external_url() {
        Some(url) => TestDatabase::on_external(&url),
        None => {
            let server = shared_server();
            let name = unique_database_name();
            server.create_database(&name);
            TestDatabase {
                url: server.url_for(&name),
                admin_url: server.url(),
                name,
                place: Place::Shared,
            }
        }
    })
}

impl TestDatabase {
    /// A fresh database on a server of its own, which the test may stop,
    /// kill and restart through [`TestDatabase::server`]; `None` (after
    /// printing why on stderr) when PostgreSQL tests cannot run here.
    ///
    /// Where the server binaries are missing but `PYNENC_POSTGRES_URL` is
    /// set, the database is made on that server and [`TestDatabase::server`]
    /// is `None`: a test that restarts the server then skips.
    pub fn own_server() -> Option<TestDatabase> {
        if let Some(reason) = skip_reason() {
            eprintln!("SKIPPED: {reason}");
            return None;
        }
        if !missing_programs(true).is_empty() {
            if let Some(url) = external_url() {
                return Some(TestDatabase::on_external(&url));
            }
        }
        let server = PostgresServer::start();
        let name = unique_database_name();
        server.create_database(&name);
        Some(TestDatabase {
            url: server.url_for(&name),
            admin_url: server.url(),
            name,
            place: Place::Own(server),
        })
    }

    fn on_external(url: &str) -> TestDatabase {
        let name = unique_database_name();
        run_psql(url, &format!("CREATE DATABASE {}", quote_ident(&name)), false).unwrap_or_else(
            |e| {
                panic!(
                    "could not create the test database {name} on {URL_VAR}={}: {e}; the URL's user must be allowed to create databases (ALTER ROLE … CREATEDB)",
                    redact(url)
                )
            },
        );
        TestDatabase {
            url: with_database(url, &name),
            admin_url: url.to_string(),
            name,
            place: Place::External,
        }
    }

    /// The URL of the fresh database.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The fresh database's name (`pynenc_test_<pid>_<n>_<random>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server of [`TestDatabase::own_server`], to stop, kill or restart;
    /// `None` on the shared server and on `PYNENC_POSTGRES_URL`'s.
    pub fn server(&mut self) -> Option<&mut PostgresServer> {
        match &mut self.place {
            Place::Own(server) => Some(server),
            Place::Shared | Place::External => None,
        }
    }

    /// Runs `sql` on the fresh database with `psql`, as the server's
    /// superuser (or the user of `PYNENC_POSTGRES_URL`); see
    /// [`PostgresServer::psql`] for the output. Panics, with psql's error,
    /// if it fails.
    pub fn psql(&self, sql: &str) -> String {
        let own = !matches!(self.place, Place::External);
        run_psql(&self.url, sql, own).unwrap_or_else(|e| {
            panic!(
                "SQL on the test database {} ({}) failed: {e}\nthe SQL was: {sql}",
                self.name,
                redact(&self.url)
            )
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let own = match self.place {
            // goes with its server
            Place::Own(_) => return,
            Place::Shared => true,
            Place::External => false,
        };
        let name = quote_ident(&self.name);
        // WITH (FORCE) (PostgreSQL 13+) disconnects the clients left
        let dropped = run_psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            own,
        )
        .or_else(|_| {
            run_psql(
                &self.admin_url,
                &format!("DROP DATABASE IF EXISTS {name}"),
                own,
            )
        });
        if let Err(e) = dropped {
            eprintln!(
                "warning: could not drop the test database {} on {}: {e}",
                self.name,
                redact(&self.admin_url)
            );
        }
    }
}
