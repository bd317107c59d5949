//! The pynenc conformance suite.
//!
//! Every behaviour scenario of the design is written once here, against the
//! public API, and instantiated for each backend with
//! [`conformance_tests!`]. A backend is done when the whole suite passes on
//! it unchanged. Every scenario ends by replaying the history of every
//! invocation it created through the state machine (scenario 17).
//!
//! ```ignore
//! // tests/memory.rs of a backend
//! pynenc_testkit::conformance_tests!(pynenc_testkit::MemoryFactory::new());
//! ```
#![deny(missing_docs)]
// test support: a failed expectation panics, which fails the test
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pynenc::backends::memory::MemoryBackend;
use pynenc::status::replay_history;
use pynenc::{
    Invocation, InvocationStatus, Pynenc, PynencBuilder, PynencError, SpawnedRunner, TaskError,
    ThreadRunner,
};

pub mod chaos;
#[cfg(feature = "postgres")]
pub mod postgres_server;
pub mod process;
#[cfg(feature = "redis")]
pub mod redis_server;
pub mod runner_process;
pub mod scenarios;
pub mod tasks;

#[cfg(feature = "postgres")]
pub use postgres_server::PostgresFactory;
#[cfg(feature = "redis")]
pub use redis_server::RedisFactory;

pub use tokio;

/// Makes apps on one backend instance. Apps made by the same factory share
/// the backend (so `app_id` isolation can be tested); each factory is fresh.
pub trait BackendFactory: Send + Sync {
    /// The backend's name, for messages.
    fn name(&self) -> &'static str;
    /// A builder for an app on this backend.
    fn builder(&self, app_id: &str) -> PynencBuilder;
    /// Why the backend cannot be tested here (e.g. `redis-server` is not
    /// installed); the suite then skips with this message.
    fn skip_reason(&self) -> Option<String> {
        None
    }
    /// How many bytes the backend holds, as the backend measures itself
    /// (the SQLite file with its write-ahead log, Redis' `used_memory`,
    /// the PostgreSQL database's size); `None` where it cannot be told.
    fn stored_bytes(&self) -> Option<u64> {
        None
    }
}

/// The in-memory backend.
#[derive(Default)]
pub struct MemoryFactory {
    hub: MemoryBackend,
}

impl MemoryFactory {
    /// A fresh memory backend.
    pub fn new() -> Self {
        MemoryFactory::default()
    }
}

impl BackendFactory for MemoryFactory {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn builder(&self, app_id: &str) -> PynencBuilder {
        Pynenc::builder()
            .env_vars(Vec::new())
            .app_id(app_id)
            .memory_backend(self.hub.clone())
    }
}

/// The SQLite backend: a fresh database file in a temporary directory per
/// factory (apps of one factory share the file).
#[cfg(feature = "sqlite")]
pub struct SqliteFactory {
    dir: tempfile::TempDir,
}

#[cfg(feature = "sqlite")]
impl SqliteFactory {
    /// A fresh database file.
    pub fn new() -> Self {
        SqliteFactory {
            dir: tempfile::tempdir()
                .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}")),
        }
    }

    /// The database file.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("pynenc.db")
    }
}

#[cfg(feature = "sqlite")]
impl Default for SqliteFactory {
    fn default() -> Self {
        SqliteFactory::new()
    }
}

#[cfg(feature = "sqlite")]
impl BackendFactory for SqliteFactory {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn builder(&self, app_id: &str) -> PynencBuilder {
        Pynenc::builder()
            .env_vars(Vec::new())
            .app_id(app_id)
            .sqlite(self.path())
    }
    fn stored_bytes(&self) -> Option<u64> {
        let path = self.path();
        let size = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        Some(size(path) + size(wal.into()))
    }
}

/// Builds an app with extra configuration values.
pub fn new_app(
    f: &dyn BackendFactory,
    app_id: &str,
    values: &[(&str, serde_json::Value)],
) -> Pynenc {
    let mut b = f.builder(app_id);
    for (k, v) in values {
        b = b.config_value(k, v.clone());
    }
    match b.build() {
        Ok(app) => app,
        Err(e) => panic!("could not build app {app_id} on {}: {e}", f.name()),
    }
}

/// Starts an in-process runner with `slots` slots.
pub fn start_runner(app: &Pynenc, slots: usize) -> SpawnedRunner {
    ThreadRunner::with_slots(app, slots).spawn()
}

