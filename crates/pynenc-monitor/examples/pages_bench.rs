//! How long each page and API call of the monitor takes over a SQLite app
//! with many invocations (a measurement, not a test).
//!
//! ```text
//! cargo run --release -p pynenc-monitor --example pages_bench -- 100000
//! cargo run --release -p pynenc-monitor --example pages_bench -- 100000 redis
//! ```
//!
//! With `redis`, a `redis-server` is started on a free port (it must be on
//! `PATH`). Routes N calls (a tenth of them run by a runner, some failing), starts
//! the monitor on a free port, and asks each page and API call 5 times.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pynenc::{Pynenc, TaskError, ThreadRunner};
use pynenc_monitor::{Credential, Monitor, MonitorOptions, Role};

/// Fails for multiples of 7.
#[pynenc::task]
async fn work(n: u64) -> Result<u64, TaskError> {
    if n.is_multiple_of(7) {
        return Err(TaskError::new("Seven", format!("{n}")));
    }
    Ok(n)
}

const TOKEN: &str = "bench-operator-token";

fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, usize)> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let status = String::from_utf8_lossy(&raw[..12.min(raw.len())])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, raw.len()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let backend = std::env::args().nth(2).unwrap_or_else(|| "sqlite".into());
    let dir = tempfile::tempdir()?;
    let builder = Pynenc::builder().app_id("pages-bench");
    let mut _server = None;
    let app = if backend == "redis" {
        let server = pynenc_testservers::redis::RedisServer::start();
        let url = server.url();
        _server = Some(server);
        builder
            .config_value("backend", "redis")
            .config_value("redis.redis_url", url)
            .build()?
    } else {
        builder.sqlite(dir.path().join("bench.db")).build()?
    };
    let t = Instant::now();
    let ran = n / 10;
    let runner = ThreadRunner::with_slots(&app, 8).spawn();
    let group = work::parallelize_on(&app, (0..ran).map(|i| (i,))).await?;
    for inv in group.invocations() {
        let _ = inv.wait().await;
    }
    runner.stop().await?;
    let mut routed = ran;
    while routed < n {
        let upto = (routed + 10_000).min(n);
        work::parallelize_on(&app, (routed..upto).map(|i| (i,))).await?;
        routed = upto;
    }
    println!(
        "{backend}: seeded {n} invocations ({ran} run) in {:.1?}",
        t.elapsed()
    );
    let monitor = Monitor::start(
        &app,
        MonitorOptions::default()
            .bind("127.0.0.1:0".parse()?)
            .credential(Credential::new("bench", TOKEN, Role::Operator)),
    )
    .await?;
    let addr = monitor.addr();
    let some_id = {
        let page = pynenc_operate::Operate::inspect(&app)
            .list(&pynenc::model::InvocationQuery {
                limit: 1,
                ..Default::default()
            })
            .await?;
        page.items
            .first()
            .ok_or("no invocation stored")?
            .invocation_id
            .to_string()
    };
    let paths = [
        "/".to_string(),
        "/api/overview".into(),
        "/invocations".into(),
        "/api/invocations?limit=200".into(),
        "/api/invocations?status=failed".into(),
        "/api/invocations?task=pages_bench::work&status=registered&since=1h".into(),
        format!("/invocations/{some_id}"),
        "/tasks".into(),
        "/runners".into(),
        "/failures".into(),
        "/config".into(),
        "/metrics".into(),
    ];
    println!(
        "{:<70} {:>6} {:>10} {:>10}",
        "path", "status", "median", "max"
    );
    for path in &paths {
        let mut times = Vec::new();
        let mut status = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let (s, _) = tokio::task::spawn_blocking({
                let path = path.clone();
                move || get(addr, &path)
            })
            .await??;
            status = s;
            times.push(t.elapsed());
        }
        times.sort();
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        println!(
            "{path:<70} {status:>6} {:>10} {:>10}",
            ms(times[2]),
            ms(times[4])
        );
    }
    monitor.shutdown().await?;
    Ok(())
}
