//! Waits for a status change on a real server: woken by the message the
//! steps publish for a watched invocation, here by a step of another
//! backend (as of another process), long before the safety-net re-check.

use std::time::Instant;

use pynenc_store::StoreError;

use super::*;

const LONG: Duration = Duration::from_secs(3600);

fn watch_field(server: &RedisServer, b: &RedisBackend, id: &InvocationId) -> Resp {
    let key = format!("{}inv:{id}", b.key_prefix());
    server.command(&["HGET", &key, "sw"]).expect("HGET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_wait_is_woken_by_another_backends_step() {
    let server = server_or_skip!();
    let (a, b) = (
        backend(&server.url(), "watch"),
        backend(&server.url(), "watch"),
    );
    let id = route(&b, 1).await[0];
    // not the status seen: at once, and nothing stays watched
    a.wait_status_change(&id, InvocationStatus::Pending, LONG)
        .await
        .expect("at once");
    assert_eq!(watch_field(&server, &a, &id), Resp::Bulk(None));
    let publishes = stat(&server, "publish");
    let waiter = {
        let a = a.clone();
        tokio::spawn(async move {
            a.wait_status_change(&id, InvocationStatus::Registered, LONG)
                .await?;
            Ok::<Instant, StoreError>(Instant::now())
        })
    };
    let registered = Instant::now();
    while watch_field(&server, &a, &id) != Resp::Bulk(Some(b"1".to_vec())) {
        assert!(
            registered.elapsed() < Duration::from_secs(10),
            "the wait registers on the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!waiter.is_finished(), "nothing changed yet");
    let changed = Instant::now();
    let picked = b
        .get_invocations_to_start(&RunnerId::from("rb"), 1, None)
        .await
        .expect("pick");
    assert_eq!(picked.len(), 1);
    let woke = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken")
        .expect("joined")
        .expect("waited");
    let after = woke.duration_since(changed);
    // the safety net re-reads after two seconds: this is the message
    assert!(after < Duration::from_millis(1000), "woke after {after:?}");
    assert!(
        stat(&server, "publish") > publishes,
        "the change was published"
    );
    assert_eq!(watch_field(&server, &a, &id), Resp::Bulk(None), "unwatched");
    // an unwatched invocation's steps publish no status message
    let before = stat(&server, "publish");
    let other = route(&b, 1).await[0];
    run_all(&b, "rb", &[other]).await;
    let after_run = stat(&server, "publish");
    assert!(
        after_run - before <= 2,
        "only work and final messages: {before} → {after_run}"
    );
    // an unknown invocation is an error naming it, and creates nothing
    let missing = InvocationId::time_ordered();
    let err = a
        .wait_status_change(&missing, InvocationStatus::Pending, LONG)
        .await
        .expect_err("unknown");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(missing.as_str()), "{err}");
    assert_eq!(watch_field(&server, &a, &missing), Resp::Bulk(None));
}
