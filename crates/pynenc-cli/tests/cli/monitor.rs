//! `monitor`: the standalone binary serves the web monitor of an app on a
//! SQLite file, with a generated token or the tokens from the environment,
//! and refuses a public address without them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// `GET path` with a bearer token; the status and the body.
fn get(addr: &str, path: &str, token: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the monitor");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Starts `exe <args> monitor --bind 127.0.0.1:0 --json` with `env`, reads
/// the line it prints when it listens: the process, that line, the address.
fn start_monitor(
    exe: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, Value, String) {
    let mut cmd = command(
        exe,
        dir,
        &[args, &["monitor", "--bind", "127.0.0.1:0", "--json"]].concat(),
    );
    cmd.envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start the monitor");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("the monitor's stdout"))
        .read_line(&mut first)
        .expect("the monitor's start line");
    let started: Value = serde_json::from_str(&first).expect("the start line as JSON");
    let addr = started["url"]
        .as_str()
        .expect("the monitor's url")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    (child, started, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_serves_the_app_until_stopped() {
    let dir = tempdir();
    let db = dir.path().join("app.db");
    let app = sqlite_app(&db);
    let (_, failed, _) = seed(&app).await;
    let db_arg = db.to_string_lossy().into_owned();
    let conn = ["--sqlite-path", db_arg.as_str(), "--app", APP];

    // with a token from the environment
    let pynenc_exe = std::path::Path::new(env!("CARGO_BIN_EXE_pynenc"));
    let (mut child, started, addr) = start_monitor(
        pynenc_exe,
        dir.path(),
        &conn,
        &[("PYNENC_MONITOR_VIEWER_TOKEN", "viewer-token-for-tests")],
    );
    assert!(
        started["token"].is_null(),
        "no token generated when one is configured"
    );
    assert!(addr.starts_with("127.0.0.1:"));
    let (status, _) = get(&addr, "/api/overview", "wrong-token-here");
    assert_eq!(status, 401);
    let (status, body) = get(&addr, "/api/overview", "viewer-token-for-tests");
    assert_eq!(status, 200, "{body}");
    let overview: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(overview["app_id"], APP);
    assert_eq!(overview["by_status"]["failed"], 1);
    let (status, body) = get(
        &addr,
        &format!("/api/invocations/{failed}"),
        "viewer-token-for-tests",
    );
    assert_eq!(status, 200);
    assert!(body.contains("Refused"));
    // SIGTERM stops it cleanly
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // without credentials: a generated token, printed
    let (mut child, started, addr) = start_monitor(pynenc_exe, dir.path(), &conn, &[]);
    let token = started["token"]
        .as_str()
        .expect("a generated token")
        .to_string();
    let (status, body) = get(&addr, "/api/me", &token);
    assert_eq!(status, 200);
    assert!(body.contains("\"operator\""), "{body}");
    child.kill().unwrap();
    let _ = child.wait();

    // a public address without credentials is refused, before listening
    fails(
        dir.path(),
        &[&conn[..], &["monitor", "--bind", "0.0.0.0:0"]].concat(),
        2,
        "without configured credentials",
    );
}

#[test]
fn the_embedded_monitor_shows_the_programs_tasks_and_triggers() {
    let exe = crate::embedded::embedded_exe();
    let dir = tempdir();
    let (mut child, started, addr) = start_monitor(&exe, dir.path(), &["pynenc"], &[]);
    let token = started["token"]
        .as_str()
        .expect("a generated token")
        .to_string();
    let (status, body) = get(&addr, "/api/tasks", &token);
    assert_eq!(status, 200, "{body}");
    let tasks: Value = serde_json::from_str(&body).unwrap();
    let add = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == "embedded::add")
        .unwrap_or_else(|| panic!("no embedded::add in {tasks}"));
    assert_eq!(add["registered_here"], true);
    let (_, body) = get(&addr, "/api/overview", &token);
    let overview: Value = serde_json::from_str(&body).unwrap();
    assert!(
        !overview["triggers"].as_array().unwrap().is_empty(),
        "{overview}"
    );
    child.kill().unwrap();
    let _ = child.wait();
}
