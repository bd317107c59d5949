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

/// A log sink for one test: every formatted line, kept in memory.
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn log_lines_of_a_run_name_the_runner_the_task_and_the_invocation() {
    let sink = Lines::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // the current-thread runtime runs the runner and every invocation on this thread
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = pynenc::Pynenc::builder()
        .app_id(unique("logs"))
        .build()
        .expect("build");
    // one slot: the second and third invocations run after the first, in its slot
    let runner = start_runner(&app, 1);
    let group = logged::parallelize_on(&app, [(1,), (2,), (3,)])
        .await
        .expect("parallelize");
    assert_eq!(group.results().await.expect("results"), vec![1, 2, 3]);
    let runner_id = runner.handle().runner_id().to_string();
    runner.stop().await.expect("stop");
    let text = String::from_utf8(sink.0.lock().expect("lines").clone()).expect("utf-8");
    let inside: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("inside the task"))
        .collect();
    assert_eq!(inside.len(), 3, "{text}");
    for inv in group.invocations() {
        let id = inv.invocation_id();
        let line = inside
            .iter()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no line names invocation {id}:\n{text}"));
        assert!(line.contains(&format!("runner_id={runner_id}")), "{line}");
        assert!(line.contains(logged::DEFINITION.task_id), "{line}");
    }
    let finished = text.lines().filter(|l| l.contains("finished")).count();
    assert_eq!(finished, 3, "one 'finished' line per invocation:\n{text}");
    for line in text.lines().filter(|l| l.contains("finished")) {
        assert!(
            line.contains(&format!("runner_id={runner_id}")) && line.contains("invocation_id="),
            "{line}"
        );
    }
    check_histories(&app).await;
}
