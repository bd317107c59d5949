//! [`PostgresServer`]: one server in its own directory, started,
//! stopped, restarted and removed.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A PostgreSQL server of its own: a cluster made by `initdb` in a
/// temporary directory, served by a `postgres` child process on
/// 127.0.0.1 at a free port, as the superuser `pynenc` without password.
/// Dropping it stops the server and removes the directory.
pub struct PostgresServer {
    /// The postmaster, while it runs.
    pub(super) child: Option<Child>,
    pub(super) port: u16,
    /// Holds `data/` (the cluster), `log` (the server's output) and the
    /// Unix socket.
    pub(super) dir: PathBuf,
    pub(super) user: Option<RunAs>,
    /// Removes `dir` when this server is dropped or the process ends.
    pub(super) reaper: Option<Child>,
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresServer(127.0.0.1:{})", self.port)
    }
}

impl PostgresServer {
    /// Creates a cluster in a new temporary directory and starts a server
    /// on it, waiting until it accepts connections. Panics, with the end of
    /// the server's log, if it cannot.
    pub fn start() -> PostgresServer {
        PostgresServer::try_start()
            .unwrap_or_else(|e| panic!("could not start a PostgreSQL test server: {e}"))
    }

    /// Like [`PostgresServer::start`], but says why it could not.
    pub fn try_start() -> Result<PostgresServer, String> {
        let missing = missing_programs(true);
        if !missing.is_empty() {
            return Err(format!(
                "the PostgreSQL programs {} are not found on PATH nor in /usr/lib/postgresql/*/bin; install them (Debian: apt-get install postgresql)",
                missing.join(", ")
            ));
        }
        let user = server_user()?;
        let dir = make_temp_dir(user)?;
        let reaper = spawn_reaper(&dir);
        // from here on, dropping `server` cleans up
        let mut server = PostgresServer {
            child: None,
            port: 0,
            dir,
            user,
            reaper,
        };
        server.initdb()?;
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    // another process took the free port before the server
                    // bound it: try another; anything else is final
                    let port_taken = e.contains("could not bind")
                        || e.contains("could not create any TCP/IP sockets");
                    last_error = e;
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        Err(last_error)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// The last lines of the server's log, for messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
        if tail.is_empty() {
            format!("(nothing in {})", self.log_path().display())
        } else {
            format!("end of {}:\n    {tail}", self.log_path().display())
        }
    }

