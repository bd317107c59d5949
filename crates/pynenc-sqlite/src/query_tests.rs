//! The query primitives of the SQLite store on real files: listings and
//! their pages, counts, waits, cancel requests, runners, registration
//! scopes, the ends to purge, and the query plans.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pynenc_model::InvocationStatus::*;
use pynenc_model::{
    Arguments, Call, ConcurrencySpec, Cursor, InvocationId, InvocationQuery, InvocationRecord,
    InvocationStatus, InvocationSummary, Order, RunnerId, RunnerInfo, Serializer, StatusRecord,
    TaskError, TaskId, TimeRange, Timestamp,
};
use pynenc_store::{AtomicStore, Result, StoreError, StoreTxn};
use rusqlite::Connection;
use rustc_hash::FxHashMap;

use crate::error::Ctx;
use crate::txn::SqliteTxn;
use crate::{SqliteOptions, SqliteStore, SCHEMA_VERSION};

/// The first creation time of the test invocations, in microseconds.
const T0: i64 = 1_700_000_000_000_000;

fn open(path: &Path, app_id: &str) -> Arc<SqliteStore> {
    SqliteStore::open(&SqliteOptions::new(path), app_id).unwrap()
}

fn fresh() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("q.db"), "app");
    (dir, store)
}

fn ts(us: i64) -> Timestamp {
    Timestamp::from_micros(us)
}

/// The time-ordered id of the `n`th test invocation (created at `created(n)`).
fn id_at(n: u64) -> InvocationId {
    let us = u128::try_from(created(n).as_micros()).unwrap();
    InvocationId::from_u128((us << 72) | u128::from(n))
}

fn created(n: u64) -> Timestamp {
    ts(T0 + i64::try_from(n).unwrap() * 10)
}

fn st(status: InvocationStatus, owner: Option<&str>) -> StatusRecord {
    StatusRecord {
        status,
        owner: owner.map(RunnerId::from),
    }
}

fn r(name: &str) -> RunnerId {
    RunnerId::from(name)
}

/// The record of the `n`th invocation, of `task` with argument `k` = `k`.
fn rec(n: u64, task: &str, k: i64, parent: Option<InvocationId>) -> Arc<InvocationRecord> {
    keyed(n, task, k, parent, None)
}

fn keyed(
    n: u64,
    task: &str,
    k: i64,
    parent: Option<InvocationId>,
    registration_key: Option<&str>,
) -> Arc<InvocationRecord> {
    let arguments = Arguments::new()
        .with(Serializer::Json, "k", &k)
        .unwrap()
        .with(Serializer::Json, "n", &n)
        .unwrap();
    Arc::new(InvocationRecord {
        invocation_id: id_at(n),
        call: Call::new(task, arguments),
        parent_invocation_id: parent,
        created_at: created(n),
        scheduled_at: None,
        concurrency: ConcurrencySpec {
            registration_key: registration_key.map(str::to_string),
            ..ConcurrencySpec::default()
        },
        rerun_of: None,
    })
}

/// Every invocation, oldest first, read in pages of 7.
fn everything(t: &mut dyn StoreTxn) -> Result<Vec<InvocationSummary>> {
    let mut all = Vec::new();
    let mut q = InvocationQuery {
        order: Order::OldestFirst,
        limit: 7,
        ..InvocationQuery::new()
    };
    loop {
        let page = t.list_invocations(&q)?;
        let Some(last) = page.last() else {
            return Ok(all);
        };
        q.after = Some(Cursor(last.invocation_id));
        all.extend(page);
    }
}

/// What `query` must answer, worked out from every invocation.
fn expected(all: &[InvocationSummary], query: &InvocationQuery) -> Vec<InvocationSummary> {
    let mut out: Vec<InvocationSummary> = all
        .iter()
        .filter(|s| query.matches(s) && query.is_after_cursor(&s.invocation_id))
        .cloned()
        .collect();
    if query.order == Order::NewestFirst {
        out.reverse();
    }
    out.truncate(query.limit);
    out
}

