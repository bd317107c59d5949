//! The operator steps on a real server: cancel (waiting, running, final,
//! scheduled), cancel requests honoured by recovery and kill-and-reroute,
//! registration scopes and reruns, retention and deletes — and no index
//! key left behind once every invocation is gone.

use std::time::Duration;

use pynenc_model::{
    CancelOutcome, ConcurrencySpec, RegistrationScope, TaskError, Timestamp, CANCELLED_ERROR_KIND,
};
use pynenc_store::{Queries, Retention, StoreError};

use super::*;

const T: &str = "live.control";

fn ops() -> RunnerId {
    RunnerId::from("ops@test")
}

async fn status(b: &RedisBackend, id: &InvocationId) -> InvocationStatus {
    b.get_status(id).await.expect("status").status
}

/// The index keys of the query API and registration scopes (the logs
/// `finals:{status}` may keep ids deleted by `delete_final`: the purge
/// skips them).
/// The keys of invocations and their indexes (the task totals, `tot:`, and
/// the set of tasks that have them stay when invocations are deleted).
const INDEX_KINDS: [&str; 8] = [
    "inv:", "idx:", "par:", "fk:", "gact:", "gok:", "wo:", "cxl:",
];

/// Waiting invocations are cancelled at once; running ones are asked to
/// stop and end CANCELLED by their owner; final ones are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_waiting_running_and_final() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "cancel");
    let later = RouteRequest {
        scheduled_at: Some(Timestamp::now() + Duration::from_secs(3600)),
        ..call_of(T, 0)
    };
    let ids = route_all(&b, vec![call_of(T, 1), call_of(T, 2), later]).await;
    let (queued, running, scheduled) = (ids[0], ids[1], ids[2]);
    assert_eq!(
        b.cancel(&queued, &ops()).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert_eq!(status(&b, &queued).await, InvocationStatus::Cancelled);
    let out = &b.get_outcomes(&[queued]).await.expect("outcome")[0];
    let error = out.error.as_ref().expect("the cancel error");
    assert_eq!(error.kind, CANCELLED_ERROR_KIND);
    assert!(error.message.contains("ops@test"), "{}", error.message);
    let history = b.get_history(&queued).await.expect("history");
    let last = history.last().expect("entries");
    assert_eq!(
        (last.status, last.actor.as_str()),
        (InvocationStatus::Cancelled, "ops@test")
    );
    assert_eq!(
        b.cancel(&queued, &ops()).await.expect("again"),
        CancelOutcome::AlreadyFinal {
            status: InvocationStatus::Cancelled
        }
    );
    assert_eq!(
        b.cancel(&scheduled, &ops()).await.expect("scheduled"),
        CancelOutcome::Cancelled
    );
    assert_eq!(b.promote_scheduled().await.expect("promote"), 0);
    let missing = InvocationId::time_ordered();
    assert!(matches!(
        b.cancel(&missing, &ops()).await,
        Err(StoreError::NotFound { .. })
    ));

    // the cancelled one is skipped: the pick-up gets the next
    assert_eq!(start(&b, "runner-c", 5).await, vec![running]);
    let owner = RunnerId::from("runner-c");
    assert_eq!(
        b.cancel(&running, &ops()).await.expect("running"),
        CancelOutcome::Requested {
            owner: owner.clone()
        }
    );
    assert_eq!(status(&b, &running).await, InvocationStatus::Running);
    assert_eq!(
        b.cancel_requests(&owner).await.expect("requests"),
        vec![running]
    );
    assert!(b.cancel_requests(&ops()).await.expect("none").is_empty());
    let stopped = RunOutcome::Cancelled(pynenc_store::engine::cancelled_error(&ops()));
    assert_eq!(
        end(&b, "runner-c", &running, stopped).await,
        InvocationStatus::Cancelled
    );
    assert!(b
        .cancel_requests(&owner)
        .await
        .expect("gone when final")
        .is_empty());

    let done = route_all(&b, vec![call_of(T, 3)]).await[0];
    start(&b, "runner-c", 1).await;
    end(&b, "runner-c", &done, RunOutcome::Success("3".into())).await;
    assert_eq!(
        b.cancel(&done, &ops()).await.expect("final"),
        CancelOutcome::AlreadyFinal {
            status: InvocationStatus::Success
        }
    );
    let counts = b.count_by_status(&[]).await.expect("counts");
    let cancelled = counts
        .iter()
        .find(|c| c.status == InvocationStatus::Cancelled)
        .map_or(0, |c| c.count);
    assert_eq!(cancelled, 3);
}

