//! A thread runner takes invocations ahead of its slots while its runs are
//! short (`runner.prefetch` per slot), runs no more bodies at once than
//! its slots, and gives back what it took ahead once every slot's body has
//! run long (SQLite: on the memory backend it never takes ahead; runners in
//! this process).

use pynenc::{InvocationStatus, Pynenc, ThreadRunner};
use pynenc_testkit::tasks::timed_body;
use pynenc_testkit::{
    assert_nothing_waits_behind_a_long_run, check_histories, new_app, unique, BackendFactory,
    MemoryFactory, SqliteFactory,
};

fn app_with_prefetch(f: &dyn BackendFactory, prefetch: usize) -> Pynenc {
    new_app(
        f,
        &unique("take-ahead"),
        &[("runner.prefetch", prefetch.into())],
    )
}

/// The most bodies that ran at once, from their spans.
fn most_at_once(spans: &[(i64, i64)]) -> usize {
    let mut edges: Vec<(i64, i32)> = spans
        .iter()
        .flat_map(|&(began, ended)| [(began, 1), (ended, -1)])
        .collect();
    // at the same instant an end comes before a beginning
    edges.sort_unstable();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// When each invocation was held by its runner: from its `RUNNING` step
/// (taken) to its final one (the step that ends a run takes the slot's next
/// invocation at the same instant).
async fn held(group: &pynenc::InvocationGroup<(u32, i64, i64)>) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for inv in group.invocations() {
        let history = inv.history().await.expect("history");
        let at = |status: InvocationStatus| {
            history
                .iter()
                .find(|h| h.status == status)
                .map(|h| h.timestamp.as_micros())
                .expect("a RUNNING and a SUCCESS step")
        };
        out.push((at(InvocationStatus::Running), at(InvocationStatus::Success)));
    }
    out
}

/// Runs 300 short calls on a runner of 2 slots: the most bodies that ran at
/// once, and the most invocations the runner held at once.
async fn short_runs(app: &Pynenc) -> (usize, usize) {
    let runner = ThreadRunner::with_slots(app, 2).spawn();
    // short runs, every tenth one a little longer (still under 5 ms)
    let group =
        timed_body::parallelize_on(app, (0..300).map(|i| (i, if i % 10 == 9 { 2 } else { 0 })))
            .await
            .expect("route");
    let runs = group.results().await.expect("all finish");
    let bodies: Vec<(i64, i64)> = runs.iter().map(|&(_, b, e)| (b, e)).collect();
    let held = held(&group).await;
    runner.stop().await.expect("stop");
    check_histories(app).await;
    (most_at_once(&bodies), most_at_once(&held))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_runner_takes_runs_ahead_and_runs_no_more_bodies_than_its_slots() {
    let sqlite = SqliteFactory::new();
    let app = app_with_prefetch(&sqlite, 16);
    let (bodies, held) = short_runs(&app).await;
    assert!(
        bodies <= 2,
        "{bodies} bodies at once on a runner of 2 slots"
    );
    assert!(
        held > 2,
        "the runner never held more than its 2 slots ({held}): nothing taken ahead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_1_and_the_memory_backend_take_nothing_ahead() {
    let sqlite = SqliteFactory::new();
    let memory = MemoryFactory::new();
    for (app, what) in [
        (
            app_with_prefetch(&sqlite, 1),
            "SQLite with runner.prefetch = 1",
        ),
        (app_with_prefetch(&memory, 16), "the memory backend"),
    ] {
        let (bodies, held) = short_runs(&app).await;
        assert!(
            bodies <= 2,
            "{bodies} bodies at once on a runner of 2 slots"
        );
        assert!(held <= 2, "{held} held at once on {what}");
    }
}

/// With two runners of one slot each, after a burst of short runs, the
/// calls routed together with a long one all end before it does: the runner
/// running it gives back what it took ahead, and the other runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_gives_back_what_a_thread_runner_took_ahead() {
    let sqlite = SqliteFactory::new();
    let app = app_with_prefetch(&sqlite, 16);
    let first = ThreadRunner::with_slots(&app, 1).spawn();
    let second = ThreadRunner::with_slots(&app, 1).spawn();
    assert_nothing_waits_behind_a_long_run(&app, 2_000).await;
    first.stop().await.expect("stop");
    second.stop().await.expect("stop");
    check_histories(&app).await;
}
