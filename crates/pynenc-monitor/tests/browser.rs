//! The monitor in a real headless Chromium, driven through WebDriver: sign
//! in, watch a running workload update live, filter, open an invocation,
//! cancel one, rerun one, purge with confirmation — with no CSP violation,
//! and a screenshot of every main page kept in
//! `target/tmp/monitor-screenshots/`.
//!
//! Skipped with a message without `chromium` and `chromedriver`; a failure
//! then with `PYNENC_REQUIRE_BROWSER=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::webdriver::Browser;
use support::*;

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("monitor-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_in_the_browser() {
    // a large future: run it on the heap
    Box::pin(operator_session()).await;
}

async fn operator_session() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let f = Fixture::start(Kind::Sqlite).await;
    let base = format!("http://{}", f.addr);
    let s = f.seeded.clone();
    let shots = shots();

    // signing in: the login form sets the session cookie
    b.goto(&format!("{base}/invocations")).await;
    assert!(
        b.url().await.ends_with("/login"),
        "not sent to the login form"
    );
    b.screenshot(&shots.join("login.png")).await;
    b.type_into("#secret", "wrong-secret-here").await;
    b.click("#sign-in").await;
    assert!(b.text("#login-error").await.contains("Wrong"));
    b.type_into("#user", "ops").await;
    b.type_into("#secret", OPERATOR).await;
    b.click("#sign-in").await;
    b.find("#queue-depth").await;
    assert_eq!(
        b.eval("return document.cookie").await,
        "",
        "the session cookie is HttpOnly"
    );
    assert_eq!(
        b.eval("return typeof window.htmx").await,
        "object",
        "htmx loaded"
    );
    assert_eq!(
        b.eval("return document.documentElement.dataset.monitorJs")
            .await,
        "loaded"
    );

    // live: work routed now shows up on the open overview, without reload
    b.wait_text("#queue-depth", "2", Duration::from_secs(5))
        .await;
    let mut live = String::new();
    for _ in 0..50 {
        live = b
            .eval("return document.body.dataset.liveState || ''")
            .await
            .as_str()
            .unwrap_or("")
            .to_string();
        if live == "connected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(live, "connected", "the event stream is connected");
    b.eval("window.__same_page = true; return 1").await;
    add::call_on(&f.app, 20, 1).await.unwrap();
    add::call_on(&f.app, 20, 2).await.unwrap();
    b.wait_text("#queue-depth", "4", Duration::from_secs(8))
        .await;
    assert_eq!(
        b.eval("return window.__same_page === true").await,
        true,
        "updated in place"
    );
    // and a runner working through it empties the queue, live too
    let runner = pynenc::ThreadRunner::with_slots(&f.app, 2).spawn();
    b.wait_text("#queue-depth", "0", Duration::from_secs(10))
        .await;
    assert_eq!(b.text("#runners-alive").await, "1");
    b.screenshot(&shots.join("overview.png")).await;
    within("the runner's stop", runner.stop()).await.unwrap();
    let queued: Vec<String> = vec![
        add::call_on(&f.app, 30, 1)
            .await
            .unwrap()
            .invocation_id()
            .to_string(),
        add::call_on(&f.app, 30, 2)
            .await
            .unwrap()
            .invocation_id()
            .to_string(),
    ];

    // filter: status registered
    b.goto(&format!("{base}/invocations")).await;
    b.click("select[name=status] option[value=registered]")
        .await;
    b.click("#apply-filter").await;
    b.wait_url("status=registered").await;
    b.find("#bulk").await;
    assert_eq!(b.count("tr[data-status]").await, 2);
    assert_eq!(b.count("tr[data-status=registered]").await, 2);
    b.screenshot(&shots.join("invocations.png")).await;

    // cancel one: tick it, confirm, see it CANCELLED
    b.click(&format!("input[name=ids][value='{}']", queued[0]))
        .await;
    b.click("#bulk-cancel").await;
    b.wait_url("/actions/cancel").await;
    assert!(b.text("#confirm-summary").await.contains("cancelled"));
    assert_eq!(b.count("tr[data-id]").await, 1);
    b.screenshot(&shots.join("confirm-cancel.png")).await;
    b.click("#confirm").await;
    assert!(b.text("#done-summary").await.starts_with("1 cancelled"));
    b.goto(&format!("{base}/invocations/{}", queued[0])).await;
    assert_eq!(b.text("#status").await, "CANCELLED");
    assert!(b.text("#history").await.contains("monitor:ops"));

    // open an invocation and rerun it
    b.goto(&format!("{base}/invocations/{}", s.failed)).await;
    assert!(b.text("#error").await.contains("Refused"));
    b.screenshot(&shots.join("invocation.png")).await;
    b.click("#act-rerun").await;
    b.click("#confirm").await;
    assert!(b.text("#done-summary").await.starts_with("1 run again"));
    b.click("main ul li a").await;
    assert_eq!(b.text("#status").await, "REGISTERED");

    // purge with confirmation: the list first, then it goes
    b.goto(&format!("{base}/purge")).await;
    b.click("select[name=status] option[value=cancelled]").await;
    b.click("#purge-preview").await;
    b.find("#confirm-summary").await;
    assert_eq!(b.count(&format!("tr[data-id='{}']", queued[0])).await, 1);
    b.click("#confirm").await;
    assert!(b.text("#done-summary").await.starts_with("1 deleted"));
    b.goto(&format!("{base}/invocations/{}", queued[0])).await;
    assert!(b.text("main").await.contains("not found"));

    // the other pages, for the record (with a runner up)
    let runner = pynenc::ThreadRunner::with_slots(&f.app, 2).spawn();
    for (path, name) in [
        ("/tasks", "tasks"),
        ("/runners", "runners"),
        ("/failures", "failures"),
        ("/config", "config"),
        ("/audit", "audit"),
    ] {
        b.goto(&format!("{base}{path}")).await;
        b.find("h1").await;
        b.screenshot(&shots.join(format!("{name}.png"))).await;
    }
    assert!(b.text("#audit").await.contains("purge"));
    within("the runner's stop", runner.stop()).await.unwrap();

    // no CSP violation, no script error, anywhere on the way
    let console = b.console().await;
    let bad: Vec<&String> = console
        .iter()
        .filter(|l| {
            l.contains("Content Security Policy")
                || l.starts_with("SEVERE")
                    && !l.contains("favicon")
                    && !l.contains("401")
                    && !l.contains("404")
        })
        .collect();
    assert!(bad.is_empty(), "browser console: {bad:#?}");
    // the control: an inline script is blocked by the CSP, and the console
    // check above would have seen it
    b.eval("var s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.head.appendChild(s); return 1").await;
    assert_eq!(
        b.eval("return typeof window.__inline").await,
        "undefined",
        "an inline script ran"
    );
    let console = b.console().await;
    assert!(
        console
            .iter()
            .any(|l| l.contains("Content Security Policy")),
        "{console:#?}"
    );
    b.quit().await;
    f.stop().await;
}