/// Scenario 17: every invocation's history replays legally through the state
/// machine. Returns how many invocations were checked.
pub async fn check_histories(app: &Pynenc) -> usize {
    let ids = app
        .state_backend()
        .list_invocation_ids()
        .await
        .unwrap_or_else(|e| panic!("cannot list invocations: {e}"));
    for id in &ids {
        let history = app
            .state_backend()
            .get_history(id)
            .await
            .unwrap_or_else(|e| panic!("cannot read history of {id}: {e}"));
        assert!(!history.is_empty(), "invocation {id} has an empty history");
        let steps = history
            .iter()
            .map(|h| (h.status, h.owner.as_deref(), h.actor.as_str()));
        if let Err((i, err)) = replay_history(steps) {
            let listing: Vec<String> = history
                .iter()
                .map(|h| format!("{} owner={:?} actor={}", h.status, h.owner, h.actor))
                .collect();
            panic!(
                "history of invocation {id} is illegal at step {i}: {err}\n{}",
                listing.join("\n")
            );
        }
        for pair in history.windows(2) {
            assert!(
                pair[0].timestamp <= pair[1].timestamp,
                "history of {id} is not in time order"
            );
        }
    }
    ids.len()
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes (for test
/// set-up only: waiting for a status another runner sets).
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The value of `r`; panics with `what` and the error otherwise.
pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The statuses `inv` went through, oldest first.
pub async fn statuses<R>(inv: &Invocation<R>) -> Vec<InvocationStatus>
where
    R: serde::de::DeserializeOwned + Send + 'static,
{
    ok(inv.history().await, "history")
        .into_iter()
        .map(|h| h.status)
        .collect()
}

/// Right after a runner whose owner ids contain `owner_tag` was killed:
/// the ids of the invocations it still held (`PENDING` or `RUNNING`,
/// checked to be held by it and nobody else) and how many had ended
/// `SUCCESS`.
pub async fn held_by_killed<R>(
    invocations: &[Invocation<R>],
    owner_tag: &str,
) -> (Vec<String>, usize)
where
    R: serde::de::DeserializeOwned + Send + 'static,
{
    let mut held = Vec::new();
    let mut finished = 0;
    for inv in invocations {
        let history = ok(inv.history().await, "history");
        let Some(last) = history.last() else {
            panic!("invocation {} has no history", inv.invocation_id());
        };
        if matches!(
            last.status,
            InvocationStatus::Pending | InvocationStatus::Running
        ) {
            assert!(
                last.owner.as_deref().is_some_and(|o| o.contains(owner_tag)),
                "{last:?} is held by someone else than the killed worker"
            );
            held.push(inv.invocation_id().to_string());
        } else if last.status == InvocationStatus::Success {
            finished += 1;
        }
    }
    (held, finished)
}

/// After a runner that held the invocations `held` (ids) was killed and
/// another runner recovered its work: every invocation of `invocations`
/// ended `SUCCESS`, each held one went through a recovery status then
/// `REROUTED`, and no other one was re-routed.
pub async fn assert_only_held_were_recovered<R>(
    invocations: &[Invocation<R>],
    held: &std::collections::HashSet<String>,
) where
    R: serde::de::DeserializeOwned + Send + 'static,
{
    for inv in invocations {
        let statuses = statuses(inv).await;
        assert_eq!(
            statuses.last(),
            Some(&InvocationStatus::Success),
            "{statuses:?}"
        );
        if held.contains(inv.invocation_id().as_str()) {
            let recovered = statuses.windows(2).any(|w| {
                matches!(
                    w[0],
                    InvocationStatus::RunningRecovery | InvocationStatus::PendingRecovery
                ) && w[1] == InvocationStatus::Rerouted
            });
            assert!(
                recovered,
                "invocation {} held by the killed worker was not recovered: {statuses:?}",
                inv.invocation_id()
            );
        } else {
            assert!(
                !statuses.contains(&InvocationStatus::Rerouted),
                "invocation {} was not held by the killed worker but was re-routed: {statuses:?}",
                inv.invocation_id()
            );
        }
    }
}

/// Asserts that `inv` ended `CANCELLED` once, by `actor` (its last history
/// entry), never went through any of `never`, and that its waiter gets
/// `PynencError::Cancelled` naming it.
pub async fn assert_cancelled_by<R>(
    inv: &Invocation<R>,
    actor: &pynenc::RunnerId,
    never: &[InvocationStatus],
) where
    R: serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let history = ok(inv.history().await, "history");
    let last = history.last().expect("a history");
    assert_eq!(last.status, InvocationStatus::Cancelled, "{history:?}");
    assert_eq!(&last.actor, actor, "{history:?}");
    let st: Vec<InvocationStatus> = history.iter().map(|h| h.status).collect();
    for bad in never {
        assert!(!st.contains(bad), "{bad} in {st:?}");
    }
    let cancelled = st.iter().filter(|s| **s == InvocationStatus::Cancelled);
    assert_eq!(cancelled.count(), 1, "{st:?}");
    match inv.result().await {
        Err(PynencError::Cancelled {
            invocation_id,
            error,
            ..
        }) => {
            assert_eq!(&invocation_id, inv.invocation_id());
            assert_eq!(error.kind, pynenc::model::CANCELLED_ERROR_KIND);
        }
        other => panic!("expected PynencError::Cancelled, got {other:?}"),
    }
}

/// Checks that every invocation of `group` ran exactly once (one
/// `RUNNING`) and ended `SUCCESS`; how many each runner ran, by owner id.
pub async fn runs_by_owner<R>(
    group: &pynenc::InvocationGroup<R>,
) -> std::collections::HashMap<String, usize>
where
    R: serde::de::DeserializeOwned + Send + 'static,
{
    let mut owners = std::collections::HashMap::new();
    for inv in group.invocations() {
        let history = ok(inv.history().await, "history");
        let running: Vec<_> = history
            .iter()
            .filter(|h| h.status == InvocationStatus::Running)
            .collect();
        assert_eq!(
            running.len(),
            1,
            "invocation {} ran {} times: {:?}",
            inv.invocation_id(),
            running.len(),
            history.iter().map(|h| h.status).collect::<Vec<_>>()
        );
        let owner = running[0].owner.clone().expect("RUNNING has an owner");
        *owners.entry(owner.to_string()).or_default() += 1;
        assert_eq!(
            history.last().map(|h| h.status),
            Some(InvocationStatus::Success)
        );
    }
    owners
}

/// Polls until `inv` has `status` or `timeout` passes; whether it got there.
pub async fn wait_for_status<R>(
    inv: &Invocation<R>,
    status: InvocationStatus,
    timeout: Duration,
) -> bool
where
    R: serde::de::DeserializeOwned + Send + 'static,
{
    eventually(timeout, || async {
        inv.status().await.ok() == Some(status)
    })
    .await
}

/// Waits for `inv` and returns the task's error; panics with
/// `expected {what}, got …` unless it failed with
/// [`PynencError::TaskFailed`].
pub async fn expect_task_failed<R>(inv: &Invocation<R>, what: &str) -> TaskError
where
    R: serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    match inv.result().await {
        Err(PynencError::TaskFailed { error, .. }) => error,
        other => panic!("expected {what}, got {other:?}"),
    }
}

