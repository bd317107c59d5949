//! Redis-only tests: an ACL-restricted user, a Redis restart (AOF) in the
//! middle of a run, bad input (corrupt records, wrong password, unreachable
//! host), and two runner processes draining one queue.
#![cfg(feature = "redis")]

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use pynenc::Pynenc;
use pynenc_operate::Operate;
use pynenc_testkit::process::WorkerProcess;
use pynenc_testkit::redis_server::{RedisServerOptions, Resp};
use pynenc_testkit::tasks::{self, add, add_via_child, filler};
use pynenc_testkit::{
    assert_add_works, check_histories, eventually, expect_task_failed, ok, start_runner, unique,
    RedisFactory,
};

fn app_at(url: &str, app_id: &str) -> pynenc::Result<Pynenc> {
    Pynenc::builder()
        .env_vars(Vec::new())
        .app_id(app_id)
        .config_value("backend", "redis")
        .config_value("redis.redis_url", url)
        .build()
}

/// (a) A user limited to the pynenc keys and channels, without `@dangerous`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acl_restricted_user_runs_the_basics() {
    let f = pynenc_testkit::factory_or_skip!(RedisFactory::new());
    let server = f.server().expect("server");
    let r = server
        .command(&[
            "ACL",
            "SETUSER",
            "pynenc",
            "on",
            ">pw",
            "~__pynenc__:*",
            "&__pynenc__:*",
            "+@all",
            "-@dangerous",
        ])
        .expect("ACL SETUSER");
    assert_eq!(r, Resp::Simple("OK".into()));
    // the user really is restricted
    match server
        .command_as("pynenc", "pw", &["KEYS", "*"])
        .expect("KEYS")
    {
        Resp::Error(e) => assert!(e.contains("NOPERM"), "{e}"),
        other => panic!("KEYS should be refused, got {other:?}"),
    }
    match server
        .command_as("pynenc", "pw", &["SET", "other:key", "1"])
        .expect("SET")
    {
        Resp::Error(e) => assert!(e.contains("NOPERM"), "{e}"),
        other => panic!("a key outside the prefix should be refused, got {other:?}"),
    }
    let url = format!("redis://pynenc:pw@127.0.0.1:{}/0", server.port());
    let app = ok(app_at(&url, "acl"), "build with the ACL user");
    let runner = start_runner(&app, 2);
    let inv = ok(add::call_on(&app, 2, 3).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 5);
    let group = ok(
        add::parallelize_on(&app, (0..20).map(|i| (i, i))).await,
        "parallelize",
    );
    assert_eq!(
        ok(group.results().await, "results"),
        (0..20).map(|i| 2 * i).collect::<Vec<_>>()
    );
    let parent = ok(add_via_child::call_on(&app, 20, 22).await, "parent");
    assert_eq!(ok(parent.result().await, "sub-task"), 42);
    ok(runner.stop().await, "stop");
    assert_eq!(check_histories(&app).await, 23);
    ok(app.purge().await, "purge under ACL");
    assert!(ok(app.state_backend().list_invocation_ids().await, "list").is_empty());
}

/// (b) Redis is killed and restarted (AOF, `appendfsync always`) in the middle of 2,000 tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_with_aof_loses_nothing() {
    let mut f = pynenc_testkit::factory_or_skip!(RedisFactory::with_options(RedisServerOptions {
        appendonly: true,
        ..Default::default()
    }));
    let app = ok(app_at(&f.url(), "restart"), "build");
    let runner = start_runner(&app, 16);
    let group_key = unique("restart");
    let n = 2000;
    let group = ok(
        filler::parallelize_on(
            &app,
            (0..n).map(|i| (group_key.clone(), i.to_string(), 2u64)),
        )
        .await,
        "parallelize",
    );
    let got_going = eventually(Duration::from_secs(30), || async {
        tasks::events_of(&group_key).len() >= n / 4
    })
    .await;
    assert!(got_going, "the run never got going");
    let before = tasks::events_of(&group_key).len();
    let server = f.server_mut().expect("server");
    tokio::task::block_in_place(|| server.restart());
    let values = tokio::time::timeout(Duration::from_secs(60), group.results())
        .await
        .expect("results after the restart in time");
    let values = ok(values, "results after the restart");
    assert_eq!(values, (0..n).map(|i| i.to_string()).collect::<Vec<_>>());
    let ran: HashSet<String> = tasks::events_of(&group_key)
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(ran.len(), n, "every task ran");
    assert!(
        before < n,
        "the restart happened mid-run ({before} of {n} had run)"
    );
    ok(runner.stop().await, "stop");
    assert_eq!(check_histories(&app).await, n);
}

