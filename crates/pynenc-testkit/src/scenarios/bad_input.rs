//! Bad input: a clear error, and nothing else lost.

use std::time::Duration;

use pynenc::model::RouteRequest;
use pynenc::{Arguments, Call, InvocationStatus, PynencError, RunnerId};
use serde_json::json;

use crate::tasks::*;
use crate::{
    assert_add_works, check_histories, eventually, expect_task_failed, new_app, ok, start_runner,
    BackendFactory,
};

use super::finish;

fn raw_request(app: &pynenc::Pynenc, call: Call) -> RouteRequest {
    RouteRequest {
        print_arguments: app.conf().print_arguments,
        ..RouteRequest::new(call, app.external_runner_id().clone())
    }
}

/// Bad input: a queued invocation of a task this process does not know fails clearly; other work finishes.
pub async fn bad_unregistered_task(f: &dyn BackendFactory) {
    let app = new_app(f, "bad1", &[]);
    let call = Call::new("no_such_crate::missing_task", Arguments::new());
    let outcome = ok(
        app.orchestrator()
            .route_calls(vec![raw_request(&app, call)])
            .await,
        "route",
    );
    let id = outcome[0].record().invocation_id;
    let runner = start_runner(&app, 2);
    let good = ok(add::call_on(&app, 1, 1).await, "good");
    assert_eq!(ok(good.result().await, "good"), 2);
    let done = eventually(Duration::from_secs(10), || async {
        app.orchestrator()
            .get_status(&id)
            .await
            .map(|s| s.status.is_final())
            .unwrap_or(false)
    })
    .await;
    assert!(done, "the unknown task's invocation never ended");
    let out = ok(app.state_backend().get_outcomes(&[id]).await, "outcome").remove(0);
    assert_eq!(out.status, InvocationStatus::Failed);
    let err = out.error.unwrap_or_else(|| panic!("no error stored"));
    assert_eq!(err.kind, "TaskNotRegisteredError");
    assert!(
        err.message.contains("no_such_crate::missing_task"),
        "{}",
        err.message
    );
    assert_add_works(&app, 2, 2).await;
    finish(&app, runner).await;
}

/// Bad input: an argument that does not decode fails the invocation, naming the argument.
pub async fn bad_undecodable_payload(f: &dyn BackendFactory) {
    let app = new_app(f, "bad2", &[]);
    let mut args = Arguments::new();
    args.insert_serialized("x", "\"not a number\"");
    args.insert_serialized("y", "{broken json");
    let inv = ok(add::task().call_on(&app, args).await, "route");
    let runner = start_runner(&app, 2);
    let error = expect_task_failed(&inv, "a decoding failure").await;
    assert_eq!(error.kind, "SerializationError");
    assert!(error.message.contains("argument 'x'"), "{}", error.message);
    assert!(
        error.message.contains(inv.invocation_id().as_str()),
        "{}",
        error.message
    );
    assert_add_works(&app, 3, 3).await;
    finish(&app, runner).await;
}

/// Bad input: a panicking task fails only its invocation.
pub async fn bad_panicking_task(f: &dyn BackendFactory) {
    let app = new_app(f, "bad3", &[]);
    let runner = start_runner(&app, 2);
    let p = ok(panics::call_on(&app, "boom".into()).await, "panics");
    let ps = ok(
        panics_sync::call_on(&app, "sync boom".into()).await,
        "panics_sync",
    );
    let good = ok(add::call_on(&app, 5, 5).await, "good");
    for (inv, msg) in [(&p, "boom"), (&ps, "sync boom")] {
        let error = expect_task_failed(inv, "a panic failure").await;
        assert_eq!(error.kind, pynenc::model::PANIC_KIND);
        assert!(error.message.contains(msg), "{}", error.message);
    }
    assert_eq!(ok(good.result().await, "good"), 10);
    assert_add_works(&app, 1, 5).await;
    finish(&app, runner).await;
}

