//! Tests of the Redis backend's own machinery against a real `redis-server`
//! (started on a free port by `pynenc-testservers`; skipped with a message
//! when it is not installed, a failure with `PYNENC_REQUIRE_REDIS=1`): the
//! fallback from functions to scripts, and when ends are published; the
//! query indexes and the operator steps in `live_tests/queries.rs` and
//! `live_tests/control.rs`; the data store in `live_tests/data.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pynenc_model::{
    Arguments, Call, InvocationId, InvocationStatus, RouteOutcome, RouteRequest, RunOutcome,
    RunnerId, Serializer,
};
use pynenc_store::{Broker, Coordination, EndOutcome, Orchestrator, RunEnd, StateBackend};
use pynenc_testservers::redis::{skip_reason, RedisServer, Resp};

use crate::backend::{FUNCTIONS_OFF, FUNCTIONS_ON};
use crate::step::STEP_ENDS;
use crate::{RedisBackend, RedisOptions};

fn backend(url: &str, app_id: &str) -> Arc<RedisBackend> {
    RedisBackend::open(&RedisOptions::from_url(url), app_id, Serializer::Json)
        .expect("open the backend")
}

fn request(i: i64) -> RouteRequest {
    let arguments = Arguments::new()
        .with(Serializer::Json, "i", &i)
        .expect("arguments");
    RouteRequest::new(Call::new("live_tests.task", arguments), RunnerId::from(""))
}

async fn route(b: &RedisBackend, n: i64) -> Vec<InvocationId> {
    b.route_calls((0..n).map(request).collect())
        .await
        .expect("route")
        .into_iter()
        .map(|o| match o {
            RouteOutcome::New(r) => r.invocation_id,
            RouteOutcome::Reused { .. } => panic!("nothing to reuse"),
        })
        .collect()
}

/// Picks (and starts) every id as `runner` and ends them with their index.
async fn run_all(b: &RedisBackend, runner: &str, ids: &[InvocationId]) {
    let runner = RunnerId::from(runner);
    let mut picked = Vec::new();
    while picked.len() < ids.len() {
        let batch = b
            .get_invocations_to_start(&runner, ids.len(), None)
            .await
            .expect("pick");
        assert!(!batch.is_empty(), "queued work must be picked");
        picked.extend(batch.into_iter().map(|r| r.invocation_id));
    }
    let ends = picked
        .iter()
        .map(|id| RunEnd::new(*id, RunOutcome::Success(format!("\"{id}\""))))
        .collect();
    for r in b.finish_many_and_start(&runner, ends, 0, None).await.ends {
        assert_eq!(r.into_result().expect("finish"), InvocationStatus::Success);
    }
}

