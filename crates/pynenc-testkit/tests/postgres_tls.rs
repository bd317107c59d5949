//! PostgreSQL over TLS: a URL with `sslmode=require` connects with the
//! server's certificate verified against `postgres.postgres_tls_ca_file`
//! (or the system's trust store), and every connection of the backend —
//! the writer, the reader and the listener — is encrypted.
//!
//! The test starts its own server, makes a certificate authority and a
//! server certificate for 127.0.0.1 with the `openssl` command, and turns
//! TLS on. An unrelated authority must be refused, so the certificate
//! really is checked. Skipped with a message when the PostgreSQL programs
//! or `openssl` are missing (a failure with `PYNENC_REQUIRE_POSTGRES=1`).

#![cfg(feature = "postgres-tls")]

use std::path::Path;

use pynenc::Pynenc;
use pynenc_testkit::start_runner;
use pynenc_testkit::tasks::add;
use pynenc_testservers::certs::TestCerts;
use pynenc_testservers::postgres::{skip_reason, PostgresServer};

fn skip(reason: &str) {
    if std::env::var("PYNENC_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("PYNENC_REQUIRE_POSTGRES=1 but {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

fn app_at(url: &str, ca_file: Option<&Path>) -> pynenc::Result<Pynenc> {
    let mut b = Pynenc::builder()
        .env_vars(Vec::new())
        .app_id("tls")
        .config_value("backend", "postgres")
        .config_value("postgres.postgres_url", url)
        .config_value("postgres.postgres_connect_timeout_ms", 5000);
    if let Some(ca) = ca_file {
        b = b.config_value(
            "postgres.postgres_tls_ca_file",
            ca.to_string_lossy().to_string(),
        );
    }
    b.build()
}

/// Connections of the app (`application_name` pynenc) by whether they are
/// encrypted: `(encrypted, plain)`.
fn connections(server: &PostgresServer) -> (u64, u64) {
    let out = server.psql(
        "postgres",
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'pynenc'",
    );
    let mut parts = out.trim().split('|').map(|n| n.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn calls_and_results_over_verified_tls() {
    if let Some(reason) = skip_reason() {
        skip(&reason);
        return;
    }
    let certs = match TestCerts::make() {
        Ok(c) => c,
        Err(e) => {
            skip(&format!(
                "cannot make test certificates with the openssl command: {e}"
            ));
            return;
        }
    };
    let server = PostgresServer::start();
    server
        .enable_tls(&certs.server_cert(), &certs.server_key())
        .unwrap_or_else(|e| panic!("cannot turn TLS on: {e}"));
    server.create_database("tlsdb");
    let url = format!("{}?sslmode=require", server.url_for("tlsdb"));

    // an unrelated authority: refused when the app is built, naming the
    // server and the certificate
    let err = app_at(&url, Some(&certs.other_ca()))
        .expect_err("a certificate from an untrusted authority must be refused");
    let msg = err.to_string();
    println!("untrusted CA: {msg}");
    assert!(
        msg.contains("127.0.0.1") && msg.to_ascii_lowercase().contains("certificate"),
        "the error names the server and the certificate problem: {msg}"
    );
    // the system's trust store does not know the test's authority either
    let err = app_at(&url, None).expect_err("the system store must not trust the test's authority");
    assert!(
        err.to_string().to_ascii_lowercase().contains("certificate"),
        "{err}"
    );
    // a CA file without sslmode=require is a configuration error
    let plain_url = server.url_for("tlsdb");
    let err = app_at(&plain_url, Some(&certs.ca())).expect_err("a CA file needs sslmode=require");
    assert!(
        err.to_string().contains("postgres.postgres_tls_ca_file")
            && err.to_string().contains("sslmode=require"),
        "{err}"
    );

    // the right authority: calls, groups and wake-ups over TLS
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let app = app_at(&url, Some(&certs.ca())).unwrap_or_else(|e| panic!("build over TLS: {e}"));
        let runner = start_runner(&app, 4);
        let inv = add::call_on(&app, 2, 3).await.expect("call over TLS");
        assert_eq!(inv.result().await.expect("result over TLS"), 5);
        let group = add::parallelize_on(&app, (0..50).map(|i| (i, 1)))
            .await
            .expect("parallelize over TLS");
        let results = group.results().await.expect("results over TLS");
        assert_eq!(results.iter().sum::<i64>(), (0..50).sum::<i64>() + 50);
        // every connection of the app is encrypted (the caller's and the
        // runner's writer, reader and listener)
        let (encrypted, plain) = connections(&server);
        println!("connections: {encrypted} encrypted, {plain} plain");
        assert!(encrypted >= 2, "{encrypted} encrypted connections");
        assert_eq!(plain, 0, "a connection in the clear");
        runner.stop().await.expect("stop");
    });
}
