//! A step re-run as a replay (its reply lost in a broken connection) finds
//! what its first run did, also when other steps of the runner ran since.

use super::*;

/// One pick-up of `runner` by the step script, under `token` (its slot
/// among the runner's latest pick-ups, '.', what makes it unique), as a
/// first run or as a replay; the ids it hands out.
async fn pick(b: &RedisBackend, runner: &str, token: &str, replay: bool) -> Vec<InvocationId> {
    let step = &crate::script::scripts().step;
    let mut con = b.conn().await.expect("connection");
    // the step's arguments (see step.lua): no ends, no wait changes, one
    // pick-up of 2, started
    let reply: redis::Value = redis::cmd("FCALL")
        .arg(&step.function)
        .arg(1)
        .arg(b.prefix.as_str())
        .arg(format!("{}:{}", u8::from(replay), b.instance))
        .arg(runner)
        .arg("0")
        .arg("0")
        .arg("1")
        .arg("2")
        .arg(token)
        .arg("1")
        .arg("")
        .query_async(&mut con)
        .await
        .expect("step");
    // {ends, {{'OK', picked, corrupt}}}: the picked values start with each id
    let text = format!("{reply:?}");
    let mut ids: Vec<InvocationId> = text
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter_map(|word| InvocationId::parse(word).ok())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_pick_up_gets_its_own_invocations_after_later_ones() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "replays");
    let routed = route(&b, 6).await;
    // the library is loaded by the route step: call the function directly
    let first = pick(&b, "r", "1.a", false).await;
    let second = pick(&b, "r", "2.b", false).await;
    assert_eq!((first.len(), second.len()), (2, 2));
    assert!(first.iter().all(|id| !second.contains(id)));
    // both replies lost: each replay hands out what its own first run did
    assert_eq!(pick(&b, "r", "1.a", true).await, first);
    assert_eq!(pick(&b, "r", "2.b", true).await, second);
    // and claimed nothing more: the last two are still queued
    let rest = b
        .get_invocations_to_start(&RunnerId::from("r"), 10, None)
        .await
        .expect("pick the rest");
    let mut rest: Vec<InvocationId> = rest.into_iter().map(|r| r.invocation_id).collect();
    rest.sort();
    let mut expected: Vec<InvocationId> = routed
        .into_iter()
        .filter(|id| !first.contains(id) && !second.contains(id))
        .collect();
    expected.sort();
    assert_eq!(rest, expected);
}
