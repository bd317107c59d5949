//! The query API: listings with every filter and cursor pages, counts,
//! the queue, families and waits, runners, handles by id and calls by name.

use std::collections::HashSet;
use std::time::Duration;

use pynenc::model::{InvocationQuery, Order, TimeRange};
use pynenc::{InvocationId, InvocationStatus, PynencError, TaskId, Timestamp};
use pynenc_operate::{parse_cursor, parse_statuses, Operate, OperateError};
use serde_json::json;

use crate::tasks::*;
use crate::{check_histories, new_app, ok, start_runner, BackendFactory};

use super::finish;

/// Lists, pages and counts: every filter, both orders, a cursor that stays
/// right while invocations are added, counts per task and status and of
/// failures per error kind.
pub async fn q01_list_filters_pages_and_counts(f: &dyn BackendFactory) {
    let app = new_app(f, "q01", &[]);
    let inspect = app.inspect();
    let before = Timestamp::now();
    let adds = ok(
        add::parallelize_on(&app, (0..25).map(|i| (i, 1))).await,
        "adds",
    );
    let fails: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..4 {
            let kind = if i % 2 == 0 { "KindA" } else { "KindB" };
            v.push(ok(
                fail_with::call_on(&app, kind.into(), format!("no {i}")).await,
                "fail",
            ));
        }
        v
    };
    // nothing ran yet: all REGISTERED, oldest first in creation order
    let all = ok(
        inspect
            .list_all(
                &InvocationQuery {
                    order: Order::OldestFirst,
                    limit: 10,
                    ..InvocationQuery::new()
                },
                1000,
            )
            .await,
        "list all",
    );
    let mut expected: Vec<InvocationId> = adds
        .invocations()
        .iter()
        .map(|i| *i.invocation_id())
        .collect();
    expected.extend(fails.iter().map(|i| *i.invocation_id()));
    let got: Vec<InvocationId> = all.iter().map(|s| s.invocation_id).collect();
    assert_eq!(got, expected, "oldest first is creation order");
    assert!(all.iter().all(|s| s.status == InvocationStatus::Registered));
    assert!(all.iter().all(|s| s.created_at >= before));

    // newest first, pages of 7, while new invocations are added between pages
    let mut seen = Vec::new();
    let mut query = InvocationQuery {
        task_ids: vec![TaskId::from(add::task().task_id())],
        limit: 7,
        ..InvocationQuery::new()
    };
    loop {
        let page = ok(inspect.list(&query).await, "page");
        assert!(page.items.len() <= 7);
        seen.extend(page.items.iter().map(|s| s.invocation_id));
        ok(add::call_on(&app, 100, 100).await, "added between pages");
        match page.next {
            Some(c) => query.after = Some(ok(parse_cursor(&c.to_string()), "cursor")),
            None => break,
        }
    }
    let mut newest_first: Vec<InvocationId> = adds
        .invocations()
        .iter()
        .map(|i| *i.invocation_id())
        .collect();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "no duplicate, no skip, newest first");

    // run everything, then filter by status, task and error kind
    let runner = start_runner(&app, 4);
    ok(adds.results().await, "adds ran");
    for inv in &fails {
        assert!(inv.result().await.is_err());
    }
    let failed = ok(
        inspect
            .list(&InvocationQuery {
                statuses: ok(parse_statuses("FAILED"), "status"),
                ..InvocationQuery::new()
            })
            .await,
        "failed",
    );
    let failed_ids: HashSet<InvocationId> = failed.items.iter().map(|s| s.invocation_id).collect();
    let fail_ids: HashSet<InvocationId> = fails.iter().map(|i| *i.invocation_id()).collect();
    assert_eq!(failed_ids, fail_ids);
    assert!(failed
        .items
        .iter()
        .all(|s| s.ended_at.is_some() && s.retries == 0));

    // ended range: everything ended after `before`, nothing before it
    let ended_late = ok(
        inspect
            .list(&InvocationQuery {
                ended: TimeRange {
                    from: Some(before),
                    to: None,
                },
                limit: 1000,
                ..InvocationQuery::new()
            })
            .await,
        "ended",
    );
    assert!(ended_late.items.len() >= 29, "{}", ended_late.items.len());
    assert!(ended_late
        .items
        .iter()
        .all(|s| s.status.is_final() && s.ended_at.is_some()));
    let ended_early = ok(
        inspect
            .list(&InvocationQuery {
                ended: TimeRange {
                    from: None,
                    to: Some(before),
                },
                ..InvocationQuery::new()
            })
            .await,
        "ended early",
    );
    assert!(ended_early.items.is_empty());
    // created range after everything: empty
    let later = Timestamp::from_micros(Timestamp::now().as_micros() + 1);
    let none = ok(
        inspect
            .list(&InvocationQuery {
                created: TimeRange {
                    from: Some(later),
                    to: None,
                },
                ..InvocationQuery::new()
            })
            .await,
        "created later",
    );
    assert!(none.items.is_empty());

    // call id: the two calls of add(100, 100) made between pages
    let call_id = adds.invocations()[0].call_id();
    let same = ok(
        inspect
            .list(&InvocationQuery {
                call_id: Some(call_id.clone()),
                ..InvocationQuery::new()
            })
            .await,
        "by call",
    );
    assert_eq!(same.items.len(), 1);
    assert_eq!(same.items[0].call_id, call_id);

    // counts
    let counts = ok(inspect.counts(&[]).await, "counts");
    assert_eq!(counts.of(InvocationStatus::Failed), 4);
    let added_later = seen.len().div_ceil(7) as u64;
    assert_eq!(
        counts.of(InvocationStatus::Success)
            + counts.of(InvocationStatus::Registered)
            + counts.of(InvocationStatus::Pending)
            + counts.of(InvocationStatus::Running),
        25 + added_later
    );
    let per_task = ok(
        inspect
            .counts(&[TaskId::from(fail_with::task().task_id())])
            .await,
        "task counts",
    );
    assert_eq!(per_task.total(), 4);
    let kinds = ok(inspect.failed_by_kind(&[]).await, "kinds");
    let mut by_kind: Vec<(String, u64)> = kinds.iter().map(|k| (k.kind.clone(), k.count)).collect();
    by_kind.sort();
    assert_eq!(by_kind, vec![("KindA".into(), 2), ("KindB".into(), 2)]);
    finish(&app, runner).await;
}

