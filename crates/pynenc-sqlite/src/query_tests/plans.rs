//! The query plans read index ranges only; a million rows stay fast.

use std::time::Duration;

use parking_lot::Mutex;
use pynenc_model::InvocationStatus::*;
use pynenc_model::{TaskError, TaskId, TimeRange};
use pynenc_store::AtomicStore;
use rusqlite::Connection;
use rustc_hash::FxHashMap;

use super::listings::varied_store;
use super::*;
use crate::error::Ctx;
use crate::txn::SqliteTxn;

/// Runs `f` on a transaction of its own on the store's file (app `app`).
fn with_txn<R>(path: &Path, f: impl FnOnce(&mut SqliteTxn<'_>) -> R) -> R {
    let conn = Connection::open(path).unwrap();
    let app: i64 = conn
        .query_row("SELECT app FROM apps WHERE app_id = 'app'", [], |r| {
            r.get(0)
        })
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
        .query_map(rusqlite::params_from_iter(args.iter()), |r| {
            r.get::<_, String>(3)
        })
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
    assert!(
        lines.iter().any(|l| l.starts_with("SEARCH")),
        "{what}: {lines:#?}"
    );
}

#[test]
fn a_runners_cancel_poll_reads_only_the_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    drop(open(&path, "app"));
    let conn = Connection::open(&path).unwrap();
    let lines = plan(
        &conn,
        crate::runners::CANCELS_OF,
        &[1.into(), "runner".to_string().into()],
    );
    assert_searches("cancel requests", &lines);
    assert!(
        lines.iter().any(|l| l.contains("invocations_cancel")),
        "not the partial index of requests: {lines:#?}"
    );
}

#[tokio::test]
async fn the_data_sweep_reads_the_claim_index_in_order() {
    let (dir, store) = fresh();
    // values of two apps, so that the plan is not that of an empty table
    let other = open(&dir.path().join("q.db"), "other");
    for (s, fill) in [(&store, 'a'), (&other, 'b')] {
        s.atomic(move |t| {
            for n in 0..50_i64 {
                let v = format!("\"{fill}{n}\"");
                t.put_data(&pynenc_model::DataRef::of(&v), &v, &[id_at(1)], ts(T0 + n))?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }
    drop((store, other));
    let conn = Connection::open(dir.path().join("q.db")).unwrap();
    conn.execute_batch("ANALYZE").unwrap();
    let lines = plan(
        &conn,
        crate::data::UNCLAIMED,
        &[1.into(), (T0 + 25).into(), 100.into()],
    );
    assert_searches("unclaimed values", &lines);
    assert!(
        lines.iter().any(|l| l.contains("data_values_claim")),
        "not the index of claim times: {lines:#?}"
    );
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
                if std::env::var_os("PYNENC_SHOW_PLANS").is_some() {
                    eprintln!("{what}:\n{sql}\n{:#?}", plan(&conn, &sql, &args));
                }
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
            "owned counts",
            concat!(
                "SELECT task, status FROM invocations WHERE app = ?1 AND ",
                crate::codes::owned_running!()
            ),
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

/// The time of `f`, best of five.
async fn best_of_five<F, Fut, T>(mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let _ = f().await;
        best = best.min(start.elapsed());
    }
    best
}

/// One million finished invocations of one task (one in ten `FAILED`):
/// a page of `FAILED` and the counts stay fast. Slow to fill (about a
/// minute in release): `cargo test --release -p pynenc-sqlite -- --ignored
/// --nocapture million`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn a_million_finished_invocations_page_and_count_fast() {
    let (_dir, store) = fresh();
    let fill = std::time::Instant::now();
    const N: u64 = 1_000_000;
    const SECTION: u64 = 20_000;
    for start in (0..N).step_by(usize::try_from(SECTION).unwrap()) {
        store
            .atomic(move |t| {
                for n in start..start + SECTION {
                    let task = if n % 100 == 99 { "small" } else { "big" };
                    t.insert_invocation(&rec(n, task, 0, None), &st(Running, Some("r")))?;
                    let end = created(n).as_micros() + 500;
                    if n % 10 == 3 {
                        t.set_error(&id_at(n), &TaskError::new("Boom", "x"))?;
                        t.put_status(&id_at(n), &st(Failed, Some("r")), ts(end))?;
                    } else {
                        t.put_status(&id_at(n), &st(Success, Some("r")), ts(end))?;
                    }
                }
                Ok(())
            })
            .await
            .unwrap();
    }
    eprintln!(
        "filled {N} invocations in {:.1} s",
        fill.elapsed().as_secs_f64()
    );
    let page = |order: Order, after: Option<u64>| {
        let store = store.clone();
        async move {
            let q = InvocationQuery {
                task_ids: vec![TaskId::from("big")],
                statuses: vec![Failed],
                order,
                after: after.map(|n| Cursor(id_at(n))),
                limit: 50,
                ..InvocationQuery::new()
            };
            store.atomic(move |t| t.list_invocations(&q)).await.unwrap()
        }
    };
    let first = page(Order::NewestFirst, None).await;
    assert_eq!(first.len(), 50);
    assert!(first
        .iter()
        .all(|s| s.status == Failed && s.task_id.as_str() == "big"));
    let mut timings = Vec::new();
    for (what, order, after) in [
        ("newest FAILED page", Order::NewestFirst, None),
        ("oldest FAILED page", Order::OldestFirst, None),
        (
            "FAILED page from the middle",
            Order::NewestFirst,
            Some(N / 2),
        ),
    ] {
        timings.push((what, best_of_five(|| page(order, after)).await));
    }
    let all_failed = || {
        let store = store.clone();
        async move {
            let q = InvocationQuery {
                statuses: vec![Failed],
                limit: 50,
                ..InvocationQuery::new()
            };
            store.atomic(move |t| t.list_invocations(&q)).await.unwrap()
        }
    };
    timings.push(("FAILED page of every task", best_of_five(all_failed).await));
    let count = || {
        let store = store.clone();
        async move { store.atomic(|t| t.count_by_status(&[])).await.unwrap() }
    };
    let counted = count().await;
    let total: u64 = counted.iter().map(|c| c.count).sum();
    assert_eq!(total, N);
    timings.push(("count_by_status", best_of_five(count).await));
    let kinds = || {
        let store = store.clone();
        async move { store.atomic(|t| t.failed_by_kind(&[])).await.unwrap() }
    };
    timings.push(("failed_by_kind", best_of_five(kinds).await));
    let purge_batch = || {
        let store = store.clone();
        async move {
            store
                .atomic(|t| t.final_before(&[], ts(i64::MAX), 500))
                .await
                .unwrap()
        }
    };
    timings.push(("final_before, 500", best_of_five(purge_batch).await));
    for (what, d) in &timings {
        eprintln!("{what}: {:.3} ms", d.as_secs_f64() * 1e3);
    }
    for (what, d) in &timings[..3] {
        assert!(*d <= Duration::from_millis(10), "{what}: {d:?}");
    }
    assert!(timings[4].1 <= Duration::from_millis(5), "count_by_status");
}
