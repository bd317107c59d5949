//! The HTML views, one handler each; every one reads through `data` (the
//! same answers as the JSON API) and renders with maud.

pub(crate) mod confirm;
pub(crate) mod invocations;
pub(crate) mod layout;
pub(crate) mod login;
pub(crate) mod overview;
pub(crate) mod tables;

use axum::extract::{Path, RawQuery, State};
use axum::http::Uri;
use axum::response::Response;
use axum::Extension;

use crate::auth::Principal;
use crate::data;
use crate::filter::Filter;
use crate::state::{MonitorState, Shared};
use layout::{error_page, page, page_with, respond, Ctx};

pub(crate) fn ctx(state: &MonitorState, who: &Principal, here: &Uri) -> Ctx {
    Ctx {
        here: here
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string()),
        who: who.clone(),
        csrf: state.csrf.clone(),
        app_id: state.app.app_id().to_string(),
    }
}

/// The filters of a query string.
pub(crate) fn filter_of(query: &Option<String>) -> Filter {
    let q = query.as_deref().unwrap_or("");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
    Filter::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

pub(crate) async fn overview(
    State(s): State<Shared>,
    Extension(who): Extension<Principal>,
    uri: Uri,
) -> Response {
    match data::overview(&s).await {
        Ok(o) => respond(page(
            &ctx(&s, &who, &uri),
            "/",
            "Overview",
            true,
            overview::render(&o),
        )),
        Err(e) => error_page(&e),
    }
}

pub(crate) async fn invocations(
    State(s): State<Shared>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Response {
    let c = ctx(&s, &who, &uri);
    match data::invocations(&s, filter_of(&q)).await {
        Ok(v) => respond(page_with(
            &c,
            "/invocations",
            "Invocations",
            Some(invocations::filter_form(&v)),
            true,
            invocations::list(&c, &v),
        )),
        Err(e) => error_page(&e),
    }
}

pub(crate) async fn invocation(
    State(s): State<Shared>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let c = ctx(&s, &who, &uri);
    match data::detail(&s, &id).await {
        Ok(d) => respond(page(
            &c,
            "/invocations",
            "Invocation",
            true,
            invocations::detail(&c, &d),
        )),
        Err(e) => error_page(&e),
    }
}

/// A live page of one table, or the error that kept it from being read.
fn live_table<T>(
    c: &Ctx,
    path: &str,
    title: &str,
    rows: crate::error::HttpResult<Vec<T>>,
    render: impl Fn(&[T]) -> maud::Markup,
) -> Response {
    match rows {
        Ok(rows) => respond(page(c, path, title, true, render(&rows))),
        Err(e) => error_page(&e),
    }
}

pub(crate) async fn tasks(
    State(s): State<Shared>,
    Extension(who): Extension<Principal>,
    uri: Uri,
) -> Response {
    let rows = data::tasks(&s).await;
    live_table(&ctx(&s, &who, &uri), "/tasks", "Tasks", rows, |r| {
        tables::tasks(r)
    })
}

pub(crate) async fn runners(
    State(s): State<Shared>,
    Extension(who): Extension<Principal>,
    uri: Uri,
) -> Response {
    let rows = data::runners(&s).await;
    live_table(&ctx(&s, &who, &uri), "/runners", "Runners", rows, |r| {
        tables::runners(r)
    })
}

pub(crate) async fn failures(
    State(s): State<Shared>,
    Extension(who): Extension<Principal>,
    uri: Uri,
) -> Response {
    let rows = data::failures(&s).await;
    live_table(
        &ctx(&s, &who, &uri),
        "/failures",
        "Failures by error kind",
        rows,
        tables::failures,
    )
}

pub(crate) async fn triggers(
    State(s): State<Shared>,
    Extension(who): Extension<Principal>,
    uri: Uri,
) -> Response {
    let rows = data::triggers(&s).await;
    live_table(&ctx(&s, &who, &uri), "/triggers", "Triggers", rows, |r| {
        tables::triggers(r)
    })
}

pub(crate) async fn config(
    State(s): State<Shared>,
    Extension(who): Extension<Principal>,
    uri: Uri,
) -> Response {
    let rows = data::config(&s);
    let monitor = data::monitor_settings(&s);
    respond(page(
        &ctx(&s, &who, &uri),
        "/config",
        "Configuration",
        false,
        tables::config(&rows, &monitor),
    ))
}

pub(crate) async fn audit(
    State(s): State<Shared>,
    Extension(who): Extension<Principal>,
    uri: Uri,
) -> Response {
    let rows = data::audit(&s);
    respond(page(
        &ctx(&s, &who, &uri),
        "/audit",
        "Audit",
        false,
        tables::audit(&rows),
    ))
}

/// `GET /purge`: the purge form (reads only).
pub(crate) async fn purge_form(
    State(s): State<Shared>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Response {
    use pynenc_operate::Operate;
    let tasks = match s.app.inspect().tasks().await {
        Ok(t) => t.into_iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        Err(e) => return error_page(&e.into()),
    };
    respond(confirm::purge_form(
        &ctx(&s, &who, &uri),
        &filter_of(&q),
        &tasks,
    ))
}
