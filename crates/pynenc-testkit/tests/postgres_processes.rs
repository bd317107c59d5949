//! The PostgreSQL backend shared by real OS processes: two runner processes
//! (the testkit's `worker` binary) and the test process as the caller, on
//! one database, draining 10,000 tasks; then a runner process killed with
//! SIGKILL mid-work, whose invocations a new runner process recovers.
//!
//! Each test gets a fresh database on a server the test process starts
//! itself (never the machine's own PostgreSQL); skipped, with a message,
//! when the server binaries are not installed (a failure with
//! `PYNENC_REQUIRE_POSTGRES=1`).

#![cfg(feature = "postgres")]

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use pynenc::{InvocationStatus, Pynenc};
use pynenc_testkit::process::SharedBackend;
use pynenc_testkit::runner_process::RunnerProcess;
use pynenc_testkit::tasks::{add, sleeper};
use pynenc_testkit::{
    assert_only_held_were_recovered, check_histories, eventually, held_by_killed, unique,
    PostgresFactory,
};

/// A fresh database (dropped with the factory) and the caller's app on it:
/// the test process, with no runner. `None` (after printing why) when
/// PostgreSQL tests are skipped here.
fn caller_on_fresh_database(app_id: &str) -> Option<(PostgresFactory, SharedBackend, Pynenc)> {
    let factory = PostgresFactory::new();
    if let Some(reason) = factory.skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return None;
    }
    let backend = SharedBackend::Postgres(factory.url());
    let app = backend.app(app_id).expect("build the caller app");
    Some((factory, backend, app))
}

/// A runner process on the database (the testkit's `worker` binary).
struct Worker;

impl Worker {
    fn start(
        backend: &SharedBackend,
        logs: &Path,
        app_id: &str,
        name: &str,
        extra: &[(&str, &str)],
    ) -> RunnerProcess {
        RunnerProcess::start(
            env!("CARGO_BIN_EXE_worker"),
            backend,
            logs,
            app_id,
            name,
            extra,
        )
    }
}

/// Waits until every worker has registered as a runner of the app (a
/// runner lists itself, with its process id, when it starts).
async fn wait_until_registered(app: &Pynenc, workers: &[&RunnerProcess]) {
    let registered = eventually(Duration::from_secs(30), || async {
        let Ok(runners) = app.queries().runners().await else {
            return false;
        };
        let pids: HashSet<u32> = runners.iter().map(|r| r.pid).collect();
        workers.iter().all(|w| pids.contains(&w.pid))
    })
    .await;
    let outputs: Vec<String> = workers.iter().map(|w| w.output()).collect();
    assert!(
        registered,
        "the workers did not register as runners\n{}",
        outputs.join("\n")
    );
}

/// How long the 10,000 tasks may take. Measured on a 2-core machine
/// (debug build, other builds running): 25 to 80 s; the throughput falls as
/// the run goes on.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runner_processes_and_a_caller_share_one_database() {
    let app_id = unique("procs");
    let Some((_factory, backend, app)) = caller_on_fresh_database(&app_id) else {
        return;
    };
    let logs = tempfile::tempdir().expect("tempdir");
    let one = Worker::start(&backend, logs.path(), &app_id, "one", &[]);
    let two = Worker::start(&backend, logs.path(), &app_id, "two", &[]);
    wait_until_registered(&app, &[&one, &two]).await;

    const N: i64 = 10_000;
    let started = Instant::now();
    let group = add::parallelize_on(&app, (0..N).map(|i| (i, 2 * i)))
        .await
        .expect("route the group");
    assert_eq!(group.len(), N as usize);
    let routed = started.elapsed();
    let results = match tokio::time::timeout(DRAIN_TIMEOUT, group.results()).await {
        Ok(r) => r.expect("results"),
        Err(_) => {
            let ids: Vec<pynenc::InvocationId> = group
                .invocations()
                .iter()
                .map(|i| *i.invocation_id())
                .collect();
            let done = app.state_backend().get_outcomes(&ids).await.map(|o| {
                o.iter()
                    .filter(|o| o.status == InvocationStatus::Success)
                    .count()
            });
            panic!(
                "10,000 tasks not done in {} s (SUCCESS so far: {done:?})\n{}\n{}",
                DRAIN_TIMEOUT.as_secs(),
                one.output(),
                two.output()
            )
        }
    };
    let drained = started.elapsed();
    let expected: Vec<i64> = (0..N).map(|i| 3 * i).collect();
    assert_eq!(results, expected);
    println!(
        "postgres: 10,000 tasks routed in {:.2} s, all results in {:.2} s: {:.0} tasks/s on 2 runner processes × 8 slots",
        routed.as_secs_f64(),
        drained.as_secs_f64(),
        N as f64 / drained.as_secs_f64()
    );

    // exactly one RUNNING per invocation (none ran twice), each ended
    // SUCCESS, and both worker processes ran some
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
    let mut split: Vec<usize> = owners.values().copied().collect();
    split.sort_unstable();
    println!("postgres: runs per runner process {split:?}");
    assert_eq!(check_histories(&app).await, N as usize);

    one.stop();
    two.stop();
    // a clean stop leaves the runner list
    let runners = app.queries().runners().await.expect("runners");
    assert!(
        runners.is_empty(),
        "runners left after a clean stop: {runners:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_with_sigkill_loses_nothing() {
    let app_id = unique("kill9");
    let Some((_factory, backend, app)) = caller_on_fresh_database(&app_id) else {
        return;
    };
    let logs = tempfile::tempdir().expect("tempdir");
    let key = unique("sleep");

    const N: usize = 300;
    // long enough that the worker is still at it when the check below has
    // read the statuses (at 20 ms a fast worker finished first)
    const SLEEP_MS: u64 = 100;
    let group = sleeper::parallelize_on(&app, (0..N).map(|i| (format!("{key}-{i}"), SLEEP_MS)))
        .await
        .expect("route the group");

    // one worker starts on the work and is killed in the middle of it
    let victim = Worker::start(&backend, logs.path(), &app_id, "victim", &[]);
    let victim_tag = format!(":{}:", victim.pid);
    let mid_work = eventually(Duration::from_secs(30), || async {
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
    let killed_at = Instant::now();

    // every history written so far replays; what is not final is held by
    // the killed worker
    check_histories(&app).await;
    let (held, finished_by_victim) = held_by_killed(group.invocations(), &victim_tag).await;
    assert!(!held.is_empty(), "the killed worker held nothing");
    assert!(finished_by_victim >= 16);

    // a new worker with short recovery settings recovers and finishes everything
    let rescuer = Worker::start(
        &backend,
        logs.path(),
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
    println!(
        "postgres: the killed worker held {} of {N} and had finished {finished_by_victim}; everything done {:.2} s after the kill",
        held.len(),
        killed_at.elapsed().as_secs_f64()
    );
    assert_eq!(results, vec![SLEEP_MS; N]);
    let held: HashSet<String> = held.into_iter().collect();
    assert_only_held_were_recovered(group.invocations(), &held).await;
    assert_eq!(check_histories(&app).await, N);
    rescuer.stop();
}
