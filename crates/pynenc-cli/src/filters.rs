//! Filters, times, durations and ids from their text on the command line.

use std::time::Duration;

use pynenc::model::{InvocationQuery, Order, TimeRange};
use pynenc::{InvocationId, RunnerId, TaskId, Timestamp};
use pynenc_operate::parse_statuses;

use crate::args::FilterArgs;
use crate::error::{CliError, Result};

/// An invocation id from its text.
pub fn invocation_id(text: &str) -> Result<InvocationId> {
    InvocationId::parse(text.trim())
        .map_err(|e| CliError::Usage(format!("'{text}' is not an invocation id: {e}")))
}

/// A duration: a number and a unit, `ms`, `s`, `m`, `h` or `d` (`90s`,
/// `1.5h`); a bare number is seconds.
pub fn duration(flag: &str, text: &str) -> Result<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad_duration(flag, text))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1_000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3_600.0,
        "d" => value * 86_400.0,
        _ => return Err(bad_duration(flag, text)),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad_duration(flag, text))
}

fn bad_duration(flag: &str, text: &str) -> CliError {
    CliError::Usage(format!(
        "{flag} '{text}' is not a duration (examples: 500ms, 90s, 30m, 12h, 7d)"
    ))
}

/// A point in time: RFC 3339 (`2026-12-05T14:00:00Z`) or an age before now
/// (`30m` means thirty minutes ago).
pub fn time(flag: &str, text: &str) -> Result<Timestamp> {
    if let Ok(age) = duration(flag, text) {
        return Ok(Timestamp::now() - age);
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|_| {
        CliError::Usage(format!(
            "{flag} '{text}' is neither an RFC 3339 time (2026-12-05T14:00:00Z) nor an age (30m, 2h, 7d)"
        ))
    })?;
    Ok(Timestamp::from_micros(parsed.timestamp_micros()))
}

/// Task ids as given with `--task` (blanks dropped).
pub fn task_ids(given: &[String]) -> Vec<TaskId> {
    given
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(TaskId::from)
        .collect()
}

/// The query of a set of filters (newest first, the operate layer's
/// default page size).
pub fn query(f: &FilterArgs) -> Result<InvocationQuery> {
    let mut q = InvocationQuery::new();
    q.task_ids = task_ids(&f.tasks);
    if let Some(s) = &f.status {
        q.statuses = parse_statuses(s)?;
    }
    q.created = TimeRange {
        from: f.since.as_deref().map(|t| time("--since", t)).transpose()?,
        to: f.until.as_deref().map(|t| time("--until", t)).transpose()?,
    };
    q.parent = f.parent.as_deref().map(invocation_id).transpose()?;
    q.owner = f.runner.as_deref().map(RunnerId::from);
    q.order = Order::NewestFirst;
    Ok(q)
}

/// Whether any filter is set.
pub fn any(f: &FilterArgs) -> bool {
    !f.tasks.is_empty()
        || f.status.is_some()
        || f.since.is_some()
        || f.until.is_some()
        || f.parent.is_some()
        || f.runner.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_their_errors() {
        assert_eq!(duration("--x", "90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(
            duration("--x", "500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            duration("--x", "7d").ok(),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(duration("--x", "12").ok(), Some(Duration::from_secs(12)));
        let e = duration("--older-than", "soon")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("--older-than 'soon' is not a duration (examples: 500ms, 90s, 30m, 12h, 7d)")
        );
        assert!(duration("--x", "3w").is_err());
    }

    #[test]
    fn rfc3339_times() {
        let t = time("--since", "2026-12-05T20:22:50.860966Z").ok();
        assert_eq!(t, Some(Timestamp::from_micros(1_796_502_170_860_966)));
        let t = time("--since", "2026-12-05T21:22:50+01:00").ok();
        assert_eq!(t, Some(Timestamp::from_micros(1_796_502_170_000_000)));
        assert_eq!(
            time("--since", "1970-01-01T00:00:00Z").ok(),
            Some(Timestamp::EPOCH)
        );
        assert!(time("--since", "yesterday").is_err());
        assert!(time("--since", "2026-13-05T00:00:00Z").is_err());
    }

    #[test]
    fn a_bad_status_or_id_names_itself() {
        let f = FilterArgs {
            status: Some("failed,nope".into()),
            ..FilterArgs::default()
        };
        let e = query(&f).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("'nope' is not a status"), "{e}");
        let e = invocation_id("zzz")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("'zzz' is not an invocation id"), "{e}");
    }
}
