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

/// The second (since the epoch, UTC) at which `year` begins.
fn new_year_second(year: i64) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    (1970..year)
        .map(|y| if leap(y) { 366 } else { 365 })
        .sum::<i64>()
        * 86_400
}

/// A cron trigger with `catch_up(n)` fires the last `n` ticks missed while
/// no runner was up, once (a second evaluator makes nothing new); one
/// without it skips them.
pub async fn t07_cron_catch_up(f: &dyn BackendFactory) {
    let group = crate::unique("t07");
    let new_year = |name: &str, catch_up: usize| {
        Trigger::cron(
            "0 0 0 1 1 *",
            reaction::task(),
            (group.clone(), name.to_string()),
        )
        .named(name)
        .catch_up(catch_up)
    };
    let build = || {
        ok(
            f.builder("t07")
                .config_value("triggers.evaluate_interval_seconds", 0.1)
                .trigger(new_year("caught up", 2))
                .trigger(new_year("skipped", 0))
                .build(),
            "app with catch-up",
        )
    };
    let app = build();
    let runner = start_runner(&app, 2);
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids = ids_of(&app, reaction::task().task_id()).await;
        if ids.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the two new years before now, keyed by trigger and tick
    let now_s = Timestamp::now().as_micros() / 1_000_000;
    let years: Vec<i64> = (1970..3000)
        .map(new_year_second)
        .filter(|s| *s <= now_s)
        .collect();
    let expected: Vec<InvocationId> = years[years.len() - 2..]
        .iter()
        .map(|s| {
            let tick = Timestamp::from_micros(s * 1_000_000);
            InvocationId::keyed(tick, &format!("caught up@{}", tick.as_micros()))
        })
        .collect();
    assert_eq!(
        ids, expected,
        "the two missed new years, oldest first, and nothing skipped"
    );
    for id in &ids {
        ok(ok(app.invocation(id).await, "handle").result().await, "run");
    }
    ok(runner.stop().await, "stop");
    // another evaluator catches up again: the keyed ticks make nothing new
    let again = build();
    let runner = start_runner(&again, 2);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(ids_of(&again, reaction::task().task_id()).await, expected);
    super::finish(&again, runner).await;
    let labels: Vec<String> = events_of(&group).into_iter().map(|(l, _)| l).collect();
    assert_eq!(labels, vec!["caught up".to_string(); 2]);
    // more than the cap is refused
    let e = f
        .builder("t07")
        .trigger(new_year("too many", pynenc::MAX_CATCH_UP + 1))
        .build();
    assert!(
        matches!(&e, Err(PynencError::InvalidTrigger { message, .. }) if message.contains("catch_up")),
        "{:?}",
        e.err()
    );
}
