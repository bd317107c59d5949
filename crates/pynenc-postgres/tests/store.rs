//! The PostgreSQL store on a real server started by the test process
//! (skipped with a message when the server binaries are missing; a failure
//! with `PYNENC_REQUIRE_POSTGRES=1`): the group commit, the held writes,
//! and bad input — a URL that is not one, a server that is not there, a
//! wrong password, a missing database, a schema of another version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{
    Arguments, Call, ConcurrencySpec, HistoryStep, InvocationId, InvocationRecord,
    InvocationStatus, RunnerId, Serializer, StatusRecord, Timestamp,
};
use pynenc_postgres::{PostgresStore, SCHEMA_VERSION};
use pynenc_store::{AtomicStore, StoreError};
use pynenc_testservers::postgres::{test_database, TestDatabase};

fn record(n: u32) -> Arc<InvocationRecord> {
    Arc::new(InvocationRecord {
        invocation_id: InvocationId::time_ordered(),
        call: Call::new(
            "tests.task",
            Arguments::new()
                .with(Serializer::Json, "n", &n)
                .expect("serialize"),
        ),
        parent_invocation_id: None,
        created_at: Timestamp::now(),
        scheduled_at: None,
        concurrency: ConcurrencySpec::default(),
        rerun_of: None,
    })
}

fn registered() -> StatusRecord {
    StatusRecord {
        status: InvocationStatus::Registered,
        owner: None,
    }
}

/// Steps run concurrently share group transactions; a step that fails is
/// rolled back alone, the others commit, and their held writes (rows,
/// history, counters, queue) are all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_rolls_back_alone_in_its_group() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "groups");
    let mut steps = Vec::new();
    for n in 0..200u32 {
        let store = store.clone();
        steps.push(tokio::spawn(async move {
            let rec = record(n);
            let id = rec.invocation_id;
            let result = store
                .atomic(move |t| {
                    t.insert_invocation(&rec, &registered())?;
                    t.append_history(HistoryStep {
                        invocation_id: &rec.invocation_id,
                        status: InvocationStatus::Registered,
                        owner: None,
                        actor: &RunnerId::from("tester"),
                        timestamp: Timestamp::now(),
                        execution_context: None,
                    })?;
                    t.enqueue(&rec.invocation_id)?;
                    if n % 7 == 3 {
                        return Err(StoreError::backend("test", format!("step {n} refused")));
                    }
                    Ok(n)
                })
                .await;
            (n, id, result)
        }));
    }
    let mut kept = Vec::new();
    for step in steps {
        let (n, id, result) = step.await.unwrap();
        match result {
            Ok(v) => {
                assert_eq!(v, n);
                kept.push(id);
            }
            Err(e) => {
                assert_eq!(n % 7, 3, "only the refusing steps fail: {e}");
                assert!(e.to_string().contains(&format!("step {n} refused")), "{e}");
            }
        }
    }
    assert_eq!(kept.len(), 200 - 29);
    let (ids, queued, histories) = store
        .atomic(|t| {
            let ids = t.list_invocation_ids()?;
            let queued = t.queue_len()?;
            let mut histories = 0;
            for id in &ids {
                histories += t.get_history(id)?.len();
            }
            Ok((ids, queued, histories))
        })
        .await
        .unwrap();
    let mut expected = kept.clone();
    expected.sort();
    assert_eq!(
        ids, expected,
        "exactly the steps that succeeded were written"
    );
    assert_eq!(queued, kept.len());
    assert_eq!(histories, kept.len());
    let counts = store.atomic(|t| t.count_by_status(&[])).await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].count, kept.len() as u64);
}

/// A held status write is seen by the next statement of the same group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_writes_are_sent_before_a_read_of_their_table() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "held");
    let rec = record(1);
    let id = rec.invocation_id;
    let found = store
        .atomic(move |t| {
            t.insert_invocation(&rec, &registered())?;
            t.put_status(
                &rec.invocation_id,
                &StatusRecord {
                    status: InvocationStatus::Success,
                    owner: None,
                },
                Timestamp::now(),
            )?;
            t.set_result(&rec.invocation_id, "42".to_string())?;
            // reads of the tables: the held writes go first
            let finals = t.final_before(&[], Timestamp::now() + Duration::from_secs(1), 10)?;
            let outcome = t.get_outcome(&rec.invocation_id)?;
            Ok((finals, outcome))
        })
        .await
        .unwrap();
    assert_eq!(found.0, vec![id]);
    let outcome = found.1.expect("an outcome");
    assert_eq!(outcome.status, InvocationStatus::Success);
    assert_eq!(outcome.result.as_deref(), Some("42"));
}

fn open_err(url: &str) -> StoreError {
    PostgresStore::open(&options(url), "app").expect_err("the store must not open")
}

#[test]
fn a_url_that_is_not_one_names_the_option() {
    let e = open_err("postgres://user:s3cret@host:notaport/db");
    let text = e.to_string();
    assert!(
        matches!(e, StoreError::InvalidOption { option: "url", .. }),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "the password is shown: {text}");
}

