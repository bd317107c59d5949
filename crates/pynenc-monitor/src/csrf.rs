//! Every change is a POST that carries the process's CSRF token (form field
//! `csrf` or header `X-CSRF-Token`) and, when the browser says where it
//! comes from, an `Origin` that is the monitor's own (or one allowed).

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::warn;

use crate::auth::constant_time_eq;
use crate::state::Shared;

/// The header a script or API client sends the token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The form field a page's forms send the token in.
pub const CSRF_FIELD: &str = "csrf";

/// The POST guard: a body within the size cap, an allowed origin and the
/// CSRF token, checked before any handler runs. Any other method than GET,
/// HEAD and POST is refused.
pub(crate) async fn guard(State(state): State<Shared>, req: Request, next: Next) -> Response {
    match *req.method() {
        Method::GET | Method::HEAD => return next.run(req).await,
        Method::POST => {}
        _ => return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response(),
    }
    let (parts, body) = req.into_parts();
    if !origin_allowed(&parts.headers, &state.allowed_origins) {
        warn!(path = %parts.uri.path(), origin = ?parts.headers.get(header::ORIGIN), "cross-origin POST refused");
        return (StatusCode::FORBIDDEN, "cross-origin request refused").into_response();
    }
    let bytes = match to_bytes(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
    };
    let sent = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| form_field(&parts.headers, &bytes, CSRF_FIELD));
    // the sign-in form has its own token (shown to anyone); every other
    // POST needs the signed-in users' one
    let expected = if parts.uri.path() == "/login" {
        &state.login_csrf
    } else {
        &state.csrf
    };
    let ok = sent.is_some_and(|t| constant_time_eq(t.as_bytes(), expected.as_bytes()));
    if !ok {
        warn!(path = %parts.uri.path(), "POST without a valid CSRF token refused");
        return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Whether a POST's origin is acceptable.
///
/// - A browser's `Sec-Fetch-Site` (which pages cannot forge) must be
///   `same-origin` when present.
/// - `Origin` (or, without one, the `Referer`'s origin) must name the host
///   the request was sent to or an allowed origin. `Origin: null` — what a
///   browser sends for a form under `Referrer-Policy: no-referrer` — passes
///   only with `Sec-Fetch-Site: same-origin`.
/// - A request with neither (not from a browser) passes, and still needs
///   the token.
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &Arc<Vec<String>>) -> bool {
    let get = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|s| s != "same-origin") {
        return false;
    }
    let origin = match (get(header::ORIGIN), get(header::REFERER)) {
        (Some(o), _) => o.to_string(),
        (None, Some(r)) => origin_of(r),
        (None, None) => return true,
    };
    if origin == "null" {
        return fetch_site == Some("same-origin");
    }
    if allowed.iter().any(|a| a.trim_end_matches('/') == origin) {
        return true;
    }
    let Some(host) = get(header::HOST) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(scheme, rest)| (scheme == "http" || scheme == "https") && rest == host)
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split('/').next().unwrap_or("");
            format!("{scheme}://{host}")
        }
        None => String::new(),
    }
}

/// A field of a urlencoded form body.
pub(crate) fn form_field(headers: &HeaderMap, body: &[u8], name: &str) -> Option<String> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return None;
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        let none = Arc::new(Vec::new());
        let host = ("host", "127.0.0.1:8025");
        assert!(origin_allowed(&headers(&[host]), &none));
        assert!(origin_allowed(
            &headers(&[host, ("origin", "http://127.0.0.1:8025")]),
            &none
        ));
        assert!(!origin_allowed(
            &headers(&[host, ("origin", "http://evil.example")]),
            &none
        ));
        assert!(!origin_allowed(
            &headers(&[host, ("origin", "null")]),
            &none
        ));
        assert!(origin_allowed(
            &headers(&[host, ("origin", "null"), ("sec-fetch-site", "same-origin")]),
            &none
        ));
        assert!(!origin_allowed(
            &headers(&[
                host,
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "same-origin")
            ]),
            &none
        ));
        assert!(!origin_allowed(
            &headers(&[
                host,
                ("origin", "http://127.0.0.1:8025"),
                ("sec-fetch-site", "same-site")
            ]),
            &none
        ));
        assert!(!origin_allowed(
            &headers(&[host, ("referer", "http://evil.example/x")]),
            &none
        ));
        assert!(!origin_allowed(
            &headers(&[host, ("sec-fetch-site", "cross-site")]),
            &none
        ));
        let proxy = Arc::new(vec!["https://mon.example.com".to_string()]);
        assert!(origin_allowed(
            &headers(&[host, ("origin", "https://mon.example.com")]),
            &proxy
        ));
    }
}
