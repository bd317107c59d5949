//! Concurrency control, and one owner per invocation.

use std::collections::HashSet;
use std::time::Duration;

use pynenc::{InvocationId, InvocationStatus, PynencError, RunnerId};
use pynenc_operate::Operate;

use crate::tasks::{self, *};
use crate::{
    check_histories, new_app, ok, start_runner, statuses, unique, wait_for_status, BackendFactory,
};

use super::finish;

/// 7. Exactly one RUNNING in the history of every successful invocation.
pub async fn s07_exactly_one_running(f: &dyn BackendFactory) {
    let app = new_app(f, "s07", &[]);
    let runner = start_runner(&app, 8);
    let group = ok(
        add::parallelize_on(&app, (0..300).map(|i| (i, 1))).await,
        "group",
    );
    ok(group.results().await, "results");
    for inv in group.invocations() {
        let st = statuses(inv).await;
        assert_eq!(
            st.iter()
                .filter(|s| **s == InvocationStatus::Running)
                .count(),
            1,
            "{st:?}"
        );
        assert_eq!(st.first(), Some(&InvocationStatus::Registered));
        assert_eq!(st.last(), Some(&InvocationStatus::Success));
    }
    finish(&app, runner).await;
}

fn no_overlap(events: &[(String, i64)]) {
    let mut open = 0;
    for (label, _) in events {
        if label.starts_with("start:") {
            open += 1;
            assert!(open <= 1, "two runs overlapped: {events:?}");
        } else {
            open -= 1;
        }
    }
}

/// 8. Running concurrency TASK: with reroute the second starts after the first finishes.
pub async fn s08_running_concurrency_task_reroute(f: &dyn BackendFactory) {
    let app = new_app(f, "s08", &[]);
    let runner = start_runner(&app, 4);
    let group = unique("excl");
    let first = ok(
        exclusive::call_on(&app, group.clone(), "a".into(), 200).await,
        "a",
    );
    let second = ok(
        exclusive::call_on(&app, group.clone(), "b".into(), 10).await,
        "b",
    );
    assert_eq!(ok(first.result().await, "a"), "a");
    assert_eq!(ok(second.result().await, "b"), "b");
    let ev = tasks::events_of(&group);
    assert_eq!(ev.len(), 4, "{ev:?}");
    no_overlap(&ev);
    let st = statuses(&second).await;
    assert!(
        st.contains(&InvocationStatus::ConcurrencyControlled),
        "{st:?}"
    );
    assert!(st.contains(&InvocationStatus::Rerouted), "{st:?}");
    finish(&app, runner).await;
}

/// 8b. Running concurrency TASK without reroute ends CONCURRENCY_CONTROLLED_FINAL.
pub async fn s08b_running_concurrency_task_final(f: &dyn BackendFactory) {
    let app = new_app(f, "s08b", &[]);
    let runner = start_runner(&app, 4);
    let group = unique("final");
    let first = ok(
        exclusive_final::call_on(&app, group.clone(), "a".into(), 300).await,
        "a",
    );
    let running = wait_for_status(&first, InvocationStatus::Running, Duration::from_secs(10)).await;
    assert!(running, "the first invocation never ran");
    let second = ok(
        exclusive_final::call_on(&app, group.clone(), "b".into(), 10).await,
        "b",
    );
    match second.result().await {
        Err(PynencError::NoResult { status, .. }) => {
            assert_eq!(status, InvocationStatus::ConcurrencyControlledFinal)
        }
        other => panic!("expected NoResult, got {other:?}"),
    }
    assert_eq!(ok(first.result().await, "a"), "a");
    assert_eq!(tasks::events_of(&group).len(), 2, "b never ran");
    finish(&app, runner).await;
}

