//! The task totals: what each step adds is appended to `totl:{task}` and
//! folded into the hash `tot:{task}` every 32 entries; a reader adds both.

use super::*;

use pynenc_model::TaskCounter;
use pynenc_store::Queries;

/// The length of the list `key` (0 when it does not exist).
fn list_len(server: &RedisServer, key: &str) -> i64 {
    match server.command(&["LLEN", key]) {
        Ok(Resp::Int(n)) => n,
        other => panic!("LLEN {key}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_are_exact_before_and_after_their_entries_are_folded() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "totals");
    let task = "live_tests.totals";
    let pending = format!("{}totl:{task}", b.key_prefix());
    // 40 calls routed one by one: 40 entries, the 32nd folds the first 32
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.extend(route_all(&b, vec![call_of(task, i)]).await);
    }
    assert_eq!(list_len(&server, &pending), 8, "entries after the fold");
    let routed = b.task_totals(&[]).await.expect("totals");
    assert_eq!(routed.len(), 1, "{routed:?}");
    assert_eq!(routed[0].get(TaskCounter::Routed), 40);
    // then each run picked and ended in steps of its own, with its run time
    let runner = RunnerId::from("runner-t");
    let mut sum_us = 0;
    for (i, _) in ids.iter().enumerate() {
        let picked = start(&b, runner.as_str(), 1).await;
        assert_eq!(picked.len(), 1, "one queued call per pick-up");
        let us = 100 * (i as u64 + 1);
        sum_us += us;
        let end = RunEnd {
            invocation_id: picked[0],
            outcome: RunOutcome::Success("1".into()),
            ran_for: Some(Duration::from_micros(us)),
        };
        let report = b.finish_many_and_start(&runner, vec![end], 0, None).await;
        for r in report.ends {
            assert_eq!(r.into_result().expect("end"), InvocationStatus::Success);
        }
    }
    assert!(
        list_len(&server, &pending) < 32,
        "the entries are folded as they come"
    );
    let totals = b.task_totals(&[]).await.expect("totals");
    assert_eq!(totals.len(), 1, "{totals:?}");
    let t = &totals[0];
    assert_eq!(
        (
            t.get(TaskCounter::Routed),
            t.get(TaskCounter::Started),
            t.get(TaskCounter::Succeeded),
            t.get(TaskCounter::Failed),
        ),
        (40, 40, 40, 0)
    );
    assert_eq!(t.run_times.count(), 40);
    assert_eq!(t.run_times.mean_us(), Some(sum_us / 40));
}
