//! Triggers that react: to statuses, results and errors of invocations, and
//! to events; each fires once per source, with arguments made from the
//! source; bad ones are refused when the app builds.

use std::collections::BTreeMap;

use pynenc::{InvocationStatus, PynencError, Trigger, TriggerSource, EVENT_TASK_ID};
use serde_json::{json, Map, Value};

use super::triggers::ids_of;
use crate::tasks::*;
use crate::{check_histories, ok, start_runner, BackendFactory};

/// The arguments `reaction(group, label)` as a JSON object.
fn reaction_args(group: &str, label: String) -> Map<String, Value> {
    pynenc::trigger_arguments([("group", json!(group)), ("label", json!(label))])
}

/// The labels recorded in `group`, counted.
fn labels(group: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (label, _) in events_of(group) {
        *out.entry(label).or_default() += 1;
    }
    out
}

/// Waits for every invocation of `reaction` in `app` to end; returns how
/// many there are.
async fn run_reactions(app: &pynenc::Pynenc) -> usize {
    let ids = ids_of(app, reaction::task().task_id()).await;
    for id in &ids {
        ok(
            ok(app.invocation(id).await, "handle").result().await,
            "reaction",
        );
    }
    ids.len()
}

/// Results, errors and statuses of invocations each fire a trigger once
/// per source and status (per attempt for `running` and `retry`), with
/// filters on the result and on the source's arguments, and arguments made
/// from the source.
pub async fn t04_reactions_fire_once_per_source(f: &dyn BackendFactory) {
    let group = crate::unique("t04");
    let flaky_key = crate::unique("t04-flaky");
    let g = group.clone();
    let any = Trigger::on_any_result(
        add::task(),
        reaction::task(),
        (group.clone(), String::new()),
    )
    .named("any sum")
    .arguments_from(move |src: &TriggerSource| {
        let x = src.arguments.get("x").cloned().unwrap_or(Value::Null);
        let r = src.result.clone().unwrap_or(Value::Null);
        Ok(reaction_args(&g, format!("any:{x}={r}")))
    });
    let g = group.clone();
    let big = Trigger::on_result(
        add::task(),
        |r: &i64| *r > 10,
        reaction::task(),
        (group.clone(), String::new()),
    )
    .named("big sum")
    .arguments_from(move |src| {
        Ok(reaction_args(
            &g,
            format!("big:{}", src.result.clone().unwrap_or_default()),
        ))
    });
    let five = Trigger::on_any_result(
        add::task(),
        reaction::task(),
        (group.clone(), "x5".to_string()),
    )
    .named("x is five")
    .when_argument("x", |v| v == &json!(5));
    let g = group.clone();
    let timeout = Trigger::on_exception(
        fail_with::task(),
        &["Timeout"],
        reaction::task(),
        (group.clone(), String::new()),
    )
    .arguments_from(move |src| {
        let e = src
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        Ok(reaction_args(&g, format!("timeout:{e}")))
    });
    let g = group.clone();
    let statuses = Trigger::on_status(
        flaky::task(),
        &[
            InvocationStatus::Running,
            InvocationStatus::Retry,
            InvocationStatus::Success,
        ],
        reaction::task(),
        (group.clone(), String::new()),
    )
    .arguments_from(move |src| {
        Ok(reaction_args(
            &g,
            format!("flaky:{}", src.status.as_lower_str()),
        ))
    });
    let app = ok(
        f.builder("t04")
            .trigger(any)
            .trigger(big)
            .trigger(five)
            .trigger(timeout)
            .trigger(statuses)
            .trigger(
                // an argument kept in the data store is filtered on its value
                Trigger::on_any_result(
                    byte_len::task(),
                    reaction::task(),
                    (group.clone(), "big arg".to_string()),
                )
                .named("big argument")
                .when_argument("data", |v| v.as_str().is_some_and(|d| d.len() == 200_000)),
            )
            .build(),
        "app with reaction triggers",
    );
    let listed = ok(app.triggers().await, "triggers");
    assert_eq!(listed.len(), 6);
    assert!(listed
        .iter()
        .all(|t| t.cron.is_empty() && t.next_tick.is_none()));
    assert!(
        listed
            .iter()
            .any(|t| t.condition
                == format!("on_exception({}: Timeout)", fail_with::task().task_id())),
        "{listed:?}"
    );
    let runner = start_runner(&app, 4);
    for (x, y) in [(1, 2), (5, 7), (20, 1)] {
        ok(
            ok(add::call_on(&app, x, y).await, "add").result().await,
            "sum",
        );
    }
    for kind in ["Timeout", "Other"] {
        let inv = ok(
            fail_with::call_on(&app, kind.to_string(), format!("{kind} happened")).await,
            "fail",
        );
        assert!(inv.result().await.is_err());
    }
    let n = ok(
        ok(flaky::call_on(&app, flaky_key.clone(), 1).await, "flaky")
            .result()
            .await,
        "flaky",
    );
    assert_eq!(n, 2, "flaky failed once, then succeeded");
    let len = ok(
        ok(byte_len::call_on(&app, big_value(200_000)).await, "big")
            .result()
            .await,
        "byte_len",
    );
    assert_eq!(len, 200_000);
    // the reactions were routed before their sources ended: run them all
    let routed = run_reactions(&app).await;
    let expected: BTreeMap<String, usize> = [
        ("any:1=3", 1),
        ("any:5=12", 1),
        ("any:20=21", 1),
        ("big:12", 1),
        ("big:21", 1),
        ("x5", 1),
        ("timeout:Timeout happened", 1),
        ("flaky:running", 2),
        ("flaky:retry", 1),
        ("flaky:success", 1),
        ("big arg", 1),
    ]
    .into_iter()
    .map(|(l, n)| (l.to_string(), n))
    .collect();
    assert_eq!(labels(&group), expected);
    assert_eq!(
        routed,
        expected.values().sum::<usize>(),
        "one invocation per reaction"
    );
    super::finish(&app, runner).await;
}

