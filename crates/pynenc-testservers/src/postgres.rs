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

use std::collections::hash_map::RandomState;
use std::fs::OpenOptions;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

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

/// The unprivileged user that runs `initdb` and `postgres` when this
/// process is root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
    name: &'static str,
}

/// `None` when this process is not root (the server runs as this user),
/// else the `postgres` system user, else `nobody`.
fn server_user() -> Result<Option<RunAs>, String> {
    if sys::geteuid() != 0 {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Some((uid, gid)) = sys::user_ids(name) {
            if uid != 0 {
                return Ok(Some(RunAs { uid, gid, name }));
            }
        }
    }
    Err("the tests run as root and PostgreSQL refuses to run as root, but there is neither a `postgres` nor a `nobody` user to run it as; create one (Debian: adduser --system postgres) or run the tests as another user".to_string())
}

/// Whether `user` can reach `dir` (execute permission on it and every
/// ancestor; supplementary groups are not considered).
fn traversable_by(dir: &Path, user: RunAs) -> Result<(), String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    for ancestor in dir.ancestors() {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.mode();
        let ok = (meta.uid() == user.uid && mode & 0o100 != 0)
            || (meta.gid() == user.gid && mode & 0o010 != 0)
            || mode & 0o001 != 0;
        if !ok {
            return Err(format!(
                "the PostgreSQL test server runs as the user `{}` (the tests run as root), which cannot enter {} (mode {:o}); set TMPDIR to a directory every user can traverse, such as /tmp",
                user.name,
                ancestor.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

fn random_u32() -> u32 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish() as u32
}

/// A new directory `pynenc-postgres-<pid>-<n>-<random>` in the temporary
/// directory, mode 0700, owned by the server's user.
fn make_temp_dir(user: Option<RunAs>) -> Result<PathBuf, String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    if let Some(user) = user {
        traversable_by(&base, user)?;
    }
    let dir = base.join(format!(
        "pynenc-postgres-{}-{}-{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        random_u32()
    ));
    std::fs::create_dir(&dir).map_err(|e| {
        format!(
            "cannot create the directory {} for the PostgreSQL test server: {e}; set TMPDIR to a writable directory",
            dir.display()
        )
    })?;
    let chown = || -> std::io::Result<()> {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some(user) = user {
            std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))?;
        }
        Ok(())
    };
    if let Err(e) = chown() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!(
            "cannot give {} to the PostgreSQL test server's user: {e}",
            dir.display()
        ));
    }
    Ok(dir)
}

