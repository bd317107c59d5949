//! Totals per task: how many invocations were routed, started, succeeded,
//! failed, retried and cancelled since the app's data began, and how long
//! their runs took.
//!
//! Unlike the counts by status (how many invocations are in a status now),
//! totals only grow: purging invocations keeps them, purging the app
//! forgets them. They are what a monitoring system turns into rates.
//!
//! Every backend stores a total as one row `(task, code, n)` where the code
//! is a [`TotalKey`]'s [`TotalKey::code`], and builds the answer with
//! [`TaskTotals::from_rows`], so the layout is decided here once.

use serde::{Deserialize, Serialize};

use crate::ids::TaskId;
use crate::status::InvocationStatus;

/// One of the events counted per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskCounter {
    /// An invocation was created (scheduled ones included; a call that
    /// reused an existing invocation is not counted).
    Routed,
    /// A run started (`RUNNING`; once per attempt).
    Started,
    /// An invocation ended `SUCCESS`.
    Succeeded,
    /// An invocation ended `FAILED`.
    Failed,
    /// A run ended in `RETRY`.
    Retried,
    /// An invocation ended `CANCELLED`.
    Cancelled,
}

impl TaskCounter {
    /// Every counter, in the order of [`TaskTotals::counts`].
    pub const ALL: [TaskCounter; 6] = [
        TaskCounter::Routed,
        TaskCounter::Started,
        TaskCounter::Succeeded,
        TaskCounter::Failed,
        TaskCounter::Retried,
        TaskCounter::Cancelled,
    ];

    /// Its name, lower case (`"routed"`, …).
    pub fn name(self) -> &'static str {
        match self {
            TaskCounter::Routed => "routed",
            TaskCounter::Started => "started",
            TaskCounter::Succeeded => "succeeded",
            TaskCounter::Failed => "failed",
            TaskCounter::Retried => "retried",
            TaskCounter::Cancelled => "cancelled",
        }
    }

    /// Its position in [`TaskCounter::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The counter a new status adds one to, if any (creation is counted
    /// apart: it is not a transition).
    pub fn of_status(status: InvocationStatus) -> Option<TaskCounter> {
        match status {
            InvocationStatus::Running => Some(TaskCounter::Started),
            InvocationStatus::Success => Some(TaskCounter::Succeeded),
            InvocationStatus::Failed => Some(TaskCounter::Failed),
            InvocationStatus::Retry => Some(TaskCounter::Retried),
            InvocationStatus::Cancelled => Some(TaskCounter::Cancelled),
            _ => None,
        }
    }
}

/// The upper bounds of the run-time buckets, in microseconds (1 ms to 10
/// minutes); a last bucket takes longer runs.
pub const RUN_TIME_BOUNDS_US: [u64; 10] = [
    1_000,
    5_000,
    25_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    30_000_000,
    120_000_000,
    600_000_000,
];

/// How many run-time buckets there are (the bounds and one more).
pub const RUN_TIME_BUCKETS: usize = RUN_TIME_BOUNDS_US.len() + 1;

/// The bucket of a run of `micros` microseconds: the first whose bound it
/// does not exceed, or the last.
pub fn run_time_bucket(micros: u64) -> usize {
    RUN_TIME_BOUNDS_US
        .iter()
        .position(|bound| micros <= *bound)
        .unwrap_or(RUN_TIME_BOUNDS_US.len())
}

/// What one stored total row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TotalKey {
    /// A counter.
    Counter(TaskCounter),
    /// The number of runs in a run-time bucket (by index).
    RunTimeBucket(usize),
    /// The sum of the run times, in microseconds.
    RunTimeSum,
}

/// The code of the first run-time bucket (bucket `i` is this plus `i`).
const FIRST_BUCKET_CODE: i16 = 10;
/// The code of the run-time sum.
const RUN_TIME_SUM_CODE: i16 = 9;

