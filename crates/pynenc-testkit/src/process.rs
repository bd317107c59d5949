//! Worker processes for the tests that run pynenc in real OS processes: a
//! shared backend both the worker processes and the caller reach, a handle
//! on a worker process that is killed when dropped, and `kill(1)` signals.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pynenc::Pynenc;

/// A backend shared by worker processes and the caller.
#[derive(Debug, Clone)]
pub enum SharedBackend {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A Redis URL.
    Redis(String),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl SharedBackend {
    /// Sets `PYNENC__BACKEND` and the file or URL on a worker's command.
    pub fn set_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        match self {
            SharedBackend::Sqlite(path) => cmd
                .env("PYNENC__BACKEND", "sqlite")
                .env("PYNENC__SQLITE__SQLITE_PATH", path),
            SharedBackend::Redis(url) => cmd
                .env("PYNENC__BACKEND", "redis")
                .env("PYNENC__REDIS__REDIS_URL", url),
            SharedBackend::Postgres(url) => cmd
                .env("PYNENC__BACKEND", "postgres")
                .env("PYNENC__POSTGRES__POSTGRES_URL", url),
        }
    }

    /// A builder of an app with `app_id` on this backend, configured by
    /// nothing else (the environment is ignored).
    pub fn builder(&self, app_id: &str) -> pynenc::PynencBuilder {
        let b = Pynenc::builder().env_vars(Vec::new()).app_id(app_id);
        match self {
            SharedBackend::Sqlite(path) => b
                .config_value("backend", "sqlite")
                .config_value("sqlite.sqlite_path", path.to_string_lossy().to_string()),
            SharedBackend::Redis(url) => b
                .config_value("backend", "redis")
                .config_value("redis.redis_url", url.clone()),
            SharedBackend::Postgres(url) => b
                .config_value("backend", "postgres")
                .config_value("postgres.postgres_url", url.clone()),
        }
    }

    /// An app with `app_id` on this backend, configured by nothing else
    /// (the environment is ignored).
    pub fn app(&self, app_id: &str) -> pynenc::Result<Pynenc> {
        self.builder(app_id).build()
    }
}

/// A fresh temporary directory (removed when dropped) and the path of a
/// SQLite file `file` in it; the directory's path is canonical, so it
/// compares equal to what `/proc/<pid>/fd` shows.
#[cfg(feature = "sqlite")]
pub fn fresh_db(file: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().canonicalize().expect("tempdir path").join(file);
    (dir, db)
}

/// A worker process; killed (SIGKILL) and reaped when dropped, so a failing
/// test leaves no process behind.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    /// The command of a worker: `<exe> <args…>` on `backend` with
    /// `PYNENC__APP_ID=app_id` and the `env` pairs set, standard input and
    /// output to null (standard error is inherited). Change it before
    /// [`WorkerProcess::spawn`] to capture output.
    pub fn command<S: AsRef<OsStr>>(
        exe: impl AsRef<OsStr>,
        args: &[S],
        backend: &SharedBackend,
        app_id: &str,
        env: &[(&str, &str)],
    ) -> Command {
        let mut cmd = Command::new(exe);
        cmd.args(args);
        backend.set_env(&mut cmd);
        cmd.env("PYNENC__APP_ID", app_id);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    }

    /// Starts the worker [`WorkerProcess::command`] describes.
    pub fn start<S: AsRef<OsStr>>(
        exe: impl AsRef<OsStr>,
        args: &[S],
        backend: &SharedBackend,
        app_id: &str,
        env: &[(&str, &str)],
    ) -> std::io::Result<WorkerProcess> {
        WorkerProcess::spawn(WorkerProcess::command(exe, args, backend, app_id, env))
    }

    /// Starts any command as a worker process.
    pub fn spawn(mut cmd: Command) -> std::io::Result<WorkerProcess> {
        Ok(WorkerProcess {
            child: cmd.spawn()?,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child, e.g. to take its piped standard output.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for it to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for it to exit; `None` if it
    /// is still running (dropping it then kills it).
    pub fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        try_signal(self.pid(), "-TERM");
        self.wait_timeout(timeout)
    }

    /// SIGKILL (unless it has exited already), then reaps it.
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `sig` (`"-TERM"`, `"-KILL"`, …) to `pid` with `kill(1)`; whether
/// that succeeded.
pub fn try_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends `sig` (`"-TERM"`, `"-KILL"`, …) to `pid` with `kill(1)`; panics
/// if that fails.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}
