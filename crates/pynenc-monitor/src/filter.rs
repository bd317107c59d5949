//! The filters of a listing or an action, read from a query string or a
//! form: `task`, `status`, `since`, `until`, `ended_before`, `order`,
//! `after`, `limit` — checked here, turned into an [`InvocationQuery`].

use std::time::Duration;

use pynenc_model::{
    CallId, Cursor, InvocationId, InvocationQuery, Order, TaskId, TimeRange, Timestamp,
};
use pynenc_operate::{parse_cursor, parse_statuses};

use crate::error::{HttpError, HttpResult};

/// The filters as given (text), to echo in forms and links.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Filter {
    pub(crate) task: String,
    pub(crate) status: String,
    pub(crate) since: String,
    pub(crate) until: String,
    pub(crate) ended_before: String,
    pub(crate) parent: String,
    pub(crate) call: String,
    pub(crate) oldest_first: bool,
    pub(crate) after: String,
    pub(crate) limit: Option<usize>,
}

impl Filter {
    /// The filters among `pairs` (other names are left to the caller).
    pub(crate) fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut f = Filter::default();
        let add = |to: &mut String, v: &str| {
            let v = v.trim();
            if v.is_empty() {
                return;
            }
            if !to.is_empty() {
                to.push(',');
            }
            to.push_str(v);
        };
        for (k, v) in pairs {
            match k {
                "task" => add(&mut f.task, v),
                "status" => add(&mut f.status, v),
                "since" => f.since = v.trim().to_string(),
                "until" => f.until = v.trim().to_string(),
                "ended_before" => f.ended_before = v.trim().to_string(),
                "parent" => f.parent = v.trim().to_string(),
                "call" => f.call = v.trim().to_string(),
                "order" => f.oldest_first = v == "oldest",
                "after" => f.after = v.trim().to_string(),
                "limit" => f.limit = Some(v.trim().parse().unwrap_or(usize::MAX)),
                _ => {}
            }
        }
        f
    }

    /// The query, with the page size capped at `max_page`.
    ///
    /// A page size over the cap is refused (400), never silently shortened.
    pub(crate) fn query(
        &self,
        default_page: usize,
        max_page: usize,
    ) -> HttpResult<InvocationQuery> {
        let limit = self.limit.unwrap_or(default_page.min(max_page));
        if limit == 0 || limit > max_page {
            return Err(HttpError::bad_request(format!(
                "invalid limit: the page size must be between 1 and {max_page}"
            )));
        }
        let statuses =
            parse_statuses(&self.status).map_err(|e| HttpError::bad_request(e.to_string()))?;
        let task_ids = self
            .task
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(TaskId::from)
            .collect();
        let now = Timestamp::now();
        let after: Option<Cursor> = if self.after.is_empty() {
            None
        } else {
            Some(parse_cursor(&self.after).map_err(|e| HttpError::bad_request(e.to_string()))?)
        };
        let parent = if self.parent.is_empty() {
            None
        } else {
            Some(
                InvocationId::parse(&self.parent)
                    .map_err(|e| HttpError::bad_request(e.to_string()))?,
            )
        };
        Ok(InvocationQuery {
            parent,
            call_id: (!self.call.is_empty()).then(|| CallId::from(self.call.as_str())),
            task_ids,
            statuses,
            created: TimeRange {
                from: time("since", &self.since, now)?,
                to: time("until", &self.until, now)?,
            },
            ended: TimeRange {
                from: None,
                to: time("ended_before", &self.ended_before, now)?,
            },
            order: if self.oldest_first {
                Order::OldestFirst
            } else {
                Order::NewestFirst
            },
            after,
            limit,
            ..InvocationQuery::default()
        })
    }

    /// The text filters that are set, by name.
    fn set_fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("task", &self.task),
            ("status", &self.status),
            ("since", &self.since),
            ("until", &self.until),
            ("ended_before", &self.ended_before),
            ("parent", &self.parent),
            ("call", &self.call),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.as_str()))
    }

    /// The query string of these filters (without `after`), for links.
    pub(crate) fn query_string(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.set_fields() {
            s.append_pair(k, v);
        }
        if self.oldest_first {
            s.append_pair("order", "oldest");
        }
        if let Some(l) = self.limit {
            s.append_pair("limit", &l.to_string());
        }
        s.finish()
    }

    /// A description for the audit log and confirmation pages.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in self.set_fields() {
            parts.push(format!("{k}={v}"));
        }
        if parts.is_empty() {
            "every invocation".to_string()
        } else {
            parts.join(" ")
        }
    }
}

/// A time given as an age before now (`90s`, `30m`, `2h`, `7d`) or RFC 3339.
fn time(what: &'static str, text: &str, now: Timestamp) -> HttpResult<Option<Timestamp>> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if let Some(age) = age(t) {
        return Ok(Some(now - age));
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| Some(Timestamp::from_micros(d.timestamp_micros())))
        .map_err(|_| {
            HttpError::bad_request(format!(
                "invalid {what}: '{}' is neither an age (90s, 30m, 2h, 7d) nor an RFC 3339 time",
                t.chars().take(60).collect::<String>()
            ))
        })
}

/// An age: a number and a unit (`s`, `m`, `h`, `d`; seconds without one).
fn age(t: &str) -> Option<Duration> {
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs.min(100 * 365 * 86_400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_cap() {
        let f = Filter::from_pairs([
            ("task", "a"),
            ("task", "b"),
            ("status", "failed"),
            ("since", "1h"),
        ]);
        let q = f.query(50, 100).unwrap();
        assert_eq!(q.task_ids.len(), 2);
        assert!(q.created.from.is_some());
        let big = Filter::from_pairs([("limit", "100000")]);
        assert_eq!(big.query(50, 100).unwrap_err().status, 400);
        let bad = Filter::from_pairs([("since", "yesterday")]);
        assert!(bad.query(50, 100).is_err());
        let bad = Filter::from_pairs([("status", "nope")]);
        assert!(bad.query(50, 100).is_err());
    }
}
