//! What the monitor's tests share: the tasks, an app with invocations run by
//! a real runner, a monitor on a free port, an HTTP client.
#![allow(dead_code)]

pub mod http;
pub mod webdriver;

use std::net::SocketAddr;
use std::time::Duration;

use pynenc::{Pynenc, TaskError, ThreadRunner};
use pynenc_monitor::{Credential, Monitor, MonitorOptions, Role};

#[allow(unused_imports)]
pub use http::{read_until, Req, Resp};

pub const OPERATOR: &str = "operator-secret-1";
pub const VIEWER: &str = "viewer-secret-1";
pub const PASSWORD: &str = "hunter2-do-not-show";

/// Adds two numbers.
#[pynenc::task]
pub async fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// Always fails with the kind `Refused`.
#[pynenc::task]
pub async fn refuse(n: i64) -> Result<i64, TaskError> {
    Err(TaskError::new("Refused", format!("no {n}")))
}

/// Takes a password (to be redacted) and settings with a nested secret.
#[pynenc::task]
pub async fn connect(user: String, password: String, settings: serde_json::Value) -> String {
    let _ = (&password, &settings);
    format!("connected {user}")
}

/// Adds `i` to itself through a child invocation.
#[pynenc::task]
pub async fn pair(i: i64) -> Result<i64, pynenc::PynencError> {
    let g = add::parallelize([(i, i)]).await?;
    Ok(g.results().await?.into_iter().sum())
}

/// Fans out `n` pairs: a family three generations deep.
#[pynenc::task]
pub async fn fan(n: i64) -> Result<i64, pynenc::PynencError> {
    let g = pair::parallelize((0..n).map(|i| (i,))).await?;
    Ok(g.results().await?.into_iter().sum())
}

/// One sign-in per user at a time: later calls for the same user reuse
/// the queued one (their password is to be redacted in the reuses too).
#[pynenc::task(registration_concurrency = Keys, key_arguments = ["user"])]
pub async fn sign_in(user: String, password: String, note: String) -> String {
    let _ = (&password, &note);
    user
}

/// Sleeps.
#[pynenc::task]
pub async fn nap(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// The backends the tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Sqlite,
    /// A `redis-server` the test starts (see [`redis_skip`]).
    Redis,
}

/// Why the Redis tests cannot run here, printed; `None` when they can
/// (a failure instead with `PYNENC_REQUIRE_REDIS=1`).
pub fn redis_skip() -> bool {
    match pynenc_testservers::redis::skip_reason() {
        Some(reason) => {
            eprintln!("skipped: {reason}");
            true
        }
        None => false,
    }
}

/// What was seeded.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub ok: String,
    pub failed: String,
    pub secret: String,
    pub queued: Vec<String>,
}

/// An app with a monitor in front of it.
pub struct Fixture {
    pub app: Pynenc,
    pub monitor: Monitor,
    pub addr: SocketAddr,
    pub seeded: Seeded,
    pub dir: tempfile::TempDir,
    pub redis: Option<pynenc_testservers::redis::RedisServer>,
}

impl Fixture {
    pub async fn start(kind: Kind) -> Fixture {
        Self::start_with(kind, |o| o).await
    }