/// The seed's `get_existing_invocations`: by task, key arguments and status.
pub async fn q02_existing_invocations_by_key_arguments(f: &dyn BackendFactory) {
    let app = new_app(f, "q02", &[]);
    let a = ok(reg_keys_reuse::call_on(&app, "alpha".into(), 1).await, "a");
    ok(reg_keys_reuse::call_on(&app, "beta".into(), 2).await, "b");
    let key = vec![("k".to_string(), ok(serde_json::to_string("alpha"), "json"))];
    let found = ok(
        app.inspect()
            .get_existing_invocations(
                &TaskId::from(reg_keys_reuse::task().task_id()),
                &key,
                &[InvocationStatus::Registered],
                100,
            )
            .await,
        "existing",
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].invocation_id, *a.invocation_id());
    let none = ok(
        app.inspect()
            .get_existing_invocations(
                &TaskId::from(reg_keys_reuse::task().task_id()),
                &key,
                &[InvocationStatus::Success],
                100,
            )
            .await,
        "existing success",
    );
    assert!(none.is_empty());
    let runner = start_runner(&app, 2);
    ok(a.result().await, "ran");
    finish(&app, runner).await;
}

/// Families: children of a parent, waits of a waiting parent, the other
/// invocations of a call; the queue's depth and oldest; handles by id.
pub async fn q03_family_waits_queue_and_handles(f: &dyn BackendFactory) {
    let app = new_app(f, "q03", &[]);
    let queued = ok(
        add::parallelize_on(&app, (0..3).map(|i| (i, i))).await,
        "queued",
    );
    let queue = ok(app.inspect().queue().await, "queue");
    assert_eq!(queue.depth, 3);
    assert_eq!(
        queue.oldest.map(|(id, _)| id),
        Some(*queued.invocations()[0].invocation_id())
    );

    let runner = start_runner(&app, 4);
    ok(queued.results().await, "queued ran");
    let parent = ok(fan_out::call_on(&app, 5).await, "parent");
    assert_eq!(
        ok(parent.result().await, "fan out"),
        (0..5).map(|i| i * 2).sum::<i64>()
    );
    let family = ok(app.inspect().family(parent.invocation_id()).await, "family");
    assert_eq!(family.children.items.len(), 5);
    assert!(family
        .children
        .items
        .iter()
        .all(|c| c.parent_invocation_id == Some(*parent.invocation_id())));
    assert!(family.waiting_on.is_empty(), "final: waits are gone");
    assert_eq!(family.invocation.status, InvocationStatus::Success);
    let child = family.children.items[0].invocation_id;
    let child_family = ok(app.inspect().family(&child).await, "child family");
    assert_eq!(child_family.parent, Some(*parent.invocation_id()));

    // a handle by id, untyped (JSON) and typed
    let handle = ok(app.invocation(parent.invocation_id()).await, "by id");
    assert_eq!(ok(handle.result().await, "json result"), json!(20));
    let typed = ok(
        app.invocation_as::<i64>(parent.invocation_id()).await,
        "typed",
    );
    assert_eq!(ok(typed.result().await, "typed result"), 20);
    assert_eq!(ok(typed.wait().await, "wait"), InvocationStatus::Success);
    let missing = InvocationId::time_ordered();
    assert!(matches!(
        app.invocation(&missing).await,
        Err(PynencError::InvocationNotFound { .. })
    ));
    assert!(matches!(
        app.inspect().family(&missing).await,
        Err(OperateError::NotFound(id)) if id == missing
    ));
    finish(&app, runner).await;
}

