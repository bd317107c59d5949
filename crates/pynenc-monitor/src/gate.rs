//! The authentication gate: every route but `/health`, `/login` and the
//! assets needs a user. A browser asking for a page without one is sent to
//! the login form; anything else gets 401.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::state::Shared;

/// 429: too many failed sign-ins lately.
pub(crate) fn too_many() -> Response {
    let mut res = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(
            serde_json::json!({ "error": "too many failed sign-ins: try again in a minute" }),
        ),
    )
        .into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    res
}

fn is_public(path: &str) -> bool {
    path == "/health" || path == "/login" || path.starts_with("/assets/")
}

/// The host name of a `Host` value (without its port).
pub(crate) fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

pub(crate) async fn gate(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    if let Some(hosts) = &state.allowed_hosts {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(|h| host_name(h).to_ascii_lowercase());
        if !host.is_some_and(|h| hosts.contains(&h)) {
            tracing::warn!(host = ?req.headers().get(header::HOST), "request for another host refused");
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this monitor answers to localhost only: add the public origin with --allow-origin",
            )
                .into_response();
        }
    }
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    // only guessable secrets count: a session id is 256 random bits, and a
    // stale session cookie (after a restart) is no attack
    let guessing = req.headers().contains_key(header::AUTHORIZATION);
    if guessing && state.auth.throttled() {
        return too_many();
    }
    let who = state.auth.authenticate(req.headers());
    if who.is_none() && guessing {
        state.auth.failed();
        tracing::warn!(path = %req.uri().path(), "wrong credentials");
    }
    match who {
        Some(who) => {
            tracing::debug!(user = %who.user, role = who.role.as_str(), path = %req.uri().path(), "request");
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        None => {
            let path = req.uri().path();
            let wants_page = req.method() == Method::GET
                && !path.starts_with("/api/")
                && path != "/metrics"
                && path != "/events"
                && req
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains("text/html"));
            if wants_page {
                return Redirect::to("/login").into_response();
            }
            let mut res = (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({ "error": "authentication required" })),
            )
                .into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pynenc-monitor\""),
            );
            res
        }
    }
}
