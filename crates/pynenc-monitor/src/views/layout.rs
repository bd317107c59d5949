//! The page around every view: head (assets only, no inline script or
//! style), navigation, who is signed in, the live-update hook.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use pynenc_model::{InvocationStatus, Timestamp};

use crate::auth::{Principal, Role};
use crate::csrf::CSRF_FIELD;
use crate::error::HttpError;

/// What the layout needs to know of the request.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) who: Principal,
    pub(crate) csrf: String,
    pub(crate) app_id: String,
    /// The path and query of the page (what a live page reloads).
    pub(crate) here: String,
}

impl Ctx {
    pub(crate) fn operator(&self) -> bool {
        self.who.role == Role::Operator
    }

    /// The hidden CSRF field of a form.
    pub(crate) fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name=(CSRF_FIELD) value=(self.csrf); }
    }
}

const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/invocations", "Invocations"),
    ("/tasks", "Tasks"),
    ("/runners", "Runners"),
    ("/failures", "Failures"),
    ("/triggers", "Triggers"),
    ("/config", "Configuration"),
    ("/audit", "Audit"),
];

/// The htmx settings: no inline indicator style (the CSP forbids it), no
/// eval, no script tags from swapped content.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"selfRequestsOnly":true}"#;

/// The head: title, stylesheet, scripts (all served by the monitor).
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · pynenc monitor" }
            link rel="stylesheet" href="/assets/monitor.css";
            script src="/assets/htmx.min.js" defer {}
            script src="/assets/monitor.js" defer {}
        }
    }
}

/// A full page. `live` pages reload their content when the server says
/// something changed (`/events`).
pub(crate) fn page(ctx: &Ctx, active: &str, title: &str, live: bool, body: Markup) -> Markup {
    page_with(ctx, active, title, None, live, body)
}

/// A full page whose `fixed` part (a form being filled in) is never
/// reloaded; `body` is, when `live`.
pub(crate) fn page_with(
    ctx: &Ctx,
    active: &str,
    title: &str,
    fixed: Option<Markup>,
    live: bool,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body data-csrf=(ctx.csrf) {
                header.top {
                    span.brand { "pynenc monitor" }
                    span.app { "app " code { (ctx.app_id) } }
                    nav {
                        @for (href, label) in NAV {
                            a href=(href) class=[(*href == active).then_some("active")] { (label) }
                        }
                    }
                    span.who {
                        (ctx.who.user) " (" (ctx.who.role.as_str()) ")"
                        form.inline method="post" action="/logout" {
                            (ctx.csrf_field())
                            button.link type="submit" { "sign out" }
                        }
                    }
                    span #live-state .live title="live updates" { "○" }
                }
                main #main {
                    h1 { (title) }
                    @if let Some(f) = fixed { (f) }
                    @if live {
                        div #live hx-get=(ctx.here) hx-trigger="pynenc:change from:body" hx-select="#live"
                            hx-target="#live" hx-swap="outerHTML" data-live="1" {
                            (body)
                        }
                    } @else {
                        div #content { (body) }
                    }
                }
                div #stale .notice .hidden { "Something changed. " a href="" { "Reload" } " to see it (your selection would be lost)." }
            }
        }
    }
}

/// A page without navigation (login, errors before sign-in).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main #main .narrow { h1 { (title) } (body) }
            }
        }
    }
}

/// An error as a page.
pub(crate) fn error_page(e: &HttpError) -> Response {
    let body = bare(
        "Error",
        html! { p.error { (e.status.as_u16()) " — " (e.message) } p { a href="/" { "Back to the overview" } } },
    );
    (e.status, Html(body.into_string())).into_response()
}

/// A page as a response.
pub(crate) fn respond(m: Markup) -> Response {
    (StatusCode::OK, Html(m.into_string())).into_response()
}

/// A status as a coloured label.
pub(crate) fn status(s: InvocationStatus) -> Markup {
    let class = match s {
        InvocationStatus::Success => "st ok",
        InvocationStatus::Failed => "st bad",
        s if s.is_final() => "st end",
        InvocationStatus::Running | InvocationStatus::Pending | InvocationStatus::Resumed => {
            "st run"
        }
        _ => "st wait",
    };
    html! { span class=(class) { (s.as_str()) } }
}

/// A time, readable, with the exact value in the title.
pub(crate) fn time(t: Timestamp) -> Markup {
    let text = chrono::DateTime::from_timestamp_micros(t.as_micros())
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| t.to_string());
    html! { time datetime=(t.to_rfc3339()) { (text) } }
}

/// A duration in milliseconds, readable.
pub(crate) fn ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{:.1} min", ms as f64 / 60_000.0),
        _ => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

/// An invocation id as a link to its page.
pub(crate) fn inv_link(id: &pynenc_model::InvocationId) -> Markup {
    html! { a.mono href={ "/invocations/" (id) } { (id) } }
}

/// A value encoded for a URL's query string.
pub(crate) fn q(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