/// Events: `emit_event` from outside and from a task; the `on_event`
/// triggers whose name and payload filter match each fire once per event,
/// with arguments from the payload; an event is an invocation of the
/// built-in event task.
pub async fn t05_events_fire_their_triggers(f: &dyn BackendFactory) {
    let group = crate::unique("t05");
    let g = group.clone();
    let placed = Trigger::on_event(
        "order.placed",
        reaction::task(),
        (group.clone(), String::new()),
    )
    .named("large orders")
    .when_payload(|p| {
        p.get("total")
            .and_then(Value::as_i64)
            .is_some_and(|t| t > 100)
    })
    .arguments_from(move |src| {
        Ok(reaction_args(
            &g,
            format!("order:{}", src.event_payload("order")),
        ))
    });
    let every = Trigger::on_event(
        "order.placed",
        reaction::task(),
        (group.clone(), "any order".to_string()),
    )
    .named("every order");
    let app = ok(
        f.builder("t05").trigger(placed).trigger(every).build(),
        "app with event triggers",
    );
    let runner = start_runner(&app, 4);
    let mut events = Vec::new();
    for (order, total) in [(1, 50), (2, 150), (3, 300)] {
        events.push(ok(
            app.emit_event("order.placed", json!({"order": order, "total": total}))
                .await,
            "emit",
        ));
    }
    events.push(ok(
        app.emit_event("order.cancelled", json!({"order": 2})).await,
        "emit other",
    ));
    // from inside a task: the task's app emits it
    let from_task = ok(
        ok(
            emit_from_task::call_on(&app, "order.cancelled".into()).await,
            "task",
        )
        .result()
        .await,
        "emitted from a task",
    );
    events.push(ok(from_task.parse(), "event id"));
    for id in &events {
        ok(
            ok(app.invocation(id).await, "event").wait().await,
            "event run",
        );
        let status = ok(app.orchestrator().get_status(id).await, "status");
        assert_eq!(status.status, InvocationStatus::Success);
    }
    assert_eq!(
        ids_of(&app, EVENT_TASK_ID).await,
        events,
        "events are invocations of the event task"
    );
    let routed = run_reactions(&app).await;
    let expected: BTreeMap<String, usize> = [("order:2", 1), ("order:3", 1), ("any order", 3)]
        .into_iter()
        .map(|(l, n)| (l.to_string(), n))
        .collect();
    assert_eq!(labels(&group), expected);
    assert_eq!(routed, 5);
    // a bad event is refused, nothing routed
    let e = app.emit_event(" ", json!(null)).await;
    assert!(matches!(e, Err(PynencError::TaskRouting { .. })), "{e:?}");
    assert_eq!(ids_of(&app, EVENT_TASK_ID).await.len(), events.len());
    super::finish(&app, runner).await;
    assert!(check_histories(&app).await >= 9);
}