/// A varied app: tasks a, b and c; parents and children; owners; every
/// final status; a call made twice.
async fn varied_store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let (dir, store) = fresh();
    store
        .atomic(|t| {
            let parent = id_at(0);
            t.insert_invocation(&rec(0, "a", 0, None), &st(Running, Some("r1")))?;
            for n in 1..60u64 {
                let task = ["a", "b", "c"][usize::try_from(n % 3).unwrap_or(0)];
                let child = (n % 4 == 0).then_some(parent);
                // n = 7 and n = 8 share the call of n = 6 when they share its task
                let record = rec(n, task, i64::try_from(n % 5).unwrap_or(0), child);
                t.insert_invocation(&record, &st(Registered, None))?;
                let at = created(n).as_micros() + 1_000;
                let owner = if n % 2 == 0 { "r1" } else { "r2" };
                let status = match n % 7 {
                    0 => continue,
                    1 => Pending,
                    2 => Running,
                    3 => Success,
                    4 => Failed,
                    5 => Cancelled,
                    _ => ConcurrencyControlledFinal,
                };
                if status == Failed {
                    t.set_error(&record.invocation_id, &TaskError::new("Boom", "x"))?;
                }
                let owner = (status != ConcurrencyControlledFinal).then_some(owner);
                t.put_status(&record.invocation_id, &st(status, owner), ts(at))?;
            }
            Ok(())
        })
        .await
        .unwrap();
    (dir, store)
}

fn queries(all: &[InvocationSummary]) -> Vec<InvocationQuery> {
    let q = InvocationQuery::new;
    let call = all
        .iter()
        .find(|s| s.task_id.as_str() == "b")
        .map(|s| s.call_id.clone());
    let mid = all[all.len() / 2].created_at;
    let end = all
        .iter()
        .filter_map(|s| s.ended_at)
        .nth(5)
        .unwrap_or(ts(0));
    let tasks = |names: &[&str]| names.iter().map(|n| TaskId::from(*n)).collect::<Vec<_>>();
    vec![
        q(),
        InvocationQuery {
            task_ids: tasks(&["a"]),
            ..q()
        },
        InvocationQuery {
            task_ids: tasks(&["a", "c", "missing"]),
            ..q()
        },
        InvocationQuery {
            task_ids: tasks(&["missing"]),
            ..q()
        },
        InvocationQuery {
            statuses: vec![Failed],
            ..q()
        },
        InvocationQuery {
            task_ids: tasks(&["b"]),
            statuses: vec![Failed],
            ..q()
        },
        InvocationQuery {
            statuses: vec![Registered, Success, Running],
            ..q()
        },
        InvocationQuery {
            statuses: vec![Running, Pending],
            owner: Some(r("r1")),
            ..q()
        },
        InvocationQuery {
            owner: Some(r("r2")),
            ..q()
        },
        InvocationQuery {
            owner: Some(r("r2")),
            task_ids: tasks(&["a"]),
            statuses: vec![Success, Cancelled],
            ..q()
        },
        InvocationQuery {
            parent: Some(id_at(0)),
            ..q()
        },
        InvocationQuery {
            parent: Some(id_at(0)),
            statuses: vec![Registered],
            ..q()
        },
        InvocationQuery {
            call_id: call,
            ..q()
        },
        InvocationQuery {
            created: TimeRange {
                from: Some(mid),
                to: None,
            },
            ..q()
        },
        InvocationQuery {
            created: TimeRange {
                from: Some(created(10)),
                to: Some(mid),
            },
            statuses: vec![Registered, Failed],
            ..q()
        },
        InvocationQuery {
            ended: TimeRange {
                from: None,
                to: Some(end),
            },
            ..q()
        },
        InvocationQuery {
            ended: TimeRange {
                from: Some(end),
                to: None,
            },
            task_ids: tasks(&["c"]),
            ..q()
        },
        InvocationQuery {
            ended: TimeRange {
                from: Some(end),
                to: None,
            },
            statuses: vec![Running],
            ..q()
        },
    ]
}