fn stat(server: &RedisServer, command: &str) -> u64 {
    let Ok(Resp::Bulk(Some(text))) = server.command(&["INFO", "commandstats"]) else {
        panic!("INFO commandstats");
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn check_histories(b: &RedisBackend, ids: &[InvocationId], runner: &str) {
    use InvocationStatus::*;
    for id in ids {
        let h = b.get_history(id).await.expect("history");
        let steps: Vec<_> = h.iter().map(|e| e.status).collect();
        assert_eq!(steps, [Registered, Pending, Running, Success], "{id}");
        assert_eq!(h[3].owner.as_deref(), Some(runner));
        assert!(pynenc_model::replay_history(h.iter().map(|e| (
            e.status,
            e.owner.as_deref(),
            e.actor.as_str()
        )))
        .is_ok());
    }
}

macro_rules! server_or_skip {
    () => {{
        if let Some(reason) = skip_reason() {
            eprintln!("SKIPPED: {reason}");
            return;
        }
        RedisServer::start()
    }};
}

mod coalesce;
mod control;
mod data;
mod pauses;
mod queries;
mod replays;
mod status_waits;
mod totals;
mod work;

/// The URL of a user who may do everything on pynenc's keys but load
/// functions (steps then run as scripts).
fn user_without_functions(server: &RedisServer) -> String {
    let r = server
        .command(&[
            "ACL",
            "SETUSER",
            "nofn",
            "on",
            ">pw",
            "~__pynenc__:*",
            "&__pynenc__:*",
            "+@all",
            "-@dangerous",
            "-function",
        ])
        .expect("ACL SETUSER");
    assert_eq!(r, Resp::Simple("OK".into()));
    format!("redis://nofn:pw@127.0.0.1:{}/0", server.port())
}

/// A call of `task` with the argument `i`.
fn call_of(task: &str, i: i64) -> RouteRequest {
    let arguments = Arguments::new()
        .with(Serializer::Json, "i", &i)
        .expect("arguments");
    RouteRequest::new(Call::new(task, arguments), RunnerId::from("tester"))
}

/// Routes `requests`; the id of each outcome (new or reused).
async fn route_all(b: &RedisBackend, requests: Vec<RouteRequest>) -> Vec<InvocationId> {
    b.route_calls(requests)
        .await
        .expect("route")
        .into_iter()
        .map(|o| match o {
            RouteOutcome::New(r) => r.invocation_id,
            RouteOutcome::Reused { record, .. } => record.invocation_id,
        })
        .collect()
}

/// Picks and starts up to `n` invocations as `runner`.
async fn start(b: &RedisBackend, runner: &str, n: usize) -> Vec<InvocationId> {
    b.get_invocations_to_start(&RunnerId::from(runner), n, None)
        .await
        .expect("pick")
        .into_iter()
        .map(|r| r.invocation_id)
        .collect()
}

/// Ends a run of `runner` with `outcome`; the status it reached.
async fn end(
    b: &RedisBackend,
    runner: &str,
    id: &InvocationId,
    outcome: RunOutcome,
) -> InvocationStatus {
    b.finish(id, &RunnerId::from(runner), outcome)
        .await
        .expect("finish")
}

/// The app's keys (a test may use KEYS), without the prefix, sorted.
fn keys_of(server: &RedisServer, b: &RedisBackend) -> Vec<String> {
    let Ok(Resp::Array(Some(keys))) = server.command(&["KEYS", &format!("{}*", b.key_prefix())])
    else {
        panic!("KEYS");
    };
    let mut out: Vec<String> = keys
        .into_iter()
        .filter_map(|k| match k {
            Resp::Bulk(Some(k)) => Some(String::from_utf8_lossy(&k).into_owned()),
            _ => None,
        })
        .map(|k| k.strip_prefix(b.key_prefix()).unwrap_or(&k).to_string())
        .collect();
    out.sort();
    out
}

/// A user who may not load functions gets every step as a script of its
/// own, with the same results; the default user gets the function library.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_as_scripts_where_functions_are_denied() {
    let server = server_or_skip!();
    let url = user_without_functions(&server);
    let restricted = backend(&url, "scripts");
    let ids = route(&restricted, 5).await;
    run_all(&restricted, "runner-a", &ids).await;
    assert_eq!(restricted.functions.load(Ordering::Acquire), FUNCTIONS_OFF);
    // the query and operator steps too
    let counts = pynenc_store::Queries::count_by_status(&*restricted, &[])
        .await
        .expect("counts");
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].count, 5);
    let listed = pynenc_store::Queries::list_invocations(
        &*restricted,
        &pynenc_model::InvocationQuery::new(),
    )
    .await
    .expect("list");
    assert_eq!(listed.len(), 5);
    assert_eq!(restricted.delete_final(&ids).await.expect("delete"), 5);
    assert!(stat(&server, "evalsha") > 0, "the steps ran as scripts");
    let ids = route(&restricted, 5).await;
    run_all(&restricted, "runner-a", &ids).await;
    check_histories(&restricted, &ids, "runner-a").await;
    let outcomes = restricted.get_outcomes(&ids).await.expect("outcomes");
    assert!(outcomes
        .iter()
        .all(|o| o.status == InvocationStatus::Success));

    let full = backend(&server.url(), "functions");
    let ids = route(&full, 5).await;
    run_all(&full, "runner-b", &ids).await;
    assert_eq!(full.functions.load(Ordering::Acquire), FUNCTIONS_ON);
    check_histories(&full, &ids, "runner-b").await;
    // the restricted user may call the loaded library
    let ids = route(&restricted, 3).await;
    run_all(&restricted, "runner-a", &ids).await;
    check_histories(&restricted, &ids, "runner-a").await;

    // a server that lost its functions (restarted without its data): the
    // library is loaded again by the next call
    assert_eq!(
        server
            .command(&["FUNCTION", "FLUSH"])
            .expect("FUNCTION FLUSH"),
        Resp::Simple("OK".into())
    );
    let ids = route(&full, 3).await;
    run_all(&full, "runner-b", &ids).await;
    check_histories(&full, &ids, "runner-b").await;
    assert_eq!(full.functions.load(Ordering::Acquire), FUNCTIONS_ON);
}

