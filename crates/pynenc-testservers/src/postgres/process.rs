//! Running the server's programs: the unprivileged user, the temporary
//! directory, the reaper, children that die with the test process, ports.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::*;

/// The unprivileged user that runs `initdb` and `postgres` when this
/// process is root.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunAs {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) name: &'static str,
}

/// `None` when this process is not root (the server runs as this user),
/// else the `postgres` system user, else `nobody`.
pub(super) fn server_user() -> Result<Option<RunAs>, String> {
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
pub(super) fn traversable_by(dir: &Path, user: RunAs) -> Result<(), String> {
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

pub(super) fn random_u32() -> u32 {
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
pub(super) fn make_temp_dir(user: Option<RunAs>) -> Result<PathBuf, String> {
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
pub(super) fn spawn_reaper(dir: &Path) -> Option<Child> {
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
pub(super) fn spawn_dying_with_process(mut cmd: Command) -> std::io::Result<Child> {
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
pub(super) fn free_port() -> u16 {
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
pub(super) fn wait_timeout(child: &mut Child, timeout: Duration) -> bool {
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
pub(super) fn remove_dir_retrying(dir: &Path) {
    for _ in 0..40 {
        let _ = std::fs::remove_dir_all(dir);
        if !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The few C library calls, all `unsafe` to Rust though none of them
/// touches memory the caller does not own.
#[allow(unsafe_code)]
pub(super) mod sys {
    use std::process::Command;

    /// This process's effective user id.
    pub(in crate::postgres) fn geteuid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    /// The uid and gid of the user `name` (`getpwnam_r`: thread safe).
    pub(in crate::postgres) fn user_ids(name: &str) -> Option<(u32, u32)> {
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
    pub(in crate::postgres) fn signal(pid: u32, signal: libc::c_int) -> bool {
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
    pub(in crate::postgres) fn die_with_parent(cmd: &mut Command) {
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
    pub(in crate::postgres) fn die_with_parent(_cmd: &mut Command) {}
}
