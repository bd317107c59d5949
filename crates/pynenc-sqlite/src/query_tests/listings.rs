//! Listings: every filter, both orders, cursors, pages, key arguments.

use pynenc_model::InvocationStatus::*;
use pynenc_model::{TaskError, TaskId, TimeRange};
use pynenc_store::AtomicStore;

use super::*;

/// A varied app: tasks a, b and c; parents and children; owners; every
/// final status; a call made twice.
pub(super) async fn varied_store() -> (tempfile::TempDir, Arc<SqliteStore>) {
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

pub(super) fn queries(all: &[InvocationSummary]) -> Vec<InvocationQuery> {
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
        let existing: Vec<InvocationId> = store
            .atomic(everything)
            .await
            .unwrap()
            .iter()
            .map(|s| s.invocation_id)
            .collect();
        assert!(existing.len() >= 40);
        let mut seen: Vec<InvocationId> = Vec::new();
        let mut extra = if order == Order::OldestFirst {
            100
        } else {
            200
        };
        loop {
            let q = query.clone();
            let page = store.atomic(move |t| t.list_invocations(&q)).await.unwrap();
            let Some(last) = page.last() else { break };
            query.after = Some(Cursor(last.invocation_id));
            seen.extend(page.iter().map(|s| s.invocation_id));
            if page.len() < query.limit {
                break;
            }
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
        assert_eq!(
            unique.len(),
            seen.len(),
            "{order:?}: an invocation was repeated"
        );
        for id in &existing {
            assert!(seen.contains(id), "{order:?}: {id} was skipped");
        }
        if order == Order::NewestFirst {
            // newer than the first page: never listed after it
            assert_eq!(seen.len(), existing.len());
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
