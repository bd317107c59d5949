//! The query indexes on a real server: listings (every filter, both orders,
//! cursors while invocations are added), counts, failures per kind, the
//! queue, the wait graph, runners and leases.

use std::collections::HashSet;

use pynenc_model::{
    Cursor, InvocationQuery, InvocationSummary, Order, RunnerInfo, TaskError, TaskId, TimeRange,
    Timestamp,
};
use pynenc_store::{Queries, StoreError};

use super::*;

const A: &str = "live.a";
const B: &str = "live.b";

fn ids(items: &[InvocationSummary]) -> Vec<InvocationId> {
    items.iter().map(|s| s.invocation_id).collect()
}

/// Every page of `query` (pages of `query.limit`), calling `between`
/// after each page.
async fn pages<F, Fut>(
    b: &RedisBackend,
    mut query: InvocationQuery,
    mut between: F,
) -> Vec<InvocationId>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut seen = Vec::new();
    loop {
        let page = b.list_invocations(&query).await.expect("page");
        assert!(page.len() <= query.limit);
        seen.extend(ids(&page));
        between().await;
        match page.last() {
            Some(last) if page.len() == query.limit => {
                query.after = Some(Cursor(last.invocation_id))
            }
            _ => return seen,
        }
    }
}

fn count_of(counts: &[pynenc_model::StatusCount], task: &str, status: InvocationStatus) -> u64 {
    counts
        .iter()
        .find(|c| c.task_id.as_str() == task && c.status == status)
        .map_or(0, |c| c.count)
}

/// Pages in both orders never repeat nor skip, whatever is added between
/// them; a listing without filters merges every task in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_in_both_orders_with_inserts_between_them() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "pages");
    let a_ids = route_all(&b, (0..30).map(|i| call_of(A, i)).collect()).await;
    let b_ids = route_all(&b, (0..10).map(|i| call_of(B, i)).collect()).await;
    let query = InvocationQuery {
        task_ids: vec![TaskId::from(A)],
        limit: 7,
        ..InvocationQuery::new()
    };
    // newest first: what is added later is newer than every cursor
    let added = std::sync::Mutex::new(Vec::new());
    let newest = pages(&b, query.clone(), || async {
        let id = route_all(&b, vec![call_of(A, 1000)]).await;
        added.lock().expect("lock").extend(id);
    })
    .await;
    let mut expected = a_ids.clone();
    expected.reverse();
    assert_eq!(newest, expected);
    // oldest first: what is added between pages comes at the end
    let before: Vec<InvocationId> = added.lock().expect("lock").clone();
    let added_now = std::sync::Mutex::new(Vec::new());
    let oldest = pages(
        &b,
        InvocationQuery {
            order: Order::OldestFirst,
            ..query
        },
        || async {
            let id = route_all(&b, vec![call_of(A, 2000)]).await;
            added_now.lock().expect("lock").extend(id);
        },
    )
    .await;
    let mut expected = a_ids.clone();
    expected.extend(before);
    let added_now = added_now.lock().expect("lock").clone();
    // every page but the last saw what was added before it
    expected.extend(&added_now[..added_now.len() - 1]);
    assert_eq!(oldest, expected);

    // no filter: both tasks merged, in creation order
    let all = b
        .list_invocations(&InvocationQuery {
            order: Order::OldestFirst,
            limit: 1000,
            ..InvocationQuery::new()
        })
        .await
        .expect("all");
    let mut sorted = ids(&all);
    sorted.sort();
    assert_eq!(ids(&all), sorted, "creation order");
    let all: HashSet<InvocationId> = ids(&all).into_iter().collect();
    assert!(a_ids.iter().chain(&b_ids).all(|id| all.contains(id)));
    assert_eq!(all.len(), 40 + newest.len().div_ceil(7) + added_now.len());
    // a status alone merges every task's index
    let registered = b
        .list_invocations(&InvocationQuery {
            statuses: vec![InvocationStatus::Registered],
            limit: 3,
            ..InvocationQuery::new()
        })
        .await
        .expect("registered");
    assert_eq!(registered.len(), 3);
    assert!(registered
        .windows(2)
        .all(|w| w[0].invocation_id > w[1].invocation_id));
}

