//! `watch`: live counts by status and throughput. It updates when the
//! backend wakes it (work routed) and at least every `--interval`; on a
//! terminal it redraws one screen, piped it prints one line per update
//! (`--json`: one JSON object per line).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use pynenc::{Pynenc, Timestamp};
use pynenc_operate::Operate;
use serde_json::json;

use crate::args::WatchArgs;
use crate::error::Result;
use crate::filters;
use crate::output::{line, time, Out, Table};

/// Updates never come closer together than this, however busy the backend.
const MIN_GAP: Duration = Duration::from_millis(200);

/// `watch`.
pub(crate) async fn watch(out: &Out, app: &Pynenc, a: &WatchArgs) -> Result<()> {
    let interval = filters::duration("--interval", &a.interval)?.max(MIN_GAP);
    let redraw = !out.json && std::io::stdout().is_terminal();
    let mut last: Option<(Instant, u64)> = None;
    let mut updates = 0u64;
    loop {
        let epoch = app.coordination().work_epoch();
        let taken = Instant::now();
        let counts = app.inspect().counts(&[]).await?;
        let queue = app.inspect().queue().await?;
        let ended: u64 = counts
            .totals
            .iter()
            .filter(|(s, _)| s.is_final())
            .map(|(_, n)| *n)
            .sum();
        let rate = last.map(|(t, n)| {
            let secs = taken.duration_since(t).as_secs_f64().max(1e-6);
            ended.saturating_sub(n) as f64 / secs
        });
        last = Some((taken, ended));
        let by_status: BTreeMap<&str, u64> = counts
            .totals
            .iter()
            .map(|(s, n)| (s.as_lower_str(), *n))
            .collect();
        let now = Timestamp::now();
        if out.json {
            line(
                &json!({
                    "time": now,
                    "total": counts.total(),
                    "counts": by_status,
                    "queue_depth": queue.depth,
                    "ended_per_second": rate,
                })
                .to_string(),
            )?;
        } else if redraw {
            let mut t = Table::new(&["STATUS", "COUNT"]);
            for (s, n) in &counts.totals {
                t.row(vec![out.status(*s), n.to_string()]);
            }
            let screen = format!(
                "\x1b[2J\x1b[H{}  app '{}'  (Ctrl-C to stop)\n\n{}\n\ntotal {}   queue {}   ended/s {}",
                time(now),
                app.app_id(),
                t.render(out),
                counts.total(),
                queue.depth,
                rate.map_or("-".into(), |r| format!("{r:.1}"))
            );
            line(&screen)?;
        } else {
            let parts: Vec<String> = by_status.iter().map(|(s, n)| format!("{s}={n}")).collect();
            line(&format!(
                "{}  total={}  queue={}  ended/s={}  {}",
                time(now),
                counts.total(),
                queue.depth,
                rate.map_or("-".into(), |r| format!("{r:.1}")),
                parts.join(" ")
            ))?;
        }
        updates += 1;
        if a.count.is_some_and(|c| updates >= c) {
            return Ok(());
        }
        let wait = app.coordination().wait_for_work(epoch, interval);
        tokio::select! {
            _ = wait => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let gap = taken.elapsed();
        if gap < MIN_GAP {
            tokio::time::sleep(MIN_GAP - gap).await;
        }
    }
}
