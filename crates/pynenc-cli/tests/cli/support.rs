//! What every test here uses: the tasks, running the binaries, the seeded app.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pynenc::{Pynenc, TaskError, ThreadRunner};
use serde_json::Value;

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

/// Fans out `n` additions.
/// One queued invocation per key: later calls of the key reuse it.
#[pynenc::task(registration_concurrency = Keys, key_arguments = ["key"])]
pub async fn keyed(key: String, note: String) -> String {
    format!("{key}: {note}")
}

#[pynenc::task]
pub async fn fan(n: i64) -> Result<i64, pynenc::PynencError> {
    let g = add::parallelize((0..n).map(|i| (i, i))).await?;
    Ok(g.results().await?.into_iter().sum())
}

pub const APP: &str = "cli-shop";

/// The standalone binary with a clean environment, run in `dir`.
pub fn pynenc(dir: &Path, args: &[&str]) -> Output {
    run(Path::new(env!("CARGO_BIN_EXE_pynenc")), dir, args)
}

pub fn run(exe: &Path, dir: &Path, args: &[&str]) -> Output {
    command(exe, dir, args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
}

/// `exe args` in `dir`, without the caller's `PYNENC__…` variables and
/// without colour.
pub fn command(exe: &Path, dir: &Path, args: &[&str]) -> Command {
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

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success with JSON on stdout.
pub fn json(dir: &Path, conn: &[&str], args: &[&str]) -> Value {
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
pub fn fails(dir: &Path, args: &[&str], code: i32, needle: &str) {
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
pub async fn seed(app: &Pynenc) -> (String, String, Vec<String>) {
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

/// The element of the array `doc[list]` whose `field` is `value`.
pub fn entry<'a>(doc: &'a Value, list: &str, field: &str, value: &str) -> &'a Value {
    doc[list]
        .as_array()
        .unwrap_or_else(|| panic!("no array `{list}` in {doc}"))
        .iter()
        .find(|e| e[field] == value)
        .unwrap_or_else(|| panic!("no `{list}` entry with {field} = {value} in {doc}"))
}

/// The test app on the SQLite file `db`.
pub fn sqlite_app(db: &Path) -> Pynenc {
    Pynenc::builder()
        .app_id(APP)
        .sqlite(db)
        .build()
        .expect("app")
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}
