//! Task totals: what was routed, started, succeeded, failed, retried and
//! cancelled per task, and run times, kept by the backend in the step of
//! each transition and across purges of invocations.

use pynenc::model::{InvocationQuery, TaskCounter, TaskTotals, RUN_TIME_BOUNDS_US};
use pynenc::{InvocationStatus, TaskId};
use pynenc_operate::Operate;

use crate::tasks::*;
use crate::{check_histories, new_app, ok, start_runner, BackendFactory};

/// The totals of one task, zero when it has none.
fn of(totals: &[TaskTotals], task: &str) -> TaskTotals {
    totals
        .iter()
        .find(|t| t.task_id.as_str() == task)
        .cloned()
        .unwrap_or_else(|| TaskTotals::new(TaskId::from(task)))
}

/// Every counter of a task, in the order of [`TaskCounter::ALL`]
/// (routed, started, succeeded, failed, retried, cancelled).
fn counters(totals: &[TaskTotals], task: &str) -> [u64; 6] {
    of(totals, task).counts
}

/// Successes, failures, retries and a cancel, each counted once per event;
/// run times by bucket; totals kept when the invocations are purged and
/// forgotten with the app.
pub async fn m01_task_totals(f: &dyn BackendFactory) {
    let app = new_app(f, "m01", &[]);
    let inspect = app.inspect();
    let flaky_task = flaky::task().task_id().to_string();
    let sleeper_task = sleeper::task().task_id().to_string();
    let add_task = add::task().task_id().to_string();
    let fail_task = fail_with::task().task_id().to_string();

    // a queued call cancelled before any runner is up
    let cancelled = ok(add::call_on(&app, 1000, 1).await, "to cancel");
    ok(
        app.control().cancel(cancelled.invocation_id(), false).await,
        "cancel",
    );
    let before = ok(inspect.task_totals(&[]).await, "totals before");
    assert_eq!(counters(&before, &add_task), [1, 0, 0, 0, 0, 1]);

    let runner = start_runner(&app, 4);
    let adds = ok(
        add::parallelize_on(&app, (0..20).map(|i| (i, 1))).await,
        "adds",
    );
    ok(adds.results().await, "adds ran");
    let key = format!("m01-{}", f.name());
    let flaky_call = ok(flaky::call_on(&app, key, 1).await, "flaky");
    assert_eq!(ok(flaky_call.result().await, "flaky ran"), 2);
    let failing = ok(
        fail_with::call_on(&app, "Broken".into(), "no".into()).await,
        "fail",
    );
    assert!(failing.result().await.is_err());
    let slow = ok(
        sleeper::call_on(&app, format!("m01-{}", f.name()), 40).await,
        "sleeper",
    );
    ok(slow.result().await, "sleeper ran");
    ok(runner.stop().await, "stop");

    let totals = ok(inspect.task_totals(&[]).await, "totals");
    // routed, started, succeeded, failed, retried, cancelled
    assert_eq!(counters(&totals, &add_task), [21, 20, 20, 0, 0, 1]);
    assert_eq!(counters(&totals, &flaky_task), [1, 2, 1, 0, 1, 0]);
    assert_eq!(counters(&totals, &fail_task), [1, 1, 0, 1, 0, 0]);
    assert_eq!(counters(&totals, &sleeper_task), [1, 1, 1, 0, 0, 0]);
    // every run that ended has a run time
    assert_eq!(of(&totals, &add_task).run_times.count(), 20);
    assert_eq!(of(&totals, &flaky_task).run_times.count(), 2);
    assert_eq!(of(&totals, &fail_task).run_times.count(), 1);
    let slow_times = of(&totals, &sleeper_task).run_times;
    assert_eq!(slow_times.count(), 1);
    assert!(
        slow_times.sum_us >= 40_000,
        "a 40 ms sleep ran {} µs",
        slow_times.sum_us
    );
    // it is in a bucket above 25 ms (the bucket bounds: 1, 5, 25, 100 ms…)
    let bucket = slow_times
        .buckets
        .iter()
        .position(|n| *n == 1)
        .unwrap_or(usize::MAX);
    assert!(
        bucket >= 3 && RUN_TIME_BOUNDS_US.get(bucket).is_none_or(|b| *b >= 40_000),
        "a 40 ms run in bucket {bucket}: {:?}",
        slow_times.buckets
    );
    // filtered by task; an unknown task has none
    let only = ok(
        inspect
            .task_totals(&[TaskId::from(flaky_task.as_str()), TaskId::from("no.such")])
            .await,
        "filtered",
    );
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0].get(TaskCounter::Retried), 1);

    // purging the invocations keeps the totals; the counts by status go
    let checked = check_histories(&app).await;
    assert!(checked > 0);
    let purged = ok(
        app.control().purge_matching(&InvocationQuery::new()).await,
        "purge",
    );
    assert!(purged >= 24, "{purged} purged");
    let counts = ok(inspect.counts(&[]).await, "counts");
    assert_eq!(counts.total(), 0, "{counts:?}");
    let kept = ok(inspect.task_totals(&[]).await, "totals after purge");
    for task in [&add_task, &flaky_task, &fail_task, &sleeper_task] {
        assert_eq!(of(&kept, task), of(&totals, task), "{task}");
    }
    // a new call adds to them
    let runner = start_runner(&app, 1);
    ok(
        ok(add::call_on(&app, 1, 1).await, "again").result().await,
        "ran",
    );
    ok(runner.stop().await, "stop");
    let again = ok(inspect.task_totals(&[]).await, "totals again");
    assert_eq!(counters(&again, &add_task), [22, 21, 21, 0, 0, 1]);
    assert_eq!(
        ok(
            app.inspect()
                .counts(&[TaskId::from(add_task.as_str())])
                .await,
            "counts"
        )
        .totals
        .get(&InvocationStatus::Success),
        Some(&1)
    );

    // the app's purge forgets them
    ok(app.purge().await, "app purge");
    let gone = ok(inspect.task_totals(&[]).await, "totals after app purge");
    assert!(gone.is_empty(), "{gone:?}");
}
