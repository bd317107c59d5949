//! `result()` waits for other processes' finals: one watch per store
//! reads them for every wait of the process.

use std::sync::atomic::Ordering;

use super::*;
use crate::final_watch::FinalWatch;

/// Waits in `b` for `ids`, on a task of its own.
fn wait_in(
    b: &TxnBackend<SqliteStore>,
    ids: Vec<InvocationId>,
) -> tokio::task::JoinHandle<Result<()>> {
    let b = b.clone();
    tokio::spawn(async move { b.wait_final(&ids).await })
}

/// Waits for `wait` to end well, at most five seconds (`what` it shows).
async fn ends(wait: tokio::task::JoinHandle<Result<()>>, what: &str) {
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect(what)
        .unwrap()
        .unwrap();
}

/// Waits until the waits of `watch` asked for cover `times` in all: each
/// has then read its statuses, so whatever ends afterwards reaches it
/// only through the watch (or its re-read, seconds later).
async fn covered(watch: &FinalWatch, times: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while watch.covered.load(Ordering::Relaxed) < times {
        assert!(Instant::now() < deadline, "the waits read their statuses");
        tokio::time::sleep(MS).await;
    }
}

/// `a` picks `ids`, runs them and ends them with `result`.
async fn run_in(a: &TxnBackend<SqliteStore>, ids: &[InvocationId], result: &str) {
    let picked = a.get_invocations_to_run(&r("ra"), ids.len()).await.unwrap();
    assert_eq!(picked.len(), ids.len());
    for id in ids {
        a.set_status(id, Running, &r("ra"), None).await.unwrap();
        a.finish(id, &r("ra"), RunOutcome::Success(result.into()))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_waits_in_another_process_share_one_watch_that_stops_when_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let a = TxnBackend::new(open_app(&path, "app"), Serializer::Json);
    let b_store = open_app(&path, "app");
    let b = TxnBackend::new(b_store.clone(), Serializer::Json);
    let requests = (0..300).map(|i| request("tests.watched", i)).collect();
    let routed = a.route_calls(requests).await.unwrap();
    let all: Vec<InvocationId> = routed.iter().map(|r| r.record().invocation_id).collect();
    // one wait per invocation, and one for the whole group, all in `b`
    let mut waits: Vec<_> = all.iter().map(|id| wait_in(&b, vec![*id])).collect();
    waits.push(wait_in(&b, all.clone()));
    let watch = &b_store.inner.final_watch;
    covered(watch, 301).await;
    assert!(watch.is_running(), "the waits started the watch");
    assert!(
        waits.iter().all(|w| !w.is_finished()),
        "nothing is final yet"
    );
    // `a` runs them in three rounds; `b` hears of them only through its watch
    for chunk in all.chunks(100) {
        run_in(&a, chunk, "1").await;
        tokio::time::sleep(10 * MS).await;
    }
    for wait in waits {
        ends(wait, "every wait ends once its invocations are final").await;
    }
    assert!(
        b_store.inner.final_waiters.is_empty(),
        "no wait is left registered"
    );
    let handed = watch.handed.load(Ordering::Relaxed);
    assert_eq!(
        handed, 300,
        "each final reached its waits through the watch"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while watch.is_running() {
        assert!(
            Instant::now() < deadline,
            "the watch stops once no wait is left"
        );
        tokio::time::sleep(5 * MS).await;
    }
    // a later wait starts it again, and it still sees another process's finals
    let late = a
        .route_calls(vec![request("tests.watched", 1_000)])
        .await
        .unwrap();
    let id = late[0].record().invocation_id;
    let wait = wait_in(&b, vec![id]);
    covered(watch, 302).await;
    run_in(&a, &[id], "2").await;
    ends(wait, "the restarted watch hands the final over").await;
    assert_eq!(watch.handed.load(Ordering::Relaxed), 301);
}

#[test]
fn a_watch_dropped_with_its_runtime_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let a = TxnBackend::new(open_app(&path, "app"), Serializer::Json);
    let b_store = open_app(&path, "app");
    let b = TxnBackend::new(b_store.clone(), Serializer::Json);
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    // a wait in a runtime that shuts down before its invocation ends
    let first = runtime();
    let id = first.block_on(async {
        let routed = a
            .route_calls(vec![request("tests.watched", 1)])
            .await
            .unwrap();
        let id = routed[0].record().invocation_id;
        drop(wait_in(&b, vec![id]));
        covered(&b_store.inner.final_watch, 1).await;
        id
    });
    assert!(b_store.inner.final_watch.is_running());
    drop(first);
    assert!(
        !b_store.inner.final_watch.is_running(),
        "the dropped task said so"
    );
    // the next wait, in another runtime, has a watch again
    runtime().block_on(async {
        let wait = wait_in(&b, vec![id]);
        covered(&b_store.inner.final_watch, 2).await;
        run_in(&a, &[id], "1").await;
        ends(wait, "the wait ends").await;
    });
    let handed = b_store.inner.final_watch.handed.load(Ordering::Relaxed);
    assert_eq!(handed, 1, "the final came through a new watch");
}