/// A listing whose filters reject more entries than one call scans goes
/// on from the last id scanned, in as many calls as it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_beyond_the_scan_budget() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "budget");
    let n = crate::queries::SCAN_BUDGET as i64 + 1500;
    let mut all = Vec::new();
    for first in (0..n).step_by(1000) {
        all.extend(
            route_all(
                &b,
                (first..(first + 1000).min(n))
                    .map(|i| call_of(A, i))
                    .collect(),
            )
            .await,
        );
    }
    let calls = stat(&server, "fcall");
    let wanted = |i: i64| InvocationQuery {
        task_ids: vec![TaskId::from(A)],
        key_arguments: vec![("i".into(), i.to_string())],
        order: Order::OldestFirst,
        ..InvocationQuery::new()
    };
    let found = b.list_invocations(&wanted(n - 1)).await.expect("list");
    assert_eq!(ids(&found), vec![all[all.len() - 1]]);
    assert_eq!(
        stat(&server, "fcall") - calls,
        2,
        "two calls of the scan budget"
    );
    let none = b.list_invocations(&wanted(n)).await.expect("list");
    assert!(none.is_empty());
    // newest first from a cursor
    let found = b
        .list_invocations(&InvocationQuery {
            order: Order::NewestFirst,
            after: Some(Cursor(all[all.len() - 1])),
            ..wanted(0)
        })
        .await
        .expect("list");
    assert_eq!(ids(&found), vec![all[0]]);
}

/// Every filter, the counts after transitions and deletes, and failures per kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_counts_and_failures_per_kind() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "filters");
    let t0 = Timestamp::now();
    let first = route_all(&b, (0..6).map(|i| call_of(A, i)).collect()).await;
    let picked = start(&b, "runner-1", 6).await;
    assert_eq!(picked, first);
    end(&b, "runner-1", &first[0], RunOutcome::Success("1".into())).await;
    end(
        &b,
        "runner-1",
        &first[1],
        RunOutcome::Failed(TaskError::new("KindA", "a")),
    )
    .await;
    end(
        &b,
        "runner-1",
        &first[2],
        RunOutcome::Failed(TaskError::new("KindB", "b")),
    )
    .await;
    end(
        &b,
        "runner-1",
        &first[3],
        RunOutcome::Failed(TaskError::new("KindA", "c")),
    )
    .await;
    // children of first[4], one of them the same call twice
    let parent = first[4];
    let child = |i| RouteRequest {
        parent_invocation_id: Some(parent),
        ..call_of(B, i)
    };
    let children = route_all(&b, vec![child(1), child(2), child(1)]).await;
    let t1 = Timestamp::now();

    let list = |q: InvocationQuery| {
        let b = b.clone();
        async move {
            b.list_invocations(&InvocationQuery { limit: 100, ..q })
                .await
                .expect("list")
        }
    };
    let failed = list(InvocationQuery {
        task_ids: vec![TaskId::from(A)],
        statuses: vec![InvocationStatus::Failed],
        order: Order::OldestFirst,
        ..InvocationQuery::new()
    })
    .await;
    assert_eq!(ids(&failed), first[1..4].to_vec());
    assert!(failed
        .iter()
        .all(|s| s.ended_at.is_some() && s.ended_at == Some(s.status_at)));
    assert!(failed
        .iter()
        .all(|s| s.owner.as_deref() == Some("runner-1")));
    let by_parent = list(InvocationQuery {
        parent: Some(parent),
        order: Order::OldestFirst,
        ..InvocationQuery::new()
    })
    .await;
    assert_eq!(ids(&by_parent), children);
    assert!(by_parent
        .iter()
        .all(|s| s.parent_invocation_id == Some(parent)));
    let by_call = list(InvocationQuery {
        call_id: Some(by_parent[0].call_id.clone()),
        ..InvocationQuery::new()
    })
    .await;
    assert_eq!(
        ids(&by_call),
        vec![children[2], children[0]],
        "the same call twice, newest first"
    );
    assert_eq!(by_call[0].call_id, call_of(B, 1).call.call_id());
    let running = list(InvocationQuery {
        owner: Some(RunnerId::from("runner-1")),
        statuses: vec![InvocationStatus::Running],
        ..InvocationQuery::new()
    })
    .await;
    assert_eq!(ids(&running), vec![first[5], first[4]]);
    let owned = list(InvocationQuery {
        owner: Some(RunnerId::from("runner-1")),
        ..InvocationQuery::new()
    })
    .await;
    assert_eq!(owned.len(), 6, "final invocations keep their owner");
    let ended = list(InvocationQuery {
        ended: TimeRange {
            from: Some(t0),
            to: None,
        },
        ..InvocationQuery::new()
    })
    .await;
    assert_eq!(ended.len(), 4);
    assert!(list(InvocationQuery {
        ended: TimeRange {
            from: None,
            to: Some(t0)
        },
        ..InvocationQuery::new()
    })
    .await
    .is_empty());
    let created_late = list(InvocationQuery {
        created: TimeRange {
            from: Some(t1),
            to: None,
        },
        ..InvocationQuery::new()
    })
    .await;
    assert!(created_late.is_empty());
    let key = vec![("i".to_string(), "2".to_string())];
    let by_key = list(InvocationQuery {
        task_ids: vec![TaskId::from(B)],
        key_arguments: key,
        ..InvocationQuery::new()
    })
    .await;
    assert_eq!(ids(&by_key), vec![children[1]]);

    // counts and failures per kind
    let counts = b.count_by_status(&[]).await.expect("counts");
    assert_eq!(count_of(&counts, A, InvocationStatus::Success), 1);
    assert_eq!(count_of(&counts, A, InvocationStatus::Failed), 3);
    assert_eq!(count_of(&counts, A, InvocationStatus::Running), 2);
    assert_eq!(count_of(&counts, B, InvocationStatus::Registered), 3);
    assert!(counts.iter().all(|c| c.count > 0));
    let only_b = b
        .count_by_status(&[TaskId::from(B)])
        .await
        .expect("counts of b");
    assert_eq!(only_b.len(), 1);
    let kinds = b.failed_by_kind(&[]).await.expect("kinds");
    let kinds: Vec<(String, u64)> = kinds.iter().map(|k| (k.kind.clone(), k.count)).collect();
    assert_eq!(kinds, vec![("KindA".into(), 2), ("KindB".into(), 1)]);
    // deleting updates both
    assert_eq!(
        b.delete_final(&[first[1], first[2], first[5]])
            .await
            .expect("delete"),
        2
    );
    let counts = b.count_by_status(&[TaskId::from(A)]).await.expect("counts");
    assert_eq!(count_of(&counts, A, InvocationStatus::Failed), 1);
    assert_eq!(
        count_of(&counts, A, InvocationStatus::Running),
        2,
        "not final: kept"
    );
    let kinds = b.failed_by_kind(&[TaskId::from(A)]).await.expect("kinds");
    assert_eq!(kinds.len(), 1);
    assert_eq!((kinds[0].kind.as_str(), kinds[0].count), ("KindA", 1));
}

