//! Runners stopping and dying, isolation between apps, purge, and the steps of a runner.

use std::time::Duration;

use pynenc::{InvocationId, InvocationStatus, PynencError, RunnerId};
use serde_json::json;

use crate::tasks::{self, *};
use crate::{
    check_histories, eventually, new_app, ok, start_runner, statuses, unique, wait_for_status,
    BackendFactory,
};

use super::finish;

/// 13. Stopping a runner mid-task: RUNNING → KILLED → REROUTED, then it runs again.
pub async fn s13_stop_runner_mid_task(f: &dyn BackendFactory) {
    let app = new_app(f, "s13", &[("runner.shutdown_grace_seconds", json!(0.0))]);
    let runner = start_runner(&app, 2);
    let key = unique("sleep");
    let inv = ok(sleeper::call_on(&app, key.clone(), 400).await, "call");
    let running = wait_for_status(&inv, InvocationStatus::Running, Duration::from_secs(10)).await;
    assert!(running, "never ran");
    ok(runner.stop().await, "stop");
    let st = statuses(&inv).await;
    assert_eq!(
        &st[st.len() - 3..],
        &[
            InvocationStatus::Running,
            InvocationStatus::Killed,
            InvocationStatus::Rerouted
        ],
        "{st:?}"
    );
    let runner2 = start_runner(&app, 2);
    assert_eq!(ok(inv.result().await, "result"), 400);
    assert_eq!(tasks::runs_of(&key), 2);
    finish(&app, runner2).await;
}

/// 15. Two apps with different `app_id` on one backend are isolated; purging one leaves the other.
pub async fn s15_app_isolation(f: &dyn BackendFactory) {
    let a = new_app(f, "s15-a", &[]);
    let b = new_app(f, "s15-b", &[]);
    let ia = ok(add::call_on(&a, 1, 1).await, "a");
    let ib = ok(add::call_on(&b, 2, 2).await, "b");
    let ids_a = ok(a.state_backend().list_invocation_ids().await, "list a");
    let ids_b = ok(b.state_backend().list_invocation_ids().await, "list b");
    assert_eq!(ids_a, vec![*ia.invocation_id()]);
    assert_eq!(ids_b, vec![*ib.invocation_id()]);
    assert!(a
        .state_backend()
        .get_invocation(ib.invocation_id())
        .await
        .is_err());
    // a runner of app a does not run app b's work
    let runner_a = start_runner(&a, 2);
    assert_eq!(ok(ia.result().await, "a"), 2);
    assert_eq!(ok(ib.status().await, "b"), InvocationStatus::Registered);
    ok(runner_a.stop().await, "stop");
    ok(a.purge().await, "purge a");
    assert!(ok(a.state_backend().list_invocation_ids().await, "list").is_empty());
    assert_eq!(
        ok(b.state_backend().list_invocation_ids().await, "list").len(),
        1
    );
    let runner_b = start_runner(&b, 2);
    assert_eq!(ok(ib.result().await, "b"), 4);
    finish(&b, runner_b).await;
}

/// 19. Auto purge removes final invocations older than the configured age, and nothing else.
pub async fn s19_auto_purge(f: &dyn BackendFactory) {
    let app = new_app(f, "s19", &[]);
    let runner = start_runner(&app, 2);
    let old = ok(
        add::parallelize_on(&app, (0..3).map(|i| (i, i))).await,
        "old",
    );
    ok(old.results().await, "old");
    ok(runner.stop().await, "stop");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = ok(add::call_on(&app, 9, 9).await, "registered");
    let purged = ok(
        app.orchestrator()
            .auto_purge(&pynenc::Retention::all(Duration::from_millis(150)))
            .await,
        "purge",
    );
    assert_eq!(purged, 3);
    let ids = ok(app.state_backend().list_invocation_ids().await, "list");
    assert_eq!(
        ids,
        vec![*waiting.invocation_id()],
        "only the unfinished one is left"
    );
    // the runner purges periodically with the configured age
    let app2 = new_app(
        f,
        "s19-runner",
        &[
            ("retention.success_hours", json!(0.1 / 3600.0)),
            ("orchestrator.auto_purge_interval_seconds", json!(0.05)),
        ],
    );
    let runner2 = start_runner(&app2, 2);
    let inv = ok(add::call_on(&app2, 1, 1).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 2);
    let gone = eventually(Duration::from_secs(10), || async {
        app2.state_backend()
            .list_invocation_ids()
            .await
            .map(|ids| ids.is_empty())
            .unwrap_or(false)
    })
    .await;
    assert!(gone, "the runner did not purge the final invocation");
    ok(runner2.stop().await, "stop");
    let runner = start_runner(&app, 1);
    assert_eq!(ok(waiting.result().await, "waiting"), 18);
    finish(&app, runner).await;
}

