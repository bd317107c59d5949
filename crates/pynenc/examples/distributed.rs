//! Work spread over worker processes sharing one SQLite file: this program
//! starts itself again as the workers (a `MultiThreadRunner`), routes a
//! fan-out of image "thumbnails", and prints which process ran what.
//!
//! ```text
//! cargo run -p pynenc --features sqlite --example distributed
//! ```

use std::collections::BTreeMap;

use pynenc::{MultiThreadRunner, Pynenc, PynencError};

/// Pretends to make a thumbnail; returns its size and the worker's pid.
#[pynenc::task(max_retries = 2, retry_for = ["ProcessCrashed"])]
fn thumbnail(image: u32) -> (u32, u32) {
    std::thread::sleep(std::time::Duration::from_millis(5));
    (image * 3 % 997, std::process::id())
}

/// Makes every thumbnail of an album in parallel.
#[pynenc::task]
async fn album(images: u32) -> Result<Vec<(u32, u32)>, PynencError> {
    let group = thumbnail::parallelize((0..images).map(|i| (i,))).await?;
    group.results().await
}

fn main() -> anyhow::Result<()> {
    // the workers are this program started again
    pynenc::run_child_if_requested();
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = Pynenc::builder()
        .app_id("albums")
        .sqlite(dir.path().join("albums.db"))
        .config_value("runner.min_processes", 2)
        .config_value("runner.max_processes", 3)
        .config_value("runner.max_parallel_slots", 4)
        .build()?;
    let runner = MultiThreadRunner::new(&app).spawn();
    let started = std::time::Instant::now();
    let albums = album::parallelize_on(&app, [(40,), (60,), (80,)]).await?;
    let mut by_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, thumbs) in albums.results().await?.into_iter().enumerate() {
        println!("album {i}: {} thumbnails", thumbs.len());
        for (_, pid) in thumbs {
            *by_pid.entry(pid).or_default() += 1;
        }
    }
    println!(
        "took {:.2} s; thumbnails per worker process:",
        started.elapsed().as_secs_f64()
    );
    for (pid, n) in by_pid {
        println!("  pid {pid}: {n}");
    }
    runner.stop().await?;
    Ok(())
}