/// Reaction triggers that cannot work are refused when the app builds,
/// naming the trigger, the task and what is wrong.
pub async fn t06_bad_reactions_are_refused_at_build(f: &dyn BackendFactory) {
    let refused = |t: Trigger| match f.builder("t06").trigger(t).build() {
        Err(e @ PynencError::InvalidTrigger { .. }) => e.to_string(),
        Err(other) => panic!("expected InvalidTrigger, got {other}"),
        Ok(_) => panic!("a bad trigger was accepted"),
    };
    let args = ("g".to_string(), "l".to_string());
    let e = refused(Trigger::on_status(
        add::task(),
        &[InvocationStatus::Pending],
        reaction::task(),
        args.clone(),
    ));
    assert!(
        e.contains("on_status") && e.contains("pending") && e.contains(reaction::task().task_id()),
        "{e}"
    );
    let e = refused(
        Trigger::on_any_result(add::task(), reaction::task(), args.clone())
            .named("filter on z")
            .when_argument("z", |_| true),
    );
    assert!(
        e.contains("filter on z") && e.contains("'z'") && e.contains(add::task().task_id()),
        "{e}"
    );
    let e = refused(Trigger::on_event("", reaction::task(), args.clone()));
    assert!(e.contains("event name"), "{e}");
    let e = refused(Trigger::on_exception(
        add::task(),
        &[""],
        reaction::task(),
        args.clone(),
    ));
    assert!(e.contains("empty error kind"), "{e}");
    let e = refused(
        Trigger::cron("* * * * * *", reaction::task(), args.clone())
            .arguments_from(|_| Ok(Map::new())),
    );
    assert!(e.contains("no source"), "{e}");
    let e =
        refused(Trigger::on_any_result(add::task(), reaction::task(), args.clone()).catch_up(3));
    assert!(e.contains("catch_up is for cron triggers"), "{e}");
    let only_group = pynenc::Arguments::new()
        .with(pynenc::Serializer::Json, "group", &"g")
        .unwrap_or_default();
    let e = refused(Trigger::on_any_result(
        add::task(),
        reaction::task(),
        only_group,
    ));
    assert!(e.contains("label"), "{e}");
}

