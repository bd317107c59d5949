//! Waits, cancel requests, runners, leases, registration scopes, ends to
//! purge, the queue, and the schema version.

use std::time::Duration;

use pynenc_model::InvocationStatus::*;
use pynenc_model::RunnerInfo;
use pynenc_store::{AtomicStore, StoreError};
use rusqlite::Connection;

use crate::SCHEMA_VERSION;

use super::*;

#[tokio::test]
async fn waits_list_waiters_and_waited_until_they_end() {
    let (_dir, store) = fresh();
    let graph = |id: InvocationId| {
        let store = store.clone();
        async move {
            let g = store.atomic(move |t| t.waits_of(&id)).await.unwrap();
            (g.waiting_on, g.waited_by)
        }
    };
    let (p, c1, c2, c3) = (id_at(0), id_at(1), id_at(2), id_at(3));
    store
        .atomic(move |t| {
            t.insert_invocation(&rec(0, "p", 0, None), &st(Running, Some("r")))?;
            for n in 1..4 {
                t.insert_invocation(&rec(n, "c", 0, Some(p)), &st(Registered, None))?;
            }
            t.add_waits(Some(&p), &[c1, c2])?;
            t.add_waits(Some(&p), &[c1])?;
            t.add_waits(None, &[c3])?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(graph(p).await, (vec![c1, c2], vec![]));
    assert_eq!(graph(c1).await, (vec![], vec![p]));
    assert_eq!(
        graph(c3).await,
        (vec![], vec![]),
        "external waiters are not listed"
    );
    let blocking = store.atomic(|t| t.blocking_candidates(10)).await.unwrap();
    assert_eq!(blocking, vec![c1, c2, c3]);

    store
        .atomic(move |t| {
            t.put_status(&c1, &st(Success, None), ts(5))?;
            t.release_waited(&c1)
        })
        .await
        .unwrap();
    assert_eq!(graph(p).await, (vec![c2], vec![]));
    assert_eq!(graph(c1).await, (vec![], vec![]));
    // a waiter that ended waits on nothing, and nobody waits on... it
    store
        .atomic(move |t| {
            t.put_status(&p, &st(Failed, Some("r")), ts(6))?;
            t.release_waited(&p)
        })
        .await
        .unwrap();
    assert_eq!(graph(p).await, (vec![], vec![]));
    assert_eq!(graph(c2).await, (vec![], vec![]));
    store
        .atomic(move |t| t.delete_invocation(&p))
        .await
        .unwrap();
    store.atomic(|t| t.purge()).await.unwrap();
    let conn = Connection::open(store.path()).unwrap();
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM waits", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn cancel_requests_last_until_the_invocation_ends() {
    let (_dir, store) = fresh();
    let (a, b, c) = (id_at(0), id_at(1), id_at(2));
    let (asked, of_r1, of_r2) = store
        .atomic(move |t| {
            for n in 0..3 {
                t.insert_invocation(&rec(n, "a", 0, None), &st(Running, Some("r1")))?;
            }
            let by = pynenc_model::TaskError::new("InvocationCancelledError", "cancelled by ops");
            t.request_cancel(&b, &r("r1"), &by)?;
            t.request_cancel(&a, &r("r1"), &by)?;
            t.request_cancel(&c, &r("r2"), &by)?;
            Ok((
                (
                    t.cancel_requested(&a)?.map(|e| e.message),
                    t.cancel_requested(&id_at(9))?,
                ),
                t.cancel_requests_of(&r("r1"))?,
                t.cancel_requests_of(&r("r2"))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(asked, (Some("cancelled by ops".to_string()), None));
    assert_eq!(of_r1, vec![a, b]);
    assert_eq!(of_r2, vec![c]);
    let after = store
        .atomic(move |t| {
            // a status that is not final keeps the request
            t.put_status(&a, &st(Paused, Some("r1")), ts(4))?;
            t.put_status(&b, &st(Cancelled, Some("r1")), ts(5))?;
            t.delete_invocation(&c)?;
            Ok((
                t.cancel_requested(&a)?.is_some(),
                t.cancel_requested(&b)?.is_some(),
                t.cancel_requests_of(&r("r1"))?,
                t.cancel_requests_of(&r("r2"))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(after, (true, false, vec![a], vec![]));
}

fn info(id: &str, started: i64) -> RunnerInfo {
    RunnerInfo {
        runner_id: r(id),
        kind: "thread".to_string(),
        host: "host-1".to_string(),
        pid: 4242,
        started_at: ts(started),
        heartbeat_at: ts(0),
        slots: 8,
        running: vec![id_at(1), id_at(2)],
    }
}

#[tokio::test]
async fn runners_are_listed_with_their_last_heartbeat_until_removed() {
    let (_dir, store) = fresh();
    let listed = store
        .atomic(|t| {
            t.put_runner(&info("r2", 10), ts(100))?;
            t.put_runner(&info("r1", 20), ts(110))?;
            t.put_heartbeat(&r("r2"), ts(150))?;
            t.list_runners()
        })
        .await
        .unwrap();
    let mut want_r1 = info("r1", 20);
    want_r1.heartbeat_at = ts(110);
    let mut want_r2 = info("r2", 10);
    want_r2.heartbeat_at = ts(150);
    assert_eq!(listed, vec![want_r1.clone(), want_r2]);
    let (left, beat) = store
        .atomic(|t| {
            t.remove_heartbeat(&r("r2"))?;
            Ok((t.list_runners()?, t.get_heartbeat(&r("r2"))?))
        })
        .await
        .unwrap();
    assert_eq!(left, vec![want_r1]);
    assert_eq!(beat, None);
    store.atomic(|t| t.purge()).await.unwrap();
    assert!(store.atomic(|t| t.list_runners()).await.unwrap().is_empty());
}

#[tokio::test]
async fn leases_are_read_back() {
    let (_dir, store) = fresh();
    let (none, held) = store
        .atomic(|t| {
            let none = t.get_lease("upkeep")?;
            t.try_lease("upkeep", &r("r1"), ts(1_000), Duration::from_micros(500))?;
            Ok((none, t.get_lease("upkeep")?))
        })
        .await
        .unwrap();
    assert_eq!(none, None);
    let held = held.unwrap();
    assert_eq!((held.name.as_str(), held.holder.as_str()), ("upkeep", "r1"));
    assert_eq!(held.expires_at, ts(1_500));
}

#[tokio::test]
async fn registration_scopes_find_active_and_recent_successes() {
    let (_dir, store) = fresh();
    let k = Some("k");
    let found = store
        .atomic(move |t| {
            let mut scheduled = (*keyed(0, "a", 0, None, k)).clone();
            scheduled.scheduled_at = Some(ts(T0 + 1_000_000));
            t.insert_invocation(&Arc::new(scheduled), &st(Scheduled, None))?;
            t.insert_invocation(&keyed(1, "a", 0, None, k), &st(Running, Some("r")))?;
            t.insert_invocation(
                &keyed(2, "a", 0, None, Some("other")),
                &st(Registered, None),
            )?;
            let first = (t.find_active("k")?, t.find_registered("k")?);
            // the scheduled one is due: registered, and older
            t.put_status(&id_at(0), &st(Registered, None), ts(T0 + 5))?;
            let second = (t.find_active("k")?, t.find_registered("k")?);
            t.put_status(&id_at(0), &st(Pending, Some("r")), ts(T0 + 6))?;
            t.put_status(&id_at(0), &st(Success, Some("r")), ts(T0 + 100))?;
            let third = (t.find_active("k")?, t.find_registered("k")?);
            t.put_status(&id_at(1), &st(Success, Some("r")), ts(T0 + 200))?;
            Ok((first, second, third, t.find_active("k")?))
        })
        .await
        .unwrap();
    assert_eq!(found.0, (Some(id_at(1)), None));
    assert_eq!(found.1, (Some(id_at(0)), Some(id_at(0))));
    assert_eq!(found.2, (Some(id_at(1)), None));
    assert_eq!(found.3, None);
    let success = store
        .atomic(|t| {
            Ok((
                t.find_success_since("k", ts(T0 + 100))?,
                t.find_success_since("k", ts(T0 + 150))?,
                t.find_success_since("k", ts(T0 + 201))?,
                t.find_success_since("other", ts(0))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(success, (Some(id_at(1)), Some(id_at(1)), None, None));
    let after_delete = store
        .atomic(|t| {
            t.delete_invocation(&id_at(1))?;
            t.find_success_since("k", ts(T0))
        })
        .await
        .unwrap();
    assert_eq!(after_delete, Some(id_at(0)));
}

#[tokio::test]
async fn final_before_takes_each_status_by_end_time() {
    let (_dir, store) = fresh();
    let got = store
        .atomic(|t| {
            let ends = [
                (Success, 100),
                (Failed, 200),
                (Cancelled, 150),
                (ConcurrencyControlledFinal, 50),
                (Success, 300),
            ];
            for (n, (status, at)) in (0..).zip(ends) {
                t.insert_invocation(&rec(n, "a", 0, None), &st(Running, Some("r")))?;
                t.put_status(&id_at(n), &st(status, Some("r")), ts(at))?;
            }
            t.insert_invocation(&rec(9, "a", 0, None), &st(Running, Some("r")))?;
            Ok((
                t.final_before(&[Failed], ts(1_000), 10)?,
                t.final_before(&[Success, ConcurrencyControlledFinal], ts(1_000), 10)?,
                t.final_before(&[], ts(1_000), 10)?,
                t.final_before(&[], ts(160), 2)?,
                t.final_before(&[Cancelled], ts(150), 10)?,
                t.final_before(&[Running], ts(1_000), 10)?,
                t.final_before(&[], ts(i64::MAX), 0)?,
            ))
        })
        .await
        .unwrap();
    let ids = |ns: &[u64]| ns.iter().map(|n| id_at(*n)).collect::<Vec<_>>();
    assert_eq!(got.0, ids(&[1]));
    assert_eq!(got.1, ids(&[3, 0, 4]));
    assert_eq!(got.2, ids(&[3, 0, 2, 1, 4]));
    assert_eq!(got.3, ids(&[3, 0]));
    assert_eq!(got.4, ids(&[]));
    assert_eq!(got.5, ids(&[]));
    assert_eq!(got.6, ids(&[]));
}

#[tokio::test]
async fn the_oldest_queued_invocation_skips_taken_ones() {
    let (_dir, store) = fresh();
    let got = store
        .atomic(|t| {
            let empty = t.queue_oldest()?;
            for n in 0..3 {
                t.insert_invocation(&rec(n, "a", 0, None), &st(Registered, None))?;
                t.enqueue(&id_at(n))?;
            }
            let first = t.queue_oldest()?;
            // taken by a runner while its queue row is still there
            t.put_status(&id_at(0), &st(Pending, Some("r")), ts(1))?;
            Ok((empty, first, t.queue_oldest()?))
        })
        .await
        .unwrap();
    assert_eq!(got.0, None);
    assert_eq!(got.1, Some((id_at(0), created(0))));
    assert_eq!(got.2, Some((id_at(1), created(1))));
}

#[test]
fn a_version_2_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE pynenc_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO pynenc_meta VALUES ('schema_version', '2');
             CREATE TABLE invocations (rid INTEGER PRIMARY KEY, app INTEGER NOT NULL,
                 invocation_id TEXT NOT NULL, status INTEGER NOT NULL);",
        )
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = SqliteStore::open(&SqliteOptions::new(&path), "app").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Backend { .. }), "{msg}");
    assert!(msg.contains("version 2"), "{msg}");
    assert!(msg.contains(&format!("version {SCHEMA_VERSION}")), "{msg}");
    assert!(msg.contains("delete the file"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file was changed"
    );
}
