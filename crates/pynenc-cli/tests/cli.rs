//! The command line run as real processes: the standalone `pynenc` binary
//! against real SQLite files and a real `redis-server` (started by the
//! test), and the embedded form through the `embedded` example. Every
//! command's `--json` is parsed; bad inputs give a message on stderr, a
//! documented exit code, and change nothing.

// a test: a failed expectation fails it
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pynenc::{InvocationStatus, Pynenc, TaskError, ThreadRunner};
use serde_json::Value;

/// Adds two numbers.
#[pynenc::task]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// Always fails with the kind `Refused`.
#[pynenc::task]
async fn refuse(n: i64) -> Result<i64, TaskError> {
    Err(TaskError::new("Refused", format!("no {n}")))
}

/// Fans out `n` additions.
#[pynenc::task]
async fn fan(n: i64) -> Result<i64, pynenc::PynencError> {
    let g = add::parallelize((0..n).map(|i| (i, i))).await?;
    Ok(g.results().await?.into_iter().sum())
}

const APP: &str = "cli-shop";

/// The standalone binary with a clean environment, run in `dir`.
fn pynenc(dir: &Path, args: &[&str]) -> Output {
    run(Path::new(env!("CARGO_BIN_EXE_pynenc")), dir, args)
}

fn run(exe: &Path, dir: &Path, args: &[&str]) -> Output {
    command(exe, dir, args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
}

/// `exe args` in `dir`, without the caller's `PYNENC__…` variables and
/// without colour.
fn command(exe: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PYNENC__") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success with JSON on stdout.
fn json(dir: &Path, conn: &[&str], args: &[&str]) -> Value {
    let all: Vec<&str> = conn.iter().chain(args).copied().chain(["--json"]).collect();
    let o = pynenc(dir, &all);
    assert!(
        o.status.success(),
        "pynenc {all:?} failed ({:?}): {}",
        o.status.code(),
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("pynenc {all:?}: not JSON ({e}): {}", stdout(&o)))
}

/// Runs and expects the exit code `code`, with `needle` in the message on stderr.
fn fails(dir: &Path, args: &[&str], code: i32, needle: &str) {
    let o = pynenc(dir, args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "pynenc {args:?}: stdout {} stderr {}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        stderr(&o).contains(needle),
        "pynenc {args:?}: stderr does not say '{needle}': {}",
        stderr(&o)
    );
}

/// An app with data: a fan-out with its three children, a failure, and two
/// calls still queued (routed after the runner stopped).
async fn seed(app: &Pynenc) -> (String, String, Vec<String>) {
    let runner = ThreadRunner::with_slots(app, 4).spawn();
    let f = fan::call_on(app, 3).await.expect("route fan");
    assert_eq!(f.result().await.expect("fan result"), 6);
    let r = refuse::call_on(app, 7).await.expect("route refuse");
    assert!(r.result().await.is_err());
    runner.stop().await.expect("stop runner");
    let q1 = add::call_on(app, 100, 1).await.expect("queued 1");
    let q2 = add::call_on(app, 100, 2).await.expect("queued 2");
    (
        f.invocation_id().to_string(),
        r.invocation_id().to_string(),
        vec![
            q1.invocation_id().to_string(),
            q2.invocation_id().to_string(),
        ],
    )
}

/// Every command on one backend (`conn`: its connection flags).
async fn every_command(dir: &Path, conn: &[&str], app: &Pynenc) {
    let (fan_id, failed_id, queued) = seed(app).await;

    let apps = json(dir, conn, &["apps"]);
    assert!(
        apps["apps"].as_array().unwrap().iter().any(|a| a == APP),
        "{apps}"
    );

    let list = json(dir, conn, &["list"]);
    assert_eq!(list["items"].as_array().unwrap().len(), 7, "{list}");
    let page = json(dir, conn, &["list", "--limit", "4", "--oldest-first"]);
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    assert_eq!(page["items"][0]["invocation_id"], fan_id.as_str());
    let next = page["next"].as_str().expect("a cursor").to_string();
    let rest = json(
        dir,
        conn,
        &["list", "--limit", "4", "--oldest-first", "--after", &next],
    );
    assert_eq!(rest["items"].as_array().unwrap().len(), 3);
    assert!(rest["next"].is_null());
    let failed = json(dir, conn, &["list", "--status", "failed"]);
    assert_eq!(failed["items"][0]["invocation_id"], failed_id.as_str());
    let owner = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["invocation_id"] == fan_id.as_str())
        .and_then(|i| i["owner"].as_str())
        .expect("the runner that ran the fan-out")
        .to_string();
    let owned = json(dir, conn, &["list", "--runner", &owner]);
    assert_eq!(owned["items"].as_array().unwrap().len(), 5, "{owned}");
    let children = json(dir, conn, &["list", "--parent", &fan_id]);
    assert_eq!(children["items"].as_array().unwrap().len(), 3);
    let recent = json(
        dir,
        conn,
        &["list", "--since", "10m", "--task", add::task().task_id()],
    );
    assert_eq!(recent["items"].as_array().unwrap().len(), 5);

    let show = json(dir, conn, &["show", &fan_id]);
    assert_eq!(show["invocation"]["status"], "success");
    assert_eq!(show["result"], 6);
    assert_eq!(show["arguments"], "(n=3)");
    assert_eq!(show["children"].as_array().unwrap().len(), 3);
    let statuses: Vec<&str> = show["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"registered"));
    assert_eq!(statuses.last(), Some(&"success"));
    let shown = json(dir, conn, &["show", &failed_id]);
    assert_eq!(shown["error"]["kind"], "Refused");
    let text = stdout(&pynenc(dir, &[conn, &["show", &failed_id]].concat()));
    assert!(text.contains("Refused: no 7"), "{text}");

    let tree = json(dir, conn, &["tree", &fan_id]);
    assert_eq!(tree["children"].as_array().unwrap().len(), 3);
    let drawn = stdout(&pynenc(dir, &[conn, &["tree", &fan_id]].concat()));
    assert_eq!(drawn.lines().count(), 4, "{drawn}");
    assert!(drawn.contains("└── "), "{drawn}");

    let tasks = json(dir, conn, &["tasks"]);
    let add_row = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == add::task().task_id())
        .expect("add listed")
        .clone();
    assert_eq!(add_row["counts"]["success"], 3);
    assert_eq!(add_row["counts"]["registered"], 2);
    let refuse_row = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == refuse::task().task_id())
        .expect("refuse listed")
        .clone();
    assert_eq!(refuse_row["failed_by_kind"]["Refused"], 1);

    let runners = json(dir, conn, &["runners"]);
    assert!(runners["runners"].as_array().is_some(), "{runners}");
    let queue = json(dir, conn, &["queue", "--next", "5"]);
    assert_eq!(queue["depth"], 2);
    assert_eq!(queue["oldest"]["invocation_id"], queued[0].as_str());
    assert_eq!(queue["next"].as_array().unwrap().len(), 2);

    // cancel: one queued by id; an ended one is refused (exit 4), nothing changes
    let cancelled = json(dir, conn, &["cancel", &queued[0]]);
    assert_eq!(cancelled["cancelled"], 1);
    fails(
        dir,
        &[conn, &["cancel", &fan_id]].concat(),
        4,
        "cannot be cancelled",
    );
    // cancel by filter: the other queued one
    let by_filter = json(dir, conn, &["cancel", "--status", "registered"]);
    assert_eq!(by_filter["cancelled"], 1);
    let st = app
        .orchestrator()
        .get_status(&pynenc::InvocationId::parse(&queued[1]).unwrap())
        .await
        .unwrap();
    assert_eq!(st.status, InvocationStatus::Cancelled);

    // rerun and retry-failed route new invocations linked to the originals
    let rerun = json(dir, conn, &["rerun", &fan_id]);
    let new = rerun["rerun"][0]["new"].as_str().unwrap().to_string();
    let record = app
        .state_backend()
        .get_invocation(&pynenc::InvocationId::parse(&new).unwrap())
        .await
        .unwrap();
    assert_eq!(record.rerun_of.map(|i| i.to_string()), Some(fan_id.clone()));
    fails(
        dir,
        &[conn, &["retry-failed", &fan_id]].concat(),
        4,
        "only FAILED",
    );
    let retried = json(
        dir,
        conn,
        &["retry-failed", "--task", refuse::task().task_id()],
    );
    assert_eq!(retried["retried"].as_array().unwrap().len(), 1);
    // rerun by filter: the two cancelled additions, once each
    let by_filter = json(dir, conn, &["rerun", "--status", "cancelled"]);
    let originals: Vec<&str> = by_filter["rerun"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["original"].as_str().unwrap())
        .collect();
    assert_eq!(originals, vec![queued[0].as_str(), queued[1].as_str()]);

    // purge: refused when piped without --yes, then done with it
    let before = json(
        dir,
        conn,
        &["list", "--status", "success", "--limit", "100"],
    );
    let successes = before["items"].as_array().unwrap().len();
    assert_eq!(successes, 4);
    fails(
        dir,
        &[conn, &["purge", "--status", "success"]].concat(),
        4,
        "pass --yes",
    );
    assert_eq!(
        json(dir, conn, &["list", "--status", "success"])["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let purged = json(dir, conn, &["purge", "--status", "success", "--yes"]);
    assert_eq!(purged["deleted"], 4);
    assert!(json(dir, conn, &["list", "--status", "success"])["items"]
        .as_array()
        .unwrap()
        .is_empty());
    let none = json(dir, conn, &["purge", "--older-than", "1d", "--yes"]);
    assert_eq!(none["deleted"], 0);

    // watch, piped: one line per update
    let o = pynenc(
        dir,
        &[conn, &["watch", "--count", "2", "--interval", "200ms"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("total="), "{lines:?}");
    let o = pynenc(dir, &[conn, &["watch", "--count", "1", "--json"]].concat());
    let v: Value = serde_json::from_slice(&o.stdout).expect("a JSON line");
    assert!(v["counts"]["cancelled"].as_u64() == Some(2), "{v}");

    // bad input: clear errors, documented codes
    let bad: &[(&[&str], i32, &str)] = &[
        (
            &["show", "0661e8c1ba395d7720446a580bd0193f"],
            3,
            "not found",
        ),
        (&["show", "nope"], 2, "'nope' is not an invocation id"),
        (
            &["list", "--task", "no::such"],
            2,
            "'no::such' is neither registered",
        ),
        (&["list", "--status", "done"], 2, "'done' is not a status"),
        (&["list", "--since", "yesterday"], 2, "--since 'yesterday'"),
        (&["list", "--limit", "5000"], 2, "page cap"),
        (&["list", "--frobnicate"], 2, "--frobnicate"),
        (&["list", "--after", "c1.nope"], 2, "invalid cursor"),
        (&["cancel"], 2, "cancel what?"),
        (&["rerun"], 2, "rerun what?"),
        (
            &["purge", "--status", "running", "--yes"],
            2,
            "ended invocations only",
        ),
        (&["runner", "start"], 2, "embedded"),
    ];
    for (args, code, needle) in bad {
        fails(dir, &[conn, args].concat(), *code, needle);
    }
    fails(
        dir,
        &[&conn[..2], &["--app", "nobody", "list"]].concat(),
        3,
        "app 'nobody' has no data",
    );

    // standalone call: by the task's stored invocations
    let called = json(
        dir,
        conn,
        &[
            "call",
            add::task().task_id(),
            "--arg",
            "x=2",
            "--arg",
            "y=3",
        ],
    );
    let id = pynenc::InvocationId::parse(called["invocation_id"].as_str().unwrap()).unwrap();
    let record = app.state_backend().get_invocation(&id).await.unwrap();
    assert_eq!(record.call.arguments.get("y"), Some("3"));
    let queued_now = json(dir, conn, &["queue"])["depth"].as_u64();
    fails(
        dir,
        &[
            conn,
            &[
                "call",
                add::task().task_id(),
                "--arg",
                "x=2",
                "--arg",
                "z=3",
            ],
        ]
        .concat(),
        2,
        "unknown [z], missing [y]",
    );
    fails(
        dir,
        &[conn, &["call", "no::such", "--arg", "x=1"]].concat(),
        2,
        "'no::such' is neither registered",
    );
    fails(
        dir,
        &[conn, &["call", add::task().task_id(), "--arg", "x=two"]].concat(),
        2,
        "is not JSON",
    );
    assert_eq!(
        json(dir, conn, &["queue"])["depth"].as_u64(),
        queued_now,
        "bad calls routed nothing"
    );
}

/// The test app on the SQLite file `db`.
fn sqlite_app(db: &Path) -> Pynenc {
    Pynenc::builder()
        .app_id(APP)
        .sqlite(db)
        .build()
        .expect("app")
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_sqlite() {
    let dir = tempdir();
    let db = dir.path().join("shop.db");
    let app = sqlite_app(&db);
    let db_text = db.display().to_string();
    every_command(dir.path(), &["--sqlite-path", &db_text, "--app", APP], &app).await;

    // the configuration layers: a file given with --config, then PYNENC__ variables
    let toml = dir.path().join("shop.toml");
    std::fs::write(
        &toml,
        format!(
            "app_id = \"{APP}\"\nbackend = \"sqlite\"\n\n[sqlite]\nsqlite_path = {db_text:?}\n"
        ),
    )
    .unwrap();
    let by_file = json(
        dir.path(),
        &["--config", &toml.display().to_string()],
        &["tasks"],
    );
    assert!(
        !by_file["tasks"].as_array().unwrap().is_empty(),
        "{by_file}"
    );
    let o = command(
        Path::new(env!("CARGO_BIN_EXE_pynenc")),
        dir.path(),
        &["queue", "--json"],
    )
    .env("PYNENC__BACKEND", "sqlite")
    .env("PYNENC__SQLITE__SQLITE_PATH", &db_text)
    .env("PYNENC__APP_ID", APP)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let by_env: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(by_env["depth"].is_u64(), "{by_env}");
    let conf = json(
        dir.path(),
        &["--config", &toml.display().to_string()],
        &["config"],
    );
    let source = conf["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "sqlite.sqlite_path")
        .map(|e| e["source"].as_str().unwrap().to_string());
    assert_eq!(source, Some(format!("file {}", toml.display())));
    fails(
        dir.path(),
        &["--config", "nope.toml", "list"],
        5,
        "nope.toml does not exist",
    );

    // a missing file is an error and is not created
    let missing = dir.path().join("missing.db");
    fails(
        dir.path(),
        &["--sqlite-path", &missing.display().to_string(), "list"],
        5,
        "does not exist",
    );
    assert!(!missing.exists());
    // a file that is not a database
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all, just text").unwrap();
    fails(
        dir.path(),
        &["--sqlite-path", &junk.display().to_string(), "list"],
        5,
        "junk.db",
    );
    // no backend named
    fails(dir.path(), &["list"], 5, "no shared backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_is_a_clear_error() {
    let dir = tempdir();
    let db = dir.path().join("locked.db");
    let app = sqlite_app(&db);
    add::call_on(&app, 1, 1).await.expect("route");
    // another process holds the write lock for the whole run
    let db_text = db.display().to_string();
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); \
             c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(30)",
            &db_text,
        ])
        .stdout(Stdio::piped())
        .spawn();
    let Ok(child) = holder.as_mut() else {
        eprintln!("skipped: python3 is needed to hold a lock on the file");
        return;
    };
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert_eq!(first.trim(), "locked");
    let o = pynenc(
        dir.path(),
        &["--sqlite-path", &db_text, "--app", APP, "purge", "--yes"],
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("locked") || stderr(&o).contains("busy"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_redis() {
    if let Some(reason) = pynenc_testservers::redis::skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let server = pynenc_testservers::redis::RedisServer::start();
    let url = server.url();
    let dir = tempdir();
    let app = Pynenc::builder()
        .app_id(APP)
        .config_value("backend", "redis")
        .config_value("redis.redis_url", url.clone())
        .build()
        .expect("app");
    every_command(dir.path(), &["--redis-url", &url, "--app", APP], &app).await;

    // unreachable server, wrong password
    let port = server.port();
    fails(
        dir.path(),
        &["--redis-url", "redis://127.0.0.1:1/0", "list"],
        5,
        "127.0.0.1:1",
    );
    server
        .command(&["ACL", "SETUSER", "ops", "on", ">right", "~*", "&*", "+@all"])
        .expect("ACL SETUSER");
    let wrong = format!("redis://ops:wrong@127.0.0.1:{port}/0");
    fails(
        dir.path(),
        &["--redis-url", &wrong, "--app", APP, "list"],
        5,
        "cannot open the redis backend",
    );
    // the password never shows, in errors or in `config`
    let o = pynenc(dir.path(), &["--redis-url", &wrong, "--app", APP, "list"]);
    assert!(!stderr(&o).contains("wrong"), "{}", stderr(&o));
    let conf = json(dir.path(), &["--redis-url", &wrong], &["config"]);
    let url_entry = conf["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "redis.redis_url")
        .expect("redis_url listed")
        .clone();
    assert!(
        !url_entry["value"].as_str().unwrap().contains("wrong"),
        "{url_entry}"
    );
    assert_eq!(url_entry["source"], "code");
}

/// The `embedded` example: the embedded form with the program's tasks.
fn embedded_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    // target/<profile>/deps/cli-… → target/<profile>/examples/embedded
    exe.parent()
        .and_then(Path::parent)
        .map(|d| {
            d.join("examples")
                .join(format!("embedded{}", std::env::consts::EXE_SUFFIX))
        })
        .expect("the target directory")
}

#[test]
fn the_embedded_form_calls_tasks_and_runs_a_runner() {
    let exe = embedded_exe();
    if !exe.is_file() {
        // built by `cargo test` and `cargo nextest run` with the tests
        panic!(
            "{} was not built: run the tests with cargo test or cargo nextest run",
            exe.display()
        );
    }
    let dir = tempdir();
    // in memory: the call runs in the process and prints its result
    let o = run(
        &exe,
        dir.path(),
        &[
            "pynenc",
            "call",
            "embedded::add",
            "--arg",
            "x=20",
            "--arg",
            "y=22",
            "--wait",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "42");
    let o = run(
        &exe,
        dir.path(),
        &[
            "pynenc",
            "call",
            "embedded::add",
            "--arg",
            "x=1",
            "--arg",
            "z=2",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("z"), "{}", stderr(&o));
    // on SQLite: calls queue, a runner started from the command line runs
    // them, SIGTERM stops it cleanly
    let db = dir.path().join("shop.db").display().to_string();
    let o = run(
        &exe,
        dir.path(),
        &[
            "pynenc",
            "--sqlite-path",
            &db,
            "call",
            "embedded::fan_out",
            "--arg",
            "n=4",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    let mut runner = Command::new(&exe)
        .args([
            "pynenc",
            "--sqlite-path",
            &db,
            "runner",
            "start",
            "--kind",
            "persistent-process",
            "--processes",
            "2",
            "--json",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runner");
    // --json: one document on stdout when it starts
    let mut started = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(runner.stdout.as_mut().unwrap()),
        &mut started,
    )
    .unwrap();
    let started: Value = serde_json::from_str(&started).expect("the start as JSON");
    assert_eq!(started["kind"], "persistent_process");
    assert_eq!(started["backend"], "sqlite");
    let runner_id = started["runner_id"].as_str().unwrap().to_string();
    let mut done = false;
    for _ in 0..100 {
        let shown = json(
            dir.path(),
            &["--sqlite-path", &db, "--app", "shop"],
            &["show", &id],
        );
        if shown["invocation"]["status"] == "success" {
            assert_eq!(shown["result"], 12);
            done = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let listed = json(
        dir.path(),
        &["--sqlite-path", &db, "--app", "shop"],
        &["runners"],
    );
    let me = listed["runners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["info"]["runner_id"] == runner_id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{runner_id} not listed: {listed}"));
    assert_eq!(me["info"]["kind"], "persistent_process");
    let pid = runner.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = runner.wait().expect("runner exit");
    assert!(done, "the runner did not run the fan-out");
    assert!(
        status.success(),
        "the runner did not stop cleanly on SIGTERM: {status:?}"
    );
    let runners = json(
        dir.path(),
        &["--sqlite-path", &db, "--app", "shop"],
        &["runners"],
    );
    assert!(
        runners["runners"].as_array().unwrap().is_empty(),
        "a clean stop leaves the list: {runners}"
    );
    // not `pynenc …`: the program does its own work
    let o = run(&exe, dir.path(), &["hello"]);
    assert!(stdout(&o).contains("own work"));
}

#[test]
fn status_graph_as_text_and_mermaid() {
    let dir = tempdir();
    let text = stdout(&pynenc(dir.path(), &["status", "graph"]));
    assert!(text.contains("REGISTERED"), "{text}");
    let mermaid = stdout(&pynenc(dir.path(), &["status", "graph", "--mermaid"]));
    assert!(mermaid.starts_with("stateDiagram-v2"), "{mermaid}");
    for s in pynenc::status::ALL_STATUSES {
        for n in s.allowed_next() {
            let edge = format!("    {} --> {}", s.as_str(), n.as_str());
            assert!(mermaid.contains(&edge), "missing {edge}");
        }
    }
    let v = json(dir.path(), &[], &["status", "graph"]);
    assert_eq!(
        v["statuses"].as_array().unwrap().len(),
        pynenc::status::ALL_STATUSES.len()
    );
}

/// `--help` of every command, compared with `tests/help/<command>.txt`
/// (`PYNENC_UPDATE_HELP=1` rewrites them).
#[test]
fn help_texts_match_their_snapshots() {
    let dir = tempdir();
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("help");
    let update = std::env::var("PYNENC_UPDATE_HELP").as_deref() == Ok("1");
    let commands: &[&[&str]] = &[
        &[],
        &["runner", "start"],
        &["call"],
        &["list"],
        &["show"],
        &["tree"],
        &["tasks"],
        &["runners"],
        &["queue"],
        &["apps"],
        &["cancel"],
        &["rerun"],
        &["retry-failed"],
        &["purge"],
        &["config"],
        &["status", "graph"],
        &["watch"],
    ];
    for c in commands {
        let args: Vec<&str> = c.iter().copied().chain(["--help"]).collect();
        let o = pynenc(dir.path(), &args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let name = if c.is_empty() {
            "pynenc".to_string()
        } else {
            c.join("-")
        };
        let file = snapshots.join(format!("{name}.txt"));
        let text = stdout(&o);
        if update {
            std::fs::create_dir_all(&snapshots).unwrap();
            std::fs::write(&file, &text).unwrap();
        } else {
            let expected = std::fs::read_to_string(&file).unwrap_or_else(|e| {
                panic!("{}: {e} (PYNENC_UPDATE_HELP=1 writes it)", file.display())
            });
            assert_eq!(
                text,
                expected,
                "`pynenc {}` changed (PYNENC_UPDATE_HELP=1 rewrites {})",
                args.join(" "),
                file.display()
            );
        }
    }
}

/// Runs the standalone binary in a pseudo-terminal (`script`, from
/// util-linux) with `input` typed in; its exit code and what the terminal
/// showed. `None` when `script` is not installed.
fn in_terminal(dir: &Path, args: &[&str], input: &str) -> Option<(Option<i32>, String)> {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_pynenc"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let mut child = Command::new("script")
        .args(["-qfec", &quoted.join(" "), "/dev/null"])
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    std::io::Write::write_all(child.stdin.as_mut()?, input.as_bytes()).ok()?;
    let o = child.wait_with_output().ok()?;
    Some((o.status.code(), stdout(&o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_colour_and_a_purge_asks_first() {
    let dir = tempdir();
    let db = dir.path().join("tty.db");
    let app = sqlite_app(&db);
    seed(&app).await;
    let db_text = db.display().to_string();
    let conn = ["--sqlite-path", db_text.as_str(), "--app", APP];
    let Some((code, shown)) = in_terminal(dir.path(), &[&conn[..], &["list"]].concat(), "") else {
        eprintln!("skipped: `script` (util-linux) is needed for a pseudo-terminal");
        return;
    };
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("\x1b[32mSUCCESS\x1b[0m"),
        "no colour on a terminal: {shown}"
    );
    // piped, without NO_COLOR: no colour
    let piped = command(
        Path::new(env!("CARGO_BIN_EXE_pynenc")),
        dir.path(),
        &[&conn[..], &["list"]].concat(),
    )
    .env_remove("NO_COLOR")
    .output()
    .unwrap();
    assert!(
        !stdout(&piped).contains('\x1b'),
        "colour in a pipe: {}",
        stdout(&piped)
    );

    // the purge shows what will go and asks; "n" deletes nothing
    let purge = [&conn[..], &["purge", "--status", "success"]].concat();
    let (code, shown) = in_terminal(dir.path(), &purge, "n\n").unwrap();
    assert_eq!(code, Some(4), "{shown}");
    assert!(
        shown.contains("delete 4 invocations (records, results, histories)? [y/N]"),
        "{shown}"
    );
    assert!(
        shown.contains("not confirmed: nothing was deleted"),
        "{shown}"
    );
    assert_eq!(
        json(dir.path(), &conn, &["list", "--status", "success"])["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let (code, shown) = in_terminal(dir.path(), &purge, "y\n").unwrap();
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("4 invocations deleted"), "{shown}");
    assert!(
        json(dir.path(), &conn, &["list", "--status", "success"])["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
