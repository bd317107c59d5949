//! The `work` channel: heard only by a process that waits for work, and
//! heard again after the pub/sub connection is lost.

use std::time::Instant;

use super::*;

/// How many connections of the server listen to the `work` channel of `b`.
fn work_listeners(server: &RedisServer, b: &RedisBackend) -> i64 {
    let channel = format!("{}work", b.prefix);
    match server.command(&["PUBSUB", "NUMSUB", &channel]) {
        Ok(Resp::Array(Some(items))) => match items.get(1) {
            Some(Resp::Int(n)) => *n,
            other => panic!("PUBSUB NUMSUB count: {other:?}"),
        },
        other => panic!("PUBSUB NUMSUB: {other:?}"),
    }
}

/// Waits (up to 10 s) for work announced after `epoch`; how long it took.
async fn woken_after(b: &RedisBackend, epoch: u64) -> Duration {
    let t = Instant::now();
    b.wait_for_work(epoch, Duration::from_secs(10)).await;
    assert!(b.work_epoch() > epoch, "the wait ended without work");
    t.elapsed()
}

/// How long `runner`, waiting for work, takes to hear a call `caller`
/// routes (a route of another process).
async fn woken_by_a_route(caller: &RedisBackend, runner: &Arc<RedisBackend>) -> Duration {
    let epoch = runner.work_epoch();
    let waiter = {
        let runner = runner.clone();
        tokio::spawn(async move { woken_after(&runner, epoch).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    route(caller, 1).await;
    waiter.await.expect("joined")
}

/// Two processes of the app `app`, both connected (the caller by a route,
/// the runner by a read), neither having waited for work.
async fn caller_and_runner(
    server: &RedisServer,
    app: &str,
) -> (Arc<RedisBackend>, Arc<RedisBackend>) {
    let caller = backend(&server.url(), app);
    let runner = backend(&server.url(), app);
    route(&caller, 1).await;
    assert_eq!(runner.queue_len().await.expect("queue"), 1);
    (caller, runner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_process_waiting_for_work_hears_it() {
    let server = server_or_skip!();
    let (caller, runner) = caller_and_runner(&server, "work-channel").await;
    assert_eq!(work_listeners(&server, &caller), 0);

    // the first wait subscribes and returns at once: what was queued
    // before it was not announced to this process
    let epoch = runner.work_epoch();
    let first = woken_after(&runner, epoch).await;
    assert!(first < Duration::from_secs(5), "first wait took {first:?}");
    assert_eq!(work_listeners(&server, &runner), 1);

    // from then on, work queued by the other process wakes it
    let woken = woken_by_a_route(&caller, &runner).await;
    assert!(
        woken < Duration::from_secs(5),
        "work routed by another process woke the runner after {woken:?}"
    );
    // the caller still does not listen
    assert_eq!(work_listeners(&server, &caller), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_is_heard_again_after_the_connection_is_lost() {
    let server = server_or_skip!();
    let (caller, runner) = caller_and_runner(&server, "work-reconnect").await;
    let epoch = runner.work_epoch();
    woken_after(&runner, epoch).await;
    assert_eq!(work_listeners(&server, &runner), 1);

    let killed = server
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .expect("CLIENT KILL");
    assert!(matches!(killed, Resp::Int(n) if n >= 2), "{killed:?}");
    // the listener comes back and subscribes `work` again: the process had
    // waited for work
    let t = Instant::now();
    while work_listeners(&server, &runner) < 1 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "work not heard again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let woken = woken_by_a_route(&caller, &runner).await;
    assert!(woken < Duration::from_secs(5), "woken after {woken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_hears_of_its_own_work_once() {
    let server = server_or_skip!();
    let (caller, runner) = caller_and_runner(&server, "work-own").await;
    let epoch = runner.work_epoch();
    woken_after(&runner, epoch).await;
    assert_eq!(work_listeners(&server, &runner), 1);

    // the reply of its own route moves its epoch
    let before = runner.work_epoch();
    route(&runner, 1).await;
    assert_eq!(runner.work_epoch(), before + 1, "the reply moved the epoch");
    // the route's message on `work` names this backend and is skipped (a
    // second move would send its runners to pick again for nothing); one
    // connection delivers messages in order, so once the other process's
    // route is heard, the first message was read too
    let woken = woken_by_a_route(&caller, &runner).await;
    assert!(woken < Duration::from_secs(5), "woken after {woken:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        runner.work_epoch(),
        before + 2,
        "its own route and the other's, each heard once"
    );
}
