//! Waits for a status change: woken by this process's commits, and by
//! polling one row for other processes' commits.

use super::*;

const LONG: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn a_status_wait_is_woken_by_a_commit_of_this_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    // polling every ten seconds at most: a quick wake-up is the commit's
    let slow = open_with(
        &path,
        "app",
        Duration::from_secs(10),
        10_000 * MS,
        10_000 * MS,
    )
    .unwrap();
    let backend = TxnBackend::new(slow, Serializer::Json);
    let routed = backend
        .route_calls(vec![request("tests.watch", 1)])
        .await
        .unwrap();
    let id = routed[0].record().invocation_id;
    // not the status seen: at once
    backend
        .wait_status_change(&id, Pending, LONG)
        .await
        .unwrap();
    let waiter = {
        let backend = backend.clone();
        tokio::spawn(async move {
            backend.wait_status_change(&id, Registered, LONG).await?;
            Ok::<Instant, StoreError>(Instant::now())
        })
    };
    tokio::time::sleep(100 * MS).await;
    assert!(!waiter.is_finished(), "nothing changed yet");
    let changed = Instant::now();
    let picked = backend.get_invocations_to_run(&r("r1"), 1).await.unwrap();
    assert_eq!(picked.len(), 1);
    let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let after = woke.duration_since(changed);
    assert!(after < Duration::from_secs(1), "woke after {after:?}");
    // a wait that times out returns, and an unknown id is an error naming it
    let started = Instant::now();
    backend
        .wait_status_change(&id, Pending, 30 * MS)
        .await
        .unwrap();
    assert!(started.elapsed() >= 30 * MS);
    let missing = iid("missing");
    let err = backend
        .wait_status_change(&missing, Pending, LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(missing.as_str()), "{err}");
}

#[tokio::test]
async fn a_status_wait_sees_another_process_change_by_polling() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let a = TxnBackend::new(open_app(&path, "app"), Serializer::Json);
    let b = TxnBackend::new(open_app(&path, "app"), Serializer::Json);
    let routed = a
        .route_calls(vec![request("tests.watch", 2)])
        .await
        .unwrap();
    let id = routed[0].record().invocation_id;
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.wait_status_change(&id, Registered, LONG).await })
    };
    tokio::time::sleep(50 * MS).await;
    assert!(!waiter.is_finished(), "nothing changed yet");
    a.get_invocations_to_run(&r("ra"), 1).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(b.get_status(&id).await.unwrap().status, Pending);
}