    pub async fn start_with(
        kind: Kind,
        f: impl FnOnce(MonitorOptions) -> MonitorOptions,
    ) -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let app_id = format!("monitor-test-{}", uuid_like());
        let builder = Pynenc::builder().app_id(app_id);
        let mut redis = None;
        let app = match kind {
            Kind::Memory => builder.build(),
            Kind::Sqlite => builder.sqlite(dir.path().join("app.db")).build(),
            Kind::Redis => {
                let server = pynenc_testservers::redis::RedisServer::start();
                let url = server.url();
                redis = Some(server);
                builder
                    .config_value("backend", "redis")
                    .config_value("redis.redis_url", url)
                    .build()
            }
        }
        .expect("the app");
        let seeded = seed(&app).await;
        let options = f(MonitorOptions {
            bind: "127.0.0.1:0".parse().expect("an address"),
            ..MonitorOptions::default()
        }
        .credential(Credential::new("ops", OPERATOR, Role::Operator))
        .credential(Credential::new("viewer", VIEWER, Role::Viewer)));
        let monitor = Monitor::start(&app, options)
            .await
            .expect("the monitor starts");
        let addr = monitor.addr();
        Fixture {
            app,
            monitor,
            addr,
            seeded,
            dir,
            redis,
        }
    }

    /// GET as the operator, JSON expected.
    pub async fn api(&self, path: &str) -> serde_json::Value {
        let r = Req::get(path).bearer(OPERATOR).send(self.addr).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    /// GET a page as the operator.
    pub async fn page(&self, path: &str) -> String {
        let r = Req::get(path).bearer(OPERATOR).send(self.addr).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.body
    }

    /// The process's CSRF token.
    pub async fn csrf(&self) -> String {
        self.api("/api/me").await["csrf_token"]
            .as_str()
            .expect("a csrf token")
            .to_string()
    }

    /// `action` on the one invocation `id`, confirmed; the JSON answer.
    pub async fn confirm(&self, action: &str, id: &str) -> serde_json::Value {
        self.act(action, serde_json::json!({ "ids": [id], "confirm": true }))
            .await
            .json()
    }

    /// POST an action as the operator through the JSON API, confirmed.
    pub async fn act(&self, action: &str, body: serde_json::Value) -> Resp {
        let csrf = self.csrf().await;
        Req::post(&format!("/api/actions/{action}"))
            .bearer(OPERATOR)
            .header("X-CSRF-Token", &csrf)
            .json(&body)
            .send(self.addr)
            .await
    }

    /// The current status of an invocation, from the API.
    pub async fn status(&self, id: &str) -> String {
        self.api(&format!("/api/invocations/{id}")).await["invocation"]["status"]
            .as_str()
            .expect("a status")
            .to_string()
    }

    pub async fn stop(self) {
        self.monitor.shutdown().await.expect("the monitor stops");
    }
}

fn uuid_like() -> String {
    pynenc_monitor::random_token()[..12].to_string()
}

/// A success, a failure, a call with secrets, all run by a real runner;
/// then two calls left queued (routed after the runner stopped).
pub async fn seed(app: &Pynenc) -> Seeded {
    let runner = ThreadRunner::with_slots(app, 2).spawn();
    let ok = add::call_on(app, 1, 2).await.expect("route add");
    assert_eq!(
        within("add's result", ok.result())
            .await
            .expect("add result"),
        3
    );
    let failed = refuse::call_on(app, 7).await.expect("route refuse");
    assert!(within("refuse's result", failed.result()).await.is_err());
    let secret = connect::call_on(
        app,
        "ann".to_string(),
        PASSWORD.to_string(),
        serde_json::json!({ "host": "db", "api_token": PASSWORD }),
    )
    .await
    .expect("route connect");
    within("connect's result", secret.result())
        .await
        .expect("connect result");
    within("the runner's stop", runner.stop())
        .await
        .expect("stop the runner");
    let q1 = add::call_on(app, 100, 1).await.expect("queued 1");
    let q2 = add::call_on(app, 100, 2).await.expect("queued 2");
    Seeded {
        ok: ok.invocation_id().to_string(),
        failed: failed.invocation_id().to_string(),
        secret: secret.invocation_id().to_string(),
        queued: vec![
            q1.invocation_id().to_string(),
            q2.invocation_id().to_string(),
        ],
    }
}

/// `f`, or a failure naming `what` after 30 seconds (never a hung test).
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not come within 30 s"),
    }
}

/// The value of `name="csrf"` in a page.
pub fn csrf_in(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a csrf field in the page");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("the end of the value")].to_string()
}
