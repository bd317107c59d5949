//! Cron schedules: an expression (with an optional seconds field) in a time
//! zone, and its ticks in a window of time.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use pynenc_model::Timestamp;

/// The longest window [`CronSchedule::ticks`] looks at, in seconds (a day):
/// older ticks are skipped.
const MAX_WINDOW_SECONDS: i64 = 86_400;

/// A parsed cron expression and its time zone.
#[derive(Debug, Clone)]
pub(crate) struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

impl CronSchedule {
    /// Parses `expr` (five fields, or six with seconds first) in the time
    /// zone named `tz` (an IANA name such as `Europe/Madrid`; `UTC` when none).
    ///
    /// # Errors
    ///
    /// What is wrong with the expression or the time zone.
    pub(crate) fn parse(expr: &str, tz: Option<&str>) -> Result<Self, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| format!("invalid cron expression '{expr}': {e}"))?;
        let tz = match tz {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                format!("unknown time zone '{name}' (an IANA name, e.g. 'Europe/Madrid' or 'UTC')")
            })?,
        };
        Ok(CronSchedule { cron, tz })
    }

    /// The ticks after `after` and up to `until` (inclusive), oldest first;
    /// at most `max` of them (the newest are kept).
    ///
    /// Every whole second of the window is matched against the expression
    /// in the schedule's time zone (ticks are whole seconds), so the ticks
    /// come in time order across daylight-saving changes: in the hour a
    /// change repeats, a local time that matches fires at both of its
    /// instants; a local time a change skips does not fire.
    pub(crate) fn ticks(&self, after: Timestamp, until: Timestamp, max: usize) -> Vec<Timestamp> {
        let first = after.as_micros().div_euclid(1_000_000) + 1;
        let last = until.as_micros().div_euclid(1_000_000);
        let first = first.max(last.saturating_sub(MAX_WINDOW_SECONDS));
        let mut out: Vec<Timestamp> = (first..=last)
            .filter_map(|s| {
                let t = Utc.timestamp_opt(s, 0).single()?;
                self.cron
                    .is_time_matching(&t.with_timezone(&self.tz))
                    .ok()?
                    .then(|| Timestamp::from_micros(s * 1_000_000))
            })
            .collect();
        if out.len() > max {
            out.drain(..out.len() - max);
        }
        out
    }

    /// The last `n` ticks at or before `now`, newest first. (Each is looked
    /// for before the one found last: the backward iterator of the cron
    /// library skips every other second of a per-second schedule.)
    pub(crate) fn previous(&self, now: Timestamp, n: usize) -> Vec<Timestamp> {
        let whole = Timestamp::from_micros(now.as_micros().div_euclid(1_000_000) * 1_000_000);
        let Some(mut cursor) = to_utc(whole).map(|t| t.with_timezone(&self.tz)) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(n);
        let mut inclusive = true;
        while out.len() < n {
            let Ok(found) = self.cron.find_previous_occurrence(&cursor, inclusive) else {
                break;
            };
            out.push(Timestamp::from_micros(
                found.with_timezone(&Utc).timestamp_micros(),
            ));
            cursor = found;
            inclusive = false;
        }
        out
    }

    /// The next tick after `now`, if there is one.
    pub(crate) fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        let whole = Timestamp::from_micros(now.as_micros().div_euclid(1_000_000) * 1_000_000);
        let start = to_utc(whole)?.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        Some(Timestamp::from_micros(
            next.with_timezone(&Utc).timestamp_micros(),
        ))
    }
}

fn to_utc(t: Timestamp) -> Option<DateTime<Utc>> {
    Utc.timestamp_micros(t.as_micros()).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        let t = DateTime::parse_from_rfc3339(s).unwrap();
        Timestamp::from_micros(t.timestamp_micros())
    }

    #[test]
    fn ticks_in_a_window_with_seconds_and_time_zones() {
        let every_2s = CronSchedule::parse("*/2 * * * * *", None).unwrap();
        let ticks = every_2s.ticks(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:09Z"), 100);
        // a start within a second: the ticks stay on whole seconds
        let from_fraction = every_2s.ticks(
            at("2026-01-01T00:00:00.250Z"),
            at("2026-01-01T00:00:09Z"),
            100,
        );
        assert_eq!(from_fraction, ticks);
        assert_eq!(ticks.len(), 4, "2, 4, 6, 8 (the start is excluded)");
        assert_eq!(ticks[0], at("2026-01-01T00:00:02Z"));
        let last_two = every_2s.ticks(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:09Z"), 2);
        assert_eq!(
            last_two,
            vec![at("2026-01-01T00:00:06Z"), at("2026-01-01T00:00:08Z")]
        );
        // five fields: minutes; 09:00 in Madrid is 08:00 UTC in winter
        let nine = CronSchedule::parse("0 9 * * *", Some("Europe/Madrid")).unwrap();
        assert_eq!(
            nine.next_after(at("2026-01-15T00:00:00Z")),
            Some(at("2026-01-15T08:00:00Z"))
        );
        assert_eq!(
            every_2s.previous(at("2026-01-01T00:00:05.500Z"), 2),
            vec![at("2026-01-01T00:00:04Z"), at("2026-01-01T00:00:02Z")]
        );
        assert_eq!(
            every_2s.previous(at("2026-01-01T00:00:04Z"), 1),
            vec![at("2026-01-01T00:00:04Z")]
        );
        let every_s = CronSchedule::parse("* * * * * *", None).unwrap();
        assert_eq!(
            every_s.previous(at("2026-01-01T00:00:05.500Z"), 3),
            vec![
                at("2026-01-01T00:00:05Z"),
                at("2026-01-01T00:00:04Z"),
                at("2026-01-01T00:00:03Z")
            ]
        );
        // the autumn change in Madrid (03:00 CEST -> 02:00 CET on 2026-10-25):
        // 02:30 local happens twice, at 00:30 and 01:30 UTC, both fired, in order
        let half_past_two = CronSchedule::parse("0 30 2 * * *", Some("Europe/Madrid")).unwrap();
        assert_eq!(
            half_past_two.ticks(at("2026-10-24T23:00:00Z"), at("2026-10-25T03:00:00Z"), 10),
            vec![at("2026-10-25T00:30:00Z"), at("2026-10-25T01:30:00Z")]
        );
        // every second through the repeated hour: one tick per second, in order
        let every = CronSchedule::parse("* * * * * *", Some("Europe/Madrid")).unwrap();
        let through = every.ticks(at("2026-10-25T00:59:58Z"), at("2026-10-25T01:00:02Z"), 100);
        assert_eq!(through.len(), 4);
        assert!(through
            .windows(2)
            .all(|w| w[1].as_micros() - w[0].as_micros() == 1_000_000));
        // the spring change skips 02:00-03:00 local: 02:30 does not fire that day
        assert!(half_past_two
            .ticks(at("2026-03-29T00:00:00Z"), at("2026-03-29T03:00:00Z"), 10)
            .is_empty());
        let err = CronSchedule::parse("61 * * * *", None).unwrap_err();
        assert!(
            err.contains("invalid cron expression '61 * * * *'"),
            "{err}"
        );
        let err = CronSchedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(err.contains("unknown time zone 'Mars/Olympus'"), "{err}");
    }
}
