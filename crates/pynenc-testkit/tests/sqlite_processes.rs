//! The SQLite backend shared by real OS processes: two runner processes (the
//! testkit's `worker` binary) and the test process as the caller, on one
//! database file; then a runner process killed with SIGKILL mid-work, whose
//! invocations a new runner process recovers.

#![cfg(feature = "sqlite")]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pynenc::backends::sqlite::integrity_check;
use pynenc::{InvocationStatus, Pynenc};
use pynenc_testkit::process::{fresh_db, SharedBackend};
use pynenc_testkit::runner_process::RunnerProcess;
use pynenc_testkit::tasks::{add, sleeper};
use pynenc_testkit::{
    assert_only_held_were_recovered, check_histories, eventually, held_by_killed, unique,
};

/// A runner process on the database file (the testkit's `worker` binary),
/// its standard error logged beside the file.
struct Worker;

impl Worker {
    fn start(db: &Path, app_id: &str, name: &str, extra: &[(&str, &str)]) -> RunnerProcess {
        let logs = db.parent().expect("the database's directory");
        RunnerProcess::start(
            env!("CARGO_BIN_EXE_worker"),
            &SharedBackend::Sqlite(db.to_path_buf()),
            logs,
            app_id,
            name,
            extra,
        )
    }
}

/// Whether the process has the database file open (Linux: its file
/// descriptors; elsewhere assume yes after a short pause).
fn has_opened(worker: &RunnerProcess, db: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", worker.pid)) else {
        std::thread::sleep(Duration::from_millis(300));
        return true;
    };
    fds.filter_map(|fd| fd.ok())
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| target == db)
}

/// A fresh database file `file` and the caller's app on it: the test
/// process, with no runner.
fn caller_on_fresh_file(file: &str, app_id: &str) -> (tempfile::TempDir, PathBuf, Pynenc) {
    let (dir, db) = fresh_db(file);
    let app = SharedBackend::Sqlite(db.clone())
        .app(app_id)
        .expect("build the caller app");
    (dir, db, app)
}

async fn wait_until_open(workers: &[&RunnerProcess], db: &Path) {
    let open = eventually(Duration::from_secs(20), || async {
        workers.iter().all(|w| has_opened(w, db))
    })
    .await;
    let outputs: Vec<String> = workers.iter().map(|w| w.output()).collect();
    assert!(
        open,
        "the workers did not open the database\n{}",
        outputs.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runner_processes_and_a_caller_share_one_file() {
    let app_id = unique("procs");
    let (_dir, db, app) = caller_on_fresh_file("shared.db", &app_id);
    let one = Worker::start(&db, &app_id, "one", &[]);
    let two = Worker::start(&db, &app_id, "two", &[]);
    wait_until_open(&[&one, &two], &db).await;

    const N: i64 = 5_000;
    let group = add::parallelize_on(&app, (0..N).map(|i| (i, 2 * i)))
        .await
        .expect("route the group");
    assert_eq!(group.len(), N as usize);
    let results = match tokio::time::timeout(Duration::from_secs(60), group.results()).await {
        Ok(r) => r.expect("results"),
        Err(_) => panic!(
            "5,000 tasks not done in 60 s\n{}\n{}",
            one.output(),
            two.output()
        ),
    };
    let expected: Vec<i64> = (0..N).map(|i| 3 * i).collect();
    assert_eq!(results, expected);

    // exactly one RUNNING per invocation, and both worker processes ran some
    let owners = pynenc_testkit::runs_by_owner(&group).await;
    assert_eq!(owners.len(), 2, "runners: {owners:?}");
    for w in [&one, &two] {
        let tag = format!(":{}:", w.pid);
        assert!(
            owners.keys().any(|o| o.contains(&tag)),
            "worker {} ran nothing: {owners:?}",
            w.pid
        );
    }
    assert_eq!(check_histories(&app).await, N as usize);

    one.stop();
    two.stop();
    assert_eq!(integrity_check(&db).expect("integrity check"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_with_sigkill_loses_nothing() {
    let app_id = unique("kill9");
    let (_dir, db, app) = caller_on_fresh_file("killed.db", &app_id);
    let key = unique("sleep");

    const N: usize = 300;
    // long enough that the worker is still at it when the check below has
    // read the statuses (at 20 ms a fast worker finished first)
    const SLEEP_MS: u64 = 100;
    let group = sleeper::parallelize_on(&app, (0..N).map(|i| (format!("{key}-{i}"), SLEEP_MS)))
        .await
        .expect("route the group");

    // one worker starts on the work and is killed in the middle of it
    let victim = Worker::start(&db, &app_id, "victim", &[]);
    let victim_tag = format!(":{}:", victim.pid);
    let mid_work = eventually(Duration::from_secs(20), || async {
        let mut running = 0;
        let mut done = 0;
        for inv in group.invocations() {
            match inv.status().await {
                Ok(InvocationStatus::Running) => running += 1,
                Ok(InvocationStatus::Success) => done += 1,
                _ => {}
            }
        }
        running > 0 && done >= 16
    })
    .await;
    assert!(
        mid_work,
        "the worker did not get going\n{}",
        victim.output()
    );
    victim.kill_9();

    // the file is consistent, and so is every history written so far
    assert_eq!(integrity_check(&db).expect("integrity check"), "ok");
    check_histories(&app).await;
    let (held, finished_by_victim) = held_by_killed(group.invocations(), &victim_tag).await;
    assert!(!held.is_empty(), "the killed worker held nothing");
    assert!(finished_by_victim >= 16);

    // a new worker with short recovery settings recovers and finishes everything
    let rescuer = Worker::start(
        &db,
        &app_id,
        "rescuer",
        &[
            ("PYNENC__RUNNER__RUNNER_DEAD_AFTER_SECONDS", "1"),
            ("PYNENC__RUNNER__RECOVERY_INTERVAL_SECONDS", "0.2"),
            ("PYNENC__ORCHESTRATOR__MAX_PENDING_SECONDS", "1"),
        ],
    );
    let results = match tokio::time::timeout(Duration::from_secs(30), group.results()).await {
        Ok(r) => r.expect("results"),
        Err(_) => panic!("the work was not recovered in 30 s\n{}", rescuer.output()),
    };
    assert_eq!(results, vec![SLEEP_MS; N]);
    let held: HashSet<String> = held.into_iter().collect();
    assert_only_held_were_recovered(group.invocations(), &held).await;
    assert_eq!(check_histories(&app).await, N);
    rescuer.stop();
    assert_eq!(integrity_check(&db).expect("integrity check"), "ok");
}