/// The statuses sharing band 1 of the index: `PENDING` … `RESUMED` are
/// counted and listed from `owned`, `REGISTERED` is the rest of the band.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_listings_of_the_statuses_runners_hold() {
    use InvocationStatus::*;
    let server = server_or_skip!();
    let b = backend(&server.url(), "held");
    let routed = route_all(&b, (0..6).map(|i| call_of(A, i)).collect()).await;
    let runner = RunnerId::from("runner-h");
    let pending = b.get_invocations_to_run(&runner, 1).await.expect("pick");
    assert_eq!(pending[0].invocation_id, routed[0]);
    let running = start(&b, "runner-h", 3).await;
    assert_eq!(running, routed[1..4].to_vec());
    b.set_status(&running[0], Paused, &runner, None)
        .await
        .expect("pause");
    b.set_status(&running[1], Paused, &runner, None)
        .await
        .expect("pause");
    b.set_status(&running[1], Resumed, &runner, None)
        .await
        .expect("resume");
    let counts = b.count_by_status(&[]).await.expect("counts");
    for (status, n) in [
        (Registered, 2),
        (Pending, 1),
        (Running, 1),
        (Paused, 1),
        (Resumed, 1),
    ] {
        assert_eq!(count_of(&counts, A, status), n, "{status}");
    }
    assert_eq!(counts.len(), 5);
    let list = |statuses: Vec<InvocationStatus>| {
        let b = b.clone();
        async move {
            let q = InvocationQuery {
                statuses,
                order: Order::OldestFirst,
                ..InvocationQuery::new()
            };
            ids(&b.list_invocations(&q).await.expect("list"))
        }
    };
    assert_eq!(list(vec![Paused]).await, vec![running[0]]);
    assert_eq!(
        list(vec![Pending, Resumed]).await,
        vec![routed[0], running[1]]
    );
    assert_eq!(list(vec![Registered]).await, routed[4..].to_vec());
    assert_eq!(b.queue_stats().await.expect("queue").depth, 2);
}