/// (c) Bad input: corrupt records are named, the rest is unaffected; wrong
/// password and unreachable host name the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gives_clear_errors() {
    let f = pynenc_testkit::factory_or_skip!(RedisFactory::new());
    let server = f.server().expect("server");
    let app = ok(app_at(&f.url(), "bad"), "build");
    // no runner yet: both stay REGISTERED
    let broken_call = ok(add::call_on(&app, 1, 1).await, "call");
    let broken_status = ok(add::call_on(&app, 2, 2).await, "call");
    let key_call = format!("__pynenc__:bad:inv:{}", broken_call.invocation_id());
    let key_status = format!("__pynenc__:bad:inv:{}", broken_status.invocation_id());
    assert_eq!(
        server
            .command(&["HSET", &key_call, "call", "{garbage"])
            .expect("HSET"),
        Resp::Int(0)
    );
    assert_eq!(
        server
            .command(&["HSET", &key_status, "status", "BOGUS"])
            .expect("HSET"),
        Resp::Int(0)
    );

    let err = app
        .state_backend()
        .get_invocation(broken_call.invocation_id())
        .await
        .expect_err("corrupt call");
    assert!(
        err.to_string().contains(&key_call) && err.to_string().contains("'call'"),
        "{err}"
    );
    let err = broken_status.status().await.expect_err("corrupt status");
    assert!(
        err.to_string().contains(&key_status) && err.to_string().contains("BOGUS"),
        "{err}"
    );

    let runner = start_runner(&app, 2);
    let good = ok(add::call_on(&app, 3, 4).await, "good");
    assert_eq!(ok(good.result().await, "good result"), 7);
    // the invocation whose call cannot be decoded fails with the key in its error
    let error = expect_task_failed(&broken_call, "the corrupt invocation to fail").await;
    assert_eq!(error.kind, "StateBackendError");
    assert!(error.message.contains(&key_call), "{}", error.message);
    // waiting on the one with a corrupt status names the key
    let err = tokio::time::timeout(Duration::from_secs(10), broken_status.result())
        .await
        .expect("no hang")
        .expect_err("corrupt status");
    assert!(err.to_string().contains(&key_status), "{err}");
    assert_add_works(&app, 5, 5).await;
    ok(runner.stop().await, "stop");

    // an oversized argument is refused before anything is stored
    let small = ok(
        Pynenc::builder()
            .env_vars(Vec::new())
            .app_id("bad-size")
            .config_value("backend", "redis")
            .config_value("redis.redis_url", f.url())
            .config_value("max_argument_bytes", 100)
            .build(),
        "build",
    );
    let err = tasks::byte_len::call_on(&small, "z".repeat(1000))
        .await
        .expect_err("too big");
    assert!(
        err.to_string().contains("argument 'data'") && err.to_string().contains("100"),
        "{err}"
    );
    assert!(ok(small.state_backend().list_invocation_ids().await, "list").is_empty());

    // wrong password
    server
        .command(&[
            "ACL", "SETUSER", "someone", "on", ">right", "~*", "&*", "+@all",
        ])
        .expect("ACL SETUSER");
    let addr = format!("127.0.0.1:{}", server.port());
    let err = app_at(&format!("redis://someone:wrong@{addr}/0"), "x").expect_err("wrong password");
    let text = err.to_string();
    assert!(
        text.contains(&addr) && text.contains("authentication failed"),
        "{text}"
    );
    assert!(!text.contains("wrong"), "the password is not shown: {text}");

    // nothing listening
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let err = app_at(&format!("redis://127.0.0.1:{port}/0"), "x").expect_err("unreachable");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    // host and port settings instead of a URL
    let by_fields = Pynenc::builder()
        .env_vars(Vec::new())
        .app_id("fields")
        .config_value("backend", "redis")
        .config_value("redis.redis_host", "127.0.0.1")
        .config_value("redis.redis_port", server.port() as u64)
        .config_value("redis.redis_username", "someone")
        .config_value("redis.redis_password", "right")
        .build();
    let by_fields = ok(by_fields, "build from host/port/username/password");
    let r = start_runner(&by_fields, 1);
    assert_add_works(&by_fields, 1, 2).await;
    ok(r.stop().await, "stop");

    // a URL that is not one: a configuration error on the key that set it
    let err = app_at("not a url", "x").expect_err("bad URL");
    match &err {
        pynenc::PynencError::Config(c) => {
            assert_eq!(c.key, "redis.redis_url");
            assert_eq!(c.source, pynenc::ConfigSource::Code);
            assert!(c.reason.contains("not a valid Redis URL"), "{c}");
        }
        other => panic!("expected a configuration error, got {other}"),
    }
    // the same through options given by value
    let err = Pynenc::builder()
        .env_vars(Vec::new())
        .app_id("x")
        .backend(pynenc::RedisOptions::from_url("not a url"))
        .build()
        .expect_err("bad URL by value");
    assert!(
        matches!(&err, pynenc::PynencError::Config(c) if c.key == "redis.redis_url"),
        "{err}"
    );
    // a working server by value; its options are named in the configuration
    let by_value = ok(
        Pynenc::builder()
            .env_vars(Vec::new())
            .app_id("by-value")
            .backend(pynenc::RedisOptions::from_url(format!("redis://{addr}/0")))
            .build(),
        "build with RedisOptions",
    );
    assert_eq!(by_value.conf().backend, pynenc::BackendKind::Redis);
    assert_eq!(by_value.conf().redis.redis_url, format!("redis://{addr}/0"));
    let r = start_runner(&by_value, 1);
    assert_add_works(&by_value, 2, 3).await;
    ok(r.stop().await, "stop");

    // TLS without the feature is a configuration error that says what to enable
    if let Err(e) = app_at(&format!("rediss://{addr}/0"), "x") {
        let text = e.to_string();
        assert!(text.contains("redis-tls") || text.contains(&addr), "{text}");
    }
}

