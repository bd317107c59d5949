//! Counts per task and status, and of failures per error kind.

use pynenc_model::InvocationStatus::*;
use pynenc_model::{TaskError, TaskId};
use pynenc_store::{AtomicStore, StoreError};
use rustc_hash::FxHashMap;

use super::*;

/// The non-zero counts as a map `(task, status) → n`.
fn counts(
    t: &mut dyn StoreTxn,
    tasks: &[&str],
) -> Result<FxHashMap<(String, InvocationStatus), u64>> {
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
    let only_b = store
        .atomic(|t| counts(t, &["b", "missing"]))
        .await
        .unwrap();
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
    let want = map(&[
        ("a", Registered, 1),
        ("a", Pending, 1),
        ("b", Registered, 1),
    ]);
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
    assert_eq!(
        (only_b[0].kind.as_str(), only_b[0].count),
        ("ValueError", 1)
    );
    let a = store
        .atomic(|t| t.failed_by_kind(&[TaskId::from("a")]))
        .await
        .unwrap();
    let a: Vec<(&str, u64)> = a.iter().map(|c| (c.kind.as_str(), c.count)).collect();
    assert_eq!(a, vec![("", 1), ("KeyError", 2)]);
}