/// Bad input: an illegal transition is an error and changes nothing.
pub async fn bad_illegal_transition_changes_nothing(f: &dyn BackendFactory) {
    let app = new_app(f, "bad4", &[]);
    let inv = ok(add::call_on(&app, 1, 2).await, "route");
    let id = *inv.invocation_id();
    let (someone, runner_a, runner_b) = (
        RunnerId::from("someone"),
        RunnerId::from("runner-a"),
        RunnerId::from("runner-b"),
    );
    let before = ok(app.state_backend().get_history(&id).await, "history");
    let orch = app.orchestrator();
    let err = orch
        .set_status(&id, InvocationStatus::Success, &someone, None)
        .await
        .expect_err("REGISTERED -> SUCCESS is illegal");
    let err = PynencError::from(err);
    assert!(matches!(err, PynencError::StatusTransition { .. }), "{err}");
    let err = orch
        .finish(
            &id,
            &someone,
            pynenc::model::RunOutcome::Success("3".into()),
        )
        .await
        .expect_err("finish without owning it");
    assert!(
        err.to_string().contains("not allowed") || err.to_string().contains("owned"),
        "{err}"
    );
    // a PENDING invocation owned by one runner cannot be run by another
    let picked = ok(orch.get_invocations_to_run(&runner_a, 1).await, "pick");
    assert_eq!(picked.len(), 1);
    let err = orch
        .set_status(&id, InvocationStatus::Running, &runner_b, None)
        .await
        .expect_err("not the owner");
    assert!(err.to_string().contains("runner-a"), "{err}");
    let after = ok(app.state_backend().get_history(&id).await, "history");
    assert_eq!(
        after.len(),
        before.len() + 1,
        "only the PENDING step was recorded"
    );
    let out = ok(
        app.state_backend()
            .get_outcomes(std::slice::from_ref(&id))
            .await,
        "outcome",
    )
    .remove(0);
    assert_eq!(out.result, None, "the refused finish stored no result");
    ok(
        orch.set_status(&id, InvocationStatus::Running, &runner_a, None)
            .await,
        "run",
    );
    ok(
        orch.finish(
            &id,
            &runner_a,
            pynenc::model::RunOutcome::Success("3".into()),
        )
        .await,
        "finish",
    );
    assert_eq!(ok(inv.result().await, "result"), 3);
    assert!(check_histories(&app).await > 0);
}

/// Bad input: an argument over `max_argument_bytes` is refused with its name and size.
pub async fn bad_oversized_argument(f: &dyn BackendFactory) {
    let app = new_app(f, "bad5", &[("max_argument_bytes", json!(1000))]);
    let err = byte_len::call_on(&app, "y".repeat(5000))
        .await
        .expect_err("too big");
    let text = err.to_string();
    assert!(
        text.contains("argument 'data'") && text.contains("5002 bytes") && text.contains("1000"),
        "{text}"
    );
    assert!(
        ok(app.state_backend().list_invocation_ids().await, "list").is_empty(),
        "nothing routed"
    );
}

/// Bad input: arguments that do not match the task's parameters are refused
/// when the call is routed, naming the unknown and missing ones.
pub async fn bad_argument_names(f: &dyn BackendFactory) {
    let app = new_app(f, "bad6", &[]);
    let ser = app.serializer();
    let unknown = ok(
        Arguments::new()
            .with(ser, "x", &1)
            .and_then(|a| a.with(ser, "y", &2))
            .and_then(|a| a.with(ser, "z", &3)),
        "args",
    );
    let err = add::task()
        .call_on(&app, unknown)
        .await
        .expect_err("z is not a parameter");
    match &err {
        PynencError::InvalidArguments {
            task_id,
            unknown,
            missing,
            parameters,
        } => {
            assert_eq!(task_id, add::DEFINITION.task_id);
            assert_eq!(unknown, &vec!["z".to_string()]);
            assert!(missing.is_empty());
            assert_eq!(parameters, &vec!["x".to_string(), "y".to_string()]);
        }
        other => panic!("expected InvalidArguments, got {other}"),
    }
    assert!(err.to_string().contains("unknown arguments z"), "{err}");
    let missing = ok(Arguments::new().with(ser, "x", &1), "args");
    let err = add::task()
        .call_on(&app, missing)
        .await
        .expect_err("y is missing");
    assert!(
        err.to_string().contains("missing arguments y")
            && err.to_string().contains("parameters: x, y"),
        "{err}"
    );
    let group = add::task()
        .parallelize_on(&app, vec![ok(Arguments::new().with(ser, "w", &1), "args")])
        .await;
    assert!(matches!(group, Err(PynencError::InvalidArguments { .. })));
    assert!(
        ok(app.state_backend().list_invocation_ids().await, "list").is_empty(),
        "nothing routed"
    );
}
