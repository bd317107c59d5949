//! The triggers page and its JSON twin: the triggers a program declares and
//! those its runners stored, with what a cron trigger's latest ticks fired.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use pynenc::{Pynenc, ThreadRunner, Trigger};
use pynenc_monitor::{Credential, Monitor, MonitorOptions, Role};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_triggers_page_lists_declared_and_stored_triggers() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("app.db");
    let app_id = "monitor-triggers";
    // the runner's program declares a cron trigger and a reaction
    let declaring = Pynenc::builder()
        .app_id(app_id)
        .sqlite(db.clone())
        .config_value("triggers.evaluate_interval_seconds", 0.1)
        .trigger(Trigger::cron("* * * * * *", add::task(), (1i64, 2i64)).named("every second"))
        .trigger(
            Trigger::on_exception(refuse::task(), &["Refused"], add::task(), (0i64, 0i64))
                .named("after a refusal"),
        )
        .trigger(
            Trigger::on_event(
                "signed in",
                connect::task(),
                (
                    "ana".to_string(),
                    PASSWORD.to_string(),
                    serde_json::json!({}),
                ),
            )
            .named("connect on sign-in"),
        )
        .build()
        .expect("the app with triggers");
    let runner = ThreadRunner::with_slots(&declaring, 2).spawn();
    // the monitor's program declares none: it lists what the runner stored
    let app = Pynenc::builder()
        .app_id(app_id)
        .sqlite(db)
        .build()
        .expect("the monitor's app");
    let monitor = Monitor::start(
        &app,
        MonitorOptions {
            bind: "127.0.0.1:0".parse().expect("an address"),
            ..MonitorOptions::default()
        }
        .credential(Credential::new("ops", OPERATOR, Role::Operator)),
    )
    .await
    .expect("the monitor starts");
    let addr = monitor.addr();
    // until a tick fired and ran
    let mut listed = serde_json::Value::Null;
    for _ in 0..100 {
        let r = Req::get("/api/triggers").bearer(OPERATOR).send(addr).await;
        assert_eq!(r.status, 200, "{}", r.body);
        listed = r.json();
        let fired = listed["triggers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["recent"].as_array().cloned().unwrap_or_default())
            .any(|f| f["status"] == "success");
        if fired {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runner.stop().await.expect("the runner stops");
    let triggers = listed["triggers"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = triggers.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(
        names,
        ["after a refusal", "connect on sign-in", "every second"],
        "{listed}"
    );
    // a secret among a trigger's arguments is redacted, on the page too
    assert!(!listed.to_string().contains(PASSWORD), "{listed}");
    assert!(triggers[1]["arguments"]
        .as_str()
        .is_some_and(|a| a.contains("<redacted>")));
    let cron = &triggers[2];
    assert_eq!(cron["condition"], "cron(* * * * * *)");
    assert_eq!(cron["declared_here"], false);
    assert!(
        cron["recent"]
            .as_array()
            .is_some_and(|r| r.iter().any(|f| f["status"] == "success")),
        "{listed}"
    );
    // the page shows the same, with the fired invocations linked
    let r = Req::get("/triggers").bearer(OPERATOR).send(addr).await;
    assert_eq!(r.status, 200);
    for expected in [
        "every second",
        "cron(* * * * * *)",
        "after a refusal",
        "on_exception(",
        "href=\"/invocations/",
        "{&quot;x&quot;:1,&quot;y&quot;:2}",
    ] {
        assert!(
            r.body.contains(expected),
            "{expected} missing from the page"
        );
    }
    assert!(!r.body.contains(PASSWORD));
    // and the overview names them with their conditions
    let r = Req::get("/").bearer(OPERATOR).send(addr).await;
    assert!(r.body.contains("every second") && r.body.contains("cron(* * * * * *)"));
    monitor.shutdown().await.expect("the monitor stops");
}