    /// A command running PostgreSQL's `program` as the server's user, in the
    /// server's directory (the server's user may not be able to enter this
    /// process's working directory), in the C locale, without the `PG*`
    /// variables of the environment.
    fn server_command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.env("LC_ALL", "C")
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        if let Some(user) = self.user {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    /// `initdb -D <dir>/data -U pynenc --auth=trust -E UTF8 --no-locale -N`
    /// (`-N`: no fsync, spelled `--nosync` before PostgreSQL 10 and
    /// `--no-sync` since; the short form works on every version).
    fn initdb(&self) -> Result<(), String> {
        let initdb = tool("initdb").ok_or("initdb not found")?;
        let output = self
            .server_command(&initdb)
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "-N",
            ])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", initdb.display()))?;
        if output.status.success() {
            return Ok(());
        }
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        Err(format!(
            "{} -D {} failed ({}){}:\n    {}",
            initdb.display(),
            self.data_dir().display(),
            output.status,
            self.user
                .map(|u| format!(" as the user `{}`", u.name))
                .unwrap_or_default(),
            lines[lines.len().saturating_sub(15)..].join("\n    ")
        ))
    }

    /// Starts `postgres` on the cluster and port, then waits until it
    /// accepts connections.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let postgres = tool("postgres").ok_or("postgres not found")?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open {}: {e}", self.log_path().display()))?;
        if let Some(user) = self.user {
            let _ = std::os::unix::fs::chown(self.log_path(), Some(user.uid), Some(user.gid));
        }
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot duplicate the log's handle: {e}"))?;
        // a Unix socket path is limited to about 100 bytes: without room for
        // "/.s.PGSQL.<port>", TCP only
        let socket_dir = if self.dir.as_os_str().len() < 80 {
            self.dir.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let mut cmd = self.server_command(&postgres);
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!("unix_socket_directories={socket_dir}"))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .stdout(log)
            .stderr(log_err)
            // not in the test's process group: a Ctrl-C is for the tests
            .process_group(0);
        let child = spawn_dying_with_process(cmd)
            .map_err(|e| format!("cannot run {}: {e}", postgres.display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Whether `postmaster.pid` is the one of `pid` and, from PostgreSQL 10
    /// on, says `ready` (older versions: it exists).
    fn pid_file_ready(&self, pid: u32) -> bool {
        let Ok(text) = std::fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = text.lines().collect();
        lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
            && lines.get(7).is_none_or(|status| status.trim() == "ready")
    }

    /// Waits until the postmaster accepts connections (`select 1`), or
    /// exits, or [`READY_TIMEOUT`] passes (it is then killed).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_error = "postmaster.pid never said ready".to_string();
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err("the server is not running".to_string());
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "postgres exited ({status}) while starting on 127.0.0.1:{}; {}",
                    self.port,
                    self.log_tail()
                ));
            }
            let pid = child.id();
            // the pid file first: a port taken by another server (it has
            // not failed to bind yet) must not pass for ours
            if self.pid_file_ready(pid) {
                match run_psql(&self.url(), "select 1", true) {
                    Ok(_) => return Ok(()),
                    Err(e) => last_error = e,
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "postgres did not accept connections on 127.0.0.1:{} within {} s (killed it); last error: {last_error}; {}",
                    self.port,
                    READY_TIMEOUT.as_secs(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://pynenc@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// `postgres://pynenc@127.0.0.1:<port>/<database>`.
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(database)
        )
    }

    /// The temporary directory: `data/` (the cluster) and `log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the postmaster is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// `CREATE DATABASE "name"`. Panics if it fails.
    pub fn create_database(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        );
    }

    /// Runs `sql` on `database` as the superuser with `psql` (statement
    /// after statement, stopping at the first error) and returns the output:
    /// unaligned and tuples only, one line a row, columns separated by `|`
    /// (`select 1` gives `"1\n"`). Panics, with psql's error, if it fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        run_psql(&self.url_for(database), sql, true).unwrap_or_else(|e| {
            panic!(
                "SQL on the PostgreSQL test server 127.0.0.1:{} (database {database:?}) failed: {e}\nthe SQL was: {sql}",
                self.port
            )
        })
    }

    /// Turns TLS on (`ssl = on`, reloaded: no restart) with the certificate
    /// `cert` and its key `key` (PEM files, copied into the cluster for the
    /// server's user), and waits until new connections are offered it.
    /// Plain connections are still accepted.
    pub fn enable_tls(&self, cert: &Path, key: &Path) -> Result<(), String> {
        let data = self.data_dir();
        for (from, name, mode) in [(cert, "server.crt", 0o644), (key, "server.key", 0o600)] {
            let to = data.join(name);
            std::fs::copy(from, &to)
                .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
            if let Some(user) = self.user {
                std::os::unix::fs::chown(&to, Some(user.uid), Some(user.gid)).map_err(|e| {
                    format!("cannot give {} to the server's user: {e}", to.display())
                })?;
            }
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|e| format!("cannot set the mode of {}: {e}", to.display()))?;
        }
        let url = self.url_for("postgres");
        run_psql(&url, "ALTER SYSTEM SET ssl = on", true)?;
        run_psql(&url, "SELECT pg_reload_conf()", true)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if run_psql(&url, "SHOW ssl", true)?.trim() == "on" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ssl is still off after the reload; {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (fast shutdown: clients are disconnected, the data
    /// is written) and waits for it; nothing if it is not running.
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        sys::signal(child.id(), libc::SIGINT);
        if !wait_timeout(&mut child, Duration::from_secs(60)) {
            eprintln!(
                "warning: the PostgreSQL test server on 127.0.0.1:{} did not stop within 60 s of a fast shutdown request; killed it",
                self.port
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the postmaster (SIGKILL: a crash, recovered at the next start)
    /// and waits for it; nothing if it is not running. Its backends exit by
    /// themselves when they see it gone. With `synchronous_commit=off`, the
    /// commits of the last fraction of a second may be lost (a `CHECKPOINT`
    /// first keeps them); [`PostgresServer::stop`] loses nothing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again, on the same port and cluster, and waits
    /// until it accepts connections; a server still running is stopped
    /// first, so this is also a restart. Panics, with the end of the
    /// server's log, if it cannot within 30 s.
    pub fn start_again(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                // after a kill, the old backends may still hold the shared
                // memory or the port for a moment
                Err(e) if Instant::now() > deadline => panic!(
                    "could not start the PostgreSQL test server again on 127.0.0.1:{}: {e}",
                    self.port
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                // immediate shutdown: the backends stop at once, nothing is
                // written (the directory is removed anyway)
                sys::signal(child.id(), libc::SIGQUIT);
                if !wait_timeout(&mut child, Duration::from_secs(10)) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        remove_dir_retrying(&self.dir);
        if let Some(mut reaper) = self.reaper.take() {
            drop(reaper.stdin.take());
            // it finds nothing left to remove and exits
            let _ = wait_timeout(&mut reaper, Duration::from_secs(2));
        }
    }
}