#[test]
fn a_server_that_is_not_there_is_named_without_the_password() {
    // a free port: nothing listens on it
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = open_err(&format!("postgres://pynenc:s3cret@127.0.0.1:{port}/db"));
    let text = e.to_string();
    assert!(matches!(e, StoreError::Backend { .. }), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("***") && !text.contains("s3cret"), "{text}");
}

#[test]
fn a_missing_database_is_named() {
    let Some(db) = test_database() else { return };
    let url = db.url();
    let missing = format!("{}/nope_db", &url[..url.rfind('/').unwrap()]);
    let e = open_err(&missing);
    let text = e.to_string();
    assert!(
        text.contains("nope_db") && text.contains("does not exist"),
        "{text}"
    );
}

#[test]
fn a_wrong_password_is_refused_clearly() {
    let Some(mut db) = TestDatabase::own_server() else {
        return;
    };
    let Some(server) = db.server() else { return };
    // this user must give its password (the others stay trusted)
    let hba = server.dir().join("data").join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all pwuser 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    server.psql(
        "postgres",
        "CREATE ROLE pwuser LOGIN PASSWORD 'right'; SELECT pg_reload_conf();",
    );
    let port = server.port();
    let name = db.name().to_string();
    db.psql("GRANT ALL ON SCHEMA public TO pwuser");
    let e = open_err(&format!("postgres://pwuser:wrong@127.0.0.1:{port}/{name}"));
    let text = e.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        text.contains("pwuser:***@") && !text.contains("wrong@"),
        "{text}"
    );
    // the right password works
    PostgresStore::open(
        &options(&format!("postgres://pwuser:right@127.0.0.1:{port}/{name}")),
        "app",
    )
    .expect("the right password opens the store");
}

#[test]
fn a_schema_of_another_version_is_refused_and_left_alone() {
    let Some(db) = test_database() else { return };
    drop(open(&db, "first"));
    // a newer schema, version 1 (before the data store's tables) and
    // version 3 (before the task totals)
    for found in ["99", "1", "3"] {
        db.psql(&format!(
            "UPDATE pynenc_meta SET value = '{found}' WHERE key = 'schema_version'"
        ));
        let e = PostgresStore::open(&options(&db.url()), "second").expect_err("refused");
        let text = e.to_string();
        assert!(text.contains(&format!("schema version {found},")), "{text}");
        assert!(
            text.contains(&format!("version {SCHEMA_VERSION}")),
            "{text}"
        );
        let apps = db.psql("SELECT string_agg(app_id, ',') FROM pynenc_apps");
        assert_eq!(apps.trim(), "first", "nothing was written");
    }
}

/// A final invocation is waited on no more: its flag is cleared with its
/// final status write when both are in one step (one row version), by a
/// statement of its own when the status was written in an earlier step;
/// its waits go either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_invocation_is_waited_on_no_more() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "unwaited");
    let client = client(&db.url()).await;
    let (a, first) = new_invocation("tests.waited");
    let (b, _) = new_invocation("tests.waited");
    let (w, _) = new_invocation("tests.waiter");
    let (ida, idb, idw) = (a.invocation_id, b.invocation_id, w.invocation_id);
    store
        .atomic(move |t| {
            for r in [&a, &b, &w] {
                t.insert_invocation(r, &first)?;
            }
            t.add_waits(Some(&idw), &[ida, idb])
        })
        .await
        .expect("insert and wait");
    let flags = |ids: [InvocationId; 2]| {
        let client = &client;
        async move {
            let texts: Vec<String> = ids.iter().map(|i| i.as_str().to_string()).collect();
            let waited = client
                .query(
                    "SELECT waited FROM pynenc_invocations WHERE invocation_id = ANY($1) \
                     ORDER BY invocation_id",
                    &[&texts],
                )
                .await
                .expect("flags");
            let waits: i64 = client
                .query_one(
                    "SELECT count(*) FROM pynenc_waits WHERE waited = ANY($1)",
                    &[&texts],
                )
                .await
                .expect("waits")
                .get(0);
            let flags: Vec<bool> = waited.iter().map(|r| r.get(0)).collect();
            (flags, waits)
        }
    };
    assert_eq!(flags([ida, idb]).await, (vec![true, true], 2));
    let success = StatusRecord {
        status: InvocationStatus::Success,
        owner: None,
    };
    let (done, now) = (success.clone(), Timestamp::now());
    store
        .atomic(move |t| {
            // `a`: final and released in one step
            t.put_status(&ida, &done, now)?;
            t.release_waited(&ida)?;
            // `b`: final here, released in the next step
            t.put_status(&idb, &done, now)
        })
        .await
        .expect("final");
    store
        .atomic(move |t| t.release_waited(&idb))
        .await
        .expect("release");
    assert_eq!(flags([ida, idb]).await, (vec![false, false], 0));
}

