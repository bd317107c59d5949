//! Times, as the stores keep them: microseconds since the Unix epoch.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time: microseconds since the Unix epoch (UTC). It serializes
/// as that integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// Now, by this machine's clock.
    pub fn now() -> Self {
        Timestamp::from(SystemTime::now())
    }

    /// The time `micros` microseconds after the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// How long after `earlier` this is (zero if it is not after it).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// The time as RFC 3339 with microseconds (`2026-12-05T14:32:00.123456Z`).
    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::<chrono::Utc>::from_timestamp_micros(self.0)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .unwrap_or_else(|| self.0.to_string())
    }
}

/// A duration in whole microseconds (saturating).
pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// This time plus a duration (saturating).
impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(micros(d)))
    }
}

/// This time minus a duration (saturating).
impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(micros(d)))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(micros(d)),
            Err(before) => Timestamp(-micros(before.duration())),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_and_formats() {
        let t = Timestamp::from_micros(1_000_000);
        assert_eq!((t + Duration::from_millis(1)).as_micros(), 1_001_000);
        assert_eq!((t - Duration::from_secs(2)).as_micros(), -1_000_000);
        assert_eq!(
            (t + Duration::from_secs(3)).since(t),
            Duration::from_secs(3)
        );
        assert_eq!(t.since(t + Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(t.to_rfc3339(), "1970-01-01T00:00:01.000000Z");
        assert_eq!(serde_json::to_string(&t).unwrap(), "1000000");
        assert!(Timestamp::now() > Timestamp::EPOCH);
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(Timestamp::from(before).as_micros(), -1_000_000);
    }
}
