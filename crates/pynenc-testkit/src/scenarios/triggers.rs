//! Triggers: keyed routing (the same key routed twice makes one
//! invocation), cron triggers firing once per tick with two evaluating
//! runners, and triggers refused when the app builds.

use std::time::Duration;

use pynenc::model::{InvocationQuery, Order, RouteOutcome, RouteRequest};
use pynenc::{Arguments, Call, InvocationId, PynencError, TaskId, Timestamp, Trigger};
use pynenc_operate::Operate;

use crate::tasks::*;
use crate::{check_histories, new_app, ok, start_runner, BackendFactory};

fn keyed_request(app: &pynenc::Pynenc, id: InvocationId) -> RouteRequest {
    let ser = app.serializer();
    let args = ok(
        Arguments::new()
            .with(ser, "x", &1)
            .and_then(|a| a.with(ser, "y", &2)),
        "arguments",
    );
    RouteRequest {
        invocation_id: Some(id),
        ..RouteRequest::new(
            Call::new(add::task().task_id(), args),
            app.external_runner_id().clone(),
        )
    }
}

/// The ids of the invocations of `task` in `app`, oldest first.
pub(super) async fn ids_of(app: &pynenc::Pynenc, task: &str) -> Vec<InvocationId> {
    let query = InvocationQuery {
        task_ids: vec![TaskId::from(task)],
        order: Order::OldestFirst,
        ..InvocationQuery::new()
    };
    let all = ok(app.inspect().list_all(&query, 100_000).await, "list");
    all.iter().map(|s| s.invocation_id).collect()
}

/// A caller-chosen id routed again returns the invocation it made, also
/// when two callers route it at the same time: one invocation per key.
pub async fn t01_keyed_routing_makes_one_invocation(f: &dyn BackendFactory) {
    let app = new_app(f, "t01", &[]);
    let id = InvocationId::keyed(Timestamp::now(), "t01 key");
    let first = ok(
        app.orchestrator()
            .route_calls(vec![keyed_request(&app, id)])
            .await,
        "first",
    );
    assert!(matches!(&first[0], RouteOutcome::New(r) if r.invocation_id == id));
    let again = ok(
        app.orchestrator()
            .route_calls(vec![keyed_request(&app, id)])
            .await,
        "again",
    );
    assert!(
        matches!(&again[0], RouteOutcome::Reused { record, .. } if record.invocation_id == id),
        "{again:?}"
    );
    // two callers at once, each twice in its batch
    let other = InvocationId::keyed(Timestamp::now(), "t01 other key");
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let reqs = vec![keyed_request(&app, other), keyed_request(&app, other)];
                app.orchestrator().route_calls(reqs).await
            })
        })
        .collect();
    let mut new = 0;
    for r in racers {
        for outcome in ok(ok(r.await, "racer"), "route") {
            assert_eq!(outcome.record().invocation_id, other);
            new += usize::from(matches!(outcome, RouteOutcome::New(_)));
        }
    }
    assert_eq!(new, 1, "one of four routes made the invocation");
    assert_eq!(ids_of(&app, add::task().task_id()).await, vec![id, other]);
    let runner = start_runner(&app, 2);
    for i in [id, other] {
        let v = ok(
            ok(app.invocation(&i).await, "handle").result().await,
            "result",
        );
        assert_eq!(v, serde_json::json!(3));
    }
    super::finish(&app, runner).await;
}

/// A cron trigger ticking every second, evaluated by two runners (two app
/// objects on one backend): one invocation per tick, none lost, none twice,
/// each keyed by its tick, each run.
pub async fn t02_cron_trigger_fires_once_per_tick(f: &dyn BackendFactory) {
    let runs = crate::unique("t02-runs");
    let trigger = Trigger::cron("* * * * * *", sleeper::task(), (runs.clone(), 0u64))
        .named("t02 every second");
    let build = || {
        ok(
            f.builder("t02")
                .config_value("triggers.evaluate_interval_seconds", 0.1)
                // wide enough that a loaded machine's late evaluation or
                // lease change loses no tick
                .config_value("triggers.missed_tick_window_seconds", 4.0)
                .trigger(trigger.clone())
                .build(),
            "app with a trigger",
        )
    };
    let (a, b) = (build(), build());
    let listed = ok(a.triggers().await, "triggers");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "t02 every second");
    assert_eq!(listed[0].recent.len(), pynenc::RECENT_TICKS);
    assert!(
        listed[0].recent.iter().all(|f| f.status.is_none()),
        "nothing fired yet"
    );
    let start = Timestamp::now();
    let (ra, rb) = (start_runner(&a, 2), start_runner(&b, 2));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    ok(ra.stop().await, "stop a");
    ok(rb.stop().await, "stop b");
    let end = Timestamp::now();
    let ids = ids_of(&a, sleeper::task().task_id()).await;
    let (_, _, ticks) = crate::assert_one_per_second(&ids, start, end, 3_000_000);
    assert!(ticks >= 4, "{ticks} ticks in 4.5 s");
    // the listing shows the recent ticks and what they fired
    let listed = ok(a.triggers().await, "triggers");
    let fired = listed[0]
        .recent
        .iter()
        .filter(|f| f.status.is_some())
        .count();
    assert!(fired >= 1, "{:?}", listed[0].recent);
    for f in listed[0].recent.iter().filter(|f| f.status.is_some()) {
        assert!(ids.contains(&f.invocation_id));
    }
    // a runner without triggers runs them all
    let drain = new_app(f, "t02", &[]);
    let runner = start_runner(&drain, 2);
    for id in &ids {
        let v = ok(
            ok(drain.invocation(id).await, "handle").result().await,
            "result",
        );
        assert_eq!(v, serde_json::json!(0));
    }
    ok(runner.stop().await, "stop");
    assert_eq!(runs_of(&runs) as usize, ids.len(), "each tick ran once");
    assert!(check_histories(&drain).await >= ids.len());
}

/// A trigger that cannot work is refused when the app builds, naming the
/// trigger, its task and what is wrong.
pub async fn t03_bad_triggers_are_refused_at_build(f: &dyn BackendFactory) {
    let refused = |t: Trigger, more: Option<Trigger>| {
        let mut b = f.builder("t03").trigger(t);
        if let Some(m) = more {
            b = b.trigger(m);
        }
        match b.build() {
            Err(e @ PynencError::InvalidTrigger { .. }) => e.to_string(),
            Err(other) => panic!("expected InvalidTrigger, got {other}"),
            Ok(_) => panic!("a bad trigger was accepted"),
        }
    };
    let e = refused(Trigger::cron("61 * * * *", add::task(), (1i64, 2i64)), None);
    assert!(
        e.contains("cron(61 * * * *)") && e.contains("invalid cron expression"),
        "{e}"
    );
    assert!(e.contains(add::task().task_id()), "{e}");
    let e = refused(
        Trigger::cron("* * * * *", add::task(), (1i64, 2i64)).timezone("Mars/Olympus"),
        None,
    );
    assert!(e.contains("unknown time zone 'Mars/Olympus'"), "{e}");
    let wrong = Arguments::new()
        .with(pynenc::Serializer::Json, "z", &1)
        .unwrap_or_default();
    let e = refused(
        Trigger::cron("* * * * *", add::task(), wrong).named("wrong args"),
        None,
    );
    assert!(e.contains("wrong args") && e.contains("z"), "{e}");
    let t = Trigger::cron("* * * * *", add::task(), (1i64, 2i64)).named("twice");
    let e = refused(t.clone(), Some(t));
    assert!(e.contains("another trigger has this name"), "{e}");
}