/// The queue's depth and oldest, and the blocking graph both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_wait_graph() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "graph");
    assert_eq!(b.queue_stats().await.expect("empty"), Default::default());
    let queued = route_all(&b, (0..3).map(|i| call_of(A, i)).collect()).await;
    let q = b.queue_stats().await.expect("queue");
    assert_eq!(q.depth, 3);
    assert_eq!(q.oldest.map(|(id, _)| id), Some(queued[0]));
    // the head is cancelled: a stale id in the list, skipped
    b.cancel(&queued[0], &RunnerId::from("ops"))
        .await
        .expect("cancel");
    let q = b.queue_stats().await.expect("queue");
    assert_eq!((q.depth, q.oldest.map(|(id, _)| id)), (2, Some(queued[1])));

    let parent = start(&b, "runner-w", 1).await[0];
    let kids = route_all(&b, (0..2).map(|i| call_of(B, i)).collect()).await;
    b.waiting_for_results(Some(&parent), &kids)
        .await
        .expect("wait");
    let g = b.wait_graph(&parent).await.expect("graph");
    assert_eq!(g.waiting_on, kids);
    assert!(g.waited_by.is_empty());
    assert_eq!(
        b.wait_graph(&kids[0]).await.expect("kid").waited_by,
        vec![parent]
    );
    // the first child ends: its waits are gone on both sides
    let picked = start(&b, "runner-k", 1).await;
    assert_eq!(picked, vec![kids[0]], "waited-on work first");
    end(&b, "runner-k", &kids[0], RunOutcome::Success("1".into())).await;
    assert!(b
        .wait_graph(&kids[0])
        .await
        .expect("kid")
        .waited_by
        .is_empty());
    assert_eq!(
        b.wait_graph(&parent).await.expect("graph").waiting_on,
        vec![kids[1]]
    );
    // the waiter ends first: it waits on nothing any more
    end(&b, "runner-w", &parent, RunOutcome::Success("2".into())).await;
    assert!(b
        .wait_graph(&parent)
        .await
        .expect("graph")
        .waiting_on
        .is_empty());
    assert!(b
        .wait_graph(&kids[1])
        .await
        .expect("kid")
        .waited_by
        .is_empty());
    let missing = InvocationId::time_ordered();
    assert!(matches!(
        b.wait_graph(&missing).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// Runners say who they are, are listed with their last heartbeat, and
/// leave; a lease shows its holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_and_leases() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "runners");
    let info = |id: &str, slots| RunnerInfo {
        runner_id: RunnerId::from(id),
        kind: "thread".into(),
        host: "here".into(),
        pid: 42,
        started_at: Timestamp::from_micros(1),
        heartbeat_at: Timestamp::from_micros(1),
        slots,
        running: vec![InvocationId::time_ordered()],
    };
    let r2 = info("r-2", 2);
    b.register_runner(&r2).await.expect("register");
    b.register_runner(&info("r-1", 1)).await.expect("register");
    let listed = b.runners().await.expect("runners");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].runner_id.as_str(), "r-1");
    assert!(
        listed[0].heartbeat_at > Timestamp::from_micros(1),
        "the server's heartbeat"
    );
    assert_eq!(listed[1].slots, 2);
    assert_eq!(listed[1].running, r2.running);
    b.heartbeat(&RunnerId::from("r-1")).await.expect("beat");
    b.remove_heartbeat(&RunnerId::from("r-2"))
        .await
        .expect("leave");
    let listed = b.runners().await.expect("runners");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].runner_id.as_str(), "r-1");

    assert!(b.lease("upkeep").await.expect("no lease").is_none());
    let holder = RunnerId::from("r-1");
    assert!(b
        .try_lease("upkeep", &holder, std::time::Duration::from_secs(5))
        .await
        .expect("lease"));
    let lease = b.lease("upkeep").await.expect("lease").expect("held");
    assert_eq!(lease.holder, holder);
    assert!(lease.expires_at > Timestamp::now());
}