/// A cancel requested of a runner that dies: recovery cancels instead of
/// re-routing; kill-and-reroute too; without a request both re-route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_survive_their_runner() {
    use InvocationStatus::*;
    let server = server_or_skip!();
    let b = backend(&server.url(), "recover");
    let ids = route_all(&b, (0..4).map(|i| call_of(T, i)).collect()).await;
    assert_eq!(start(&b, "dead-runner", 4).await, ids);
    b.cancel(&ids[0], &ops()).await.expect("cancel 0");
    b.cancel(&ids[2], &ops()).await.expect("cancel 2");
    // kill and reroute: the requested one is cancelled, the other re-routed
    let dead = RunnerId::from("dead-runner");
    b.kill_and_reroute(&ids[2], &dead).await.expect("kill 2");
    b.kill_and_reroute(&ids[3], &dead).await.expect("kill 3");
    assert_eq!(status(&b, &ids[2]).await, Cancelled);
    assert_eq!(status(&b, &ids[3]).await, Rerouted);
    // the runner never beat: recovery takes the other two
    let actor = RunnerId::from("recoverer");
    let mut recovered = b
        .recover(&actor, Duration::ZERO, Duration::from_secs(3600))
        .await
        .expect("recover");
    recovered.sort();
    assert_eq!(recovered, vec![ids[0], ids[1]]);
    let steps = |h: Vec<pynenc_model::HistoryEntry>| h.iter().map(|e| e.status).collect::<Vec<_>>();
    assert_eq!(
        steps(b.get_history(&ids[0]).await.expect("history")),
        [Registered, Pending, Running, RunningRecovery, Cancelled]
    );
    assert_eq!(status(&b, &ids[1]).await, Rerouted);
    let out = &b.get_outcomes(&[ids[0]]).await.expect("outcome")[0];
    // the error names who asked for the cancel, not the recovery
    assert!(out
        .error
        .as_ref()
        .is_some_and(|e| e.message.contains(ops().as_str())));
    assert!(b.cancel_requests(&dead).await.expect("requests").is_empty());
    let counts = b.count_by_status(&[]).await.expect("counts");
    let of = |s| counts.iter().find(|c| c.status == s).map_or(0, |c| c.count);
    assert_eq!((of(Cancelled), of(Rerouted), of(Running)), (2, 2, 0));
}

fn keyed(i: i64, key: &str, scope: RegistrationScope) -> RouteRequest {
    RouteRequest {
        concurrency: ConcurrencySpec {
            registration_key: Some(key.to_string()),
            registration_scope: scope,
            ..ConcurrencySpec::default()
        },
        ..call_of(T, i)
    }
}

