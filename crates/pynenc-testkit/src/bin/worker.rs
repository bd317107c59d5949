//! A worker process for the runner tests: builds an app from the
//! environment (`PYNENC__…`), routes what the mode asks, runs a runner until
//! SIGTERM or Ctrl-C, and prints what happened.
//!
//! Modes (first argument):
//! - `sleep-then-report [ms]`: calls `sleeper(key, ms)` (default 3000) in-process on the memory
//!   backend, prints `RUNNING` once it runs, runs until a signal, then prints
//!   the invocation's statuses one per line and `DONE`.
//! - `run`: runs the runner `runner.kind` names until a signal (for shared
//!   backends); process runners start this binary again as their children.
//!
//! With `PYNENC_TEST_TRIGGER=<cron expression>` and
//! `PYNENC_TEST_TRIGGER_FILE=<path>` the app has a trigger named `test
//! trigger` calling `append_line(path, "run")` on that schedule. With
//! `PYNENC_TEST_REACTIONS_FILE=<path>` it has reaction triggers calling
//! `append_line(path, "<what>:<source invocation id>")`: `running` and
//! `result` of `sleeper`, `error` of `fail_with`, `event` for the events
//! named `tick`.

use std::io::Write;
use std::time::Duration;

use pynenc::{InvocationStatus, Pynenc, ThreadRunner};
use pynenc_testkit::tasks;

fn main() -> anyhow::Result<()> {
    pynenc_testkit::init_program_logging();
    // process runners start this binary again as their children (after the
    // logging set-up, so the children log too)
    pynenc::run_child_if_requested();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "run".into());
    let mut builder = Pynenc::builder();
    if let (Ok(expr), Ok(file)) = (
        std::env::var("PYNENC_TEST_TRIGGER"),
        std::env::var("PYNENC_TEST_TRIGGER_FILE"),
    ) {
        // a cron trigger appending a line to a file per run, for the
        // trigger tests
        let args = (file, "run".to_string());
        builder = builder.trigger(
            pynenc::Trigger::cron(&expr, tasks::append_line::task(), args).named("test trigger"),
        );
    }
    if let Ok(file) = std::env::var("PYNENC_TEST_REACTIONS_FILE") {
        builder = reaction_triggers(&file)
            .into_iter()
            .fold(builder, |b, t| b.trigger(t));
    }
    let app = builder.build()?;
    match mode.as_str() {
        "sleep-then-report" => {
            let ms: u64 = std::env::args()
                .nth(2)
                .and_then(|a| a.parse().ok())
                .unwrap_or(3000);
            let inv = tasks::sleeper::call_on(&app, "signal".into(), ms).await?;
            let runner = ThreadRunner::new(&app);
            let watcher = {
                let inv = inv.clone();
                tokio::spawn(async move {
                    loop {
                        if inv.status().await.ok() == Some(InvocationStatus::Running) {
                            println!("RUNNING");
                            let _ = std::io::stdout().flush();
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            };
            runner.run_until_signal().await?;
            watcher.abort();
            for h in inv.history().await? {
                println!("{}", h.status);
            }
            println!("DONE");
        }
        "run" => {
            // the runner kind named by runner.kind (PYNENC__RUNNER__KIND)
            app.runner().run_until_signal().await?;
            println!("DONE");
        }
        other => anyhow::bail!("unknown mode {other}"),
    }
    Ok(())
}

/// The reaction triggers of the multi-process tests: each appends
/// `<what>:<source invocation id>` to `file`.
fn reaction_triggers(file: &str) -> Vec<pynenc::Trigger> {
    use pynenc::{trigger_arguments, Trigger, TriggerSource};
    let line = |what: &'static str| {
        let file = file.to_string();
        move |src: &TriggerSource| {
            Ok(trigger_arguments([
                ("path", serde_json::json!(file)),
                (
                    "line",
                    serde_json::json!(format!("{what}:{}", src.invocation_id)),
                ),
            ]))
        }
    };
    let none = (String::new(), String::new());
    vec![
        Trigger::on_status(
            tasks::sleeper::task(),
            &[InvocationStatus::Running],
            tasks::append_line::task(),
            none.clone(),
        )
        .arguments_from(line("running")),
        Trigger::on_any_result(
            tasks::sleeper::task(),
            tasks::append_line::task(),
            none.clone(),
        )
        .arguments_from(line("result")),
        Trigger::on_exception(
            tasks::fail_with::task(),
            &[],
            tasks::append_line::task(),
            none.clone(),
        )
        .arguments_from(line("error")),
        Trigger::on_event("tick", tasks::append_line::task(), none).arguments_from(line("event")),
    ]
}
