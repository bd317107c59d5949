//! Outcomes published with the ends for another backend's wait (as of
//! another process): kept by the waiting backend and read there without a
//! command, as stored; a success after a retry, whose stored outcome keeps
//! the retry's error, is not published and is read from the server.

use std::time::Instant;

use pynenc_model::TaskError;

use super::*;

/// How many backends are registered as waiting for results.
fn waiting(server: &RedisServer, b: &RedisBackend) -> Resp {
    let key = format!("{}waiters", b.key_prefix());
    server.command(&["HLEN", &key]).expect("HLEN")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_ended_for_another_backends_wait_are_kept_there_as_stored() {
    let server = server_or_skip!();
    let (runs, waits) = (
        backend(&server.url(), "outcomes"),
        backend(&server.url(), "outcomes"),
    );
    let runner = RunnerId::from("runner-o");
    let retried = route(&runs, 1).await[0];
    let started = runs
        .get_invocations_to_start(&runner, 1, None)
        .await
        .expect("start");
    assert_eq!(started.len(), 1);
    let retry = RunEnd::new(retried, RunOutcome::Retry(TaskError::retry("once more")));
    let report = runs
        .finish_many_and_start(&runner, vec![retry], 0, None)
        .await;
    assert!(matches!(
        report.ends[0],
        EndOutcome::Recorded(InvocationStatus::Retry)
    ));
    let ids = route(&runs, 2).await;
    let (ok_id, failed_id) = (ids[0], ids[1]);
    let mut picked = Vec::new();
    while picked.len() < 3 {
        let batch = runs
            .get_invocations_to_start(&runner, 3, None)
            .await
            .expect("start");
        assert!(!batch.is_empty(), "queued work must be picked");
        picked.extend(batch.into_iter().map(|r| r.invocation_id));
    }

    let all = vec![ok_id, failed_id, retried];
    let waiter = {
        let waits = waits.clone();
        let all = all.clone();
        tokio::spawn(async move { Coordination::wait_final(&*waits, &all).await })
    };
    let since = Instant::now();
    while waiting(&server, &waits) != Resp::Int(1) {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the wait registers on the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ends = vec![
        RunEnd::new(ok_id, RunOutcome::Success("\"fine\"".into())),
        RunEnd::new(
            failed_id,
            RunOutcome::Failed(TaskError::new("ValueError", "bad input")),
        ),
        RunEnd::new(retried, RunOutcome::Success("\"at last\"".into())),
    ];
    let report = runs.finish_many_and_start(&runner, ends, 0, None).await;
    assert_eq!(report.ends.len(), 3);
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken")
        .expect("joined")
        .expect("waited");

    let stored = runs
        .get_outcomes(&all)
        .await
        .expect("read by the runner's backend");
    assert_eq!(stored[1].status, InvocationStatus::Failed);
    assert_eq!(
        stored[2].error.as_ref().map(|e| e.message.as_str()),
        Some("once more"),
        "a success after a retry keeps the retry's error"
    );
    let reads = stat(&server, "hmget");
    let known = waits
        .get_outcomes(&[ok_id, failed_id])
        .await
        .expect("outcomes");
    assert_eq!(stat(&server, "hmget"), reads, "kept: no command");
    assert_eq!(known, stored[..2].to_vec(), "as stored");
    let after_retry = waits.get_outcomes(&[retried]).await.expect("outcome");
    assert!(stat(&server, "hmget") > reads, "not published: read");
    assert_eq!(after_retry[0], stored[2]);
    let again = waits.get_outcomes(&[ok_id]).await.expect("outcome");
    assert!(stat(&server, "hmget") > reads + 1, "taken once, then read");
    assert_eq!(again[0], stored[0]);
}
