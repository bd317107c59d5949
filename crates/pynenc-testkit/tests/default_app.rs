//! The process default app: calls without an explicit app (`call`, `direct`,
//! `parallelize`) go to the first app built. One test per binary, since the
//! default is process-wide.

use pynenc_testkit::tasks::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_an_app_use_the_default_app() {
    let app = pynenc::Pynenc::builder()
        .env_vars(Vec::new())
        .app_id("default-app")
        .build()
        .expect("build");
    let runner = app.runner().spawn();
    assert_eq!(add::direct(20, 22).await.expect("direct"), 42);
    let inv = add::call(1, 1).await.expect("call");
    assert_eq!(inv.result().await.expect("result"), 2);
    let group = add::parallelize([(1, 1), (2, 2)])
        .await
        .expect("parallelize");
    assert_eq!(group.results().await.expect("results"), vec![2, 4]);
    let ids = app
        .state_backend()
        .list_invocation_ids()
        .await
        .expect("list");
    assert_eq!(ids.len(), 4, "all calls went to the default app");
    runner.stop().await.expect("stop");
    pynenc_testkit::check_histories(&app).await;
}