impl TotalKey {
    /// The number a backend stores for it: counters 0–5, the run-time sum
    /// 9, bucket `i` 10 + `i`.
    pub fn code(self) -> i16 {
        match self {
            TotalKey::Counter(c) => c.index() as i16,
            TotalKey::RunTimeSum => RUN_TIME_SUM_CODE,
            // at most RUN_TIME_BUCKETS (11)
            TotalKey::RunTimeBucket(i) => FIRST_BUCKET_CODE + i as i16,
        }
    }

    /// The key of a stored code; `None` for a code this version does not
    /// know (a row written by a newer version is left out).
    pub fn from_code(code: i16) -> Option<TotalKey> {
        match code {
            RUN_TIME_SUM_CODE => Some(TotalKey::RunTimeSum),
            c if (0..TaskCounter::ALL.len() as i16).contains(&c) => {
                Some(TotalKey::Counter(TaskCounter::ALL[c as usize]))
            }
            c if (FIRST_BUCKET_CODE..FIRST_BUCKET_CODE + RUN_TIME_BUCKETS as i16).contains(&c) => {
                Some(TotalKey::RunTimeBucket((c - FIRST_BUCKET_CODE) as usize))
            }
            _ => None,
        }
    }
}

/// The run times of one task's runs, by bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTimes {
    /// Runs per bucket (not cumulative), bucket `i` bounded by
    /// [`RUN_TIME_BOUNDS_US`]`[i]`, the last one unbounded.
    pub buckets: [u64; RUN_TIME_BUCKETS],
    /// The sum of every run's time, in microseconds.
    pub sum_us: u64,
}

impl RunTimes {
    /// How many runs were measured.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds one run of `micros` microseconds.
    pub fn observe(&mut self, micros: u64) {
        self.buckets[run_time_bucket(micros)] += 1;
        self.sum_us = self.sum_us.saturating_add(micros);
    }

    /// The mean run time in microseconds (`None` before any run).
    pub fn mean_us(&self) -> Option<u64> {
        let n = self.count();
        (n > 0).then(|| self.sum_us / n)
    }

    /// The bound of the bucket holding the `q`-quantile (0..=1) of the
    /// runs: at least that share of runs took at most this many
    /// microseconds; `Some(None)` when it is the unbounded last bucket,
    /// `None` before any run.
    pub fn quantile_bound_us(&self, q: f64) -> Option<Option<u64>> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        self.cumulative()
            .into_iter()
            .find(|(_, runs)| *runs >= rank)
            .map(|(bound, _)| bound)
    }

    /// `(upper bound in microseconds, runs at most that long)` for each
    /// bucket, cumulative as Prometheus has them; `None` is the unbounded last.
    pub fn cumulative(&self) -> Vec<(Option<u64>, u64)> {
        let mut total = 0;
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                total += n;
                (RUN_TIME_BOUNDS_US.get(i).copied(), total)
            })
            .collect()
    }
}

/// The totals of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskTotals {
    /// The task.
    pub task_id: TaskId,
    /// Each counter, in the order of [`TaskCounter::ALL`].
    pub counts: [u64; 6],
    /// The times of the runs that ended (measured by the runner, from the
    /// start of the body to its end).
    pub run_times: RunTimes,
}

impl TaskTotals {
    /// Zero totals for `task_id`.
    pub fn new(task_id: TaskId) -> Self {
        TaskTotals {
            task_id,
            counts: [0; 6],
            run_times: RunTimes::default(),
        }
    }

    /// One counter.
    pub fn get(&self, counter: TaskCounter) -> u64 {
        self.counts[counter.index()]
    }

    /// Adds `n` to what `key` names.
    pub fn add(&mut self, key: TotalKey, n: u64) {
        match key {
            TotalKey::Counter(c) => self.counts[c.index()] += n,
            TotalKey::RunTimeBucket(i) => self.run_times.buckets[i] += n,
            TotalKey::RunTimeSum => self.run_times.sum_us += n,
        }
    }

