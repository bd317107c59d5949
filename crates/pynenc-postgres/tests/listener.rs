//! The listener of another process's notifications, on a real server that
//! the test started: a connection that stops answering without closing is
//! found by the listener's ping, which reconnects and wakes every wait; a
//! wait does not depend on its slow safety re-read for that.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::process::Command;
use std::time::{Duration, Instant};

use pynenc_model::{InvocationStatus, StatusRecord, Timestamp};
use pynenc_postgres::HEARD_RECHECK;
use pynenc_store::AtomicStore;
use pynenc_testservers::postgres::TestDatabase;

/// A server process stopped with `SIGSTOP` (its connection stays open and
/// answers nothing), continued when dropped so that the server can stop.
struct Stopped(i32);

impl Stopped {
    fn new(pid: i32) -> Stopped {
        signal("-STOP", pid);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(which: &str, pid: i32) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {which} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_connection_stops_answering_reconnects_and_wakes_the_waits() {
    let Some(mut db) = TestDatabase::own_server() else {
        return;
    };
    if db.server().is_none() {
        eprintln!("SKIPPED: pausing the listener's server process needs a server this test started (the PostgreSQL server binaries, not PYNENC_POSTGRES_URL)");
        return;
    }
    let waiting = open(&db, "pinged");
    until_hearing(&waiting).await;
    let client = client(&db.url()).await;
    // the only listener so far is `waiting`'s
    let pids = listener_pids(&client).await;
    assert_eq!(pids.len(), 1, "one listener: {pids:?}");
    let other = open(&db, "pinged");
    let id = insert_new(&other, "tests.pinged").await;
    // the listener's server process stops answering, its connection open
    let stopped = Stopped::new(pids[0]);
    let wait = tokio::spawn({
        let waiting = waiting.clone();
        async move { waiting.wait_final(&[id]).await }
    });
    // the wait has read the status (not final) well before this
    tokio::time::sleep(Duration::from_millis(500)).await;
    if wait.is_finished() {
        panic!("nothing is final yet, but the wait ended: {:?}", wait.await);
    }
    let started = Instant::now();
    let success = StatusRecord {
        status: InvocationStatus::Success,
        owner: None,
    };
    other
        .atomic(move |t| t.put_status(&id, &success, Timestamp::now()))
        .await
        .expect("final");
    // announced on a connection that no longer answers: the listener's
    // ping finds it (1 s, then at most 5 s for the reply), reconnects and
    // wakes the wait, long before its safety re-read
    let bound = Duration::from_secs(12);
    assert!(HEARD_RECHECK > bound * 2, "the re-read is not what ends it");
    tokio::time::timeout(bound, wait)
        .await
        .expect("the wait ends once the listener reconnected")
        .unwrap()
        .expect("waited");
    eprintln!("the wait ended {:?} after the final", started.elapsed());
    drop(stopped);
    until_hearing(&waiting).await;
}
