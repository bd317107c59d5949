//! The `query` workload: the query API on a backend holding many finished
//! invocations (a tenth of them `FAILED`), each query timed many times.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use pynenc::model::{InvocationQuery, InvocationStatus, Order};
use pynenc::{Pynenc, TaskError, TaskId, ThreadRunner};
use pynenc_operate::Operate;

use crate::{noop, percentile, Row};

/// A task that always fails (the `FAILED` invocations of the workload).
#[pynenc::task]
async fn fails(i: u64) -> Result<u64, TaskError> {
    Err(TaskError::new("BenchError", format!("bench failure {i}")))
}

/// Stores `n` finished invocations: one in ten of them `FAILED` (task
/// `fails`), the others `SUCCESS` (task `noop`), routed and run in chunks.
pub async fn prefill(app: &Pynenc, n: u64) -> Result<()> {
    let t0 = Instant::now();
    let runner = ThreadRunner::new(app).spawn();
    let chunk = 100_000;
    let mut done = 0;
    while done < n {
        let size = chunk.min(n - done);
        let failing = size / 10;
        let ok_group = noop::parallelize_on(app, done..done + size - failing).await?;
        let bad_group = fails::parallelize_on(app, 0..failing).await?;
        ok_group.results().await?;
        for inv in bad_group.invocations() {
            inv.wait().await?;
        }
        done += size;
        eprintln!(
            "query prefill: {done} finished invocations ({:.0} s)",
            t0.elapsed().as_secs_f64()
        );
    }
    runner.stop().await?;
    Ok(())
}

/// Times `f` `samples` times (after 5 unmeasured runs): p50, p99 and max.
async fn timed<F, Fut>(samples: usize, mut f: F) -> Result<(Duration, Duration, Duration)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    for _ in 0..5 {
        f().await?;
    }
    let mut all = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        f().await?;
        all.push(t.elapsed());
    }
    all.sort();
    let max = all.last().copied().unwrap_or_default();
    Ok((percentile(&all, 0.5), percentile(&all, 0.99), max))
}

fn row(name: &'static str, stored: u64, t: (Duration, Duration, Duration), what: &str) -> Row {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Row {
        workload: name,
        n: stored,
        seconds: t.0.as_secs_f64(),
        detail: format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms: {what}",
            ms(t.0),
            ms(t.1),
            ms(t.2)
        ),
    }
}

/// Runs every query `samples` times on `app`, which holds `stored` finished invocations.
pub async fn run(app: &Pynenc, stored: u64, samples: usize) -> Result<Vec<Row>> {
    let inspect = app.inspect();
    let failed_of_task = InvocationQuery {
        task_ids: vec![TaskId::from(fails::task().task_id())],
        statuses: vec![InvocationStatus::Failed],
        limit: 50,
        ..InvocationQuery::new()
    };
    let first = inspect.list(&failed_of_task).await?;
    if first.items.len() != 50
        || first
            .items
            .iter()
            .any(|s| s.status != InvocationStatus::Failed)
    {
        bail!(
            "the page of FAILED invocations is wrong: {} items",
            first.items.len()
        );
    }
    let mut rows = Vec::new();
    let t = timed(samples, || async {
        inspect.list(&failed_of_task).await?;
        Ok(())
    })
    .await?;
    rows.push(row(
        "q-failed",
        stored,
        t,
        "a page of 50 FAILED of one task, newest first",
    ));

    let next = first.next;
    let t = timed(samples, || {
        let mut q = failed_of_task.clone();
        q.after = next;
        let inspect = &inspect;
        async move {
            let page = inspect.list(&q).await?;
            if page.items.len() != 50 {
                bail!("a next page of FAILED has {} items", page.items.len());
            }
            Ok(())
        }
    })
    .await?;
    rows.push(row(
        "q-next",
        stored,
        t,
        "the next page of the same, by cursor",
    ));

    let t = timed(samples, || async {
        let counts = inspect.counts(&[]).await?;
        if counts.total() < stored {
            bail!("counts {} < stored {stored}", counts.total());
        }
        Ok(())
    })
    .await?;
    rows.push(row(
        "q-counts",
        stored,
        t,
        "counts by status, per task and overall",
    ));

    let t = timed(samples, || async {
        inspect.failed_by_kind(&[]).await?;
        Ok(())
    })
    .await?;
    rows.push(row("q-kinds", stored, t, "FAILED counts by error kind"));

    let newest = InvocationQuery {
        limit: 50,
        ..InvocationQuery::new()
    };
    let t = timed(samples, || async {
        inspect.list(&newest).await?;
        Ok(())
    })
    .await?;
    rows.push(row("q-newest", stored, t, "the newest 50, no filter"));

    let oldest_success = InvocationQuery {
        statuses: vec![InvocationStatus::Success],
        order: Order::OldestFirst,
        limit: 50,
        ..InvocationQuery::new()
    };
    let t = timed(samples, || async {
        inspect.list(&oldest_success).await?;
        Ok(())
    })
    .await?;
    rows.push(row(
        "q-success",
        stored,
        t,
        "the oldest 50 SUCCESS, any task",
    ));

    let t = timed(samples, || async {
        inspect.queue().await?;
        Ok(())
    })
    .await?;
    rows.push(row("q-queue", stored, t, "queue depth and oldest"));
    Ok(rows)
}
