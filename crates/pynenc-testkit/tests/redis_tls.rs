//! `rediss://`: a call and its result over a real TLS connection with the
//! server certificate verified against a CA made for the test.
//!
//! The test makes a CA and a server certificate (for `127.0.0.1`) with the
//! `openssl` command, starts `redis-server` with TLS only (`--port 0
//! --tls-port …`), and trusts the CA through the `redis.redis_tls_ca_file`
//! setting. A second, unrelated CA must be refused, so the certificate
//! really is checked.
//!
//! Skipped with a message when `redis-server` or `openssl` is missing, or
//! when the installed `redis-server` was built without TLS (a failure with
//! `PYNENC_REQUIRE_REDIS=1`). Built with the testkit's `redis-tls` feature
//! (on by default).

#![cfg(feature = "redis-tls")]

use std::path::Path;

use pynenc::Pynenc;
use pynenc_testkit::redis_server::{skip_reason, RedisServer, RedisServerOptions, RedisTlsFiles};
use pynenc_testkit::start_runner;
use pynenc_testkit::tasks::add;
use pynenc_testservers::certs::TestCerts;

fn require() -> bool {
    std::env::var("PYNENC_REQUIRE_REDIS").as_deref() == Ok("1")
}

fn skip(reason: &str) {
    if require() {
        panic!("PYNENC_REQUIRE_REDIS=1 but {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

fn app_at(url: &str, app_id: &str, ca_file: &Path) -> pynenc::Result<Pynenc> {
    Pynenc::builder()
        .env_vars(Vec::new())
        .app_id(app_id)
        .config_value("backend", "redis")
        .config_value("redis.redis_url", url)
        .config_value(
            "redis.redis_tls_ca_file",
            ca_file.to_string_lossy().to_string(),
        )
        .build()
}

/// Whether a failed start says the server has no TLS support.
fn lacks_tls(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("tls")
        && (e.contains("bad directive")
            || e.contains("not supported")
            || e.contains("unrecognized")
            || e.contains("unknown")
            || e.contains("built without"))
}

#[test]
fn call_and_result_over_verified_tls() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let dir = match TestCerts::make() {
        Ok(certs) => certs,
        Err(e) => {
            skip(&format!(
                "cannot make test certificates with the openssl command: {e}"
            ));
            return;
        }
    };
    let options = RedisServerOptions {
        tls: Some(RedisTlsFiles {
            cert_file: dir.server_cert(),
            key_file: dir.server_key(),
            ca_file: dir.ca(),
        }),
        ..Default::default()
    };
    let server = match RedisServer::try_start_with(options) {
        Ok(s) => s,
        Err(e) if lacks_tls(&e) => {
            skip(&format!(
                "the installed redis-server has no TLS support: {e}"
            ));
            return;
        }
        Err(e) => panic!("could not start redis-server with TLS: {e}"),
    };
    let url = server.url();
    assert!(url.starts_with("rediss://127.0.0.1:"), "{url}");

    // an unrelated CA: the server certificate is refused when the app is built
    let err = app_at(&url, "tls", &dir.other_ca())
        .expect_err("a certificate from an untrusted CA must be refused");
    let msg = err.to_string();
    println!("untrusted CA: {msg}");
    if msg.contains("`redis-tls`") {
        // pynenc was built without TLS (the testkit has no feature to gate
        // on): a skip, whatever PYNENC_REQUIRE_REDIS says
        eprintln!("SKIPPED: {msg} (run with --features pynenc/redis-tls)");
        return;
    }
    assert!(
        msg.contains("127.0.0.1") && msg.to_ascii_lowercase().contains("cert"),
        "the error names the server and the certificate problem: {msg}"
    );

    // plain redis:// to the TLS port does not get an answer that passes for Redis
    let plain = format!("redis://127.0.0.1:{}/0", server.port());
    assert!(
        app_at(&plain, "tls", &dir.ca()).is_err(),
        "a plain connection to a TLS port must fail"
    );

    // the right CA
    let ca = dir.ca();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let app = app_at(&url, "tls", &ca).unwrap_or_else(|e| panic!("build over TLS: {e}"));
        let runner = start_runner(&app, 4);
        let inv = add::call_on(&app, 2, 3).await.expect("call over TLS");
        println!("called {} over {url}", inv.invocation_id());
        assert_eq!(inv.result().await.expect("result over TLS"), 5);
        // a group: pipelined reads and pub/sub wake-ups over TLS too
        let group = add::parallelize_on(&app, (0..50).map(|i| (i, 1)))
            .await
            .expect("parallelize over TLS");
        let results = group.results().await.expect("group results over TLS");
        assert_eq!(results, (0..50).map(|i| i + 1).collect::<Vec<i64>>());
        assert!(pynenc_testkit::check_histories(&app).await >= 51);
        runner.stop().await.expect("stop the runner");
        app.purge().await.expect("purge");
    });
    drop(server);
}