/// Asserts that a runner of `app` still works: `add(x, y)` returns `x + y`.
pub async fn assert_add_works(app: &Pynenc, x: i64, y: i64) {
    assert_eq!(
        ok(tasks::add::call_on(app, x, y).await, "after")
            .result()
            .await
            .ok(),
        Some(x + y)
    );
}

/// Logging of the test programs (worker and chaos binaries and their
/// children) to standard error: warnings, or what `RUST_LOG` asks
/// (`info`, `pynenc=debug`, …).
pub fn init_program_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::WARN));
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(targets)
        .try_init();
}

/// A unique key for a test run (to separate global counters).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", pynenc::InvocationId::random())
}

/// The factory `$f` (a Redis or PostgreSQL test factory), or, when its
/// server is not available here, a `SKIPPED` message and a return from the
/// test (the factory panics instead where `PYNENC_REQUIRE_*` asks for it).
#[macro_export]
macro_rules! factory_or_skip {
    ($f:expr) => {{
        let f = $f;
        if let Some(reason) = f.skip_reason() {
            eprintln!("SKIPPED: {reason}");
            return;
        }
        f
    }};
}

/// Instantiates the whole conformance suite for a backend factory
/// expression (evaluated once per test, so every test gets a fresh backend).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@tests $factory;
            s01_call_returns_result_and_call_id_ignores_order,
            s01b_sync_task_body,
            s02_retry_then_success,
            s02b_retries_exhausted_fail,
            s03_error_kind_and_message,
            s04_wait_on_subtask_single_slot,
            s04b_sync_task_waits_on_subtask,
            s05_chain_deeper_than_slots,
            s06_parallelize_forms_order_and_batches,
            s06b_fan_out_inside_task,
            s07_exactly_one_running,
            s08_running_concurrency_task_reroute,
            s08b_running_concurrency_task_final,
            s09_running_concurrency_keys,
            s10_registration_concurrency,
            s10c_reuses_are_recorded,
            s11_cycle_detection,
            s11b_dev_mode_cycle_control,
            s12_blocking_control_priority,
            s12b_blocking_control_off,
            s12c_pause_for_results_is_one_step,
            s12d_runner_steps_carry_waits,
            s12e_a_waiter_takes_the_slot_of_the_run_it_waited_for,
            s13_stop_runner_mid_task,
            s14_large_argument,
            s15_app_isolation,
            s16_concurrent_pickers,
            s18_dev_mode,
            s19_auto_purge,
            s20_scheduled_call,
            s21_recovery_of_lost_work,
            s22_rerouted_work_runs_first,
            s23_finish_and_start,
            bad_unregistered_task,
            bad_undecodable_payload,
            bad_panicking_task,
            bad_illegal_transition_changes_nothing,
            bad_oversized_argument,
            bad_argument_names,
            q01_list_filters_pages_and_counts,
            q02_existing_invocations_by_key_arguments,
            q03_family_waits_queue_and_handles,
            q04_blocking_graph,
            q05_runners,
            q06_call_by_name,
            q07_bad_queries,
            q08_wait_for_status,
            q09_app_ids,
            c01_cancel_waiting,
            c02_cancel_by_filter,
            c03_cancel_running,
            c04_rerun_and_retry,
            c05_purge_by_filter,
            c06_retention,
            c07_registration_scopes,
            c08_cancel_wins_over_a_retry,
            c09_run_a_scheduled_call_now,
            m01_task_totals,
            d01_data_store_values,
            d02_large_argument_to_many_subtasks,
            d03_results_options_and_reruns,
            t01_keyed_routing_makes_one_invocation,
            t02_cron_trigger_fires_once_per_tick,
            t03_bad_triggers_are_refused_at_build,
            t04_reactions_fire_once_per_source,
            t05_events_fire_their_triggers,
            t06_bad_reactions_are_refused_at_build,
            t07_cron_catch_up,
            t08_triggers_are_stored_for_every_process,
            t09_any_of_and_all_of,
            w01_workflow_steps_replay,
            w02_workflow_non_determinism_fails,
            w03_workflow_sleep_is_durable,
            w04_workflow_values_and_data,
            w05_child_workflows_and_cancel,
            w06_workflow_signals
        );
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[$crate::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let factory = $factory;
                if let Some(reason) = $crate::BackendFactory::skip_reason(&factory) {
                    eprintln!("SKIPPED {}: {}", stringify!($name), reason);
                    return;
                }
                let run = $crate::scenarios::$name(&factory);
                match $crate::tokio::time::timeout(::std::time::Duration::from_secs(120), run).await {
                    Ok(()) => {}
                    Err(_) => panic!("scenario {} timed out on {}", stringify!($name),
                        $crate::BackendFactory::name(&factory)),
                }
            }
        )*
    };
}

