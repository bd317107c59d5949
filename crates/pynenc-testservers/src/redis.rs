//! A real `redis-server` for tests: started on a free port of 127.0.0.1
//! (never 6379), in its own temporary directory, without persistence unless
//! asked, and killed when dropped.
//!
//! Without `redis-server` on `PATH` the Redis tests are skipped with a
//! message, or fail when the environment sets `PYNENC_REQUIRE_REDIS=1`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The message of a skipped Redis test.
pub const SKIP_MESSAGE: &str = "redis-server not found on PATH; install it (Debian: apt-get install redis-server) or set PYNENC_REQUIRE_REDIS=1 to make this a failure";

/// Where `redis-server` is, if it is on `PATH`.
pub fn redis_server_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

/// Why Redis tests cannot run here (`None` when they can). Panics when
/// `redis-server` is missing and `PYNENC_REQUIRE_REDIS=1`.
pub fn skip_reason() -> Option<String> {
    if redis_server_binary().is_some() {
        return None;
    }
    if std::env::var("PYNENC_REQUIRE_REDIS").as_deref() == Ok("1") {
        panic!("PYNENC_REQUIRE_REDIS=1 but redis-server is not on PATH; install it (Debian: apt-get install redis-server)");
    }
    Some(SKIP_MESSAGE.to_string())
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct RedisServerOptions {
    /// Append-only file with `appendfsync always` (survives a kill).
    pub appendonly: bool,
    /// Serve TLS only (`--port 0 --tls-port …`): the server's URL is then
    /// `rediss://` and [`RedisServer::command`] (plain RESP) cannot reach it.
    pub tls: Option<RedisTlsFiles>,
}

/// The PEM files of a TLS server (clients are not asked for certificates).
#[derive(Debug, Clone)]
pub struct RedisTlsFiles {
    /// The server certificate.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
    /// The CA that signed it.
    pub ca_file: PathBuf,
}

/// A running `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    options: RedisServerOptions,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisServer(127.0.0.1:{})", self.port)
    }
}

fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("local address").port();
        if port != 6379 {
            return port;
        }
    }
}

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "pynenc-redis-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create the redis temp dir");
    dir
}

impl RedisServer {
    /// Starts a server without persistence. Panics if it cannot.
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisServerOptions::default())
    }

    /// Starts a server with `options`. Panics if it cannot.
    pub fn start_with(options: RedisServerOptions) -> RedisServer {
        RedisServer::try_start_with(options)
            .unwrap_or_else(|e| panic!("could not start redis-server: {e}"))
    }

    /// Starts a server with `options`, or says why it could not (with the
    /// last lines of the server's log, e.g. to tell a build without TLS).
    pub fn try_start_with(options: RedisServerOptions) -> Result<RedisServer, String> {
        let dir = temp_dir();
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                dir: dir.clone(),
                options: options.clone(),
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last_error = e;
                    // Drop would remove the shared dir: forget this attempt's handle instead
                    server.child = None;
                    std::mem::forget(server);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_error)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let bin = redis_server_binary().ok_or_else(|| SKIP_MESSAGE.to_string())?;
        let log = self.dir.join("redis.log");
        let mut cmd = Command::new(bin);
        match &self.options.tls {
            None => {
                cmd.arg("--port").arg(self.port.to_string());
            }
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port"])
                    .arg(self.port.to_string())
                    .arg("--tls-cert-file")
                    .arg(&tls.cert_file)
                    .arg("--tls-key-file")
                    .arg(&tls.key_file)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca_file)
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .arg("--daemonize")
            .arg("no");
        if self.options.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "redis-server exited ({status}) on port {}: {}",
                    self.port,
                    log_text
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
            }
            if self.options.tls.is_some() {
                // no TLS in the minimal client: the server says when it is ready
                let ready = std::fs::read_to_string(&log)
                    .is_ok_and(|l| l.contains("Ready to accept connections"));
                if ready
                    && TcpStream::connect_timeout(
                        &([127, 0, 0, 1], self.port).into(),
                        Duration::from_secs(1),
                    )
                    .is_ok()
                {
                    self.child = Some(child);
                    return Ok(());
                }
            } else if let Ok(Resp::Simple(s)) = send_command(self.port, None, &["PING"]) {
                if s == "PONG" {
                    self.child = Some(child);
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} never answered PING",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}/0` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and directory
    /// (with AOF on, the data comes back). Panics if it cannot.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("could not restart redis-server: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends one command as the default user (plain servers only).
    pub fn command(&self, args: &[&str]) -> std::io::Result<Resp> {
        send_command(self.port, None, args)
    }

    /// Sends one command after `AUTH user password`.
    pub fn command_as(&self, user: &str, password: &str, args: &[&str]) -> std::io::Result<Resp> {
        send_command(self.port, Some((user, password)), args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A reply of the minimal RESP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$3 abc` (`None` for nil)
    Bulk(Option<Vec<u8>>),
    /// `*2 ...` (`None` for nil)
    Array(Option<Vec<Resp>>),
}

fn send_command(port: u16, auth: Option<(&str, &str)>, args: &[&str]) -> std::io::Result<Resp> {
    let stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    if let Some((user, password)) = auth {
        write_command(&mut writer, &["AUTH", user, password])?;
        if let Resp::Error(e) = read_resp(&mut reader)? {
            return Ok(Resp::Error(e));
        }
    }
    write_command(&mut writer, args)?;
    read_resp(&mut reader)
}

fn write_command(w: &mut impl Write, args: &[&str]) -> std::io::Result<()> {
    let mut buf = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    w.write_all(&buf)
}

fn read_resp(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad RESP line '{line}'"),
        )
    };
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" => Ok(Resp::Simple(rest.to_string())),
        "-" => Ok(Resp::Error(rest.to_string())),
        ":" => rest.parse().map(Resp::Int).map_err(|_| bad()),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                return Ok(Resp::Bulk(None));
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(Resp::Bulk(Some(buf)))
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                return Ok(Resp::Array(None));
            }
            (0..n)
                .map(|_| read_resp(r))
                .collect::<std::io::Result<Vec<_>>>()
                .map(|v| Resp::Array(Some(v)))
        }
        _ => Err(bad()),
    }
}