/// A parent waiting on a slow child: the blocking graph shows both ends.
pub async fn q04_blocking_graph(f: &dyn BackendFactory) {
    let app = new_app(f, "q04", &[]);
    let runner = start_runner(&app, 2);
    let parent = ok(add_via_slow_child::call_on(&app, 2, 3, 400).await, "parent");
    let paused = ok(
        parent
            .wait_for_status(&[InvocationStatus::Paused], Duration::from_secs(10))
            .await,
        "paused",
    );
    assert_eq!(paused, InvocationStatus::Paused);
    let family = ok(app.inspect().family(parent.invocation_id()).await, "family");
    assert_eq!(family.waiting_on.len(), 1, "{family:?}");
    let child = family.waiting_on[0];
    let child_family = ok(app.inspect().family(&child).await, "child");
    assert_eq!(child_family.waited_by, vec![*parent.invocation_id()]);
    assert_eq!(ok(parent.result().await, "result"), 5);
    let after = ok(app.inspect().family(&child).await, "child after");
    assert!(after.waited_by.is_empty(), "waits end with the child");
    finish(&app, runner).await;
}

/// Runners register, report what they run, and leave when they stop.
pub async fn q05_runners(f: &dyn BackendFactory) {
    let app = new_app(
        f,
        "q05",
        &[("runner.heartbeat_interval_seconds", json!(0.05))],
    );
    let runner = start_runner(&app, 3);
    let inv = ok(add::call_on(&app, 1, 2).await, "call");
    ok(inv.result().await, "ran");
    let listed = crate::eventually(Duration::from_secs(10), || async {
        app.inspect()
            .runners()
            .await
            .map(|r| r.iter().any(|v| v.alive && v.info.slots == 3))
            .unwrap_or(false)
    })
    .await;
    assert!(listed, "the runner is not listed as alive with its 3 slots");
    let views = ok(app.inspect().runners().await, "runners");
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].info.pid, std::process::id());
    ok(runner.stop().await, "stop");
    let views = ok(app.inspect().runners().await, "runners after stop");
    assert!(
        views.is_empty(),
        "a runner that stopped cleanly left: {views:?}"
    );
    assert!(check_histories(&app).await > 0);
}

