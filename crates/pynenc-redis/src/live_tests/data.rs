//! The data store's step (`data.lua`): its keys, the sweep's sections and
//! their bound, a claim racing the sweep, and the step run as a script.

use pynenc_model::{DataClaim, DataRef, DataUsage, Timestamp};
use pynenc_store::DataStore;

use super::*;

fn claim(data: DataRef, ids: &[InvocationId]) -> DataClaim {
    DataClaim {
        data,
        referenced_by: ids.to_vec(),
    }
}

/// `n` distinct values of about 100 bytes, starting with `tag`.
fn values(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("\"{tag}-{i}-{}\"", "x".repeat(100)))
        .collect()
}

/// Puts each value with the references `ids`.
async fn put_all(b: &RedisBackend, texts: &[String], ids: &[InvocationId]) {
    let puts: Vec<_> = texts
        .iter()
        .map(|t| (claim(DataRef::of(t), ids), t.clone()))
        .collect();
    b.put_values(&puts).await.expect("put");
}

fn far_future() -> Timestamp {
    Timestamp::from_micros(Timestamp::now().as_micros() + 3_600_000_000)
}

/// The keys of the layout, the counters, and the purge that removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_keys_and_counters() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "data-keys");
    let other = backend(&server.url(), "data-keys-other");
    let text = values("k", 1).remove(0);
    let r = DataRef::of(&text);
    let (id1, id2) = (InvocationId::time_ordered(), InvocationId::time_ordered());
    put_all(&b, std::slice::from_ref(&text), &[id1, id1, id2]).await;
    put_all(&other, std::slice::from_ref(&text), &[id1]).await;
    let key = r.key();
    assert_eq!(
        keys_of(&server, &b),
        vec![
            format!("data:{key}"),
            "dclaim".to_string(),
            format!("dref:{key}"),
            "dusage".to_string()
        ]
    );
    let usage = b.data_usage().await.expect("usage");
    assert_eq!(
        usage,
        DataUsage {
            values: 1,
            bytes: text.len() as u64,
            references: 2
        }
    );
    // empty calls change nothing (and make no round trip)
    assert!(b.claim_values(&[]).await.expect("claim").is_empty());
    b.put_values(&[]).await.expect("put");
    assert_eq!(b.data_usage().await.expect("usage"), usage);
    b.purge().await.expect("purge");
    assert!(keys_of(&server, &b).is_empty());
    assert_eq!(b.data_usage().await.expect("usage"), DataUsage::default());
    assert_eq!(other.get_value(&r).await.expect("get"), Some(text));
    assert_eq!(other.data_usage().await.expect("usage").values, 1);
}

/// A sweep goes in sections of a batch each, or fewer values once the
/// references budget is spent; values it claims again are not examined by
/// its later sections, even with a bound in the future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_goes_in_sections() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "data-sections");
    let live = route(&b, 1).await[0];
    let dead = InvocationId::time_ordered();
    let kept = values("kept", 7);
    let gone = values("gone", 5);
    put_all(&b, &kept, &[live, dead]).await;
    put_all(&b, &gone, &[dead]).await;

    let future = far_future().as_micros();
    let s = b.sweep_section(future, 4, 10_000).await.expect("section");
    assert_eq!(s.sweep.examined, 4);
    assert!(s.more, "a full batch may leave values");
    assert!(s.bound < future, "the bound is the server's time");
    // a budget of one reference: one value per section
    let s2 = b.sweep_section(s.bound, 4, 1).await.expect("section");
    assert_eq!(s2.sweep.examined, 1);
    assert!(s2.more);

    let rest = b.sweep_values(far_future()).await.expect("sweep");
    let removed = s.sweep.removed + s2.sweep.removed + rest.removed;
    assert_eq!(removed, 5, "{rest:?}");
    let usage = b.data_usage().await.expect("usage");
    assert_eq!(
        usage,
        DataUsage {
            values: 7,
            bytes: kept.iter().map(|t| t.len() as u64).sum(),
            references: 7
        },
        "the dead references are forgotten"
    );
    for t in &gone {
        assert_eq!(b.get_value(&DataRef::of(t)).await.expect("get"), None);
    }
    // everything was claimed again: nothing is older than a minute ago
    let a_minute_ago = Timestamp::from_micros(Timestamp::now().as_micros() - 60_000_000);
    let s = b.sweep_values(a_minute_ago).await.expect("sweep");
    assert_eq!(s, pynenc_model::DataSweep::default());
}

/// Claims racing sweeps: once a claim found the value, no sweep of values
/// claimed before the claims began removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_racing_the_sweep_keeps_its_value() {
    let server = server_or_skip!();
    let b = backend(&server.url(), "data-race");
    let dead = InvocationId::time_ordered();
    for (round, text) in values("race", 20).into_iter().enumerate() {
        let r = DataRef::of(&text);
        put_all(&b, &[text], &[dead]).await;
        // claimed long ago: the sweep takes it unless a claim comes first
        let dclaim = format!("{}dclaim", b.key_prefix());
        server
            .command(&["ZADD", &dclaim, "1", &r.key()])
            .expect("ZADD");
        let bound = Timestamp::now();
        let sweeper = {
            let b = b.clone();
            tokio::spawn(async move {
                for _ in 0..(round % 4) {
                    tokio::task::yield_now().await;
                }
                b.sweep_values(bound).await.expect("sweep")
            })
        };
        let mut found = Vec::new();
        for _ in 0..5 {
            found.extend(b.claim_values(&[claim(r, &[dead])]).await.expect("claim"));
        }
        let swept = sweeper.await.expect("sweeper");
        // found by every claim, or by none (nothing puts it again)
        assert!(
            found.iter().all(|f| *f == found[0]),
            "round {round}: {found:?}"
        );
        let stored = b.get_value(&r).await.expect("get").is_some();
        assert_eq!(stored, found[0], "round {round}: {found:?}");
        assert_eq!(swept.removed, u64::from(!stored), "round {round}");
        if stored {
            b.sweep_values(far_future()).await.expect("sweep");
        }
        assert_eq!(b.data_usage().await.expect("usage"), DataUsage::default());
    }
}

/// Without functions the data store runs as a script, with the same results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_step_runs_as_a_script() {
    let server = server_or_skip!();
    let b = backend(&user_without_functions(&server), "data-scripts");
    let text = values("s", 1).remove(0);
    let r = DataRef::of(&text);
    let id = InvocationId::time_ordered();
    assert_eq!(
        b.claim_values(&[claim(r, &[id])]).await.expect("claim"),
        vec![false]
    );
    put_all(&b, std::slice::from_ref(&text), &[id]).await;
    assert_eq!(
        b.claim_values(&[claim(r, &[id])]).await.expect("claim"),
        vec![true]
    );
    assert_eq!(b.functions.load(Ordering::Acquire), FUNCTIONS_OFF);
    assert_eq!(b.get_value(&r).await.expect("get"), Some(text.clone()));
    let s = b.sweep_values(far_future()).await.expect("sweep");
    assert_eq!((s.removed, s.bytes_freed), (1, text.len() as u64));
    assert_eq!(b.data_usage().await.expect("usage"), DataUsage::default());
}