    /// The totals of stored rows `(task, code, n)`, by task name; rows of
    /// unknown codes are left out.
    pub fn from_rows(rows: impl IntoIterator<Item = (String, i16, u64)>) -> Vec<TaskTotals> {
        let mut by_task: std::collections::BTreeMap<String, TaskTotals> = Default::default();
        for (task, code, n) in rows {
            let Some(key) = TotalKey::from_code(code) else {
                continue;
            };
            by_task
                .entry(task)
                .or_insert_with_key(|t| TaskTotals::new(TaskId::from(t.as_str())))
                .add(key, n);
        }
        by_task.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_runs_up_to_their_bound() {
        assert_eq!(run_time_bucket(0), 0);
        assert_eq!(run_time_bucket(1_000), 0);
        assert_eq!(run_time_bucket(1_001), 1);
        assert_eq!(run_time_bucket(600_000_000), 9);
        assert_eq!(run_time_bucket(600_000_001), 10);
        assert_eq!(run_time_bucket(u64::MAX), RUN_TIME_BUCKETS - 1);
    }

    #[test]
    fn codes_round_trip_and_unknown_ones_are_none() {
        let mut keys: Vec<TotalKey> = TaskCounter::ALL.map(TotalKey::Counter).to_vec();
        keys.push(TotalKey::RunTimeSum);
        keys.extend((0..RUN_TIME_BUCKETS).map(TotalKey::RunTimeBucket));
        let mut codes = std::collections::HashSet::new();
        for key in keys {
            assert_eq!(TotalKey::from_code(key.code()), Some(key));
            assert!(codes.insert(key.code()), "{key:?} shares its code");
        }
        for unknown in [-1, 6, 8, 21, 100] {
            assert_eq!(TotalKey::from_code(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn rows_become_totals_by_task() {
        let rows = vec![
            ("b".to_string(), 0, 3),
            ("a".to_string(), 2, 5),
            ("a".to_string(), 10, 4),
            ("a".to_string(), 12, 1),
            ("a".to_string(), 9, 30_000),
            ("a".to_string(), 99, 7),
        ];
        let totals = TaskTotals::from_rows(rows);
        assert_eq!(totals.len(), 2);
        let a = &totals[0];
        assert_eq!(a.task_id.as_str(), "a");
        assert_eq!(a.get(TaskCounter::Succeeded), 5);
        assert_eq!(a.run_times.count(), 5);
        assert_eq!(a.run_times.sum_us, 30_000);
        let cumulative = a.run_times.cumulative();
        assert_eq!(cumulative[0], (Some(1_000), 4));
        assert_eq!(cumulative[2], (Some(25_000), 5));
        assert_eq!(cumulative[RUN_TIME_BUCKETS - 1], (None, 5));
        assert_eq!(a.run_times.mean_us(), Some(6_000));
        assert_eq!(a.run_times.quantile_bound_us(0.5), Some(Some(1_000)));
        assert_eq!(a.run_times.quantile_bound_us(0.95), Some(Some(25_000)));
        assert_eq!(RunTimes::default().quantile_bound_us(0.5), None);
        let mut slow = RunTimes::default();
        slow.observe(700_000_000);
        assert_eq!(slow.quantile_bound_us(0.5), Some(None));
        assert_eq!(totals[1].get(TaskCounter::Routed), 3);
    }

    #[test]
    fn statuses_map_to_their_counters() {
        assert_eq!(
            TaskCounter::of_status(InvocationStatus::Running),
            Some(TaskCounter::Started)
        );
        assert_eq!(
            TaskCounter::of_status(InvocationStatus::Retry),
            Some(TaskCounter::Retried)
        );
        assert_eq!(TaskCounter::of_status(InvocationStatus::Pending), None);
        assert_eq!(TaskCounter::of_status(InvocationStatus::Registered), None);
    }
}
