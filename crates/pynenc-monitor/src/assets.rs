//! The files the pages use, compiled into the binary: htmx (vendored,
//! unmodified, with its license in `assets/`), the monitor's script and
//! stylesheet. Nothing comes from a CDN.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const HTMX: &str = include_str!("../assets/htmx.min.js");
const SCRIPT: &str = include_str!("../assets/monitor.js");
const STYLE: &str = include_str!("../assets/monitor.css");
const HTMX_LICENSE: &str = include_str!("../assets/htmx.LICENSE");

/// `GET /assets/{name}`.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "monitor.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "monitor.css" => (STYLE, "text/css; charset=utf-8"),
        "htmx.LICENSE" => (HTMX_LICENSE, "text/plain; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    res
}