/// 9. Running concurrency KEYS uses only `key_arguments`.
pub async fn s09_running_concurrency_keys(f: &dyn BackendFactory) {
    let app = new_app(f, "s09", &[]);
    let runner = start_runner(&app, 4);
    let same = unique("same");
    let a = ok(
        keyed::call_on(&app, same.clone(), "k1".into(), "a".into(), 150).await,
        "a",
    );
    let b = ok(
        keyed::call_on(&app, same.clone(), "k1".into(), "b".into(), 150).await,
        "b",
    );
    ok(a.result().await, "a");
    ok(b.result().await, "b");
    no_overlap(&tasks::events_of(&same));
    // different keys run side by side
    let diff = unique("diff");
    let c = ok(
        keyed::call_on(&app, diff.clone(), "k1".into(), "c".into(), 300).await,
        "c",
    );
    let d = ok(
        keyed::call_on(&app, diff.clone(), "k2".into(), "d".into(), 300).await,
        "d",
    );
    ok(c.result().await, "c");
    ok(d.result().await, "d");
    let ev = tasks::events_of(&diff);
    let starts: Vec<i64> = ev
        .iter()
        .filter(|(l, _)| l.starts_with("start"))
        .map(|(_, t)| *t)
        .collect();
    let ends: Vec<i64> = ev
        .iter()
        .filter(|(l, _)| l.starts_with("end"))
        .map(|(_, t)| *t)
        .collect();
    assert!(
        starts.iter().max() < ends.iter().min(),
        "different keys overlap: {ev:?}"
    );
    finish(&app, runner).await;
}

/// 10. Registration concurrency TASK / ARGUMENTS / KEYS.
pub async fn s10_registration_concurrency(f: &dyn BackendFactory) {
    let app = new_app(f, "s10", &[]);
    // no runner yet: invocations stay REGISTERED
    let t1 = ok(reg_task::call_on(&app, 1).await, "t1");
    let t2 = ok(reg_task::call_on(&app, 2).await, "t2");
    assert!(!t1.is_reused());
    assert!(
        t2.is_reused(),
        "task concurrency reuses the registered invocation"
    );
    assert_eq!(t1.invocation_id(), t2.invocation_id());
    let diff = t2.reuse_diff().unwrap_or_default();
    assert!(diff.contains("x: existing 1 != new 2"), "{diff}");

    let a1 = ok(reg_args::call_on(&app, 1).await, "a1");
    let a2 = ok(reg_args::call_on(&app, 1).await, "a2");
    let a3 = ok(reg_args::call_on(&app, 2).await, "a3");
    assert_eq!(a1.invocation_id(), a2.invocation_id());
    assert!(a2.is_reused() && a2.reuse_diff().is_none());
    assert_ne!(
        a1.invocation_id(),
        a3.invocation_id(),
        "other arguments, new invocation"
    );

    let k1 = ok(reg_keys_raise::call_on(&app, "k".into(), 1).await, "k1");
    let k2 = ok(reg_keys_raise::call_on(&app, "k".into(), 1).await, "k2");
    assert_eq!(k1.invocation_id(), k2.invocation_id());
    match reg_keys_raise::call_on(&app, "k".into(), 2).await {
        Err(e @ PynencError::InvocationConcurrencyWithDifferentArguments { .. }) => {
            let text = e.to_string();
            assert!(text.contains(k1.invocation_id().as_str()), "{text}");
            assert!(text.contains("v: existing 1 != new 2"), "{text}");
        }
        other => panic!("expected a concurrency error, got {other:?}"),
    }
    let other_key = ok(
        reg_keys_raise::call_on(&app, "other".into(), 2).await,
        "other key",
    );
    assert_ne!(other_key.invocation_id(), k1.invocation_id());

    let r1 = ok(reg_keys_reuse::call_on(&app, "k".into(), 1).await, "r1");
    let r2 = ok(reg_keys_reuse::call_on(&app, "k".into(), 5).await, "r2");
    assert_eq!(r1.invocation_id(), r2.invocation_id());
    assert!(r2
        .reuse_diff()
        .unwrap_or_default()
        .contains("v: existing 1 != new 5"));

    // once they run, new calls register new invocations
    let runner = start_runner(&app, 4);
    assert_eq!(
        ok(t2.result().await, "t"),
        1,
        "the reused invocation runs with its own arguments"
    );
    assert_eq!(ok(r2.result().await, "r"), 1);
    ok(a3.result().await, "a3");
    ok(k1.result().await, "k1");
    ok(other_key.result().await, "other");
    let t3 = ok(reg_task::call_on(&app, 3).await, "t3");
    assert_ne!(t3.invocation_id(), t1.invocation_id());
    assert_eq!(ok(t3.result().await, "t3"), 3);
    finish(&app, runner).await;
}

