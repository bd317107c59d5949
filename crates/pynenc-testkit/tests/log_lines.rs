//! The log lines of a run name the runner, the task and the invocation.
//!
//! This test is alone in its binary: it installs the process's global
//! subscriber, which a test sharing a process with others could not do
//! (a subscriber set with `set_default` is seen only by its own thread).

use pynenc_testkit::tasks::logged;
use pynenc_testkit::{check_histories, start_runner, unique};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_of_a_run_name_the_runner_the_task_and_the_invocation() {
    let sink = Lines::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // the process's one subscriber: it sees every thread of the runtime,
    // and no other test shares this binary
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
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
