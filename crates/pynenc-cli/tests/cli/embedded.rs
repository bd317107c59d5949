//! The embedded form, through the `embedded` example: calls by the
//! program's tasks and a runner started from the command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// The `embedded` example: the embedded form with the program's tasks.
pub fn embedded_exe() -> PathBuf {
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

/// Starts `exe pynenc <args> --json` (a `runner start`) and reads the JSON
/// document it prints when it has started.
fn start_runner(exe: &Path, dir: &Path, args: &[&str]) -> (std::process::Child, Value) {
    let mut runner = Command::new(exe)
        .arg("pynenc")
        .args(args)
        .arg("--json")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runner");
    // --json: one document on stdout when it starts
    let mut started = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(runner.stdout.as_mut().expect("the runner's stdout")),
        &mut started,
    )
    .expect("the runner's first line");
    let started: Value = serde_json::from_str(&started).expect("the start as JSON");
    (runner, started)
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
    let (mut runner, started) = start_runner(
        &exe,
        dir.path(),
        &[
            "--sqlite-path",
            &db,
            "runner",
            "start",
            "--kind",
            "persistent-process",
            "--processes",
            "2",
        ],
    );
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
fn triggers_lists_the_programs_triggers_and_their_latest_ticks() {
    let exe = embedded_exe();
    assert!(exe.is_file(), "{} was not built", exe.display());
    let dir = tempdir();
    let o = run(&exe, dir.path(), &["pynenc", "triggers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("new year") && text.contains("0 0 0 1 1 *"),
        "{text}"
    );
    assert!(
        text.contains("embedded::add") && text.contains("not fired"),
        "{text}"
    );
    let o = run(&exe, dir.path(), &["pynenc", "--json", "triggers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let t = &v["triggers"][0];
    assert_eq!(t["name"], "new year");
    assert_eq!(
        t["recent"].as_array().map(Vec::len),
        Some(pynenc::RECENT_TICKS)
    );
    assert!(
        t["next_tick"].is_string() || t["next_tick"].is_number(),
        "{v}"
    );
}

#[test]
fn standalone_triggers_lists_what_runners_stored() {
    let exe = embedded_exe();
    let dir = tempdir();
    let db = dir.path().join("triggers.db").display().to_string();
    // the program's runner stores its triggers when it starts
    let (mut runner, started) =
        start_runner(&exe, dir.path(), &["--sqlite-path", &db, "runner", "start"]);
    let app = started["app_id"].as_str().unwrap_or("shop").to_string();
    let mut listed = Value::Null;
    for _ in 0..100 {
        let o = pynenc(
            dir.path(),
            &["--sqlite-path", &db, "--app", &app, "--json", "triggers"],
        );
        if o.status.success() {
            listed = serde_json::from_str(&stdout(&o)).expect("json");
            if listed["triggers"].as_array().is_some_and(|t| !t.is_empty()) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = runner.kill();
    let _ = runner.wait();
    let t = &listed["triggers"][0];
    assert_eq!(t["name"], "new year", "{listed}");
    assert_eq!(t["cron"], "0 0 0 1 1 *");
    assert_eq!(t["declared_here"], false);
    assert!(
        t["declared_at"].is_string() || t["declared_at"].is_number(),
        "{listed}"
    );
    // in a table too
    let o = pynenc(
        dir.path(),
        &["--sqlite-path", &db, "--app", &app, "triggers"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("new year") && stdout(&o).contains("cron(0 0 0 1 1 *)"),
        "{}",
        stdout(&o)
    );
}
