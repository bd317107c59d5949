//! The overview: counts, the queue, runners, the last minutes, triggers.

use std::collections::BTreeMap;

use pynenc_model::{InvocationQuery, InvocationStatus, TimeRange, Timestamp, MAX_PAGE_SIZE};
use pynenc_operate::Operate;
use serde::Serialize;

use super::millis;
use crate::error::HttpResult;
use crate::state::MonitorState;

/// How many due triggers the overview lists.
const TRIGGERS_SHOWN: usize = 10;

/// The overview.
#[derive(Debug, Serialize)]
pub(crate) struct Overview {
    pub(crate) app_id: String,
    pub(crate) total: u64,
    pub(crate) by_status: BTreeMap<InvocationStatus, u64>,
    pub(crate) queue_depth: u64,
    pub(crate) queue_oldest_age_ms: Option<u64>,
    pub(crate) runners_alive: usize,
    pub(crate) runners_dead: usize,
    pub(crate) scheduled: u64,
    pub(crate) triggers: Vec<TriggerDue>,
    pub(crate) recent: Recent,
}

/// How many minutes the overview's throughput covers.
pub(crate) const WINDOW_MINUTES: i64 = 15;

/// Invocations that ended in the last [`WINDOW_MINUTES`], per minute: read
/// from one listing of final invocations by end time (at most
/// [`MAX_PAGE_SIZE`] of them: beyond that, `capped` is set and the counts
/// are lower bounds).
#[derive(Debug, Serialize)]
pub(crate) struct Recent {
    pub(crate) window_minutes: i64,
    pub(crate) ended: u64,
    pub(crate) failed: u64,
    /// FAILED / ended in the window; `None` when none ended.
    pub(crate) failure_rate: Option<f64>,
    pub(crate) capped: bool,
    /// Oldest minute first.
    pub(crate) per_minute: Vec<Minute>,
}

/// One minute of the window.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Minute {
    #[serde(rename = "start_us")]
    pub(crate) start: i64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    /// Other final statuses (cancelled, concurrency controlled).
    pub(crate) other: u64,
}

async fn recent(s: &MonitorState, now: Timestamp) -> HttpResult<Recent> {
    const MINUTE_US: i64 = 60_000_000;
    let end = (now.as_micros() / MINUTE_US + 1) * MINUTE_US;
    let start = end - WINDOW_MINUTES * MINUTE_US;
    let query = InvocationQuery {
        statuses: pynenc_model::status::ALL_STATUSES
            .into_iter()
            .filter(|s| s.is_final())
            .collect(),
        ended: TimeRange {
            from: Some(Timestamp::from_micros(start)),
            to: None,
        },
        limit: MAX_PAGE_SIZE,
        ..InvocationQuery::default()
    };
    let page = s.app.inspect().list(&query).await?;
    let mut per_minute: Vec<Minute> = (0..WINDOW_MINUTES)
        .map(|i| Minute {
            start: start + i * MINUTE_US,
            ..Minute::default()
        })
        .collect();
    let (mut ended, mut failed) = (0, 0);
    for inv in &page.items {
        let Some(at) = inv.ended_at else { continue };
        let Ok(i) = usize::try_from((at.as_micros() - start) / MINUTE_US) else {
            continue;
        };
        let Some(m) = per_minute.get_mut(i) else {
            continue;
        };
        ended += 1;
        match inv.status {
            InvocationStatus::Success => m.succeeded += 1,
            InvocationStatus::Failed => {
                m.failed += 1;
                failed += 1;
            }
            _ => m.other += 1,
        }
    }
    Ok(Recent {
        window_minutes: WINDOW_MINUTES,
        ended,
        failed,
        failure_rate: (ended > 0).then(|| failed as f64 / ended as f64),
        capped: page.next.is_some(),
        per_minute,
    })
}

/// A trigger and its next tick.
#[derive(Debug, Serialize)]
pub(crate) struct TriggerDue {
    pub(crate) name: String,
    pub(crate) condition: String,
    pub(crate) task_id: String,
    #[serde(rename = "next_tick_us")]
    pub(crate) next_tick: Option<Timestamp>,
}

pub(crate) async fn overview(s: &MonitorState) -> HttpResult<Overview> {
    let inspect = s.app.inspect();
    let counts = inspect.counts(&[]).await?;
    let queue = inspect.queue().await?;
    let runners = inspect.runners().await?;
    let now = Timestamp::now();
    let mut triggers: Vec<TriggerDue> = s
        .app
        .triggers()
        .await?
        .into_iter()
        .map(|t| TriggerDue {
            name: t.name,
            condition: t.condition,
            task_id: t.task_id,
            next_tick: t.next_tick,
        })
        .collect();
    triggers.sort_by_key(|t| t.next_tick.map_or(i64::MAX, |n| n.as_micros()));
    triggers.truncate(TRIGGERS_SHOWN);
    let alive = runners.iter().filter(|r| r.alive).count();
    let recent = recent(s, now).await?;
    Ok(Overview {
        recent,
        app_id: s.app.app_id().to_string(),
        total: counts.total(),
        scheduled: counts.of(InvocationStatus::Scheduled),
        by_status: counts.totals,
        queue_depth: queue.depth,
        queue_oldest_age_ms: queue.oldest.map(|(_, at)| millis(now.since(at))),
        runners_alive: alive,
        runners_dead: runners.len() - alive,
        triggers,
    })
}
