//! PostgreSQL-only tests: the server stopped (fast shutdown) and started
//! again in the middle of a run. The backend reconnects by itself: a step
//! whose connection is lost before its commit runs again on a new
//! connection, and a commit whose answer is lost is settled by asking the
//! server (`txid_status`), so nothing may be lost nor run twice.
//!
//! The server is one of the test's own (never the machine's PostgreSQL);
//! skipped, with a message, when the server binaries are not installed (a
//! failure with `PYNENC_REQUIRE_POSTGRES=1`).

#![cfg(feature = "postgres")]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pynenc_testkit::process::SharedBackend;
use pynenc_testkit::tasks::{self, filler};
use pynenc_testkit::{check_histories, eventually, ok, start_runner, unique, PostgresFactory};

/// The warnings the test process logs (the backend's reconnections), kept
/// to be shown.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    /// Captures the warnings of this process from now on.
    fn install() -> Captured {
        let captured = Captured::default();
        let _ = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .try_init();
        captured
    }

    /// Each distinct warning message (without its time and fields) and how
    /// often it was logged.
    fn messages(&self) -> BTreeMap<String, usize> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            // "<time>  WARN <target>: <message> <fields>"
            let message = line.split_once(": ").map_or(line, |(_, m)| m);
            let message = message.split(" error=").next().unwrap_or(message);
            let message = message.split(" postgres=").next().unwrap_or(message);
            *counts.entry(message.trim().to_string()).or_default() += 1;
        }
        counts
    }
}

/// How long the server stays down between its stop and its new start.
const DOWN_FOR: Duration = Duration::from_millis(500);

/// The server is stopped and started again in the middle of 2,000 tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_loses_nothing() {
    let mut f = pynenc_testkit::factory_or_skip!(PostgresFactory::with_own_server());
    if f.database().and_then(|db| db.server()).is_none() {
        eprintln!("SKIPPED: no PostgreSQL server binaries, only PYNENC_POSTGRES_URL: the test cannot restart that server");
        return;
    }
    let warnings = Captured::install();
    let app = ok(SharedBackend::Postgres(f.url()).app("restart"), "build");
    let runner = start_runner(&app, 16);
    let group_key = unique("restart");
    let n = 2000;
    let started = Instant::now();
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
    let server = f
        .database()
        .and_then(|db| db.server())
        .expect("the test's own server");
    let log = server.dir().join("log");
    let restart = tokio::task::block_in_place(|| {
        let t = Instant::now();
        server.stop();
        let stopped = t.elapsed();
        std::thread::sleep(DOWN_FOR);
        server.start_again();
        (stopped, t.elapsed())
    });
    let after_restart = tasks::events_of(&group_key).len();
    // what the stop cut: the server logs each client connection it terminated
    let cut = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("terminating connection due to administrator command")
        .count();
    let values = tokio::time::timeout(Duration::from_secs(60), group.results())
        .await
        .unwrap_or_else(|_| {
            let ran = tasks::events_of(&group_key).len();
            panic!(
                "the results did not all arrive within 60 s of the restart ({ran} of {n} ran; {before} before the stop, {after_restart} when the server was back)"
            )
        });
    let values = ok(values, "results after the restart");
    assert_eq!(values, (0..n).map(|i| i.to_string()).collect::<Vec<_>>());
    let events = tasks::events_of(&group_key);
    let ran: HashSet<String> = events.iter().map(|(l, _)| l.clone()).collect();
    assert_eq!(ran.len(), n, "every task ran");
    println!(
        "postgres restart: {before} of {n} had run at the stop; stop took {:.2} s, back after {:.2} s ({after_restart} ran by then, {cut} connections cut); all {n} done {:.2} s after routing; {} runs for {n} tasks",
        restart.0.as_secs_f64(),
        restart.1.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        events.len()
    );
    println!(
        "postgres restart: warnings logged {:?}",
        warnings.messages()
    );
    assert!(
        before < n,
        "the restart happened mid-run ({before} of {n} had run)"
    );
    // nothing was applied twice: each invocation ran once and ended SUCCESS
    let owners = pynenc_testkit::runs_by_owner(&group).await;
    assert_eq!(owners.values().sum::<usize>(), n, "{owners:?}");
    assert_eq!(events.len(), n, "a task ran more than once");
    ok(runner.stop().await, "stop");
    assert_eq!(check_histories(&app).await, n);
}

/// A runner's heartbeat goes on while its other duties wait. The table of
/// leases is locked for 4 s, so the runner's recovery duty waits for its
/// lease (and every step with it); meanwhile the heartbeat, written apart
/// from the steps, keeps being written, and once the lock goes the runner's
/// own recovery finds it alive: the invocation it runs is not taken back
/// and run again. (When the duties held the heartbeat back, a runner busy
/// enough found itself silent for longer than `runner_dead_after_seconds`
/// and re-routed its own waiting parent; it then failed resuming it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeat_goes_on_while_duties_wait() {
    let mut f = pynenc_testkit::factory_or_skip!(PostgresFactory::new());
    let app = ok(SharedBackend::Postgres(f.url()).app("beats"), "build");
    let dead_after = app.conf().runner.runner_dead_after_seconds;
    let runner = start_runner(&app, 4);
    let group = unique("beats");
    let inv = ok(
        tasks::exclusive::call_on(&app, group.clone(), "long".into(), 6000).await,
        "call",
    );
    let started = eventually(Duration::from_secs(20), || async {
        !tasks::events_of(&group).is_empty()
    })
    .await;
    assert!(started, "the long task never started");
    let db = f.database().expect("the test database");
    let oldest_beat = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let lock = s.spawn(|| {
                db.psql(
                    "BEGIN; LOCK TABLE pynenc_leases IN ACCESS EXCLUSIVE MODE; \
                     SELECT pg_sleep(4); COMMIT;",
                )
            });
            let mut oldest = 0.0f64;
            while !lock.is_finished() {
                std::thread::sleep(Duration::from_millis(200));
                let age = db.psql(
                    "SELECT COALESCE(MAX((extract(epoch FROM clock_timestamp()) * 1e6)::bigint \
                     - beat_us), 0) FROM pynenc_heartbeats",
                );
                oldest = oldest.max(age.trim().parse::<f64>().unwrap_or(0.0) / 1e6);
            }
            lock.join().expect("the locking session");
            oldest
        })
    });
    assert!(
        oldest_beat < dead_after,
        "the heartbeat stopped for {oldest_beat:.2} s while the duties waited (dead after {dead_after} s)"
    );
    let label = tokio::time::timeout(Duration::from_secs(30), inv.result())
        .await
        .expect("the long task ended");
    assert_eq!(ok(label, "result"), "long");
    let history = ok(inv.history().await, "history");
    assert!(
        !history
            .iter()
            .any(|e| e.status == pynenc::InvocationStatus::RunningRecovery),
        "the runner took back its own invocation: {history:?}"
    );
    let starts = tasks::events_of(&group)
        .iter()
        .filter(|(l, _)| l.starts_with("start:"))
        .count();
    assert_eq!(starts, 1, "the task ran once");
    println!(
        "postgres heartbeat: at most {oldest_beat:.2} s old while the leases were locked for 4 s"
    );
    ok(runner.stop().await, "stop");
}
