//! App-level behaviour on the memory backend: configuration reaching tasks,
//! the MessagePack serializer, and a runner stopped by a real signal.

use pynenc::{InvocationStatus, PynencError, Serializer};
use pynenc_testkit::process::signal;
use pynenc_testkit::tasks::{self, *};
use pynenc_testkit::{check_histories, start_runner, unique};
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_options_come_from_configuration() {
    let task_var = format!("PYNENC__TASK__{}__MAX_RETRIES", flaky::DEFINITION.task_id);
    let app = pynenc::Pynenc::builder()
        .env_vars(vec![(task_var, "0".to_string())])
        .app_id("conf-task")
        .build()
        .expect("build");
    assert_eq!(
        app.registry()
            .options(flaky::DEFINITION.task_id)
            .map(|o| o.max_retries),
        Some(0)
    );
    let runner = start_runner(&app, 2);
    let key = unique("conf");
    let inv = flaky::call_on(&app, key.clone(), 1).await.expect("call");
    assert!(matches!(
        inv.result().await,
        Err(PynencError::TaskFailed { .. })
    ));
    assert_eq!(
        tasks::runs_of(&key),
        1,
        "max_retries 0 from the environment: no retry"
    );
    runner.stop().await.expect("stop");
    check_histories(&app).await;

    // a bad per-task value is an error naming the task, the option and the source
    let err = pynenc::Pynenc::builder()
        .env_vars(vec![(
            format!("PYNENC__TASK__{}__MAX_RETRIES", flaky::DEFINITION.task_id),
            "many".to_string(),
        )])
        .build()
        .expect_err("bad value");
    let text = err.to_string();
    assert!(
        text.contains(flaky::DEFINITION.task_id) && text.contains("max_retries"),
        "{text}"
    );
    // keys concurrency without key arguments, from configuration
    let err = pynenc::Pynenc::builder()
        .env_vars(Vec::new())
        .config_value(
            &format!("task.{}.running_concurrency", add::DEFINITION.task_id),
            "keys",
        )
        .build()
        .expect_err("keys without key_arguments");
    assert!(
        matches!(err, PynencError::InvalidTaskOptions { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_pack_serializer_runs_everything() {
    let app = pynenc::Pynenc::builder()
        .env_vars(Vec::new())
        .app_id("msgpack")
        .serializer(Serializer::MessagePack)
        .build()
        .expect("build");
    assert_eq!(app.serializer(), Serializer::MessagePack);
    let runner = start_runner(&app, 2);
    assert_eq!(
        add_via_child::call_on(&app, 4, 5)
            .await
            .expect("call")
            .result()
            .await
            .expect("result"),
        9
    );
    let group = add::parallelize_on(&app, (0..20).map(|i| (i, 1)))
        .await
        .expect("group");
    assert_eq!(
        group.results().await.expect("results"),
        (1..21).collect::<Vec<i64>>()
    );
    let err = fail_with::call_on(&app, "IoError".into(), "disk full".into())
        .await
        .expect("call")
        .result()
        .await
        .expect_err("fails");
    assert!(
        matches!(err, PynencError::TaskFailed { ref error, .. } if error.kind == "IoError" && error.message == "disk full")
    );
    // stored arguments are MessagePack, not JSON
    let rec = app
        .state_backend()
        .get_invocation(group.invocations()[0].invocation_id())
        .await
        .expect("record");
    assert!(rec.call.arguments.get("x").is_some_and(|v| v != "0"));
    runner.stop().await.expect("stop");
    check_histories(&app).await;
}

/// Starts the worker in `sleep-then-report` mode, sends SIGTERM once the
/// invocation runs, and returns the statuses it printed.
fn sigterm_while_running(task_ms: &str, grace_s: &str) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["sleep-then-report", task_ms])
        .env("PYNENC__RUNNER__SHUTDOWN_GRACE_SECONDS", grace_s)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the worker");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let mut lines_in = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    // wait until the invocation runs, then send SIGTERM
    let first = lines_in.next().and_then(|l| l.ok()).unwrap_or_default();
    assert_eq!(first, "RUNNING");
    signal(pid, "-TERM");
    let rest: Vec<String> = lines_in.map_while(|l| l.ok()).collect();
    let exit = child.wait().expect("wait");
    let out = format!("{first}\n{}", rest.join("\n"));
    assert!(exit.success(), "worker failed: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"RUNNING"), "{out}");
    assert_eq!(lines.last(), Some(&"DONE"), "{out}");
    lines[1..lines.len() - 1]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn sigterm_past_the_grace_period_kills_and_reroutes_running_work() {
    let statuses = sigterm_while_running("3000", "0.2");
    assert_eq!(
        statuses,
        vec![
            InvocationStatus::Registered.as_str(),
            InvocationStatus::Pending.as_str(),
            InvocationStatus::Running.as_str(),
            InvocationStatus::Killed.as_str(),
            InvocationStatus::Rerouted.as_str()
        ]
    );
}

#[test]
fn sigterm_lets_running_work_finish_within_the_grace_period() {
    let statuses = sigterm_while_running("300", "5");
    assert_eq!(
        statuses,
        vec![
            InvocationStatus::Registered.as_str(),
            InvocationStatus::Pending.as_str(),
            InvocationStatus::Running.as_str(),
            InvocationStatus::Success.as_str()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_task_variables_in_their_shell_safe_form_reach_the_task() {
    // `pynenc_testkit::tasks::flaky` as a shell can export it
    let task_id = flaky::DEFINITION.task_id;
    let shell_name = task_id.replace("::", "__").to_ascii_uppercase();
    let var = format!("PYNENC__TASK__{shell_name}__MAX_RETRIES");
    assert!(
        var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "{var} is a valid shell variable name"
    );
    let app = pynenc::Pynenc::builder()
        .env_vars(vec![(var.clone(), "5".to_string())])
        .app_id(unique("shell-safe"))
        .build()
        .expect("build");
    assert_eq!(
        app.registry().options(task_id).map(|o| o.max_retries),
        Some(5)
    );
    assert_eq!(
        app.conf()
            .source_of(&format!("task.{task_id}.max_retries"))
            .map(ToString::to_string),
        Some(format!("environment variable {var}"))
    );
    // a setting for a task this binary does not have is reported with the near ids
    let typo = format!(
        "PYNENC__TASK__{}__MAX_RETRIES",
        shell_name.trim_end_matches('Y')
    );
    let conf = pynenc::conf::ConfigLoader::new()
        .env_vars(vec![(typo.clone(), "1".to_string())])
        .load()
        .expect("load");
    let task_ids: Vec<&str> = app.registry().task_ids();
    let unmatched = conf.unmatched_task_settings(task_ids.iter().copied());
    assert_eq!(unmatched.len(), 1, "{unmatched:?}");
    assert!(
        unmatched[0].suggestions.iter().any(|s| s == task_id),
        "{unmatched:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_are_chosen_by_value_and_named_in_the_configuration() {
    // a memory backend shared by value: apps of one id share its data
    let hub = pynenc::MemoryBackend::new();
    let id = unique("by-value");
    let first = pynenc::Pynenc::builder()
        .env_vars(Vec::new())
        .app_id(id.clone())
        .backend(hub.clone())
        .build()
        .expect("build");
    let second = pynenc::Pynenc::builder()
        .env_vars(Vec::new())
        .app_id(id)
        .backend(hub)
        .build()
        .expect("build");
    let inv = add::call_on(&first, 1, 2).await.expect("call");
    assert!(second
        .state_backend()
        .get_invocation(inv.invocation_id())
        .await
        .is_ok());
    assert_eq!(first.conf().backend, pynenc::BackendKind::Memory);
    assert_eq!(
        first.conf().source_of("backend"),
        Some(&pynenc::ConfigSource::Code)
    );

    // SQLite by its options: the effective configuration names them, so a
    // child process built from it opens the same file the same way
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("by-value.db");
    let options = pynenc::SqliteOptions {
        poll_min: std::time::Duration::from_millis(3),
        ..pynenc::SqliteOptions::new(&path)
    };
    let app = pynenc::Pynenc::builder()
        .env_vars(Vec::new())
        .app_id(unique("sqlite-by-value"))
        .backend(options)
        .build()
        .expect("build");
    assert_eq!(app.conf().backend, pynenc::BackendKind::Sqlite);
    assert_eq!(app.conf().sqlite.poll_min_ms, 3);
    assert_eq!(app.conf().sqlite.sqlite_path, path.display().to_string());
    let runner = start_runner(&app, 2);
    let inv = add::call_on(&app, 20, 22).await.expect("call");
    assert_eq!(inv.result().await.expect("result"), 42);
    runner.stop().await.expect("stop");
    check_histories(&app).await;
}

#[test]
fn the_sqlite_shortcut_sets_the_path_and_keeps_the_configured_timings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shortcut.db");
    let app = pynenc::Pynenc::builder()
        .env_vars(vec![
            (
                "PYNENC__SQLITE__BUSY_TIMEOUT_MS".to_string(),
                "1234".to_string(),
            ),
            ("PYNENC__SQLITE__POLL_MAX_MS".to_string(), "20".to_string()),
        ])
        .app_id(unique("sqlite-shortcut"))
        .backend(pynenc::MemoryBackend::new())
        .sqlite(&path)
        .build()
        .expect("build");
    let conf = app.conf();
    assert_eq!(conf.backend, pynenc::BackendKind::Sqlite);
    assert_eq!(conf.sqlite.sqlite_path, path.display().to_string());
    assert_eq!(conf.sqlite.busy_timeout_ms, 1234);
    assert_eq!(conf.sqlite.poll_max_ms, 20);
    assert_eq!(
        conf.source_of("sqlite.busy_timeout_ms"),
        Some(&pynenc::ConfigSource::Env(
            "PYNENC__SQLITE__BUSY_TIMEOUT_MS".to_string()
        ))
    );
}