/// 16. Many concurrent `get_invocations_to_run` never hand one invocation to two runners.
pub async fn s16_concurrent_pickers(f: &dyn BackendFactory) {
    let app = new_app(f, "s16", &[]);
    let group = ok(
        add::parallelize_on(&app, (0..400).map(|i| (i, 0))).await,
        "group",
    );
    let mut joins = Vec::new();
    for r in 0..8 {
        let app = app.clone();
        joins.push(tokio::spawn(async move {
            let runner_id = RunnerId::from(format!("picker-{r}"));
            let mut mine = Vec::new();
            loop {
                let batch = app
                    .orchestrator()
                    .get_invocations_to_run(&runner_id, 7)
                    .await
                    .unwrap_or_else(|e| panic!("pick: {e}"));
                if batch.is_empty() {
                    break;
                }
                for rec in batch {
                    mine.push(rec.invocation_id);
                }
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for j in joins {
        all.extend(j.await.unwrap_or_default());
    }
    let unique_ids: HashSet<&InvocationId> = all.iter().collect();
    assert_eq!(all.len(), 400, "every invocation picked once");
    assert_eq!(unique_ids.len(), 400, "no invocation picked twice");
    for inv in group.invocations().iter().take(20) {
        let status = ok(
            app.orchestrator().get_status(inv.invocation_id()).await,
            "status",
        );
        assert_eq!(status.status, InvocationStatus::Pending);
        assert!(status.owner.is_some_and(|o| o.starts_with("picker-")));
    }
    let checked = check_histories(&app).await;
    assert_eq!(checked, 400);
}

/// The calls registration concurrency folds into an invocation are kept
/// with it: how many, and the latest with their differing arguments.
pub async fn s10c_reuses_are_recorded(f: &dyn BackendFactory) {
    let app = new_app(f, "s10c", &[]);
    let inspect = app.inspect();
    let before = pynenc::Timestamp::now();
    let first = ok(reg_keys_reuse::call_on(&app, "rk".into(), 0).await, "first");
    let id = *first.invocation_id();
    assert_eq!(
        ok(inspect.reuses(&id).await, "none yet"),
        Default::default()
    );
    for v in 1..=24 {
        let again = ok(reg_keys_reuse::call_on(&app, "rk".into(), v).await, "again");
        assert_eq!(*again.invocation_id(), id);
    }
    // a batch reuses too, and the same call is a reuse without difference
    let batch = ok(
        reg_keys_reuse::parallelize_on(&app, [("rk".to_string(), 25)]).await,
        "batch",
    );
    assert_eq!(*batch.invocations()[0].invocation_id(), id);
    ok(reg_keys_reuse::call_on(&app, "rk".into(), 0).await, "same");
    let reuses = ok(inspect.reuses(&id).await, "reuses");
    assert_eq!(reuses.total, 26);
    assert_eq!(reuses.latest.len(), pynenc::model::REUSES_KEPT);
    let values: Vec<Option<&str>> = reuses
        .latest
        .iter()
        .map(|r| r.differing.first().and_then(|d| d.value.as_deref()))
        .collect();
    let mut expected: Vec<Option<String>> = (7..=25).map(|v| Some(v.to_string())).collect();
    expected.push(None);
    assert_eq!(
        values,
        expected.iter().map(Option::as_deref).collect::<Vec<_>>(),
        "the latest, oldest first"
    );
    assert!(reuses.latest[0].differing[0].name == "v" && reuses.latest[0].differing.len() == 1);
    assert!(reuses
        .latest
        .iter()
        .all(|r| r.caller.is_none() && r.at >= before));
    assert!(reuses.latest.windows(2).all(|w| w[0].at <= w[1].at));
    // an unknown invocation has none
    let unknown = pynenc::InvocationId::random();
    assert_eq!(
        ok(inspect.reuses(&unknown).await, "unknown"),
        Default::default()
    );

    // they go with the invocation
    let runner = start_runner(&app, 2);
    assert_eq!(
        ok(first.result().await, "ran"),
        0,
        "it ran with its own arguments"
    );
    ok(runner.stop().await, "stop");
    let purged = ok(
        app.control()
            .purge_matching(&pynenc::model::InvocationQuery::new())
            .await,
        "purge",
    );
    assert_eq!(purged, 1);
    assert_eq!(ok(inspect.reuses(&id).await, "purged"), Default::default());
}
