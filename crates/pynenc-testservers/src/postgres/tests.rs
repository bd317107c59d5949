//! Tests of the test servers themselves.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::database::*;
use super::server::*;
use super::*;

/// The local binaries, needed to start a server (not only a URL).
fn local_or_skip() -> bool {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return false;
    }
    if !missing_programs(true).is_empty() {
        eprintln!("SKIPPED: {SKIP_MESSAGE}");
        return false;
    }
    true
}

#[test]
fn urls_are_rewritten_and_redacted() {
    assert_eq!(
        with_database("postgres://u:p@h:5433/db?sslmode=require", "x_1"),
        "postgres://u:p@h:5433/x_1?sslmode=require"
    );
    assert_eq!(with_database("postgresql://h", "x"), "postgresql://h/x");
    assert_eq!(with_database("postgres://h?a=b", "x"), "postgres://h/x?a=b");
    assert_eq!(
        with_database("host=h user=u", "x"),
        "host=h user=u dbname='x'"
    );
    assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact("postgres://u@h:5/db"), "postgres://u@h:5/db");
    assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    let name = unique_database_name();
    assert!(name.starts_with(&format!("pynenc_test_{}_", std::process::id())));
    assert!(name.len() < 64, "{name} is longer than a PostgreSQL name");
    assert_ne!(name, unique_database_name());
}

#[test]
fn a_server_starts_stops_and_starts_again_on_the_same_port_and_data() {
    if !local_or_skip() {
        return;
    }
    let mut server = PostgresServer::start();
    let port = server.port();
    assert_ne!(port, STANDARD_PORT);
    assert_eq!(
        server.url(),
        format!("postgres://pynenc@127.0.0.1:{port}/postgres")
    );
    server.create_database("first");
    assert_eq!(server.psql("first", "select 1"), "1\n");
    server.psql(
        "first",
        "create table t (v text); insert into t values ('kept'); select 1;",
    );
    assert_eq!(
        server.psql(
            "postgres",
            "show listen_addresses; show fsync; show max_connections"
        ),
        "127.0.0.1\noff\n200\n"
    );

    server.stop();
    assert!(!server.is_running());
    let refused = run_psql(&server.url_for("first"), "select 1", true);
    assert!(refused.is_err(), "a stopped server answered: {refused:?}");

    server.start_again();
    assert_eq!(server.port(), port);
    assert_eq!(server.psql("first", "select v from t"), "kept\n");

    // a crash: recovered at the next start
    // synchronous_commit=off: only what is flushed survives a kill
    server.psql("first", "insert into t values ('committed'); checkpoint");
    server.kill();
    assert!(!server.is_running());
    server.start_again();
    assert_eq!(server.psql("first", "select count(*) from t"), "2\n");

    // the restart of a running server
    server.start_again();
    assert_eq!(server.psql("first", "select 1"), "1\n");

    let dir = server.dir().to_path_buf();
    let pid = server.child.as_ref().map(Child::id).unwrap();
    assert!(dir.join("data").is_dir());
    drop(server);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!alive(pid), "postmaster {pid} left running");
}

#[test]
fn psql_errors_name_the_failure() {
    if !local_or_skip() {
        return;
    }
    let db = test_database().unwrap();
    let message = std::panic::catch_unwind(|| db.psql("select * from missing_table"))
        .unwrap_err()
        .downcast::<String>()
        .unwrap();
    assert!(message.contains("missing_table"), "{message}");
    assert!(message.contains(db.name()), "{message}");
}

#[test]
fn two_test_databases_are_different_databases_on_one_server() {
    let Some(a) = test_database() else {
        return;
    };
    let b = test_database().unwrap();
    assert_ne!(a.name(), b.name());
    assert_ne!(a.url(), b.url());
    let server_of = |url: &str| url[..url.rfind('/').unwrap()].to_string();
    assert_eq!(server_of(&a.url()), server_of(&b.url()));
    assert_eq!(
        a.psql("select current_database()"),
        format!("{}\n", a.name())
    );
    assert_eq!(
        b.psql("select current_database()"),
        format!("{}\n", b.name())
    );
    a.psql("create table only_in_a (v int)");
    assert_eq!(
        b.psql("select count(*) from pg_tables where tablename = 'only_in_a'"),
        "0\n"
    );

    // the databases go with them
    let (a_name, b_name) = (a.name().to_string(), b.name().to_string());
    drop(a);
    drop(b);
    let c = test_database().unwrap();
    assert_eq!(
        c.psql(&format!(
            "select count(*) from pg_database where datname in ('{a_name}', '{b_name}')"
        )),
        "0\n"
    );
}

#[test]
fn an_own_server_restarts_without_disturbing_the_shared_one() {
    let Some(shared) = test_database() else {
        return;
    };
    let mut own = TestDatabase::own_server().unwrap();
    assert!(shared.url() != own.url());
    own.psql("create table t (v int); insert into t values (7)");
    let Some(server) = own.server() else {
        eprintln!("SKIPPED: no server binaries, only {URL_VAR}");
        return;
    };
    server.stop();
    assert_eq!(shared.psql("select 1"), "1\n");
    server.start_again();
    assert_eq!(own.psql("select v from t"), "7\n");
    assert_eq!(shared.psql("select 2"), "2\n");
}

/// Whether `pid` runs (a zombie is dead).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Run by `the_shared_server_dies_with_the_test_process` in a process
/// of its own: starts the shared server, prints its pid and directory,
/// and returns (the process then exits without dropping it).
#[test]
#[ignore = "run by the_shared_server_dies_with_the_test_process"]
fn hold_the_shared_server() {
    let db = test_database().unwrap();
    assert_eq!(db.psql("select 1"), "1\n");
    let server = shared_server();
    let pid = server.child.as_ref().map(Child::id).unwrap();
    println!("SHARED pid={pid} dir={}", server.dir().display());
    std::mem::forget(db);
}

#[test]
fn the_shared_server_dies_with_the_test_process() {
    if !cfg!(target_os = "linux") || !local_or_skip() || external_url().is_some() {
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "postgres::tests::hold_the_shared_server",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the helper failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("SHARED ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no SHARED line in {stdout}"));
    let (pid, dir) = line.split_once(" dir=").unwrap();
    let pid: u32 = pid.strip_prefix("pid=").unwrap().parse().unwrap();
    let dir = PathBuf::from(dir);
    let deadline = Instant::now() + Duration::from_secs(15);
    while (alive(pid) || dir.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !alive(pid),
        "the shared postmaster {pid} outlived its process"
    );
    assert!(!dir.exists(), "{} outlived its process", dir.display());
}