/// Starts `redis_worker` on `url` with 8 slots; panics if it exits at once.
fn start_worker(url: &str, app_id: &str) -> WorkerProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redis_worker"));
    cmd.args([url, app_id, "8"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut worker = WorkerProcess::spawn(cmd).expect("start redis_worker");
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = worker.try_wait() {
        panic!("redis_worker exited at once: {status}");
    }
    worker
}

/// (d) Two runner processes on one Redis drain 10,000 tasks; each ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_drain_ten_thousand_tasks() {
    let f = pynenc_testkit::factory_or_skip!(RedisFactory::new());
    let app = ok(app_at(&f.url(), "drain"), "build");
    let workers = [
        start_worker(&f.url(), "drain"),
        start_worker(&f.url(), "drain"),
    ];
    let n = 10_000i64;
    let group = ok(
        add::parallelize_on(&app, (0..n).map(|i| (i, i))).await,
        "parallelize",
    );
    let values = tokio::time::timeout(Duration::from_secs(90), group.results())
        .await
        .expect("drained in time");
    assert_eq!(
        ok(values, "results"),
        (0..n).map(|i| 2 * i).collect::<Vec<_>>()
    );
    let owners = pynenc_testkit::runs_by_owner(&group).await;
    assert_eq!(owners.len(), 2, "both processes worked: {owners:?}");
    for mut w in workers {
        let pid = w.pid();
        let status = w
            .stop(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("redis_worker {pid} did not stop on SIGTERM"));
        assert!(status.success(), "worker exit status {status}");
    }
    assert_eq!(check_histories(&app).await, n as usize);
}

