//! The registry of listeners, on a real server: a store alone with its app
//! announces nothing, a second store of the app makes every commit
//! announced, a registration removed by hand is written again and the
//! waits it would have missed wake, and rows of ended processes go.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::time::{Duration, Instant};

use futures::StreamExt;
use pynenc_model::{InvocationId, InvocationStatus, StatusRecord, Timestamp};
use pynenc_postgres::{PostgresStore, HEARD_RECHECK};
use pynenc_store::AtomicStore;
use pynenc_testservers::postgres::TestDatabase;
use tokio::sync::mpsc::UnboundedReceiver;

/// A connection of the test's own that listens on `app`'s channel, and
/// the payloads it hears.
async fn raw_listener(
    db: &TestDatabase,
    app: &str,
) -> (tokio_postgres::Client, UnboundedReceiver<String>) {
    let (client, mut connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    let number: i32 = client
        .query_one("SELECT app FROM pynenc_apps WHERE app_id = $1", &[&app])
        .await
        .expect("the app's number")
        .get(0);
    client
        .batch_execute(&format!("LISTEN pynenc_app_{number}"))
        .await
        .expect("LISTEN");
    (client, rx)
}

/// Makes `id` final through `store` (a group that announces its change).
async fn finish(store: &PostgresStore, id: InvocationId) {
    let success = StatusRecord {
        status: InvocationStatus::Success,
        owner: None,
    };
    store
        .atomic(move |t| t.put_status(&id, &success, Timestamp::now()))
        .await
        .expect("final");
}

/// The rows of the registry of `app`: the server process ids.
async fn registered(client: &tokio_postgres::Client, app: &str) -> Vec<i32> {
    client
        .query(
            "SELECT l.pid FROM pynenc_listeners AS l JOIN pynenc_apps AS a ON a.app = l.app \
             WHERE a.app_id = $1 ORDER BY l.pid",
            &[&app],
        )
        .await
        .expect("the registry")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_alone_announces_nothing_until_a_second_store_of_its_app_listens() {
    let Some(db) = pynenc_testservers::postgres::test_database() else {
        return;
    };
    let first = open(&db, "alone");
    until_hearing(&first).await;
    // a connection that listens without registering hears what is announced
    let (client, mut heard) = raw_listener(&db, "alone").await;
    assert_eq!(
        registered(&client, "alone").await,
        listener_pids(&client).await
    );
    let id = insert_new(&first, "tests.alone").await;
    finish(&first, id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        heard.try_recv().is_err(),
        "a store alone with its app sent a notification"
    );

    let second = open(&db, "alone");
    until_hearing(&second).await;
    assert_eq!(registered(&client, "alone").await.len(), 2);
    let id = insert_new(&first, "tests.alone").await;
    finish(&first, id).await;
    let payload = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let p = heard.recv().await.expect("the listening connection ended");
            if p.contains(id.as_str()) {
                return p;
            }
        }
    })
    .await
    .expect("with a second store listening, the end is announced");
    assert!(payload.ends_with(id.as_str()), "{payload}");

    // the second store gone (its listener sees it within a ping), its row
    // goes with it and the first store is alone again
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    while registered(&client, "alone").await.len() != 1 {
        assert!(Instant::now() < deadline, "the dropped store's row stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while heard.try_recv().is_ok() {}
    let id = insert_new(&first, "tests.alone").await;
    finish(&first, id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(heard.try_recv().is_err(), "alone again, it still announced");
}

/// A wait in one store for an invocation another store ends: with the
/// waiting store's registration deleted by hand, the end is not announced;
/// the listener's next ping registers it again and wakes the wait, long
/// before its re-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_removed_by_hand_is_written_again_and_the_waits_wake() {
    let Some(db) = pynenc_testservers::postgres::test_database() else {
        return;
    };
    let waiting = open(&db, "unregistered");
    until_hearing(&waiting).await;
    let other = open(&db, "unregistered");
    until_hearing(&other).await;
    let client = client(&db.url()).await;
    let before = registered(&client, "unregistered").await;
    assert_eq!(before.len(), 2);
    let id = insert_new(&other, "tests.unregistered").await;
    let wait = tokio::spawn({
        let waiting = waiting.clone();
        async move { waiting.wait_final(&[id]).await }
    });
    // the wait has read the status (not final) well before this
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !wait.is_finished(),
        "nothing is final yet, but the wait ended"
    );
    // every registration goes: `other` no longer sees a listener to tell
    client
        .batch_execute("DELETE FROM pynenc_listeners")
        .await
        .expect("delete the registrations");
    let started = Instant::now();
    finish(&other, id).await;
    let bound = Duration::from_secs(8);
    assert!(HEARD_RECHECK > bound * 2, "the re-read is not what ends it");
    tokio::time::timeout(bound, wait)
        .await
        .expect("the wait ends once its listener registered again")
        .unwrap()
        .expect("waited");
    eprintln!("the wait ended {:?} after the final", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    while registered(&client, "unregistered").await != before {
        assert!(
            Instant::now() < deadline,
            "both listeners register again (same server processes)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_server_processes_that_are_gone_go_at_a_registration_or_a_ping() {
    let Some(db) = pynenc_testservers::postgres::test_database() else {
        return;
    };
    let first = open(&db, "stale");
    until_hearing(&first).await;
    let client = client(&db.url()).await;
    let live = registered(&client, "stale").await;
    assert_eq!(live.len(), 1);
    // a process that ended without removing its row (no server process has
    // this id: above the kernel's largest)
    client
        .execute(
            "INSERT INTO pynenc_listeners (app, pid, since_us) \
             SELECT app, 2147483000, 0 FROM pynenc_apps WHERE app_id = 'stale'",
            &[],
        )
        .await
        .expect("a stale row");
    assert_eq!(registered(&client, "stale").await.len(), 2);
    let second = open(&db, "stale");
    until_hearing(&second).await;
    let rows = registered(&client, "stale").await;
    assert_eq!(
        rows.len(),
        2,
        "the stale row went, the live ones stay: {rows:?}"
    );
    assert!(rows.contains(&live[0]));
    assert!(!rows.contains(&2147483000));
    // and without a registration, at the next ping (once a second)
    client
        .execute(
            "INSERT INTO pynenc_listeners (app, pid, since_us) \
             SELECT app, 2147483001, 0 FROM pynenc_apps WHERE app_id = 'stale'",
            &[],
        )
        .await
        .expect("another stale row");
    let deadline = Instant::now() + Duration::from_secs(5);
    while registered(&client, "stale").await.contains(&2147483001) {
        assert!(
            Instant::now() < deadline,
            "the stale row stayed past the pings"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(registered(&client, "stale").await, rows);
    drop((first, second));
}
