//! Signing in from a browser: a form (token, or user and password) that sets
//! an HttpOnly, SameSite=Strict session cookie; and signing out.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use tracing::{info, warn};

use crate::auth::{SESSION_COOKIE, SESSION_TTL};
use crate::csrf::CSRF_FIELD;
use crate::state::Shared;
use crate::views::layout::bare;

fn form(csrf: &str, message: Option<&str>) -> String {
    bare(
        "Sign in",
        html! {
            @if let Some(m) = message { p.error #login-error { (m) } }
            form.login method="post" action="/login" {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                label { "User (leave empty with a token) " input type="text" name="user" #user autocomplete="username"; }
                label { "Token or password " input type="password" name="secret" #secret autocomplete="current-password" required; }
                button type="submit" #sign-in { "Sign in" }
            }
            p.hint { "The token is printed by `pynenc monitor` when it starts, unless credentials are configured." }
        },
    )
    .into_string()
}

/// `GET /login`.
pub(crate) async fn page(State(state): State<Shared>) -> Response {
    Html(form(&state.login_csrf, None)).into_response()
}

/// `POST /login` (the CSRF guard has run).
pub(crate) async fn submit(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if state.auth.throttled() {
        return crate::gate::too_many();
    }
    let mut user = String::new();
    let mut secret = String::new();
    for (k, v) in form_urlencoded::parse(&body) {
        match &*k {
            "user" => user = v.trim().to_string(),
            "secret" => secret = v.into_owned(),
            _ => {}
        }
    }
    let who = state
        .auth
        .check((!user.is_empty()).then_some(user.as_str()), &secret);
    let Some(who) = who else {
        state.auth.failed();
        warn!(user = %user, "monitor sign-in refused");
        return (
            StatusCode::UNAUTHORIZED,
            Html(form(&state.login_csrf, Some("Wrong credentials."))),
        )
            .into_response();
    };
    info!(user = %who.user, role = who.role.as_str(), "monitor sign-in");
    let id = state.auth.open_session(who);
    // behind a reverse proxy that terminates TLS, the cookie is HTTPS-only
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if https { "; Secure" } else { "" }
    );
    let mut res = Redirect::to("/").into_response();
    if let Ok(v) = cookie.parse() {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `POST /logout`.
pub(crate) async fn logout(State(state): State<Shared>, headers: HeaderMap) -> Response {
    state.auth.close_session(&headers);
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) =
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0").parse()
    {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}