/// The commands the server ran so far: `(FCALL calls, HMGET calls)`
/// (HMGETs of scripts included).
fn fcalls_and_hmgets(server: &pynenc_testkit::redis_server::RedisServer) -> (u64, u64) {
    let info = match server.command(&["INFO", "commandstats"]).expect("INFO") {
        Resp::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO commandstats: {other:?}"),
    };
    let calls = |cmd: &str| {
        info.lines()
            .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (calls("fcall"), calls("hmget"))
}

/// An app on `server` whose runners' periodic work (heartbeats, recovery,
/// cancel polls) is rare, so that a window of the server's command counts
/// holds what a test does.
fn app_with_rare_upkeep(
    server: &pynenc_testkit::redis_server::RedisServer,
    app_id: &str,
) -> Pynenc {
    ok(
        Pynenc::builder()
            .env_vars(Vec::new())
            .app_id(app_id)
            .config_value("backend", "redis")
            .config_value("redis.redis_url", server.url())
            .config_value("runner.heartbeat_interval_seconds", 30)
            .config_value("runner.runner_dead_after_seconds", 600)
            .config_value("runner.recovery_interval_seconds", 30)
            .config_value("runner.cancel_poll_seconds", 30)
            .build(),
        "app",
    )
}

/// A workflow replaying `n` recorded steps: the server's commands from the
/// signal that ends its first run to the end of its second.
async fn replay_cost(
    app: &Pynenc,
    server: &pynenc_testkit::redis_server::RedisServer,
    n: u32,
) -> (u64, u64) {
    let key = format!("replay-{n}-{}", pynenc::InvocationId::random());
    let wf = ok(
        tasks::wf_replay::call_on(app, key.clone(), n).await,
        "workflow",
    );
    // the first run made its steps and waits for its signal (its wait is
    // routed before the workflow pauses on it)
    let signal_wait = pynenc::model::InvocationQuery {
        parent: Some(*wf.invocation_id()),
        task_ids: vec![pynenc::TaskId::from(pynenc::workflow::SIGNAL_TASK_ID)],
        ..pynenc::model::InvocationQuery::new()
    };
    let waits = eventually(Duration::from_secs(30), || async {
        let routed = app
            .inspect()
            .list(&signal_wait)
            .await
            .is_ok_and(|p| !p.items.is_empty());
        routed && matches!(wf.status().await, Ok(pynenc::InvocationStatus::Paused))
    })
    .await;
    assert!(waits, "the first run did not reach its wait for the signal");
    let before = fcalls_and_hmgets(server);
    assert!(ok(
        app.signal(wf.invocation_id(), "go", 1u32).await,
        "signal"
    ));
    let expected: u64 = (0..u64::from(n)).map(|i| i * 10).sum();
    assert_eq!(ok(wf.result().await, "result"), expected);
    let after = fcalls_and_hmgets(server);
    for i in 0..n {
        assert_eq!(
            tasks::runs_of(&format!("{key}/{i}")),
            1,
            "step {i} ran again"
        );
    }
    (after.0 - before.0, after.1 - before.1)
}

/// A replayed step costs one read (one HMGET of its record and outcome,
/// pipelined) and no script call: no routing, no run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_workflow_step_costs_one_read() {
    let f = pynenc_testkit::factory_or_skip!(RedisFactory::new());
    let server = f.server().expect("server");
    // the windows count the workflows' commands
    let app = app_with_rare_upkeep(server, "replay-cost");
    let runner = start_runner(&app, 2);
    let (fcalls_10, hmgets_10) = replay_cost(&app, server, 10).await;
    let (fcalls_30, hmgets_30) = replay_cost(&app, server, 30).await;
    println!("replaying 10 steps: {fcalls_10} FCALL, {hmgets_10} HMGET; 30 steps: {fcalls_30} FCALL, {hmgets_30} HMGET");
    // routed, each of the 20 more steps would make at least one script
    // call (and a run two more); replayed, they make none: a few more can
    // only be periodic work that a longer window caught
    assert!(
        fcalls_30 < fcalls_10 + 10,
        "20 more replayed steps made {} more script calls",
        fcalls_30.saturating_sub(fcalls_10)
    );
    let more_reads = hmgets_30.saturating_sub(hmgets_10);
    assert!(
        (20..25).contains(&more_reads),
        "20 more replayed steps made {more_reads} more HMGETs (one each expected)"
    );
    ok(runner.stop().await, "stop");
    check_histories(&app).await;
}

/// A call answered by an idle runner of the same process costs three
/// script calls: its route, the runner's pick-up and the end (whose step
/// also looks for a next invocation). The runner does not pick again when
/// its pick-up took fewer than it asked for, nor when the route's message
/// on `work` comes back to the process that routed it (its reply said so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_answered_by_an_idle_runner_costs_three_script_calls() {
    let f = pynenc_testkit::factory_or_skip!(RedisFactory::new());
    let server = f.server().expect("server");
    // the window counts the calls
    let app = app_with_rare_upkeep(server, "call-cost");
    let runner = start_runner(&app, 4);
    assert_add_works(&app, 5, 5).await;
    let calls = 40i64;
    let before = fcalls_and_hmgets(server).0;
    for i in 0..calls {
        let inv = ok(add::call_on(&app, i, 1).await, "call");
        assert_eq!(ok(inv.result().await, "result"), i + 1);
    }
    let fcalls = fcalls_and_hmgets(server).0 - before;
    println!("{calls} calls, each awaited: {fcalls} FCALL");
    // four each when the runner picked twice per call; a few more than
    // three each can only be an idle runner's look for scheduled calls
    // (every 50 ms at most)
    let most = 3 * calls as u64 + 8;
    assert!(
        fcalls <= most,
        "{calls} calls made {fcalls} script calls (at most {most} expected)"
    );
    ok(runner.stop().await, "stop");
    check_histories(&app).await;
}
