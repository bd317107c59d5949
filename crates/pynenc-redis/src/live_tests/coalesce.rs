//! Calls routed at the same time by one process share route steps; each
//! caller gets the outcome of its own calls; a caller dropped mid-step
//! leaves no other caller waiting.

use std::collections::HashSet;

use super::*;

/// The call of `route` that `i` made.
fn arg_of(o: &RouteOutcome) -> String {
    let r = match o {
        RouteOutcome::New(r) | RouteOutcome::Reused { record: r, .. } => r,
    };
    r.call.arguments.get("i").expect("argument i").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_route_steps_and_get_their_own_outcomes() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "coalesce");
    let before = stat(&server, "fcall");
    let callers: Vec<_> = (0..200i64)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let out = b.route_calls(vec![request(i)]).await.expect("route");
                (i, out)
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for c in callers {
        let (i, out) = c.await.expect("joined");
        assert_eq!(out.len(), 1);
        assert_eq!(
            arg_of(&out[0]),
            i.to_string(),
            "caller {i} got another call's outcome"
        );
        match &out[0] {
            RouteOutcome::New(r) => assert!(ids.insert(r.invocation_id), "an id given twice"),
            RouteOutcome::Reused { .. } => panic!("nothing to reuse"),
        }
    }
    let steps = stat(&server, "fcall") - before;
    assert!(
        steps < 200,
        "200 concurrent calls took {steps} route steps: none shared"
    );
    // every call is routed once: the queue holds each id once
    let queued = b.queue_len().await.expect("queue");
    assert_eq!(queued, 200);
    let listed: HashSet<InvocationId> = b
        .list_invocation_ids()
        .await
        .expect("list")
        .into_iter()
        .collect();
    assert_eq!(listed, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_mid_step_leaves_no_one_waiting() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "coalesce-drop");
    route(&b, 1).await; // the library is loaded
    for round in 0..20 {
        // some callers give up at once, whether they lead a step or wait
        let callers: Vec<_> = (0..40i64)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move {
                    let call = b.route_calls(vec![request(round * 100 + i)]);
                    if i % 3 == 0 {
                        let _ = tokio::time::timeout(Duration::from_micros(50), call).await;
                        None
                    } else {
                        Some(call.await.expect("route"))
                    }
                })
            })
            .collect();
        for c in callers {
            let done = tokio::time::timeout(Duration::from_secs(10), c)
                .await
                .expect("a caller was left waiting")
                .expect("joined");
            if let Some(out) = done {
                assert_eq!(out.len(), 1);
            }
        }
    }
    // and the next lone call goes at once
    tokio::time::timeout(Duration::from_secs(5), route(&b, 1))
        .await
        .expect("a lone call after the drops");
}