/// Starts the reaper of `dir` (see the module's documentation): it removes
/// `dir` once the pipe on its standard input closes. `None` if `sh` cannot
/// run (the server still works; only the clean-up after a crash is lost).
fn spawn_reaper(dir: &Path) -> Option<Child> {
    // "$1" is the directory; `cat` returns at end of file, i.e. when the
    // server is dropped or this process ends, however it ends. The
    // postmaster removes its postmaster.pid when it has stopped.
    let quit = if cfg!(target_os = "linux") {
        // the kernel already sent SIGQUIT (PR_SET_PDEATHSIG)
        ""
    } else {
        r#"read -r pid < "$pidfile" 2>/dev/null && kill -QUIT "$pid" 2>/dev/null
"#
    };
    let script = format!(
        r#"trap '' HUP INT QUIT TERM
cat >/dev/null
pidfile="$1/data/postmaster.pid"
{quit}i=0
while [ -e "$pidfile" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if read -r pid < "$pidfile" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null; sleep 1; fi
i=0
while [ -e "$1" ] && [ "$i" -lt 50 ]; do rm -rf "$1" 2>/dev/null; [ -e "$1" ] && sleep 0.2; i=$((i+1)); done
"#
    );
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg("pynenc-postgres-reaper")
        .arg(dir)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()
}

/// Spawns `cmd` from a thread that lives as long as the process, with
/// `PR_SET_PDEATHSIG = SIGQUIT`: the child, a postmaster, gets an
/// immediate shutdown request when the process ends.
///
/// The kernel sends the parent-death signal when the *thread* that forked
/// the child exits, not the process: a child spawned from a test's thread
/// would be killed as soon as that test's thread ends (the harness runs
/// each test on a thread of its own), and the shared server must outlive
/// the test that started it. So every postmaster is forked by one keeper
/// thread, started on first use and blocked forever on its channel (whose
/// sender is in a static), which only ends with the process.
fn spawn_dying_with_process(mut cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("pynenc-postgres-keeper".to_string())
            .spawn(move || {
                for (mut cmd, reply) in incoming {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the thread that spawns the PostgreSQL test servers");
        Mutex::new(requests)
    });
    sys::die_with_parent(&mut cmd);
    let (reply, answer) = mpsc::channel();
    let gone = || std::io::Error::other("the thread that spawns the PostgreSQL servers is gone");
    keeper
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((cmd, reply))
        .map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

/// A free port of 127.0.0.1, never 5432.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0")
            .expect("bind a free port of 127.0.0.1 for the PostgreSQL test server");
        let port = listener.local_addr().expect("local address").port();
        if port != STANDARD_PORT {
            return port;
        }
    }
}

/// Waits up to `timeout` for `child` to exit.
fn wait_timeout(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() > deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Removes `dir`, retrying a little while processes still leave files in it.
fn remove_dir_retrying(dir: &Path) {
    for _ in 0..40 {
        let _ = std::fs::remove_dir_all(dir);
        if !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `"name"`, quoted for SQL.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Percent-encodes everything but the unreserved characters of a URL.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `url` with its database replaced by `database` (its query kept); for a
/// `key=value` connection string, `dbname=` is appended (the last wins).
fn with_database(url: &str, database: &str) -> String {
    let Some(scheme) = url.find("://").map(|i| i + 3) else {
        return format!("{url} dbname='{}'", database.replace('\'', "\\'"));
    };
    let end_of_authority = url[scheme..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme + i);
    let query = url[end_of_authority..]
        .find('?')
        .map_or("", |i| &url[end_of_authority + i..]);
    format!(
        "{}/{}{query}",
        &url[..end_of_authority],
        percent_encode(database)
    )
}

/// `url` with its password hidden, for messages.
fn redact(url: &str) -> String {
    let Some(scheme) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end_of_authority = url[scheme..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme + i);
    let authority = &url[scheme..end_of_authority];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme],
            &authority[..colon],
            &url[scheme + at..]
        ),
        _ => url.to_string(),
    }
}

/// Runs `sql` (a script: one statement after another, stopping at the
/// first error) with `psql` on `url` and returns its output (unaligned,
/// tuples only: one line a row, columns separated by `|`). `own_server`:
/// the `PG*` variables of the environment (`PGSSLMODE`, `PGPASSWORD`, …) are
/// not passed, they are meant for other servers.
fn run_psql(url: &str, sql: &str, own_server: bool) -> Result<String, String> {
    let psql = tool("psql").ok_or_else(|| {
        "psql not found on PATH nor in /usr/lib/postgresql/*/bin; install it (Debian: apt-get install postgresql-client)".to_string()
    })?;
    let mut cmd = Command::new(&psql);
    if own_server {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
    }
    cmd.args(["-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(url)
        .args(["-f", "-"])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", psql.display()))?;
    let stdin = child.stdin.take();
    let script = sql.to_string();
    // written from another thread: a long script must not block on a full
    // output pipe
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(script.as_bytes());
        }
    });
    let output = child
        .wait_with_output()
        .map_err(|e| format!("cannot wait for psql: {e}"))?;
    let _ = writer.join();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "psql exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A PostgreSQL server of its own: a cluster made by `initdb` in a
/// temporary directory, served by a `postgres` child process on
/// 127.0.0.1 at a free port, as the superuser `pynenc` without password.
/// Dropping it stops the server and removes the directory.
pub struct PostgresServer {
    /// The postmaster, while it runs.
    child: Option<Child>,
    port: u16,
    /// Holds `data/` (the cluster), `log` (the server's output) and the
    /// Unix socket.
    dir: PathBuf,
    user: Option<RunAs>,
    /// Removes `dir` when this server is dropped or the process ends.
    reaper: Option<Child>,
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
            && lines.get(7).map_or(true, |status| status.trim() == "ready")
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

/// The server of [`test_database`], shared by the tests of the process.
/// Never dropped: see the module's documentation for how it ends.
static SHARED: OnceLock<PostgresServer> = OnceLock::new();

fn shared_server() -> &'static PostgresServer {
    SHARED.get_or_init(PostgresServer::start)
}

/// `pynenc_test_<pid>_<n>_<random>`: unique on a server shared by several
/// test processes.
fn unique_database_name() -> String {
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
enum Place {
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
    name: String,
    /// The fresh database's URL.
    url: String,
    /// Where to connect to drop it.
    admin_url: String,
    place: Place,
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

/// The few C library calls, all `unsafe` to Rust though none of them
/// touches memory the caller does not own.
#[allow(unsafe_code)]
mod sys {
    use std::process::Command;

    /// This process's effective user id.
    pub(super) fn geteuid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    /// The uid and gid of the user `name` (`getpwnam_r`: thread safe).
    pub(super) fn user_ids(name: &str) -> Option<(u32, u32)> {
        let name = std::ffi::CString::new(name).ok()?;
        // SAFETY: passwd holds integers and pointers: all zeros is a value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is to live memory of the size given; only
        // the integer fields of `pwd` are read, not the strings in `buf`.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
    }

    /// Sends `signal` to `pid`, a child of ours not yet waited for (so its
    /// id is not reused).
    pub(super) fn signal(pid: u32, signal: libc::c_int) -> bool {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) == 0 }
    }

    /// Makes the child of `cmd` receive SIGQUIT (a postmaster's immediate
    /// shutdown) when the thread that spawns it exits (see
    /// `spawn_dying_with_process`).
    #[cfg(target_os = "linux")]
    pub(super) fn die_with_parent(cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id();
        // `unsafe_code` is denied in the workspace; this is the one way to
        // tie a child's life to the test process: std has no
        // PR_SET_PDEATHSIG.
        // SAFETY: the closure runs in the forked child before exec (after
        // std switched the user ids: a later change of ids would clear the
        // setting); it only makes the async-signal-safe system calls prctl
        // and getppid and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGQUIT as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // the parent died between fork and prctl: no signal will come
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }

    /// Without `PR_SET_PDEATHSIG`, the reaper stops the postmaster.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn die_with_parent(_cmd: &mut Command) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The local binaries, needed to start a server (not only a URL).
    fn local_or_skip() -> bool {
        if let Some(reason) = skip_reason() {
            eprintln!("SKIPPED: {reason}");
            return false;
        }
        if !missing_programs(true).is_empty() {
            eprintln!("SKIPPED: {SKIP_MESSAGE}");
            return false;
        }
        true
    }

    #[test]
    fn urls_are_rewritten_and_redacted() {
        assert_eq!(
            with_database("postgres://u:p@h:5433/db?sslmode=require", "x_1"),
            "postgres://u:p@h:5433/x_1?sslmode=require"
        );
        assert_eq!(with_database("postgresql://h", "x"), "postgresql://h/x");
        assert_eq!(with_database("postgres://h?a=b", "x"), "postgres://h/x?a=b");
        assert_eq!(
            with_database("host=h user=u", "x"),
            "host=h user=u dbname='x'"
        );
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h:5/db"), "postgres://u@h:5/db");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
        let name = unique_database_name();
        assert!(name.starts_with(&format!("pynenc_test_{}_", std::process::id())));
        assert!(name.len() < 64, "{name} is longer than a PostgreSQL name");
        assert_ne!(name, unique_database_name());
    }

    #[test]
    fn a_server_starts_stops_and_starts_again_on_the_same_port_and_data() {
        if !local_or_skip() {
            return;
        }
        let mut server = PostgresServer::start();
        let port = server.port();
        assert_ne!(port, STANDARD_PORT);
        assert_eq!(
            server.url(),
            format!("postgres://pynenc@127.0.0.1:{port}/postgres")
        );
        server.create_database("first");
        assert_eq!(server.psql("first", "select 1"), "1\n");
        server.psql(
            "first",
            "create table t (v text); insert into t values ('kept'); select 1;",
        );
        assert_eq!(
            server.psql(
                "postgres",
                "show listen_addresses; show fsync; show max_connections"
            ),
            "127.0.0.1\noff\n200\n"
        );

        server.stop();
        assert!(!server.is_running());
        let refused = run_psql(&server.url_for("first"), "select 1", true);
        assert!(refused.is_err(), "a stopped server answered: {refused:?}");

        server.start_again();
        assert_eq!(server.port(), port);
        assert_eq!(server.psql("first", "select v from t"), "kept\n");

        // a crash: recovered at the next start
        // synchronous_commit=off: only what is flushed survives a kill
        server.psql("first", "insert into t values ('committed'); checkpoint");
        server.kill();
        assert!(!server.is_running());
        server.start_again();
        assert_eq!(server.psql("first", "select count(*) from t"), "2\n");

        // the restart of a running server
        server.start_again();
        assert_eq!(server.psql("first", "select 1"), "1\n");

        let dir = server.dir().to_path_buf();
        let pid = server.child.as_ref().map(Child::id).unwrap();
        assert!(dir.join("data").is_dir());
        drop(server);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(!alive(pid), "postmaster {pid} left running");
    }

    #[test]
    fn psql_errors_name_the_failure() {
        if !local_or_skip() {
            return;
        }
        let db = test_database().unwrap();
        let message = std::panic::catch_unwind(|| db.psql("select * from missing_table"))
            .unwrap_err()
            .downcast::<String>()
            .unwrap();
        assert!(message.contains("missing_table"), "{message}");
        assert!(message.contains(db.name()), "{message}");
    }

    #[test]
    fn two_test_databases_are_different_databases_on_one_server() {
        let Some(a) = test_database() else {
            return;
        };
        let b = test_database().unwrap();
        assert_ne!(a.name(), b.name());
        assert_ne!(a.url(), b.url());
        let server_of = |url: &str| url[..url.rfind('/').unwrap()].to_string();
        assert_eq!(server_of(&a.url()), server_of(&b.url()));
        assert_eq!(
            a.psql("select current_database()"),
            format!("{}\n", a.name())
        );
        assert_eq!(
            b.psql("select current_database()"),
            format!("{}\n", b.name())
        );
        a.psql("create table only_in_a (v int)");
        assert_eq!(
            b.psql("select count(*) from pg_tables where tablename = 'only_in_a'"),
            "0\n"
        );

        // the databases go with them
        let (a_name, b_name) = (a.name().to_string(), b.name().to_string());
        drop(a);
        drop(b);
        let c = test_database().unwrap();
        assert_eq!(
            c.psql(&format!(
                "select count(*) from pg_database where datname in ('{a_name}', '{b_name}')"
            )),
            "0\n"
        );
    }

    #[test]
    fn an_own_server_restarts_without_disturbing_the_shared_one() {
        let Some(shared) = test_database() else {
            return;
        };
        let mut own = TestDatabase::own_server().unwrap();
        assert!(shared.url() != own.url());
        own.psql("create table t (v int); insert into t values (7)");
        let Some(server) = own.server() else {
            eprintln!("SKIPPED: no server binaries, only {URL_VAR}");
            return;
        };
        server.stop();
        assert_eq!(shared.psql("select 1"), "1\n");
        server.start_again();
        assert_eq!(own.psql("select v from t"), "7\n");
        assert_eq!(shared.psql("select 2"), "2\n");
    }

    /// Whether `pid` runs (a zombie is dead).
    fn alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => false,
        }
    }

    /// Run by `the_shared_server_dies_with_the_test_process` in a process
    /// of its own: starts the shared server, prints its pid and directory,
    /// and returns (the process then exits without dropping it).
    #[test]
    #[ignore = "run by the_shared_server_dies_with_the_test_process"]
    fn hold_the_shared_server() {
        let db = test_database().unwrap();
        assert_eq!(db.psql("select 1"), "1\n");
        let server = shared_server();
        let pid = server.child.as_ref().map(Child::id).unwrap();
        println!("SHARED pid={pid} dir={}", server.dir().display());
        std::mem::forget(db);
    }

    #[test]
    fn the_shared_server_dies_with_the_test_process() {
        if !cfg!(target_os = "linux") || !local_or_skip() || external_url().is_some() {
            return;
        }
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "postgres::tests::hold_the_shared_server",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the helper failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("SHARED ").map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no SHARED line in {stdout}"));
        let (pid, dir) = line.split_once(" dir=").unwrap();
        let pid: u32 = pid.strip_prefix("pid=").unwrap().parse().unwrap();
        let dir = PathBuf::from(dir);
        let deadline = Instant::now() + Duration::from_secs(15);
        while (alive(pid) || dir.exists()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !alive(pid),
            "the shared postmaster {pid} outlived its process"
        );
        assert!(!dir.exists(), "{} outlived its process", dir.display());
    }
}
