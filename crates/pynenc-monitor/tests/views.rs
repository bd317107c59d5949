//! Every view and its JSON twin, every action, the audit log, metrics and
//! live events — against apps on memory, on SQLite and on Redis (a
//! `redis-server` the test starts; skipped without one) whose invocations a
//! real runner ran.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

async fn views_and_api(kind: Kind) {
    let f = Fixture::start(kind).await;
    let s = f.seeded.clone();
    // overview
    let o = f.api("/api/overview").await;
    assert_eq!(o["total"], 5, "{o}");
    assert_eq!(o["by_status"]["success"], 2, "{o}");
    assert_eq!(o["by_status"]["failed"], 1, "{o}");
    assert_eq!(o["queue_depth"], 2, "{o}");
    assert!(o["queue_oldest_age_ms"].is_u64(), "{o}");
    assert_eq!(o["recent"]["ended"], 3, "{o}");
    assert_eq!(o["recent"]["failed"], 1, "{o}");
    let minutes = o["recent"]["per_minute"].as_array().unwrap();
    assert_eq!(minutes.len(), 15);
    assert_eq!(
        minutes.last().unwrap()["succeeded"].as_u64().unwrap()
            + minutes[13]["succeeded"].as_u64().unwrap(),
        2
    );
    let page = f.page("/").await;
    assert!(page.contains("id=\"queue-depth\">2<"), "{page}");
    assert!(
        page.contains("<svg class=\"chart\" id=\"throughput\""),
        "{page}"
    );
    // invocations, filtered server-side
    let all = f.api("/api/invocations").await;
    assert_eq!(all["page"]["items"].as_array().unwrap().len(), 5);
    let failed = f.api("/api/invocations?status=failed").await;
    let items = failed["page"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["invocation_id"], s.failed.as_str());
    let task = all["page"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["invocation_id"] == s.ok.as_str())
        .unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let adds = f
        .api(&format!("/api/invocations?task={task}&status=registered"))
        .await;
    assert_eq!(adds["page"]["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        f.api("/api/invocations?since=1h").await["page"]["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        f.api("/api/invocations?until=1h").await["page"]["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let bad = Req::get("/api/invocations?status=sideways")
        .bearer(OPERATOR)
        .send(f.addr)
        .await;
    assert_eq!(bad.status, 400);
    let bad = Req::get("/api/invocations?task=no::such")
        .bearer(OPERATOR)
        .send(f.addr)
        .await;
    assert_eq!(bad.status, 400);
    // cursor pages: 2 + 2 + 1, no repeat
    let mut seen = Vec::new();
    let mut path = "/api/invocations?limit=2".to_string();
    loop {
        let p = f.api(&path).await;
        for i in p["page"]["items"].as_array().unwrap() {
            seen.push(i["invocation_id"].as_str().unwrap().to_string());
        }
        match p["page"]["next"].as_str() {
            Some(next) => path = format!("/api/invocations?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    seen.dedup();
    assert_eq!(seen.len(), 5);
    let list = f.page("/invocations?limit=2").await;
    assert!(list.contains("id=\"next-page\""), "{list}");
    let list = f.page("/invocations?status=failed").await;
    assert!(list.contains(&s.failed) && !list.contains(&s.ok));
    // one invocation
    let d = f.api(&format!("/api/invocations/{}", s.failed)).await;
    assert_eq!(d["error"]["kind"], "Refused");
    assert_eq!(d["error"]["message"], "no 7");
    let history: Vec<&str> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(history.first(), Some(&"registered"));
    assert_eq!(history.last(), Some(&"failed"));
    assert!(history.contains(&"running"));
    assert!(d["history"][0]["lasted_ms"].is_u64());
    let ok = f.api(&format!("/api/invocations/{}", s.ok)).await;
    assert_eq!(ok["result"], "3");
    let page = f.page(&format!("/invocations/{}", s.failed)).await;
    assert!(page.contains("Refused") && page.contains("no 7") && page.contains("id=\"history\""));
    assert_eq!(
        Req::get("/api/invocations/0661ef8aae9e36004f8e56fd7ca5010b")
            .bearer(OPERATOR)
            .send(f.addr)
            .await
            .status,
        404
    );
    assert_eq!(
        Req::get("/api/invocations/not-an-id")
            .bearer(OPERATOR)
            .send(f.addr)
            .await
            .status,
        400
    );
    // tasks with failure rates
    let tasks = f.api("/api/tasks").await;
    let refuse = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"].as_str().unwrap().ends_with("refuse"))
        .unwrap();
    assert_eq!(refuse["failure_rate"], 1.0);
    assert_eq!(refuse["options"]["max_retries"], 0, "{refuse}");
    assert!(refuse["latency_p50_ms"].is_null());
    let add = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"].as_str().unwrap().ends_with("::add"))
        .unwrap();
    assert_eq!(add["latency_sample"], 1, "{add}");
    assert!(add["latency_p95_ms"].is_u64(), "{add}");
    // the task totals: add was routed three times and ran once
    assert_eq!(
        add["totals"]["counts"],
        serde_json::json!([3, 1, 1, 0, 0, 0])
    );
    assert_eq!(
        refuse["totals"]["counts"],
        serde_json::json!([1, 1, 0, 1, 0, 0])
    );
    assert_eq!(
        add["totals"]["run_times"]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .sum::<u64>(),
        1
    );
    let page = f.page("/tasks").await;
    assert!(page.contains("100.0 %"));
    assert!(
        page.contains("failed 1") && page.contains("succeeded 1"),
        "{page}"
    );
    // runners: one up now (it runs the two queued calls)
    let runner = pynenc::ThreadRunner::with_slots(&f.app, 3).spawn();
    let mut runners = f.api("/api/runners").await;
    for _ in 0..100 {
        if !runners["runners"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        runners = f.api("/api/runners").await;
    }
    let r = &runners["runners"].as_array().unwrap()[0];
    assert!(
        r["info"]["pid"].as_u64().unwrap() > 0 && r["info"]["slots"] == 3,
        "{runners}"
    );
    assert_eq!(r["alive"], true);
    assert!(r["heartbeat_age_ms"].is_u64());
    assert_eq!(f.api("/api/overview").await["runners_alive"], 1);
    assert!(f.page("/runners").await.contains("alive"));
    within("the runner's stop", runner.stop()).await.unwrap();
    // failures by kind
    let fails = f.api("/api/failures").await;
    assert_eq!(fails["failures"][0]["kind"], "Refused");
    assert_eq!(fails["failures"][0]["count"], 1);
    assert!(f.page("/failures").await.contains("Refused"));
    // configuration, secrets masked; the monitor's users without secrets
    let conf = f.api("/api/config").await;
    assert!(conf["config"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["key"] == "app_id"));
    let text = conf.to_string();
    assert!(!text.contains(OPERATOR) && !text.contains(VIEWER));
    assert!(text.contains("ops (operator)"));
    assert!(f.page("/config").await.contains("app_id"));
    assert!(f.page("/audit").await.contains("No action taken yet"));
    f.stop().await;
}

async fn actions(kind: Kind) {
    let f = Fixture::start(kind).await;
    let s = f.seeded.clone();
    // cancel one: preview first (nothing changes), then confirm
    let preview = f.act("cancel", json!({ "ids": [s.queued[0]] })).await;
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert_eq!(
        preview.json()["preview"]["items"][0]["invocation_id"],
        s.queued[0].as_str()
    );
    assert_eq!(f.status(&s.queued[0]).await, "registered");
    let done = f.confirm("cancel", &s.queued[0]).await;
    assert_eq!(done["done"]["changed"], 1, "{done}");
    assert_eq!(f.status(&s.queued[0]).await, "cancelled");
    let d = f.api(&format!("/api/invocations/{}", s.queued[0])).await;
    let last = d["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], "monitor:ops", "{last}");
    // cancelling a SUCCESS is refused, and said so
    let done = f.confirm("cancel", &s.ok).await;
    assert_eq!(done["done"]["changed"], 0);
    assert_eq!(
        done["done"]["refused"].as_array().unwrap().len(),
        1,
        "{done}"
    );
    // rerun one: a new invocation linked to it
    let done = f.confirm("rerun", &s.ok).await;
    let new = done["done"]["new_invocations"][0]
        .as_str()
        .unwrap()
        .to_string();
    let d = f.api(&format!("/api/invocations/{new}")).await;
    assert_eq!(d["rerun_of"], s.ok.as_str());
    // both are invocations of the same call
    let call = d["invocation"]["call_id"].as_str().unwrap().to_string();
    let q: String = form_urlencoded::byte_serialize(call.as_bytes()).collect();
    let same = f.api(&format!("/api/invocations?call={q}")).await;
    assert_eq!(same["page"]["items"].as_array().unwrap().len(), 2, "{same}");
    // retry now: only FAILED ones
    let done = f.confirm("retry", &s.failed).await;
    assert_eq!(done["done"]["new_invocations"].as_array().unwrap().len(), 1);
    let done = f.confirm("retry", &s.ok).await;
    assert_eq!(done["done"]["refused"].as_array().unwrap().len(), 1);
    // run a scheduled call now: the same invocation, registered at once
    let later = add::task()
        .schedule_after_on(&f.app, Duration::from_secs(3600), (40, 2))
        .await
        .unwrap();
    let id = later.invocation_id().to_string();
    assert_eq!(f.status(&id).await, "scheduled");
    let page = f.page(&format!("/invocations/{id}")).await;
    assert!(
        page.contains("act-run-now"),
        "a scheduled invocation offers to run now"
    );
    let preview = f.act("run-now", json!({ "ids": [id] })).await.json();
    assert_eq!(preview["preview"]["items"][0]["invocation_id"], id.as_str());
    assert_eq!(f.status(&id).await, "scheduled");
    let done = f.confirm("run-now", &id).await;
    assert_eq!(done["done"]["changed"], 1, "{done}");
    assert_ne!(f.status(&id).await, "scheduled");
    let d = f.api(&format!("/api/invocations/{id}")).await;
    assert_eq!(d["history"][1]["status"], "registered", "{d}");
    assert_eq!(d["history"][1]["actor"], "monitor:ops", "{d}");
    // not scheduled any more: refused, said so
    let done = f.confirm("run-now", &id).await;
    assert_eq!(done["done"]["changed"], 0);
    assert_eq!(
        done["done"]["refused"].as_array().unwrap().len(),
        1,
        "{done}"
    );
    // bulk: every REGISTERED one matching a filter
    let preview = f
        .act(
            "cancel",
            json!({ "all_matching": true, "status": "registered" }),
        )
        .await
        .json();
    let n = preview["preview"]["items"].as_array().unwrap().len();
    assert_eq!(n, 4, "{preview}"); // one queued, the rerun, the retry, the one run now
    let done = f
        .act(
            "cancel",
            json!({ "all_matching": true, "status": "registered", "confirm": true }),
        )
        .await
        .json();
    assert_eq!(done["done"]["changed"], 4, "{done}");
    assert_eq!(
        f.api("/api/invocations?status=registered").await["page"]["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // nothing selected
    assert_eq!(
        f.act("cancel", json!({ "confirm": true })).await.status,
        400
    );
    // purge by filter: the preview lists what will go, then it goes
    let preview = f
        .act("purge", json!({ "status": "cancelled" }))
        .await
        .json();
    assert_eq!(
        preview["preview"]["items"].as_array().unwrap().len(),
        5,
        "{preview}"
    );
    assert!(f
        .api(&format!("/api/invocations/{}", s.queued[0]))
        .await
        .is_object());
    let done = f
        .act("purge", json!({ "status": "cancelled", "confirm": true }))
        .await
        .json();
    assert_eq!(done["done"]["changed"], 5);
    assert_eq!(
        Req::get(&format!("/api/invocations/{}", s.queued[0]))
            .bearer(OPERATOR)
            .send(f.addr)
            .await
            .status,
        404
    );
    assert_eq!(f.status(&s.ok).await, "success");
    // the purge page shows the list before anything goes (HTML form flow)
    let csrf = f.csrf().await;
    let page = Req::post("/actions/purge")
        .bearer(OPERATOR)
        .form(&[("csrf", &csrf), ("status", "failed")])
        .send(f.addr)
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&s.failed) && page.body.contains("id=\"confirm\""),
        "{}",
        page.body
    );
    assert_eq!(f.status(&s.failed).await, "failed");
    // HTML cancel flow: tick, confirm page, confirm
    let page = Req::post("/actions/rerun")
        .bearer(OPERATOR)
        .form(&[("csrf", &csrf), ("ids", &s.failed)])
        .send(f.addr)
        .await;
    assert!(page.body.contains("Confirm rerun"), "{}", page.body);
    let page = Req::post("/actions/rerun")
        .bearer(OPERATOR)
        .form(&[("csrf", &csrf), ("ids", &s.failed), ("confirm", "yes")])
        .send(f.addr)
        .await;
    assert!(
        page.body.contains("id=\"done-summary\">1 run again"),
        "{}",
        page.body
    );
    // the audit log: who, what, when
    let audit = f.api("/api/audit").await;
    let entries = audit["audit"].as_array().unwrap();
    assert_eq!(entries.len(), 10, "{audit}");
    assert!(entries
        .iter()
        .all(|e| e["user"] == "ops" && e["at_us"].is_i64()));
    assert_eq!(entries[0]["action"], "rerun");
    assert!(entries
        .iter()
        .any(|e| e["action"] == "purge"
            && e["target"].as_str().unwrap().contains("status=cancelled")));
    let page = f.page("/audit").await;
    assert!(page.contains("purge") && page.contains("all matching status=cancelled"));
    // metrics count them, with bounded labels
    let m = Req::get("/metrics").bearer(VIEWER).send(f.addr).await;
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(
        m.body
            .contains("pynenc_monitor_actions_total{action=\"cancel\"} 3"),
        "{}",
        m.body
    );
    f.stop().await;
}

async fn metrics_and_events(kind: Kind) {
    let f = Fixture::start(kind).await;
    let m = f.page("/metrics").await;
    for needle in [
        "status=\"success\"} 1",
        "pynenc_queue_depth 2",
        "pynenc_queue_oldest_age_seconds ",
        "pynenc_runners{state=\"alive\"}",
        "pynenc_failures{task=",
        "kind=\"Refused\"} 1",
    ] {
        assert!(m.contains(needle), "no {needle} in {m}");
    }
    // counters and the run-time histogram of the task totals: add was
    // routed three times (one ran), refuse once (it failed)
    let line = |metric: &str, task_end: &str| -> String {
        m.lines()
            .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(task_end))
            .unwrap_or_else(|| panic!("no {metric} for {task_end} in {m}"))
            .to_string()
    };
    for (metric, task, value) in [
        ("pynenc_invocations_routed_total", "add\"}", "3"),
        ("pynenc_invocations_started_total", "add\"}", "1"),
        ("pynenc_invocations_succeeded_total", "add\"}", "1"),
        ("pynenc_invocations_failed_total", "add\"}", "0"),
        ("pynenc_invocations_failed_total", "refuse\"}", "1"),
        ("pynenc_invocations_retried_total", "refuse\"}", "0"),
        ("pynenc_invocations_cancelled_total", "refuse\"}", "0"),
        ("pynenc_run_duration_seconds_count", "add\"}", "1"),
        (
            "pynenc_run_duration_seconds_bucket",
            "add\",le=\"+Inf\"}",
            "1",
        ),
        ("pynenc_run_duration_seconds_count", "refuse\"}", "1"),
    ] {
        let l = line(metric, task);
        assert!(l.ends_with(&format!(" {value}")), "{l} (want {value})");
    }
    assert!(m.contains("# TYPE pynenc_run_duration_seconds histogram"));
    assert!(m.contains("# TYPE pynenc_invocations_routed_total counter"));
    for id in [&f.seeded.ok, &f.seeded.failed, &f.seeded.queued[0]] {
        assert!(!m.contains(id.as_str()), "an invocation id in the metrics");
    }
    // live events: a change is pushed when work is routed
    let (head, mut stream) = Req::get("/events").bearer(VIEWER).open(f.addr).await;
    assert_eq!(head.status, 200);
    assert!(head
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    read_until(&mut stream, "event: ready", Duration::from_secs(5)).await;
    // a second page shares the watcher, and hears the same change
    let (_, mut second) = Req::get("/events").bearer(OPERATOR).open(f.addr).await;
    read_until(&mut second, "event: ready", Duration::from_secs(5)).await;
    add::call_on(&f.app, 5, 5).await.unwrap();
    for s in [&mut stream, &mut second] {
        let got = read_until(s, "\"queue\":3", Duration::from_secs(5)).await;
        assert!(got.contains("event: change"), "{got}");
    }
    // shutting down ends the stream and returns promptly
    tokio::time::timeout(Duration::from_secs(4), f.monitor.shutdown())
        .await
        .unwrap()
        .unwrap();
}

async fn family(kind: Kind) {
    let f = Fixture::start(kind).await;
    let runner = pynenc::ThreadRunner::with_slots(&f.app, 2).spawn();
    let top = fan::call_on(&f.app, 3).await.unwrap();
    assert_eq!(within("fan's result", top.result()).await.unwrap(), 6);
    within("the runner's stop", runner.stop()).await.unwrap();
    let id = top.invocation_id().to_string();
    let d = f.api(&format!("/api/invocations/{id}")).await;
    let tree = d["tree"].as_array().unwrap();
    assert_eq!(tree.len(), 3, "{d}");
    for pair in tree {
        assert!(pair["task_id"].as_str().unwrap().ends_with("::pair"));
        assert_eq!(pair["parent_invocation_id"], id.as_str());
        let kids = pair["children"].as_array().unwrap();
        assert_eq!(kids.len(), 1, "{pair}");
        assert!(kids[0]["task_id"].as_str().unwrap().ends_with("::add"));
        assert_eq!(kids[0]["more"], false);
    }
    let child = tree[0]["invocation_id"].as_str().unwrap();
    assert_eq!(
        f.api(&format!("/api/invocations/{child}")).await["parent"],
        id.as_str()
    );
    let page = f.page(&format!("/invocations/{id}")).await;
    assert!(page.contains("id=\"tree\""), "{page}");
    let kids = f.api(&format!("/api/invocations?parent={id}")).await;
    assert_eq!(kids["page"]["items"].as_array().unwrap().len(), 3);
    f.stop().await;
}

/// The calls folded into an invocation by registration concurrency, with
/// their differing arguments redacted like arguments.
async fn reuses(kind: Kind) {
    let f = Fixture::start(kind).await;
    let first = sign_in::call_on(&f.app, "ann".into(), PASSWORD.into(), "first".into())
        .await
        .unwrap();
    let other_password = "also-not-to-be-shown";
    let again = sign_in::call_on(&f.app, "ann".into(), other_password.into(), "second".into())
        .await
        .unwrap();
    assert_eq!(first.invocation_id(), again.invocation_id());
    let id = first.invocation_id().to_string();
    let d = f.api(&format!("/api/invocations/{id}")).await;
    assert_eq!(d["reuses"]["total"], 1, "{d}");
    let shown = d["reuses"]["latest"][0]["differing"].as_array().unwrap();
    let names: Vec<&str> = shown.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["note", "password"], "{d}");
    assert_eq!(shown[0]["value"], "\"second\"");
    assert_eq!(shown[1]["value"], "<redacted>");
    let page = f.page(&format!("/invocations/{id}")).await;
    assert!(page.contains("Reused by 1 call"), "{page}");
    assert!(
        page.contains("id=\"reuses\"") && page.contains("note = &quot;second&quot;"),
        "{page}"
    );
    for secret in [PASSWORD, other_password] {
        assert!(!page.contains(secret) && !d.to_string().contains(secret));
    }
    // an invocation nobody reused shows no such section
    let plain = f.page(&format!("/invocations/{}", f.seeded.ok)).await;
    assert!(!plain.contains("Reused by"));
    f.stop().await;
}

macro_rules! on_backends {
    ($($name:ident),*) => {
        mod memory {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(Kind::Memory).await })*
        }
        mod sqlite {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(Kind::Sqlite).await })*
        }
        mod redis {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if redis_skip() {
                    return;
                }
                super::$name(Kind::Redis).await
            })*
        }
    };
}

on_backends!(views_and_api, actions, metrics_and_events, family, reuses);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_file_keeps_actions_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let path = file.clone();
    let f = Fixture::start_with(Kind::Sqlite, move |o| pynenc_monitor::MonitorOptions {
        audit_file: Some(path),
        ..o
    })
    .await;
    let id = f.seeded.queued[0].clone();
    let r = f
        .act("cancel", json!({ "ids": [id], "confirm": true }))
        .await;
    assert_eq!(r.status, 200);
    let app = f.app.clone();
    f.stop().await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"action\":\"cancel\"") && text.contains(&id));
    // a new monitor process reads it back
    let options = pynenc_monitor::MonitorOptions {
        bind: "127.0.0.1:0".parse().unwrap(),
        audit_file: Some(file.clone()),
        ..pynenc_monitor::MonitorOptions::default()
    }
    .credential(pynenc_monitor::Credential::new(
        "ops",
        OPERATOR,
        pynenc_monitor::Role::Operator,
    ));
    let m = pynenc_monitor::Monitor::start(&app, options).await.unwrap();
    let audit = Req::get("/api/audit")
        .bearer(OPERATOR)
        .send(m.addr())
        .await
        .json();
    assert_eq!(audit["audit"][0]["target"], id.as_str(), "{audit}");
    let conf = Req::get("/api/config")
        .bearer(OPERATOR)
        .send(m.addr())
        .await
        .json();
    assert!(
        conf["monitor"]["audit log"]
            .as_str()
            .unwrap()
            .contains("audit.jsonl"),
        "{conf}"
    );
    m.shutdown().await.unwrap();
    // a file that cannot be opened is refused at start
    let bad = pynenc_monitor::MonitorOptions {
        bind: "127.0.0.1:0".parse().unwrap(),
        audit_file: Some(dir.path().join("missing-dir").join("audit.jsonl")),
        ..pynenc_monitor::MonitorOptions::default()
    };
    assert!(matches!(
        pynenc_monitor::Monitor::start(&app, bad).await,
        Err(pynenc_monitor::MonitorError::AuditFile { .. })
    ));
}
