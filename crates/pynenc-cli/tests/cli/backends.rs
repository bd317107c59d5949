//! The commands on a real SQLite file, a real `redis-server` and a real
//! PostgreSQL server, and what goes wrong with each: missing, locked or bad files, unreachable servers,
//! wrong passwords, configuration layers.

use std::path::Path;
use std::process::{Command, Stdio};

use pynenc::Pynenc;
use serde_json::Value;

use crate::commands::every_command;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_sqlite() {
    let dir = tempdir();
    let db = dir.path().join("shop.db");
    let app = sqlite_app(&db);
    let db_text = db.display().to_string();
    every_command(dir.path(), &["--sqlite-path", &db_text, "--app", APP], &app).await;
    // `show` of an invocation other calls reused (after every_command,
    // whose counts it would change)
    let conn = ["--sqlite-path", db_text.as_str(), "--app", APP];
    let first = keyed::call_on(&app, "k".into(), "first".into())
        .await
        .unwrap();
    keyed::call_on(&app, "k".into(), "second".into())
        .await
        .unwrap();
    let id = first.invocation_id().to_string();
    let shown = json(dir.path(), &conn, &["show", &id]);
    assert_eq!(shown["reuses"]["total"], 1, "{shown}");
    assert!(
        shown["reuses"]["latest"][0]["differing"]
            .as_str()
            .unwrap()
            .contains("note=\"second\""),
        "{shown}"
    );
    let text = stdout(&pynenc(dir.path(), &[&conn[..], &["show", &id]].concat()));
    assert!(
        text.contains("reused by") && text.contains("1 call(s); the latest differed in"),
        "{text}"
    );

    // the configuration layers: a file given with --config, then PYNENC__ variables
    let toml = dir.path().join("shop.toml");
    std::fs::write(
        &toml,
        format!(
            "app_id = \"{APP}\"\nbackend = \"sqlite\"\n\n[sqlite]\nsqlite_path = {db_text:?}\n"
        ),
    )
    .unwrap();
    let by_file = json(
        dir.path(),
        &["--config", &toml.display().to_string()],
        &["tasks"],
    );
    assert!(
        !by_file["tasks"].as_array().unwrap().is_empty(),
        "{by_file}"
    );
    let o = command(
        Path::new(env!("CARGO_BIN_EXE_pynenc")),
        dir.path(),
        &["queue", "--json"],
    )
    .env("PYNENC__BACKEND", "sqlite")
    .env("PYNENC__SQLITE__SQLITE_PATH", &db_text)
    .env("PYNENC__APP_ID", APP)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let by_env: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(by_env["depth"].is_u64(), "{by_env}");
    let conf = json(
        dir.path(),
        &["--config", &toml.display().to_string()],
        &["config"],
    );
    let source = &entry(&conf, "config", "key", "sqlite.sqlite_path")["source"];
    assert_eq!(*source, format!("file {}", toml.display()));
    fails(
        dir.path(),
        &["--config", "nope.toml", "list"],
        5,
        "nope.toml does not exist",
    );

    // a missing file is an error and is not created
    let missing = dir.path().join("missing.db");
    fails(
        dir.path(),
        &["--sqlite-path", &missing.display().to_string(), "list"],
        5,
        "does not exist",
    );
    assert!(!missing.exists());
    // a file that is not a database
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all, just text").unwrap();
    fails(
        dir.path(),
        &["--sqlite-path", &junk.display().to_string(), "list"],
        5,
        "junk.db",
    );
    // no backend named
    fails(dir.path(), &["list"], 5, "no shared backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_is_a_clear_error() {
    let dir = tempdir();
    let db = dir.path().join("locked.db");
    let app = sqlite_app(&db);
    add::call_on(&app, 1, 1).await.expect("route");
    // another process holds the write lock for the whole run
    let db_text = db.display().to_string();
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); \
             c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(30)",
            &db_text,
        ])
        .stdout(Stdio::piped())
        .spawn();
    let Ok(child) = holder.as_mut() else {
        eprintln!("skipped: python3 is needed to hold a lock on the file");
        return;
    };
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert_eq!(first.trim(), "locked");
    let o = pynenc(
        dir.path(),
        &["--sqlite-path", &db_text, "--app", APP, "purge", "--yes"],
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("locked") || stderr(&o).contains("busy"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_redis() {
    if let Some(reason) = pynenc_testservers::redis::skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let server = pynenc_testservers::redis::RedisServer::start();
    let url = server.url();
    let dir = tempdir();
    let app = Pynenc::builder()
        .app_id(APP)
        .config_value("backend", "redis")
        .config_value("redis.redis_url", url.clone())
        .build()
        .expect("app");
    every_command(dir.path(), &["--redis-url", &url, "--app", APP], &app).await;

    // unreachable server, wrong password
    let port = server.port();
    fails(
        dir.path(),
        &["--redis-url", "redis://127.0.0.1:1/0", "list"],
        5,
        "127.0.0.1:1",
    );
    server
        .command(&["ACL", "SETUSER", "ops", "on", ">right", "~*", "&*", "+@all"])
        .expect("ACL SETUSER");
    let wrong = format!("redis://ops:wrong@127.0.0.1:{port}/0");
    fails(
        dir.path(),
        &["--redis-url", &wrong, "--app", APP, "list"],
        5,
        "cannot open the redis backend",
    );
    // the password never shows, in errors or in `config`
    let o = pynenc(dir.path(), &["--redis-url", &wrong, "--app", APP, "list"]);
    assert!(!stderr(&o).contains("wrong"), "{}", stderr(&o));
    let conf = json(dir.path(), &["--redis-url", &wrong], &["config"]);
    let url_entry = entry(&conf, "config", "key", "redis.redis_url");
    assert!(
        !url_entry["value"].as_str().unwrap().contains("wrong"),
        "{url_entry}"
    );
    assert_eq!(url_entry["source"], "code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_postgres() {
    let Some(db) = pynenc_testservers::postgres::test_database() else {
        return;
    };
    let url = db.url();
    let dir = tempdir();
    let app = Pynenc::builder()
        .app_id(APP)
        .config_value("backend", "postgres")
        .config_value("postgres.postgres_url", url.clone())
        .build()
        .expect("app");
    every_command(dir.path(), &["--postgres-url", &url, "--app", APP], &app).await;

    // an absent server names its address; two backends at once are refused
    fails(
        dir.path(),
        &[
            "--postgres-url",
            "postgres://ops:s3cret@127.0.0.1:1/db",
            "list",
        ],
        5,
        "127.0.0.1:1",
    );
    let o = pynenc(
        dir.path(),
        &[
            "--postgres-url",
            "postgres://ops:s3cret@127.0.0.1:1/db",
            "list",
        ],
    );
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    fails(
        dir.path(),
        &["--postgres-url", &url, "--redis-url", "redis://x", "list"],
        2,
        "name two backends",
    );
    // the URL is a secret in `config`
    let conf = json(
        dir.path(),
        &["--postgres-url", "postgres://ops:s3cret@127.0.0.1:1/db"],
        &["config"],
    );
    let url_entry = entry(&conf, "config", "key", "postgres.postgres_url");
    assert!(
        !url_entry["value"].as_str().unwrap().contains("s3cret"),
        "{url_entry}"
    );
}
