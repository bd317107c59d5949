//! The tasks: counts, failure rate, latency percentiles, options.

use std::collections::BTreeMap;

use pynenc_model::{InvocationQuery, InvocationStatus, TaskId, TaskTotals};
use pynenc_operate::Operate;
use serde::Serialize;

use super::millis;
use crate::error::HttpResult;
use crate::state::MonitorState;

/// A task's counts.
#[derive(Debug, Serialize)]
pub(crate) struct TaskRow {
    pub(crate) task_id: String,
    pub(crate) registered_here: bool,
    /// The effective options, when this program registers the task.
    pub(crate) options: Option<serde_json::Value>,
    pub(crate) total: u64,
    pub(crate) by_status: BTreeMap<InvocationStatus, u64>,
    /// FAILED / (SUCCESS + FAILED); `None` before any ended.
    pub(crate) failure_rate: Option<f64>,
    /// Time from creation to end of the latest successes (at most
    /// [`LATENCY_SAMPLE`]): median and 95th percentile, in milliseconds.
    pub(crate) latency_p50_ms: Option<u64>,
    pub(crate) latency_p95_ms: Option<u64>,
    /// How many successes the percentiles are over.
    pub(crate) latency_sample: usize,
    /// What was routed, started and ended since the app's data began, and
    /// run times (kept across purges).
    pub(crate) totals: Option<TaskTotals>,
}

/// How many of a task's latest successes its latency percentiles are over.
pub(crate) const LATENCY_SAMPLE: usize = 200;

/// The `q`-quantile (0..=1) of sorted values, nearest rank.
fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Creation-to-end times (ms) of a task's latest successes, sorted.
async fn latencies(s: &MonitorState, task: &str) -> HttpResult<Vec<u64>> {
    let page = s
        .app
        .inspect()
        .list(&InvocationQuery {
            task_ids: vec![TaskId::from(task)],
            statuses: vec![InvocationStatus::Success],
            limit: LATENCY_SAMPLE,
            ..InvocationQuery::default()
        })
        .await?;
    let mut v: Vec<u64> = page
        .items
        .iter()
        .filter_map(|i| i.ended_at.map(|e| millis(e.since(i.created_at))))
        .collect();
    v.sort_unstable();
    Ok(v)
}

pub(crate) async fn tasks(s: &MonitorState) -> HttpResult<Vec<TaskRow>> {
    let inspect = s.app.inspect();
    let counts = inspect.counts(&[]).await?;
    let mut totals: BTreeMap<String, TaskTotals> = inspect
        .task_totals(&[])
        .await?
        .into_iter()
        .map(|t| (t.task_id.to_string(), t))
        .collect();
    let mut rows: BTreeMap<String, TaskRow> = BTreeMap::new();
    let mut known: Vec<TaskId> = inspect.tasks().await?;
    // a task whose invocations were all purged still has its totals
    known.extend(totals.keys().map(|t| TaskId::from(t.as_str())));
    for id in known {
        let name = id.to_string();
        rows.insert(
            name.clone(),
            TaskRow {
                registered_here: s.app.registry().contains(&name),
                options: s
                    .app
                    .registry()
                    .options(&name)
                    .and_then(|o| serde_json::to_value(o).ok()),
                task_id: name,
                total: 0,
                by_status: BTreeMap::new(),
                failure_rate: None,
                latency_p50_ms: None,
                latency_p95_ms: None,
                latency_sample: 0,
                totals: None,
            },
        );
    }
    for (name, t) in std::mem::take(&mut totals) {
        if let Some(row) = rows.get_mut(&name) {
            row.totals = Some(t);
        }
    }
    for c in counts.by_task {
        if let Some(row) = rows.get_mut(c.task_id.as_str()) {
            row.total += c.count;
            *row.by_status.entry(c.status).or_insert(0) += c.count;
        }
    }
    for row in rows.values_mut() {
        let failed = row
            .by_status
            .get(&InvocationStatus::Failed)
            .copied()
            .unwrap_or(0);
        let ok = row
            .by_status
            .get(&InvocationStatus::Success)
            .copied()
            .unwrap_or(0);
        row.failure_rate = (failed + ok > 0).then(|| failed as f64 / (failed + ok) as f64);
        if ok > 0 {
            let sample = latencies(s, &row.task_id).await?;
            row.latency_p50_ms = quantile(&sample, 0.5);
            row.latency_p95_ms = quantile(&sample, 0.95);
            row.latency_sample = sample.len();
        }
    }
    Ok(rows.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.95), Some(95));
        assert_eq!(quantile(&[7], 0.95), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