/// A queue entry below where this process starts its reads of the head (as
/// another process's rolled-back transaction can leave one) is still taken,
/// once nothing is left above it; an empty queue answers empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_below_the_start_of_the_head_is_still_taken() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "head");
    let client = client(&db.url()).await;
    let records: Vec<_> = (0..3).map(|_| new_invocation("tests.queued")).collect();
    let ids: Vec<InvocationId> = records.iter().map(|(r, _)| r.invocation_id).collect();
    let queued = ids.clone();
    store
        .atomic(move |t| {
            for (r, s) in &records {
                t.insert_invocation(r, s)?;
            }
            queued.iter().try_for_each(|id| t.enqueue(id))
        })
        .await
        .expect("queue three");
    let take = |n: usize| {
        let store = store.clone();
        async move { store.atomic(move |t| t.dequeue(n)).await.expect("dequeue") }
    };
    assert_eq!(take(1).await, vec![ids[0]]);
    assert_eq!(take(1).await, vec![ids[1]]);
    // the first entry comes back at its old position, below the start
    let third: i64 = client
        .query_one(
            "SELECT seq FROM pynenc_queue WHERE invocation_id = $1",
            &[&ids[2].as_str()],
        )
        .await
        .expect("position")
        .get(0);
    let app: i32 = client
        .query_one("SELECT app FROM pynenc_apps WHERE app_id = 'head'", &[])
        .await
        .expect("app")
        .get(0);
    client
        .execute(
            "INSERT INTO pynenc_queue (app, seq, invocation_id) VALUES ($1, $2, $3)",
            &[&app, &(third - 2), &ids[0].as_str()],
        )
        .await
        .expect("put it back");
    assert_eq!(take(5).await, vec![ids[2]], "above the start first");
    // that read took fewer than it asked for: the queue is believed
    // drained (nobody announced the entry put back) for a while
    tokio::time::sleep(BELIEVED_DRAINED_FOR).await;
    assert_eq!(take(5).await, vec![ids[0]], "then below it");
    assert_eq!(take(5).await, Vec::<InvocationId>::new());
}

/// How long a store believes its app's queue drained without reading it,
/// at most (`queue_head::DRAINED_FOR` is 250 ms).
const BELIEVED_DRAINED_FOR: Duration = Duration::from_millis(300);

/// A queue found drained is believed drained by the next steps (they do
/// not read it: an entry that nobody announced is not taken) until another
/// process announces work, or for a short while; then it is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_queue_is_believed_until_another_process_queues() {
    let Some(db) = test_database() else { return };
    let a = open(&db, "believed");
    let b = open(&db, "believed");
    until_hearing(&a).await;
    let client = client(&db.url()).await;
    let take = |store: &Arc<PostgresStore>| {
        let store = store.clone();
        async move { store.atomic(move |t| t.dequeue(5)).await.expect("dequeue") }
    };
    // an invocation whose queue entry is written behind the stores' backs
    let (unannounced, status) = new_invocation("tests.queued");
    let x = unannounced.invocation_id;
    a.atomic(move |t| t.insert_invocation(&unannounced, &status))
        .await
        .expect("insert");
    assert_eq!(take(&a).await, Vec::<InvocationId>::new());
    let found_drained = std::time::Instant::now();
    client
        .execute(
            "INSERT INTO pynenc_queue (app, seq, invocation_id) \
             SELECT app, nextval('pynenc_queue_seq'), $1 FROM pynenc_apps WHERE app_id = 'believed'",
            &[&x.as_str()],
        )
        .await
        .expect("queue behind the stores' backs");
    let believed = take(&a).await;
    if found_drained.elapsed() < Duration::from_millis(200) {
        assert_eq!(
            believed,
            Vec::<InvocationId>::new(),
            "believed drained, not read"
        );
    } else {
        eprintln!("the machine was too slow to see the belief (it lasts 250 ms)");
    }
    // another process queues and announces it: the next step reads again
    let epoch = a.work_epoch();
    let (announced, status) = new_invocation("tests.queued");
    let y = announced.invocation_id;
    b.atomic(move |t| {
        t.insert_invocation(&announced, &status)?;
        t.enqueue(&y)
    })
    .await
    .expect("queue on the other store");
    tokio::time::timeout(
        Duration::from_secs(10),
        a.wait_for_work(epoch, Duration::from_secs(10)),
    )
    .await
    .expect("the announcement is heard");
    assert_ne!(a.work_epoch(), epoch, "the announcement is heard");
    let mut both = take(&a).await;
    both.sort();
    let mut want = vec![x, y];
    want.sort();
    assert_eq!(both, want, "after the announcement the queue is read");
}

/// A step that found the queue drained and then queues an invocation takes
/// it with its next read of the queue (the group remembers the queue
/// drained only until it queues something).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_queue_gives_what_the_same_step_queued_after() {
    let Some(db) = test_database() else { return };
    let store = open(&db, "drained");
    let (record, status) = new_invocation("tests.queued");
    let id = record.invocation_id;
    let (before, after) = store
        .atomic(move |t| {
            let before = t.dequeue(5)?;
            t.insert_invocation(&record, &status)?;
            t.enqueue(&id)?;
            Ok((before, t.dequeue(5)?))
        })
        .await
        .expect("step");
    assert_eq!(before, Vec::<InvocationId>::new());
    assert_eq!(after, vec![id]);
}