/// Scope `queued` reuses only a REGISTERED invocation, `active` also a
/// running one, `cached` also a recent success; a rerun never reuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_scopes_and_reruns() {
    use RegistrationScope::*;
    let server = server_or_skip!();
    let b = backend(&server.url(), "scopes");
    let first = route_all(&b, vec![keyed(1, "k", Active)]).await[0];
    let record = b.get_invocation(&first).await.expect("record");
    assert_eq!(record.concurrency.registration_scope, Active);
    assert_eq!(
        route_all(&b, vec![keyed(1, "k", Queued)]).await[0],
        first,
        "still queued"
    );
    start(&b, "runner-s", 1).await;
    assert_ne!(
        route_all(&b, vec![keyed(1, "k", Queued)]).await[0],
        first,
        "running: queued scope"
    );
    let registered = pynenc_model::InvocationQuery {
        statuses: vec![InvocationStatus::Registered],
        ..pynenc_model::InvocationQuery::new()
    };
    let queued_one = b.list_invocations(&registered).await.expect("list")[0].invocation_id;
    b.cancel(&queued_one, &ops())
        .await
        .expect("cancel the second");
    assert_eq!(
        route_all(&b, vec![keyed(1, "k", Active)]).await[0],
        first,
        "joins the run"
    );
    let ttl = Cached { ttl_us: 60_000_000 };
    assert_eq!(
        route_all(&b, vec![keyed(1, "k", ttl)]).await[0],
        first,
        "cached reuses active"
    );
    end(&b, "runner-s", &first, RunOutcome::Success("1".into())).await;
    assert_eq!(
        route_all(&b, vec![keyed(1, "k", ttl)]).await[0],
        first,
        "a recent success"
    );
    let stale = Cached { ttl_us: 0 };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fresh = route_all(&b, vec![keyed(1, "k", stale)]).await[0];
    assert_ne!(fresh, first, "too old a success");
    // a rerun is always new, and says what it reruns
    let rerun = RouteRequest {
        rerun_of: Some(first),
        ..keyed(1, "k", ttl)
    };
    let again = route_all(&b, vec![rerun]).await[0];
    assert!(again != first && again != fresh);
    let record = b.get_invocation(&again).await.expect("record");
    assert_eq!(record.rerun_of, Some(first));
    assert_eq!(record.concurrency.registration_scope, ttl);
    let picked = b
        .get_invocations_to_run(&RunnerId::from("runner-s"), 5)
        .await
        .expect("pick");
    let rerun_record = picked
        .iter()
        .find(|r| r.invocation_id == again)
        .expect("picked");
    assert_eq!(rerun_record.rerun_of, Some(first));
}