#[tokio::test]
async fn listings_match_every_filter_in_both_orders_with_cursors() {
    let (_dir, store) = varied_store().await;
    let all = store.atomic(everything).await.unwrap();
    assert_eq!(all.len(), 60);
    let ids: Vec<InvocationId> = all.iter().map(|s| s.invocation_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "not in id order");
    for base in queries(&all) {
        for order in [Order::OldestFirst, Order::NewestFirst] {
            for limit in [1, 4, 100] {
                for after in [None, Some(Cursor(id_at(20))), Some(Cursor(id_at(59)))] {
                    let query = InvocationQuery {
                        order,
                        limit,
                        after,
                        ..base.clone()
                    };
                    let q = query.clone();
                    let got = store.atomic(move |t| t.list_invocations(&q)).await.unwrap();
                    assert_eq!(got, expected(&all, &query), "{query:?}");
                }
            }
        }
    }
}

#[tokio::test]
async fn summaries_say_what_the_records_and_statuses_say() {
    let (_dir, store) = varied_store().await;
    let all = store.atomic(everything).await.unwrap();
    for s in &all {
        let id = s.invocation_id;
        let (record, status, retries) = store
            .atomic(move |t| {
                Ok((
                    t.get_invocation(&id)?.unwrap(),
                    t.get_status(&id)?.unwrap(),
                    t.get_retries(&id)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(s.task_id, record.call.task_id);
        assert_eq!(s.call_id, record.call.call_id());
        assert_eq!(s.parent_invocation_id, record.parent_invocation_id);
        assert_eq!(s.created_at, record.created_at);
        assert_eq!(s.status, status.status);
        assert_eq!(s.owner, status.owner);
        assert_eq!(s.retries, retries);
        assert_eq!(s.ended_at.is_some(), s.status.is_final());
    }
}

#[tokio::test]
async fn pages_never_repeat_or_skip_while_invocations_are_added() {
    let (_dir, store) = fresh();
    store
        .atomic(|t| {
            for n in 0..40 {
                t.insert_invocation(&rec(n, "a", 0, None), &st(Registered, None))?;
            }
            Ok(())
        })
        .await
        .unwrap();
    for order in [Order::OldestFirst, Order::NewestFirst] {
        let mut query = InvocationQuery {
            order,
            limit: 6,
            task_ids: vec![TaskId::from("a")],
            ..InvocationQuery::new()
        };
        let mut seen: Vec<InvocationId> = Vec::new();
        let mut extra = if order == Order::OldestFirst { 100 } else { 200 };
        loop {
            let q = query.clone();
            let page = store.atomic(move |t| t.list_invocations(&q)).await.unwrap();
            let Some(last) = page.last() else { break };
            query.after = Some(Cursor(last.invocation_id));
            seen.extend(page.iter().map(|s| s.invocation_id));
            // newer invocations arrive between two pages
            let n = extra;
            extra += 1;
            store
                .atomic(move |t| t.insert_invocation(&rec(n, "a", 0, None), &st(Registered, None)))
                .await
                .unwrap();
        }
        let mut unique = seen.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "{order:?}: an invocation was repeated");
        let first: Vec<InvocationId> = (0..40).map(id_at).collect();
        for id in &first {
            assert!(seen.contains(id), "{order:?}: {id} was skipped");
        }
        if order == Order::NewestFirst {
            // newer than the first page: never listed after it
            assert_eq!(seen.len(), 40);
            assert!(seen.windows(2).all(|w| w[0] > w[1]));
        } else {
            assert!(seen.windows(2).all(|w| w[0] < w[1]));
        }
    }
}

#[tokio::test]
async fn key_arguments_are_matched_page_by_page() {
    let (_dir, store) = fresh();
    store
        .atomic(|t| {
            for n in 0..700 {
                let k = if n % 50 == 7 { 1 } else { 0 };
                t.insert_invocation(&rec(n, "a", k, None), &st(Registered, None))?;
                t.insert_invocation(&rec(n + 10_000, "b", 1, None), &st(Registered, None))?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let one = Arguments::new().with(Serializer::Json, "k", &1).unwrap();
    let value = one.get("k").unwrap().to_string();
    let want: Vec<InvocationId> = (0..700).filter(|n| n % 50 == 7).map(id_at).collect();
    for (limit, order) in [(3, Order::OldestFirst), (100, Order::NewestFirst)] {
        let query = InvocationQuery {
            task_ids: vec![TaskId::from("a")],
            key_arguments: vec![("k".to_string(), value.clone())],
            order,
            limit,
            ..InvocationQuery::new()
        };
        let got = store
            .atomic(move |t| t.list_invocations(&query))
            .await
            .unwrap();
        let mut expect = want.clone();
        if order == Order::NewestFirst {
            expect.reverse();
        }
        expect.truncate(limit);
        let got: Vec<InvocationId> = got.iter().map(|s| s.invocation_id).collect();
        assert_eq!(got, expect);
    }
}

/// The non-zero counts as a map `(task, status) → n`.
fn counts(t: &mut dyn StoreTxn, tasks: &[&str]) -> Result<FxHashMap<(String, InvocationStatus), u64>> {
    let tasks: Vec<TaskId> = tasks.iter().map(|n| TaskId::from(*n)).collect();
    Ok(t.count_by_status(&tasks)?
        .into_iter()
        .map(|c| ((c.task_id.to_string(), c.status), c.count))
        .collect())
}

fn map(entries: &[(&str, InvocationStatus, u64)]) -> FxHashMap<(String, InvocationStatus), u64> {
    entries
        .iter()
        .map(|(t, s, n)| (((*t).to_string(), *s), *n))
        .collect()
}

#[tokio::test]
async fn counts_follow_inserts_statuses_deletes_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store = open(&path, "app");
    let other = open(&path, "other");
    other
        .atomic(|t| t.insert_invocation(&rec(99, "a", 0, None), &st(Registered, None)))
        .await
        .unwrap();
    store
        .atomic(|t| {
            for n in 0..5 {
                let task = if n < 3 { "a" } else { "b" };
                t.insert_invocation(&rec(n, task, 0, None), &st(Registered, None))?;
            }
            // read in the same section: the changes are written first
            let want = map(&[("a", Registered, 3), ("b", Registered, 2)]);
            assert_eq!(counts(t, &[])?, want);
            t.put_status(&id_at(0), &st(Pending, Some("r")), ts(1))?;
            t.put_status(&id_at(0), &st(Running, Some("r")), ts(2))?;
            t.put_status(&id_at(1), &st(Pending, Some("r")), ts(1))?;
            t.put_status(&id_at(3), &st(Cancelled, None), ts(1))?;
            Ok(())
        })
        .await
        .unwrap();
    let got = store.atomic(|t| counts(t, &[])).await.unwrap();
    let want = map(&[
        ("a", Registered, 1),
        ("a", Pending, 1),
        ("a", Running, 1),
        ("b", Registered, 1),
        ("b", Cancelled, 1),
    ]);
    assert_eq!(got, want);
    let only_b = store.atomic(|t| counts(t, &["b", "missing"])).await.unwrap();
    assert_eq!(only_b, map(&[("b", Registered, 1), ("b", Cancelled, 1)]));

    // a section that fails changes no count
    let err = store
        .atomic(|t| {
            t.put_status(&id_at(4), &st(Pending, Some("r")), ts(3))?;
            Err::<(), _>(StoreError::backend("test", "no"))
        })
        .await;
    assert!(err.is_err());
    store
        .atomic(|t| {
            t.delete_invocation(&id_at(3))?;
            t.delete_invocation(&id_at(0))
        })
        .await
        .unwrap();
    let got = store.atomic(|t| counts(t, &[])).await.unwrap();
    let want = map(&[("a", Registered, 1), ("a", Pending, 1), ("b", Registered, 1)]);
    assert_eq!(got, want);

    store.atomic(|t| t.purge()).await.unwrap();
    assert!(store.atomic(|t| counts(t, &[])).await.unwrap().is_empty());
    let kept = other.atomic(|t| counts(t, &[])).await.unwrap();
    assert_eq!(kept, map(&[("a", Registered, 1)]));
}

#[tokio::test]
async fn failures_are_counted_per_error_kind() {
    let (_dir, store) = fresh();
    let by_kind = store
        .atomic(|t| {
            for n in 0..6 {
                let task = if n < 4 { "a" } else { "b" };
                t.insert_invocation(&rec(n, task, 0, None), &st(Running, Some("r")))?;
            }
            let kinds = ["ValueError", "ValueError", "KeyError", "", "ValueError"];
            for (n, kind) in (0..5).zip(kinds) {
                if !kind.is_empty() {
                    // a retry's error first, then the final one
                    t.set_error(&id_at(n), &TaskError::new("Retried", "x"))?;
                    t.set_error(&id_at(n), &TaskError::new(kind, "x"))?;
                }
                t.put_status(&id_at(n), &st(Failed, Some("r")), ts(5))?;
            }
            // an error stored once FAILED moves its count
            t.set_error(&id_at(1), &TaskError::new("KeyError", "y"))?;
            // a cancelled invocation keeps an error, but is not FAILED
            t.set_error(&id_at(5), &TaskError::new("InvocationCancelledError", "z"))?;
            t.put_status(&id_at(5), &st(Cancelled, Some("r")), ts(5))?;
            t.failed_by_kind(&[])
        })
        .await
        .unwrap();
    let got: Vec<(String, String, u64)> = by_kind
        .into_iter()
        .map(|c| (c.task_id.to_string(), c.kind, c.count))
        .collect();
    let want = vec![
        ("a".to_string(), String::new(), 1),
        ("a".to_string(), "KeyError".to_string(), 2),
        ("a".to_string(), "ValueError".to_string(), 1),
        ("b".to_string(), "ValueError".to_string(), 1),
    ];
    assert_eq!(got, want);
    let only_b = store
        .atomic(|t| {
            t.delete_invocation(&id_at(0))?;
            t.failed_by_kind(&[TaskId::from("b")])
        })
        .await
        .unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!((only_b[0].kind.as_str(), only_b[0].count), ("ValueError", 1));
    let a = store
        .atomic(|t| t.failed_by_kind(&[TaskId::from("a")]))
        .await
        .unwrap();
    let a: Vec<(&str, u64)> = a.iter().map(|c| (c.kind.as_str(), c.count)).collect();
    assert_eq!(a, vec![("", 1), ("KeyError", 2)]);
}

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
    assert_eq!(graph(c3).await, (vec![], vec![]), "external waiters are not listed");
    let blocking = store
        .atomic(|t| t.blocking_candidates(10))
        .await
        .unwrap();
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
            t.request_cancel(&b, &r("r1"))?;
            t.request_cancel(&a, &r("r1"))?;
            t.request_cancel(&c, &r("r2"))?;
            Ok((
                (t.cancel_requested(&a)?, t.cancel_requested(&id_at(9))?),
                t.cancel_requests_of(&r("r1"))?,
                t.cancel_requests_of(&r("r2"))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(asked, (true, false));
    assert_eq!(of_r1, vec![a, b]);
    assert_eq!(of_r2, vec![c]);
    let after = store
        .atomic(move |t| {
            // a status that is not final keeps the request
            t.put_status(&a, &st(Paused, Some("r1")), ts(4))?;
            t.put_status(&b, &st(Cancelled, Some("r1")), ts(5))?;
            t.delete_invocation(&c)?;
            Ok((
                t.cancel_requested(&a)?,
                t.cancel_requested(&b)?,
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
            t.insert_invocation(&keyed(2, "a", 0, None, Some("other")), &st(Registered, None))?;
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
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file was changed");
}

/// Runs `f` on a transaction of its own on the store's file (app `app`).
fn with_txn<R>(path: &Path, f: impl FnOnce(&mut SqliteTxn<'_>) -> R) -> R {
    let conn = Connection::open(path).unwrap();
    let app: i64 = conn
        .query_row("SELECT app FROM apps WHERE app_id = 'app'", [], |r| r.get(0))
        .unwrap();
    let ctx = Ctx {
        path: path.to_path_buf(),
        shown: path.display().to_string(),
        app_id: "app".to_string(),
        app,
        busy_timeout: Duration::from_secs(1),
    };
    let names = Mutex::new(FxHashMap::default());
    let mut txn = SqliteTxn::new(&conn, &ctx, &names);
    f(&mut txn)
}

/// The lines of SQLite's plan for `sql`.
fn plan(conn: &Connection, sql: &str, args: &[rusqlite::types::Value]) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), |r| r.get::<_, String>(3))
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// Asserts a plan reads only index ranges: no full scan of a table or an
/// index, no sort.
fn assert_searches(what: &str, lines: &[String]) {
    assert!(!lines.is_empty(), "{what}: no plan");
    for line in lines {
        assert!(!line.starts_with("SCAN"), "{what}: a full scan: {lines:#?}");
        assert!(!line.contains("TEMP B-TREE"), "{what}: a sort: {lines:#?}");
    }
    assert!(lines.iter().any(|l| l.starts_with("SEARCH")), "{what}: {lines:#?}");
}

#[tokio::test]
async fn listings_and_counts_read_index_ranges_only() {
    let (dir, store) = varied_store().await;
    let path = dir.path().join("q.db");
    drop(store);
    let tasks = |names: &[&str]| names.iter().map(|n| TaskId::from(*n)).collect::<Vec<_>>();
    let cases = vec![
        (
            "FAILED of one task",
            InvocationQuery {
                task_ids: tasks(&["a"]),
                statuses: vec![Failed],
                after: Some(Cursor(id_at(30))),
                ..InvocationQuery::new()
            },
        ),
        (
            "one task, every status",
            InvocationQuery {
                task_ids: tasks(&["a"]),
                order: Order::OldestFirst,
                ..InvocationQuery::new()
            },
        ),
        (
            "FAILED of every task",
            InvocationQuery {
                statuses: vec![Failed, Running],
                ..InvocationQuery::new()
            },
        ),
        (
            "children",
            InvocationQuery {
                parent: Some(id_at(0)),
                ..InvocationQuery::new()
            },
        ),
        (
            "owner",
            InvocationQuery {
                owner: Some(r("r1")),
                ..InvocationQuery::new()
            },
        ),
        (
            "created range",
            InvocationQuery {
                created: TimeRange {
                    from: Some(created(5)),
                    to: Some(created(30)),
                },
                ..InvocationQuery::new()
            },
        ),
    ];
    let conn = Connection::open(&path).unwrap();
    with_txn(&path, |t| {
        let all = {
            let q = InvocationQuery {
                limit: 100,
                ..InvocationQuery::new()
            };
            pynenc_store::QueryTxn::list_invocations(t, &q).unwrap()
        };
        let call = all.iter().find(|s| s.task_id.as_str() == "b").unwrap();
        let mut cases = cases;
        cases.push((
            "call",
            InvocationQuery {
                call_id: Some(call.call_id.clone()),
                ..InvocationQuery::new()
            },
        ));
        for (what, q) in cases {
            let statements = t.statements(&q, q.after.map(|c| c.0), q.limit).unwrap();
            assert_eq!(statements.len(), 1, "{what}");
            for (sql, args) in statements {
                assert_searches(what, &plan(&conn, &sql, &args));
            }
        }
    });
    let app = rusqlite::types::Value::from(1_i64);
    for (what, sql) in [
        (
            "counts",
            "SELECT task, status, n FROM status_counts WHERE app = ?1 AND n > 0 ORDER BY task, status",
        ),
        (
            "final_before",
            "SELECT final_at_us, rid, invocation_id FROM invocations
             WHERE app = ?1 AND status = 14 AND final_at_us < 5 ORDER BY final_at_us, rid LIMIT 9",
        ),
        (
            "find_active",
            "SELECT invocation_id FROM invocations
             WHERE app = ?1 AND registration_key = 'k' AND final_at_us IS NULL AND status <> 0
             ORDER BY created_at_us, rid LIMIT 1",
        ),
        (
            "find_success_since",
            "SELECT invocation_id FROM invocations
             WHERE app = ?1 AND registration_key = 'k' AND status = 13 AND final_at_us >= 5
             ORDER BY final_at_us DESC, rid DESC LIMIT 1",
        ),
        (
            "cancel requests",
            "SELECT invocation_id FROM invocations WHERE app = ?1 AND cancel_owner = 'r'
             ORDER BY invocation_id",
        ),
    ] {
        assert_searches(what, &plan(&conn, sql, std::slice::from_ref(&app)));
    }
}
