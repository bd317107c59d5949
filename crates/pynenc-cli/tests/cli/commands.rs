//! Every command on one backend, with its `--json` parsed, and bad input.

use std::path::Path;

use pynenc::{InvocationStatus, Pynenc};
use serde_json::Value;

use crate::support::*;

/// Every command on one backend (`conn`: its connection flags).
pub async fn every_command(dir: &Path, conn: &[&str], app: &Pynenc) {
    let (fan_id, failed_id, queued) = seed(app).await;

    let apps = json(dir, conn, &["apps"]);
    assert!(
        apps["apps"].as_array().unwrap().iter().any(|a| a == APP),
        "{apps}"
    );

    let list = json(dir, conn, &["list"]);
    assert_eq!(list["items"].as_array().unwrap().len(), 7, "{list}");
    let page = json(dir, conn, &["list", "--limit", "4", "--oldest-first"]);
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    assert_eq!(page["items"][0]["invocation_id"], fan_id.as_str());
    let next = page["next"].as_str().expect("a cursor").to_string();
    let rest = json(
        dir,
        conn,
        &["list", "--limit", "4", "--oldest-first", "--after", &next],
    );
    assert_eq!(rest["items"].as_array().unwrap().len(), 3);
    assert!(rest["next"].is_null());
    let failed = json(dir, conn, &["list", "--status", "failed"]);
    assert_eq!(failed["items"][0]["invocation_id"], failed_id.as_str());
    let owner = entry(&list, "items", "invocation_id", &fan_id)["owner"]
        .as_str()
        .expect("the runner that ran the fan-out")
        .to_string();
    let owned = json(dir, conn, &["list", "--runner", &owner]);
    assert_eq!(owned["items"].as_array().unwrap().len(), 5, "{owned}");
    let children = json(dir, conn, &["list", "--parent", &fan_id]);
    assert_eq!(children["items"].as_array().unwrap().len(), 3);
    let recent = json(
        dir,
        conn,
        &["list", "--since", "10m", "--task", add::task().task_id()],
    );
    assert_eq!(recent["items"].as_array().unwrap().len(), 5);

    let show = json(dir, conn, &["show", &fan_id]);
    assert_eq!(show["invocation"]["status"], "success");
    assert_eq!(show["result"], 6);
    assert_eq!(show["arguments"], "(n=3)");
    assert_eq!(show["children"].as_array().unwrap().len(), 3);
    let statuses: Vec<&str> = show["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"registered"));
    assert_eq!(statuses.last(), Some(&"success"));
    let shown = json(dir, conn, &["show", &failed_id]);
    assert_eq!(shown["error"]["kind"], "Refused");
    let text = stdout(&pynenc(dir, &[conn, &["show", &failed_id]].concat()));
    assert!(text.contains("Refused: no 7"), "{text}");

    let tree = json(dir, conn, &["tree", &fan_id]);
    assert_eq!(tree["children"].as_array().unwrap().len(), 3);
    let drawn = stdout(&pynenc(dir, &[conn, &["tree", &fan_id]].concat()));
    assert_eq!(drawn.lines().count(), 4, "{drawn}");
    assert!(drawn.contains("└── "), "{drawn}");

    let tasks = json(dir, conn, &["tasks"]);
    let add_row = entry(&tasks, "tasks", "task_id", add::task().task_id());
    assert_eq!(add_row["counts"]["success"], 3);
    assert_eq!(add_row["counts"]["registered"], 2);
    let refuse_row = entry(&tasks, "tasks", "task_id", refuse::task().task_id());
    assert_eq!(refuse_row["failed_by_kind"]["Refused"], 1);

    let runners = json(dir, conn, &["runners"]);
    assert!(runners["runners"].as_array().is_some(), "{runners}");
    let queue = json(dir, conn, &["queue", "--next", "5"]);
    assert_eq!(queue["depth"], 2);
    assert_eq!(queue["oldest"]["invocation_id"], queued[0].as_str());
    assert_eq!(queue["next"].as_array().unwrap().len(), 2);

    // cancel: one queued by id; an ended one is refused (exit 4), nothing changes
    let cancelled = json(dir, conn, &["cancel", &queued[0]]);
    assert_eq!(cancelled["cancelled"], 1);
    fails(
        dir,
        &[conn, &["cancel", &fan_id]].concat(),
        4,
        "cannot be cancelled",
    );
    // cancel by filter: the other queued one
    let by_filter = json(dir, conn, &["cancel", "--status", "registered"]);
    assert_eq!(by_filter["cancelled"], 1);
    let st = app
        .orchestrator()
        .get_status(&pynenc::InvocationId::parse(&queued[1]).unwrap())
        .await
        .unwrap();
    assert_eq!(st.status, InvocationStatus::Cancelled);

    // rerun and retry-failed route new invocations linked to the originals
    let rerun = json(dir, conn, &["rerun", &fan_id]);
    let new = rerun["rerun"][0]["new"].as_str().unwrap().to_string();
    let record = app
        .state_backend()
        .get_invocation(&pynenc::InvocationId::parse(&new).unwrap())
        .await
        .unwrap();
    assert_eq!(record.rerun_of.map(|i| i.to_string()), Some(fan_id.clone()));
    fails(
        dir,
        &[conn, &["retry-failed", &fan_id]].concat(),
        4,
        "only FAILED",
    );
    let retried = json(
        dir,
        conn,
        &["retry-failed", "--task", refuse::task().task_id()],
    );
    assert_eq!(retried["retried"].as_array().unwrap().len(), 1);
    // rerun by filter: the two cancelled additions, once each
    let by_filter = json(dir, conn, &["rerun", "--status", "cancelled"]);
    let originals: Vec<&str> = by_filter["rerun"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["original"].as_str().unwrap())
        .collect();
    assert_eq!(originals, vec![queued[0].as_str(), queued[1].as_str()]);

    // purge: refused when piped without --yes, then done with it
    let before = json(
        dir,
        conn,
        &["list", "--status", "success", "--limit", "100"],
    );
    let successes = before["items"].as_array().unwrap().len();
    assert_eq!(successes, 4);
    fails(
        dir,
        &[conn, &["purge", "--status", "success"]].concat(),
        4,
        "pass --yes",
    );
    assert_eq!(
        json(dir, conn, &["list", "--status", "success"])["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let purged = json(dir, conn, &["purge", "--status", "success", "--yes"]);
    assert_eq!(purged["deleted"], 4);
    assert!(json(dir, conn, &["list", "--status", "success"])["items"]
        .as_array()
        .unwrap()
        .is_empty());
    let none = json(dir, conn, &["purge", "--older-than", "1d", "--yes"]);
    assert_eq!(none["deleted"], 0);

    // watch, piped: one line per update
    let o = pynenc(
        dir,
        &[conn, &["watch", "--count", "2", "--interval", "200ms"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("total="), "{lines:?}");
    let o = pynenc(dir, &[conn, &["watch", "--count", "1", "--json"]].concat());
    let v: Value = serde_json::from_slice(&o.stdout).expect("a JSON line");
    assert!(v["counts"]["cancelled"].as_u64() == Some(2), "{v}");

    // bad input: clear errors, documented codes
    let bad: &[(&[&str], i32, &str)] = &[
        (
            &["show", "0661e8c1ba395d7720446a580bd0193f"],
            3,
            "not found",
        ),
        (&["show", "nope"], 2, "'nope' is not an invocation id"),
        (
            &["list", "--task", "no::such"],
            2,
            "'no::such' is neither registered",
        ),
        (&["list", "--status", "done"], 2, "'done' is not a status"),
        (&["list", "--since", "yesterday"], 2, "--since 'yesterday'"),
        (&["list", "--limit", "5000"], 2, "page cap"),
        (&["list", "--frobnicate"], 2, "--frobnicate"),
        (&["list", "--after", "c1.nope"], 2, "invalid cursor"),
        (&["cancel"], 2, "cancel what?"),
        (&["rerun"], 2, "rerun what?"),
        (
            &["purge", "--status", "running", "--yes"],
            2,
            "ended invocations only",
        ),
        (&["runner", "start"], 2, "embedded"),
    ];
    for (args, code, needle) in bad {
        fails(dir, &[conn, args].concat(), *code, needle);
    }
    fails(
        dir,
        &[&conn[..2], &["--app", "nobody", "list"]].concat(),
        3,
        "app 'nobody' has no data",
    );

    // standalone call: by the task's stored invocations
    let called = json(
        dir,
        conn,
        &[
            "call",
            add::task().task_id(),
            "--arg",
            "x=2",
            "--arg",
            "y=3",
        ],
    );
    let id = pynenc::InvocationId::parse(called["invocation_id"].as_str().unwrap()).unwrap();
    let record = app.state_backend().get_invocation(&id).await.unwrap();
    assert_eq!(record.call.arguments.get("y"), Some("3"));
    let queued_now = json(dir, conn, &["queue"])["depth"].as_u64();
    fails(
        dir,
        &[
            conn,
            &[
                "call",
                add::task().task_id(),
                "--arg",
                "x=2",
                "--arg",
                "z=3",
            ],
        ]
        .concat(),
        2,
        "unknown [z], missing [y]",
    );
    fails(
        dir,
        &[conn, &["call", "no::such", "--arg", "x=1"]].concat(),
        2,
        "'no::such' is neither registered",
    );
    fails(
        dir,
        &[conn, &["call", add::task().task_id(), "--arg", "x=two"]].concat(),
        2,
        "is not JSON",
    );
    assert_eq!(
        json(dir, conn, &["queue"])["depth"].as_u64(),
        queued_now,
        "bad calls routed nothing"
    );
}