/// Retention per final status, then a count limit; deleting only final
/// invocations; nothing of the indexes left once all are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_and_no_index_left_behind() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "retention");
    let parent = route_all(&b, vec![keyed(0, "g", RegistrationScope::Active)]).await[0];
    let ids = route_all(
        &b,
        (1..6)
            .map(|i| RouteRequest {
                parent_invocation_id: Some(parent),
                ..call_of(T, i)
            })
            .collect(),
    )
    .await;
    let mut picked = start(&b, "runner-r", 10).await;
    picked.sort();
    assert_eq!(picked.len(), 6);
    b.waiting_for_results(Some(&parent), &ids[..2])
        .await
        .expect("wait");
    end(&b, "runner-r", &ids[0], RunOutcome::Success("0".into())).await;
    end(&b, "runner-r", &ids[1], RunOutcome::Success("1".into())).await;
    end(
        &b,
        "runner-r",
        &ids[2],
        RunOutcome::Failed(TaskError::new("Kept", "longer")),
    )
    .await;
    b.cancel(&ids[3], &ops()).await.expect("request");
    end(
        &b,
        "runner-r",
        &ids[3],
        RunOutcome::Cancelled(TaskError::new(CANCELLED_ERROR_KIND, "x")),
    )
    .await;
    // ids[4] and the parent still run: never deleted
    assert_eq!(
        b.delete_final(&[ids[4], parent]).await.expect("not final"),
        0
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let policy = Retention {
        success: Duration::from_millis(100),
        failed: Duration::from_secs(3600),
        cancelled: Duration::from_millis(100),
        max_final: None,
    };
    assert_eq!(b.auto_purge(&policy).await.expect("purge"), 3);
    let counts = b.count_by_status(&[]).await.expect("counts");
    let finals: Vec<_> = counts.iter().filter(|c| c.status.is_final()).collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].status, InvocationStatus::Failed);
    // a count limit: the oldest ends go first
    end(&b, "runner-r", &ids[4], RunOutcome::Success("4".into())).await;
    let keep_one = Retention {
        max_final: Some(1),
        ..Retention::all(Duration::from_secs(3600))
    };
    assert_eq!(b.auto_purge(&keep_one).await.expect("count purge"), 1);
    assert!(matches!(
        b.get_status(&ids[2]).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(status(&b, &ids[4]).await, InvocationStatus::Success);
    end(&b, "runner-r", &parent, RunOutcome::Success("p".into())).await;
    assert_eq!(
        b.delete_final(&[ids[4], parent, ids[4]])
            .await
            .expect("delete"),
        2
    );
    assert!(b.count_by_status(&[]).await.expect("counts").is_empty());
    assert!(b.failed_by_kind(&[]).await.expect("kinds").is_empty());
    let left: Vec<String> = keys_of(&server, &b)
        .into_iter()
        .filter(|k| INDEX_KINDS.iter().any(|kind| k.starts_with(kind)))
        .collect();
    assert!(left.is_empty(), "index keys left behind: {left:?}");
    let totals = b.task_totals(&[]).await.expect("totals");
    assert_eq!(
        totals.iter().map(|t| t.run_times.count()).sum::<u64>(),
        0,
        "no run time was given"
    );
    assert!(
        totals
            .iter()
            .map(|t| t.get(pynenc_model::TaskCounter::Routed))
            .sum::<u64>()
            >= 5,
        "the totals stay: {totals:?}"
    );
}

/// Records of a build before the query indexes (no field `tc`, ends in the
/// log `finals`): they still run, then join the indexes, and the retention
/// purges the old log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_the_build_before() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "legacy");
    let p = b.key_prefix().to_string();
    let ok = |r: std::io::Result<Resp>| assert!(!matches!(r, Ok(Resp::Error(_)) | Err(_)), "{r:?}");
    let call = r#"{"task_id":"legacy.t","arguments":{"i":"1"}}"#;
    let done = InvocationId::time_ordered();
    let queued = InvocationId::time_ordered();
    let entry = |st: &str| format!(r#"["{st}",null,"old",1000,null]"#);
    for (id, st) in [(done, "SUCCESS"), (queued, "REGISTERED")] {
        ok(server.command(&[
            "HSET",
            &format!("{p}inv:{id}"),
            "call",
            call,
            "created",
            "1000",
            "status",
            st,
            "hn",
            "1",
            "h1",
            &entry(st),
        ]));
    }
    let now = Timestamp::now().as_micros();
    ok(server.command(&["RPUSH", &format!("{p}finals"), &format!("{now} {done}")]));
    ok(server.command(&["RPUSH", &format!("{p}queue"), queued.as_str()]));
    // the queued one runs, and is counted once it has moved
    let picked = b
        .get_invocations_to_start(&RunnerId::from("runner-l"), 1, None)
        .await
        .expect("pick");
    assert_eq!(picked[0].invocation_id, queued);
    assert_eq!(picked[0].call.task_id.as_str(), "legacy.t");
    end(&b, "runner-l", &queued, RunOutcome::Success("1".into())).await;
    let counts = b.count_by_status(&[]).await.expect("counts");
    assert_eq!(counts.len(), 1);
    assert_eq!(
        (
            counts[0].task_id.as_str(),
            counts[0].status,
            counts[0].count
        ),
        ("legacy.t", InvocationStatus::Success, 1)
    );
    // the old log is purged with the longest retention
    tokio::time::sleep(Duration::from_millis(5)).await;
    let policy = Retention {
        success: Duration::from_millis(1),
        failed: Duration::from_secs(3600),
        cancelled: Duration::from_millis(1),
        max_final: None,
    };
    assert_eq!(
        b.auto_purge(&policy).await.expect("purge"),
        1,
        "the new end"
    );
    assert_eq!(
        status(&b, &done).await,
        InvocationStatus::Success,
        "kept an hour"
    );
    assert_eq!(
        b.auto_purge(&Retention::all(Duration::from_millis(1)))
            .await
            .expect("purge"),
        1
    );
    assert!(matches!(
        b.get_status(&done).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        b.get_status(&queued).await,
        Err(StoreError::NotFound { .. })
    ));
}