/// Calls by task name with JSON arguments, and their bad input.
pub async fn q06_call_by_name(f: &dyn BackendFactory) {
    let app = new_app(f, "q06", &[]);
    let runner = start_runner(&app, 2);
    let inv = ok(
        app.call_by_name_json(add::task().task_id(), r#"{"x": 20, "y": 22}"#)
            .await,
        "by name",
    );
    assert_eq!(ok(inv.result().await, "result"), json!(42));
    let before = ok(app.inspect().counts(&[]).await, "counts").total();
    let unknown = app.call_by_name_json("no::such_task", "{}").await;
    assert!(
        matches!(unknown, Err(PynencError::TaskNotRegistered { .. })),
        "{unknown:?}"
    );
    let bad_arg = app
        .call_by_name_json(add::task().task_id(), r#"{"x": 1, "z": 2}"#)
        .await;
    match bad_arg {
        Err(PynencError::InvalidArguments {
            unknown, missing, ..
        }) => {
            assert_eq!(unknown, vec!["z".to_string()]);
            assert_eq!(missing, vec!["y".to_string()]);
        }
        other => panic!("expected InvalidArguments, got {other:?}"),
    }
    let not_object = app.call_by_name_json(add::task().task_id(), "[1, 2]").await;
    assert!(
        matches!(not_object, Err(PynencError::TaskRouting { .. })),
        "{not_object:?}"
    );
    let after = ok(app.inspect().counts(&[]).await, "counts").total();
    assert_eq!(before, after, "bad calls routed nothing");
    finish(&app, runner).await;
}

/// Bad queries are clear errors naming what was wrong.
pub async fn q07_bad_queries(f: &dyn BackendFactory) {
    let app = new_app(f, "q07", &[]);
    ok(add::call_on(&app, 1, 1).await, "call");
    let inspect = app.inspect();
    let err = inspect
        .list(&InvocationQuery {
            task_ids: vec![TaskId::from("no::such_task")],
            ..InvocationQuery::new()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, OperateError::Invalid { what: "task", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no::such_task"), "{err}");
    let err = inspect
        .list(&InvocationQuery {
            limit: 1_000_000,
            ..InvocationQuery::new()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, OperateError::Invalid { what: "limit", .. }),
        "{err}"
    );
    let err = parse_cursor("c1.not-an-id").unwrap_err();
    assert!(
        matches!(err, OperateError::Invalid { what: "cursor", .. }),
        "{err}"
    );
    let err = parse_statuses("success,finished").unwrap_err();
    assert!(err.to_string().contains("finished"), "{err}");
    let now = Timestamp::now();
    let err = inspect
        .list(&InvocationQuery {
            created: TimeRange {
                from: Some(now),
                to: Some(now),
            },
            ..InvocationQuery::new()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OperateError::Invalid {
                what: "created",
                ..
            }
        ),
        "{err}"
    );
    let err = inspect
        .list(&InvocationQuery {
            key_arguments: vec![("x".into(), "1".into())],
            ..InvocationQuery::new()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OperateError::Invalid {
                what: "key_arguments",
                ..
            }
        ),
        "{err}"
    );
    // the statuses parse in either case
    assert_eq!(
        ok(parse_statuses("success, FAILED"), "statuses"),
        vec![InvocationStatus::Success, InvocationStatus::Failed]
    );
    let runner = start_runner(&app, 1);
    finish(&app, runner).await;
}

/// Waiting for a status: a timeout names the status it was in, a wait is
/// woken when the status is reached, and a status that can no longer come
/// is an error naming the final one.
pub async fn q08_wait_for_status(f: &dyn BackendFactory) {
    let app = new_app(f, "q08", &[]);
    let inv = ok(
        exclusive::call_on(&app, "q08".into(), "slow".into(), 300).await,
        "call",
    );
    let started = std::time::Instant::now();
    match inv
        .wait_for_status(&[InvocationStatus::Running], Duration::from_millis(150))
        .await
    {
        Err(PynencError::WaitTimeout {
            status, timeout_ms, ..
        }) => {
            assert_eq!(status, InvocationStatus::Registered);
            assert_eq!(timeout_ms, 150);
        }
        other => panic!("expected a timeout with no runner, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(150));
    let waiter = {
        let inv = inv.clone();
        tokio::spawn(async move {
            inv.wait_for_status(&[InvocationStatus::Running], Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "no runner yet: still waiting");
    let runner = start_runner(&app, 1);
    let reached = ok(waiter.await.expect("joined"), "running");
    assert_eq!(reached, InvocationStatus::Running);
    match inv
        .wait_for_status(&[InvocationStatus::Paused], Duration::from_secs(20))
        .await
    {
        Err(PynencError::StatusUnreachable {
            status, expected, ..
        }) => {
            assert_eq!(status, InvocationStatus::Success);
            assert_eq!(expected, vec![InvocationStatus::Paused]);
        }
        other => panic!("expected the status to be unreachable, got {other:?}"),
    }
    let done = ok(
        inv.wait_for_status(
            &[InvocationStatus::Success, InvocationStatus::Failed],
            Duration::from_secs(1),
        )
        .await,
        "final",
    );
    assert_eq!(done, InvocationStatus::Success);
    finish(&app, runner).await;
}

/// The apps of a backend: an app is listed once it routed a call, and no
/// longer after its purge.
pub async fn q09_app_ids(f: &dyn BackendFactory) {
    let app = new_app(f, "q09", &[]);
    let me = app.app_id().to_string();
    let before = ok(app.inspect().apps().await, "apps before routing");
    assert!(
        !before.contains(&me),
        "{me} listed before routing: {before:?}"
    );
    let runner = start_runner(&app, 1);
    let inv = ok(add::call_on(&app, 1, 2).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 3);
    // statuses by id in one read; an unknown id is none, in its place
    let queued = ok(add::call_on(&app, 5, 5).await, "queued");
    let unknown = InvocationId::random();
    let found = ok(
        app.queries()
            .statuses(&[*inv.invocation_id(), unknown, *queued.invocation_id()])
            .await,
        "statuses",
    );
    assert_eq!(found[0], Some(InvocationStatus::Success));
    assert_eq!(found[1], None);
    assert!(found[2].is_some(), "{found:?}");
    assert!(ok(app.queries().statuses(&[]).await, "none").is_empty());
    let listed = ok(app.inspect().apps().await, "apps after routing");
    assert!(listed.contains(&me), "{me} not listed: {listed:?}");
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "app ids come sorted");
    runner.stop().await.ok();
    ok(app.purge().await, "purge");
    let after = ok(app.inspect().apps().await, "apps after purge");
    assert!(
        !after.contains(&me),
        "{me} still listed after purge: {after:?}"
    );
    // routing again lists it again
    ok(add::call_on(&app, 2, 2).await, "call after purge");
    let again = ok(app.inspect().apps().await, "apps after routing again");
    assert!(again.contains(&me), "{me} not listed again: {again:?}");
    ok(app.purge().await, "purge again");
}