/// The triggers a runner declares are stored: a program of the app that
/// does not declare them (a command line, a monitor) lists them, with the
/// cron trigger's recent firings.
pub async fn t08_triggers_are_stored_for_every_process(f: &dyn BackendFactory) {
    let group = crate::unique("t08");
    let declaring = ok(
        f.builder("t08")
            .config_value("triggers.evaluate_interval_seconds", 0.1)
            .trigger(
                Trigger::cron(
                    "* * * * * *",
                    reaction::task(),
                    (group.clone(), "tick".to_string()),
                )
                .named("t08 every second"),
            )
            .trigger(
                Trigger::on_exception(
                    fail_with::task(),
                    &["Timeout"],
                    reaction::task(),
                    (group.clone(), "timeout".to_string()),
                )
                .named("t08 timeouts"),
            )
            .build(),
        "app declaring triggers",
    );
    // stored when the app is built (in the background), before any runner
    let other = crate::new_app(f, "t08", &[]);
    let mut stored = Vec::new();
    for _ in 0..100 {
        stored = ok(other.triggers().await, "stored triggers");
        if stored.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(stored.len(), 2, "{stored:?}");
    let runner = start_runner(&declaring, 2);
    // until a tick fired and ran
    let mut fired = Vec::new();
    for _ in 0..100 {
        fired = ids_of(&declaring, reaction::task().task_id()).await;
        if !fired.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    ok(
        ok(declaring.invocation(&fired[0]).await, "tick")
            .result()
            .await,
        "tick ran",
    );
    let listed = ok(other.triggers().await, "stored triggers");
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["t08 every second", "t08 timeouts"]);
    assert!(listed
        .iter()
        .all(|t| !t.declared_here && t.declared_at.is_some()));
    let cron = &listed[0];
    assert_eq!(cron.cron, "* * * * * *");
    assert_eq!(cron.condition, "cron(* * * * * *)");
    assert_eq!(cron.task_id, reaction::task().task_id());
    let args: Value = ok(
        serde_json::from_str(cron.arguments.as_deref().unwrap_or("null")),
        "arguments",
    );
    assert_eq!(args, json!({"group": group, "label": "tick"}));
    assert!(cron.next_tick.is_some());
    // the recent ticks that fired are invocations of the trigger's task
    let all = ids_of(&other, reaction::task().task_id()).await;
    let seen: Vec<_> = cron.recent.iter().filter(|f| f.status.is_some()).collect();
    assert!(!seen.is_empty(), "{:?}", cron.recent);
    assert!(
        seen.iter().all(|f| all.contains(&f.invocation_id)),
        "{:?}",
        cron.recent
    );
    let reaction = &listed[1];
    assert_eq!(
        reaction.condition,
        format!("on_exception({}: Timeout)", fail_with::task().task_id())
    );
    assert!(reaction.cron.is_empty() && reaction.next_tick.is_none() && reaction.recent.is_empty());
    // the declaring program sees its own, declared here and stored
    let own = ok(declaring.triggers().await, "own triggers");
    assert_eq!(own.len(), 2);
    assert!(own
        .iter()
        .all(|t| t.declared_here && t.declared_at.is_some()));
    super::finish(&declaring, runner).await;
}

/// `any_of` fires once per source meeting any condition; `all_of` fires
/// when the last of its conditions is met while the others were met within
/// the window, once per set of sources.
pub async fn t09_any_of_and_all_of(f: &dyn BackendFactory) {
    use pynenc::When;
    let group = crate::unique("t09");
    let g = group.clone();
    let any = Trigger::any_of(
        vec![
            When::any_result(add::task()),
            When::exception(fail_with::task(), &["Timeout"]),
        ],
        reaction::task(),
        (group.clone(), String::new()),
    )
    .named("t09 any")
    .arguments_from(move |src| {
        let task = src
            .task_id
            .rsplit("::")
            .next()
            .unwrap_or_default()
            .to_string();
        Ok(reaction_args(
            &g,
            format!("any:{task}:{}", src.status.as_lower_str()),
        ))
    });
    let g = group.clone();
    let all = Trigger::all_of(
        vec![
            When::any_result(add::task()).when_argument("x", |v| v == &json!(100)),
            When::event("go").when_payload(|p| p["ok"] == json!(true)),
        ],
        std::time::Duration::from_secs(60),
        reaction::task(),
        (group.clone(), String::new()),
    )
    .named("t09 all")
    .arguments_from(move |src| Ok(reaction_args(&g, format!("all:{}", src.task_id))));
    let app = ok(
        f.builder("t09").trigger(any).trigger(all).build(),
        "app with any_of and all_of",
    );
    let listed = ok(app.triggers().await, "triggers");
    assert!(
        listed
            .iter()
            .any(|t| t.condition.starts_with("all_of(") && t.condition.contains("within 60s")),
        "{listed:?}"
    );
    let runner = start_runner(&app, 4);
    let run_add = |x: i64| {
        let app = app.clone();
        async move {
            ok(
                ok(add::call_on(&app, x, 1).await, "add").result().await,
                "sum",
            )
        }
    };
    run_add(1).await;
    let failed = ok(
        fail_with::call_on(&app, "Timeout".into(), "late".into()).await,
        "fail",
    );
    assert!(failed.result().await.is_err());
    // an event with the wrong payload, then before the other condition
    for payload in [json!({"ok": false}), json!({"ok": true})] {
        let id = ok(app.emit_event("go", payload).await, "emit");
        ok(
            ok(app.invocation(&id).await, "event").wait().await,
            "event runs",
        );
    }
    assert_eq!(
        run_reactions(&app).await,
        2,
        "only the any_of reactions so far"
    );
    // the add of x = 100 completes the set with the event before it
    run_add(100).await;
    // a second event makes a second set with that add
    let id = ok(app.emit_event("go", json!({"ok": true})).await, "emit");
    ok(
        ok(app.invocation(&id).await, "event").wait().await,
        "event runs",
    );
    let routed = run_reactions(&app).await;
    let expected: BTreeMap<String, usize> = [
        ("any:add:success".to_string(), 2),
        ("any:fail_with:failed".to_string(), 1),
        (format!("all:{}", add::task().task_id()), 1),
        (format!("all:{EVENT_TASK_ID}"), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(labels(&group), expected);
    assert_eq!(routed, 5);
    super::finish(&app, runner).await;
}
