//! A task's waits and its pause in one step, also past one step's chunk.

use super::*;

/// More waited invocations than one wait step takes: the waits go in
/// chunks, then the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_for_more_than_one_chunk_of_waits() {
    use pynenc_store::Queries;
    let server = server_or_skip!();
    let b = backend(&server.url(), "pause-chunks");
    let waiter = route(&b, 1).await[0];
    let runner = RunnerId::from("r");
    let started = b
        .get_invocations_to_start(&runner, 1, None)
        .await
        .expect("start");
    assert_eq!(started[0].invocation_id, waiter);
    let waited = route(&b, 1201).await;
    assert!(b
        .pause_for_results(&waiter, &runner, &waited)
        .await
        .expect("pause"));
    assert_eq!(
        b.get_status(&waiter).await.expect("status").status,
        InvocationStatus::Paused
    );
    let graph = b.wait_graph(&waiter).await.expect("graph");
    assert_eq!(graph.waiting_on.len(), 1201);
}
