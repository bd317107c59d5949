//! Who is asking: credentials by bearer token, HTTP basic authentication or
//! the login form's session cookie; roles; constant-time comparison.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use base64::Engine;
use serde::Serialize;

use crate::options::Credential;

/// The name of the session cookie the login form sets.
pub const SESSION_COOKIE: &str = "pynenc_monitor_session";

/// How long a browser session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The most sessions kept at once (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

/// Failed sign-ins (wrong token, password or form) allowed per
/// [`FAILURE_WINDOW`] before every attempt is refused with 429 until the
/// window moves on: guessing a credential online stays slow.
pub const MAX_FAILURES: usize = 30;

/// The window [`MAX_FAILURES`] is counted over.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every view and API answer, no action (an action is 403).
    Viewer,
    /// Every view and every action.
    Operator,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The user name of the credential used.
    pub user: String,
    /// Its role.
    pub role: Role,
}

/// The credentials and the live browser sessions.
#[derive(Debug)]
pub(crate) struct Auth {
    credentials: Vec<Credential>,
    sessions: Mutex<HashMap<String, (Principal, Instant)>>,
    failures: Mutex<std::collections::VecDeque<Instant>>,
}

impl Auth {
    pub(crate) fn new(credentials: Vec<Credential>) -> Self {
        Auth {
            credentials,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Whether sign-in attempts are refused for now (too many failed lately).
    pub(crate) fn throttled(&self) -> bool {
        let mut f = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while f.front().is_some_and(|t| t.elapsed() > FAILURE_WINDOW) {
            f.pop_front();
        }
        f.len() >= MAX_FAILURES
    }

    /// Counts a failed sign-in.
    pub(crate) fn failed(&self) {
        let mut f = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.push_back(Instant::now());
        if f.len() > MAX_FAILURES * 2 {
            f.pop_front();
        }
    }

    /// The user a request's `Authorization` header or session cookie names.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Option<Principal> {
        if let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            return self.by_authorization(value);
        }
        let session = cookie(headers, SESSION_COOKIE)?;
        self.session(&session)
    }

    fn by_authorization(&self, value: &str) -> Option<Principal> {
        let (scheme, rest) = value.trim().split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.check(None, rest.trim());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, password) = text.split_once(':')?;
            return self.check(Some(user), password);
        }
        None
    }

    /// The credential `secret` (and `user`, when given) belongs to. Every
    /// credential is compared, each in constant time, so the time taken does
    /// not tell which matched or how much of a secret was right.
    pub(crate) fn check(&self, user: Option<&str>, secret: &str) -> Option<Principal> {
        let mut found = None;
        for c in &self.credentials {
            let secret_ok = constant_time_eq(secret.as_bytes(), c.secret.expose().as_bytes());
            let user_ok = user.is_none_or(|u| constant_time_eq(u.as_bytes(), c.user.as_bytes()));
            if secret_ok & user_ok && found.is_none() {
                found = Some(Principal {
                    user: c.user.clone(),
                    role: c.role,
                });
            }
        }
        found
    }

    /// The users and their roles (no secret), for the configuration page.
    pub(crate) fn describe(&self) -> String {
        let users: Vec<String> = self
            .credentials
            .iter()
            .map(|c| format!("{} ({})", c.user, c.role.as_str()))
            .collect();
        users.join(", ")
    }

    /// Opens a session for `who`; the cookie value.
    pub(crate) fn open_session(&self, who: Principal) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, (_, at)| now.duration_since(*at) < SESSION_TTL);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), (who, now));
        id
    }

    /// Ends the session of a request, if it has one.
    pub(crate) fn close_session(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.lock().remove(&id);
        }
    }

    fn session(&self, id: &str) -> Option<Principal> {
        let sessions = self.lock();
        // a map lookup by the cookie's value: its time depends on the hash,
        // not on how much of an id matched
        let (who, at) = sessions.get(id)?;
        (at.elapsed() < SESSION_TTL).then(|| who.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Principal, Instant)>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether `a` and `b` are equal, in a time that depends only on their
/// lengths: every byte is looked at whatever the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len_diff = (a.len() ^ b.len()) as u64;
    let n = a.len().max(b.len());
    let mut diff = 0u8;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0 && len_diff == 0
}

/// A random token: 244 random bits from the operating system's CSPRNG-seeded
/// generator, as 64 hex digits.
pub fn random_token() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

/// The value of cookie `name` in a request.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_basic_and_roles() {
        let auth = Auth::new(vec![
            Credential::new("ops", "s3cret-op", Role::Operator),
            Credential::new("look", "s3cret-view", Role::Viewer),
        ]);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer s3cret-view".parse().unwrap());
        assert_eq!(auth.authenticate(&h).unwrap().role, Role::Viewer);
        let basic = base64::engine::general_purpose::STANDARD.encode("ops:s3cret-op");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(auth.authenticate(&h).unwrap().role, Role::Operator);
        let wrong_user = base64::engine::general_purpose::STANDARD.encode("look:s3cret-op");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {wrong_user}").parse().unwrap(),
        );
        assert!(auth.authenticate(&h).is_none());
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(auth.authenticate(&h).is_none());
    }

    #[test]
    fn sessions_open_and_close() {
        let auth = Auth::new(vec![Credential::new("ops", "t", Role::Operator)]);
        let id = auth.open_session(Principal {
            user: "ops".into(),
            role: Role::Operator,
        });
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=b; {SESSION_COOKIE}={id}").parse().unwrap(),
        );
        assert_eq!(auth.authenticate(&h).unwrap().user, "ops");
        auth.close_session(&h);
        assert!(auth.authenticate(&h).is_none());
    }
}
