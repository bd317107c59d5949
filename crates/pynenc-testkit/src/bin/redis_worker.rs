//! A runner process for the Redis tests: `redis_worker <redis_url> <app_id> [slots]`.
//!
//! It builds an app on the Redis backend with the testkit's tasks linked in
//! and runs a [`pynenc::ThreadRunner`] until SIGTERM or Ctrl-C. Built only
//! with the `redis` feature (`required-features` in `Cargo.toml`).

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    use pynenc_testkit::tasks;

    // make sure the task registrations of the testkit are linked in
    let linked = [
        tasks::add::DEFINITION.task_id,
        tasks::filler::DEFINITION.task_id,
    ];
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: redis_worker <redis_url> <app_id> [slots]");
        std::process::exit(2);
    }
    let slots: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8);
    let app = pynenc::Pynenc::builder()
        .env_vars(Vec::new())
        .app_id(args[2].as_str())
        .config_value("backend", "redis")
        .config_value("redis.redis_url", args[1].as_str())
        .build()
        .unwrap_or_else(|e| {
            eprintln!("redis_worker: cannot build the app: {e}");
            std::process::exit(1)
        });
    eprintln!(
        "redis_worker {} ready ({} tasks linked)",
        std::process::id(),
        linked.len()
    );
    if let Err(e) = pynenc::ThreadRunner::with_slots(&app, slots)
        .run_until_signal()
        .await
    {
        eprintln!("redis_worker: runner failed: {e}");
        std::process::exit(1);
    }
}