/// Recovery: work claimed by a runner whose heartbeat expired, and work stuck
/// `PENDING` too long, is re-routed and runs; a live runner's work is left alone.
pub async fn s21_recovery_of_lost_work(f: &dyn BackendFactory) {
    let app = new_app(
        f,
        "s21",
        &[
            ("runner.runner_dead_after_seconds", json!(0.4)),
            ("runner.recovery_interval_seconds", json!(0.1)),
            ("runner.heartbeat_interval_seconds", json!(0.1)),
            ("orchestrator.max_pending_seconds", json!(0.6)),
        ],
    );
    let orch = app.orchestrator().clone();
    let coordination = app.coordination().clone();
    let (dead, slow) = (RunnerId::from("dead-runner"), RunnerId::from("slow-runner"));
    let lost = ok(add::call_on(&app, 1, 1).await, "lost");
    let stuck = ok(add::call_on(&app, 2, 2).await, "stuck");
    let alive = ok(add::call_on(&app, 3, 3).await, "alive");
    // a runner that dies after starting `lost`
    let picked = ok(orch.get_invocations_to_run(&dead, 1).await, "pick");
    assert_eq!(picked[0].invocation_id, *lost.invocation_id());
    ok(coordination.heartbeat(&dead).await, "beat");
    ok(
        orch.set_status(lost.invocation_id(), InvocationStatus::Running, &dead, None)
            .await,
        "run",
    );
    // a live runner that never starts `stuck`, and one that is running `alive`
    let picked = ok(orch.get_invocations_to_run(&slow, 2).await, "pick");
    assert_eq!(picked.len(), 2);
    ok(
        orch.set_status(
            alive.invocation_id(),
            InvocationStatus::Running,
            &slow,
            None,
        )
        .await,
        "run",
    );
    let beat_coordination = coordination.clone();
    let beat_runner = slow.clone();
    let beating = tokio::spawn(async move {
        loop {
            let _ = beat_coordination.heartbeat(&beat_runner).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let runner = start_runner(&app, 2);
    assert_eq!(ok(lost.result().await, "lost"), 2);
    assert_eq!(ok(stuck.result().await, "stuck"), 4);
    let st = statuses(&lost).await;
    assert!(st.contains(&InvocationStatus::RunningRecovery), "{st:?}");
    let st = statuses(&stuck).await;
    assert!(st.contains(&InvocationStatus::PendingRecovery), "{st:?}");
    // the live runner's invocation is still its own
    let rec = ok(orch.get_status(alive.invocation_id()).await, "status");
    assert_eq!(rec.status, InvocationStatus::Running);
    assert_eq!(rec.owner.as_deref(), Some("slow-runner"));
    ok(
        orch.finish(
            alive.invocation_id(),
            &slow,
            pynenc::model::RunOutcome::Success("6".into()),
        )
        .await,
        "finish",
    );
    beating.abort();
    assert_eq!(ok(alive.result().await, "alive"), 6);
    finish(&app, runner).await;
}

/// Work taken back from a stopped runner runs before work queued after it.
pub async fn s22_rerouted_work_runs_first(f: &dyn BackendFactory) {
    let app = new_app(f, "s22", &[("runner.shutdown_grace_seconds", json!(0.0))]);
    let group = unique("front");
    let runner = start_runner(&app, 1);
    let first = ok(
        filler::call_on(&app, group.clone(), "first".into(), 400).await,
        "first",
    );
    let running = wait_for_status(&first, InvocationStatus::Running, Duration::from_secs(10)).await;
    assert!(running, "never ran");
    let mut queued = Vec::new();
    for i in 0..3 {
        queued.push(ok(
            filler::call_on(&app, group.clone(), format!("q{i}"), 0).await,
            "queued",
        ));
    }
    ok(runner.stop().await, "stop");
    let runner = start_runner(&app, 1);
    ok(first.result().await, "first");
    for q in &queued {
        ok(q.result().await, "queued");
    }
    let mut order: Vec<String> = tasks::events_of(&group)
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    // those queued after it run after it (a runner that takes invocations
    // ahead may begin the bodies of those it took together in any order)
    if let Some(after) = order.get_mut(2..) {
        after.sort();
    }
    assert_eq!(
        order,
        vec!["first", "first", "q0", "q1", "q2"],
        "the re-routed invocation runs first"
    );
    finish(&app, runner).await;
}
/// 23. One step ends runs and starts the next ones; a refused end still picks.
///
/// The next invocations are `RUNNING` for the same runner; a refused end
/// writes nothing and the other ends of its step stand.
pub async fn s23_finish_and_start(f: &dyn BackendFactory) {
    use pynenc::model::RunOutcome;
    use pynenc::store::{EndOutcome, RunEnd};
    let end = |id: &InvocationId, value: &str| RunEnd::new(*id, RunOutcome::Success(value.into()));
    let app = new_app(f, "s23", &[]);
    let orch = app.orchestrator();
    let (runner_a, runner_b) = (RunnerId::from("runner-a"), RunnerId::from("runner-b"));
    let first = ok(add::call_on(&app, 1, 2).await, "route first");
    let second = ok(add::call_on(&app, 3, 4).await, "route second");
    let picked = ok(
        orch.get_invocations_to_start(&runner_a, 1, None).await,
        "pick",
    );
    assert_eq!(picked.len(), 1);
    assert_eq!(picked[0].invocation_id, *first.invocation_id());
    let report = orch
        .finish_many_and_start(
            &runner_a,
            vec![end(first.invocation_id(), "3")],
            1,
            Some("host:1"),
        )
        .await;
    assert!(report.pick_error.is_none(), "{:?}", report.pick_error);
    let finished = report
        .ends
        .into_iter()
        .next()
        .expect("one end")
        .into_result();
    assert_eq!(ok(finished, "first finished"), InvocationStatus::Success);
    assert_eq!(report.next.len(), 1);
    assert_eq!(report.next[0].invocation_id, *second.invocation_id());
    let status = ok(orch.get_status(second.invocation_id()).await, "status");
    assert_eq!(status.status, InvocationStatus::Running);
    assert_eq!(status.owner.as_deref(), Some("runner-a"));
    // ending the first again is refused, and changes nothing; the pick still happens
    let third = ok(add::call_on(&app, 5, 6).await, "route third");
    let report = orch
        .finish_many_and_start(&runner_a, vec![end(first.invocation_id(), "99")], 1, None)
        .await;
    assert!(report.pick_error.is_none(), "{:?}", report.pick_error);
    let finished = report
        .ends
        .into_iter()
        .next()
        .expect("one end")
        .into_result();
    let err = PynencError::from(finished.expect_err("the first is already final"));
    assert!(matches!(err, PynencError::StatusTransition { .. }), "{err}");
    assert_eq!(report.next.len(), 1);
    assert_eq!(report.next[0].invocation_id, *third.invocation_id());
    assert_eq!(ok(first.result().await, "first result"), 3);
    // nothing left to pick: the end is recorded and no next comes back
    for (inv, value) in [(&second, "7"), (&third, "11")] {
        let report = orch
            .finish_many_and_start(&runner_a, vec![end(inv.invocation_id(), value)], 1, None)
            .await;
        let finished = report
            .ends
            .into_iter()
            .next()
            .expect("one end")
            .into_result();
        assert_eq!(ok(finished, "finished"), InvocationStatus::Success);
        assert!(report.next.is_empty());
    }
    assert_eq!(ok(second.result().await, "second result"), 7);
    assert_eq!(ok(third.result().await, "third result"), 11);

    // several ends in one step take the next invocations of the slots they free
    let calls: Vec<_> = [(1, 1), (2, 2), (3, 3), (4, 4)].to_vec();
    let group = ok(add::parallelize_on(&app, calls).await, "route four");
    let ids: Vec<InvocationId> = group
        .invocations()
        .iter()
        .map(|i| *i.invocation_id())
        .collect();
    let started = ok(
        orch.get_invocations_to_start(&runner_b, 2, None).await,
        "start two",
    );
    assert_eq!(started.len(), 2);
    let ends = vec![
        end(&ids[0], "2"),
        end(&ids[1], "4"),
        // ending the first twice: refused, and the rest stands
        end(&ids[0], "0"),
    ];
    let report = orch
        .finish_many_and_start(&runner_b, ends, 2, Some("host:2"))
        .await;
    let finished = report.ends;
    assert_eq!(finished.len(), 3);
    assert!(
        matches!(finished[0], EndOutcome::Recorded(InvocationStatus::Success)),
        "{:?}",
        finished[0]
    );
    assert!(
        matches!(finished[1], EndOutcome::Recorded(InvocationStatus::Success)),
        "{:?}",
        finished[1]
    );
    assert!(
        matches!(
            finished[2].clone().into_result().map_err(PynencError::from),
            Err(PynencError::StatusTransition { .. })
        ),
        "{:?}",
        finished[2]
    );
    assert!(
        report.pick_error.is_none(),
        "next two: {:?}",
        report.pick_error
    );
    let next_ids: Vec<InvocationId> = report.next.iter().map(|r| r.invocation_id).collect();
    assert_eq!(next_ids, vec![ids[2], ids[3]]);
    for id in &ids[2..] {
        let status = ok(orch.get_status(id).await, "status");
        assert_eq!(status.status, InvocationStatus::Running);
        assert_eq!(status.owner.as_deref(), Some("runner-b"));
    }
    let ends = vec![end(&ids[2], "6"), end(&ids[3], "8")];
    let report = orch.finish_many_and_start(&runner_b, ends, 2, None).await;
    assert!(
        report
            .ends
            .iter()
            .all(|f| matches!(f, EndOutcome::Recorded(_))),
        "{:?}",
        report.ends
    );
    assert!(
        report.pick_error.is_none() && report.next.is_empty(),
        "nothing left"
    );
    assert_eq!(ok(group.results().await, "results"), vec![2, 4, 6, 8]);
    assert!(check_histories(&app).await >= 7);
}