/// The ticks of a one-second trigger's invocations (`ids`), checked: one
/// invocation per tick, on whole seconds, none missing between the first
/// and the last, the first no later than `slack_us` after `start` and the
/// last no earlier than `slack_us` before `end`. Returns `(first, last,
/// count)` in microseconds.
pub fn assert_one_per_second(
    ids: &[pynenc::InvocationId],
    start: pynenc::Timestamp,
    end: pynenc::Timestamp,
    slack_us: i64,
) -> (i64, i64, usize) {
    let ticks: std::collections::BTreeSet<i64> =
        ids.iter().map(pynenc::InvocationId::time_micros).collect();
    assert_eq!(
        ticks.len(),
        ids.len(),
        "two invocations of one tick: {ids:?}"
    );
    let (Some(&first), Some(&last)) = (ticks.first(), ticks.last()) else {
        panic!("the trigger never fired");
    };
    assert!(
        ticks.iter().all(|t| t % 1_000_000 == 0),
        "ticks on whole seconds: {ticks:?}"
    );
    assert_eq!(
        ticks.len() as i64,
        (last - first) / 1_000_000 + 1,
        "a tick was lost between the first and the last: {ticks:?}"
    );
    assert!(
        first <= start.as_micros() + slack_us,
        "fired from the start: {ticks:?}"
    );
    assert!(
        last >= end.as_micros() - slack_us,
        "fired until the end: {ticks:?}"
    );
    (first, last, ticks.len())
}

/// After a burst of 200 short runs (the runners of `app` take more and
/// more ahead), routes a call of `long_ms` together with twelve short ones
/// and checks that every short one ends before the long one: what a runner
/// took ahead of the long run was given back and run elsewhere.
pub async fn assert_nothing_waits_behind_a_long_run(app: &Pynenc, long_ms: u64) {
    let warm = tasks::timed_body::parallelize_on(app, (0..200).map(|i| (i, 0)))
        .await
        .expect("route");
    warm.results().await.expect("warm-up");
    let calls = (0..13).map(|i| (i, if i == 0 { long_ms } else { 20 }));
    let group = tasks::timed_body::parallelize_on(app, calls)
        .await
        .expect("route");
    let runs = group.results().await.expect("all finish");
    let long_end = runs[0].2;
    for (n, (_, _, ended)) in runs.iter().enumerate().skip(1) {
        assert!(
            *ended < long_end,
            "call {n} waited behind the long run ({ended} >= {long_end})"
        );
    }
}
