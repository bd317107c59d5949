//! What the PostgreSQL backend's tests share: options with short timeouts,
//! opening a store on a test database, a runner id.

// each test file uses its own part of it
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{
    Arguments, Call, ConcurrencySpec, InvocationId, InvocationRecord, InvocationStatus, RunnerId,
    StatusRecord, Timestamp,
};
use pynenc_postgres::{PostgresOptions, PostgresStore};
use pynenc_store::{engine, AtomicStore};
use pynenc_testservers::postgres::TestDatabase;

/// The options for `url`, with short timeouts (a test fails fast).
pub fn options(url: &str) -> PostgresOptions {
    PostgresOptions {
        connect_timeout: Duration::from_secs(3),
        retry_for: Duration::from_secs(2),
        ..PostgresOptions::new(url)
    }
}

/// The store of `app` on `db`.
pub fn open(db: &TestDatabase, app: &str) -> Arc<PostgresStore> {
    PostgresStore::open(&options(&db.url()), app).expect("open the store")
}

/// The runner the tests' steps run for.
pub fn runner() -> RunnerId {
    RunnerId::from("runner-1")
}

/// A new invocation of `task` without arguments, and its first status
/// (`REGISTERED`), to insert.
pub fn new_invocation(task: &str) -> (Arc<InvocationRecord>, StatusRecord) {
    let record = Arc::new(InvocationRecord {
        invocation_id: InvocationId::time_ordered(),
        call: Call::new(task, Arguments::new()),
        parent_invocation_id: None,
        created_at: Timestamp::now(),
        scheduled_at: None,
        concurrency: ConcurrencySpec::default(),
        rerun_of: None,
    });
    let status = StatusRecord {
        status: InvocationStatus::Registered,
        owner: None,
    };
    (record, status)
}

/// Waits until `store`'s listener hears the other processes (at most 10 s).
pub async fn until_hearing(store: &PostgresStore) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !store.hears_others() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store's listener did not connect within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection of the test's own to `url` (its connection task spawned).
pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Stores a new invocation of `task` (one step); its id.
pub async fn insert_new(store: &PostgresStore, task: &str) -> InvocationId {
    let (record, status) = new_invocation(task);
    let id = record.invocation_id;
    store
        .atomic(move |t| t.insert_invocation(&record, &status))
        .await
        .expect("insert");
    id
}

/// The server processes of the database's listener connections (by their
/// name), in order.
pub async fn listener_pids(client: &tokio_postgres::Client) -> Vec<i32> {
    client
        .query(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'pynenc listener' \
             ORDER BY pid",
            &[],
        )
        .await
        .expect("listeners")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Moves `id` to `RUNNING` for the tests' runner (one step).
pub async fn start(store: &PostgresStore, id: InvocationId) {
    store
        .atomic(move |t| {
            for to in [InvocationStatus::Pending, InvocationStatus::Running] {
                engine::transition(t, &id, to, &runner(), None, Timestamp::now())?;
            }
            Ok(())
        })
        .await
        .expect("start");
}
