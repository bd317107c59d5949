//! Errors and retries.

use pynenc::{InvocationStatus, PynencError};

use crate::tasks::{self, *};
use crate::{new_app, ok, start_runner, statuses, unique, BackendFactory};

use super::finish;

/// 2. A retriable error once with `max_retries = 2` succeeds and sees one retry.
pub async fn s02_retry_then_success(f: &dyn BackendFactory) {
    let app = new_app(f, "s02", &[]);
    let runner = start_runner(&app, 2);
    let key = unique("flaky");
    let inv = ok(flaky::call_on(&app, key.clone(), 1).await, "call");
    assert_eq!(ok(inv.result().await, "result"), 2, "second run succeeds");
    assert_eq!(ok(inv.num_retries().await, "retries"), 1);
    let st = statuses(&inv).await;
    assert_eq!(
        st.iter().filter(|s| **s == InvocationStatus::Retry).count(),
        1,
        "{st:?}"
    );
    assert_eq!(
        st.iter()
            .filter(|s| **s == InvocationStatus::Running)
            .count(),
        2,
        "{st:?}"
    );
    finish(&app, runner).await;
}

/// 2b. Past `max_retries` the invocation ends FAILED.
pub async fn s02b_retries_exhausted_fail(f: &dyn BackendFactory) {
    let app = new_app(f, "s02b", &[]);
    let runner = start_runner(&app, 2);
    let key = unique("flaky");
    let inv = ok(flaky::call_on(&app, key.clone(), 10).await, "call");
    let err = inv.result().await.expect_err("must fail");
    match &err {
        PynencError::TaskFailed { error, .. } => assert_eq!(error.kind, "Flaky"),
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(ok(inv.num_retries().await, "retries"), 2);
    assert_eq!(tasks::runs_of(&key), 3, "one run plus two retries");
    assert_eq!(ok(inv.status().await, "status"), InvocationStatus::Failed);
    // the retry error always retries
    let key2 = unique("retry");
    let inv2 = ok(always_retry::call_on(&app, key2.clone()).await, "call");
    let err2 = inv2.result().await.expect_err("must fail");
    assert!(
        matches!(err2, PynencError::TaskFailed { ref error, .. } if error.is_retry()),
        "{err2}"
    );
    assert_eq!(tasks::runs_of(&key2), 3);
    finish(&app, runner).await;
}

/// 3. A non-retriable error comes back with its kind and message.
pub async fn s03_error_kind_and_message(f: &dyn BackendFactory) {
    let app = new_app(f, "s03", &[]);
    let runner = start_runner(&app, 2);
    let inv = ok(
        fail_with::call_on(&app, "ValueError".into(), "x must be positive".into()).await,
        "call",
    );
    match inv.result().await {
        Err(PynencError::TaskFailed {
            task_id,
            invocation_id,
            error,
        }) => {
            assert_eq!(error.kind, "ValueError");
            assert_eq!(error.message, "x must be positive");
            assert_eq!(task_id, fail_with::DEFINITION.task_id);
            assert_eq!(invocation_id, *inv.invocation_id());
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    assert_eq!(ok(inv.num_retries().await, "retries"), 0, "not retriable");
    finish(&app, runner).await;
}