/// The end of an invocation is published only while another backend waits
/// for results; a backend waiting for its own work learns from the reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_are_published_only_for_other_backends() {
    let server = server_or_skip!();
    let a = backend(&server.url(), "waits");
    let ids = route(&a, 2).await;
    // `a` waits for its own work: nothing is published
    let waiter = {
        let a = a.clone();
        let ids = ids.clone();
        tokio::spawn(async move { Coordination::wait_final(&*a, &ids).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let published = stat(&server, "publish");
    run_all(&a, "runner-a", &ids).await;
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("woken by its own reply, long before the 2 s re-check")
        .expect("join")
        .expect("wait_final");
    assert_eq!(stat(&server, "publish"), published, "no one else waits");

    // `b`, another backend of the app, waits for work `a` ends: published
    let b = backend(&server.url(), "waits");
    let ids = route(&a, 2).await;
    let waiter = {
        let b = b.clone();
        let ids = ids.clone();
        tokio::spawn(async move { Coordination::wait_final(&*b, &ids).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let published = stat(&server, "publish");
    run_all(&a, "runner-a", &ids).await;
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("woken by the notification, long before the 2 s re-check")
        .expect("join")
        .expect("wait_final");
    assert!(
        stat(&server, "publish") > published,
        "b waits: ends are published"
    );
}

/// More ends than one step carries go in several steps; the pick-up for
/// the slots they free rides with the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_over_one_step_and_their_pick_up() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "chunks");
    let n = STEP_ENDS + 44;
    let ids = route(&b, n as i64).await;
    let more = route(&b, 5).await;
    let runner = RunnerId::from("runner-c");
    let started = b
        .get_invocations_to_start(&runner, n, None)
        .await
        .expect("start");
    assert_eq!(started.len(), n);
    let ends = ids
        .iter()
        .map(|id| RunEnd::new(*id, RunOutcome::Success("1".into())))
        .collect();
    let calls = stat(&server, "fcall");
    let report = b
        .finish_many_and_start(&runner, ends, 5, Some("host:3"))
        .await;
    assert_eq!(stat(&server, "fcall") - calls, 2, "two steps");
    assert_eq!(report.ends.len(), n);
    assert!(report
        .ends
        .iter()
        .all(|f| matches!(f, EndOutcome::Recorded(InvocationStatus::Success))));
    assert!(report.pick_error.is_none(), "{:?}", report.pick_error);
    let next: Vec<InvocationId> = report.next.iter().map(|r| r.invocation_id).collect();
    assert_eq!(next, more);
    for id in &more {
        let s = b.get_status(id).await.expect("status");
        assert_eq!(s.status, InvocationStatus::Running);
        assert_eq!(s.owner.as_deref(), Some("runner-c"));
    }
    check_histories(&b, &ids, "runner-c").await;
}

/// One step claims at most `MAX_PICK`; a pick-up asking for more takes
/// the rest in further steps, so that it returns fewer than it asked for
/// only when the queue had no more (a runner then waits for new work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pick_up_larger_than_one_step_takes_all_it_asks_for() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "big-pick");
    let n = crate::step::MAX_PICK + 30;
    let ids = route(&b, i64::try_from(n).expect("fits")).await;
    let runner = RunnerId::from("runner-big");
    let first = b
        .get_invocations_to_start(&runner, n - 10, None)
        .await
        .expect("pick");
    assert_eq!(first.len(), n - 10, "all it asked for, over two steps");
    let rest = b
        .get_invocations_to_start(&runner, n, None)
        .await
        .expect("pick the rest");
    assert_eq!(rest.len(), 10, "fewer than asked: the queue is empty");
    let mut picked: Vec<InvocationId> =
        first.iter().chain(&rest).map(|r| r.invocation_id).collect();
    picked.sort();
    let mut routed = ids;
    routed.sort();
    assert_eq!(picked, routed, "each routed invocation picked once");
    assert_eq!(b.queue_len().await.expect("queue"), 0);
}
