//! The JSON twin of every view, under `/api`, and `/health`.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use pynenc_operate::Operate;
use serde_json::json;

use crate::auth::Principal;
use crate::data;
use crate::error::HttpResult;
use crate::state::Shared;
use crate::views::filter_of;

pub(crate) async fn overview(State(s): State<Shared>) -> HttpResult<Json<data::Overview>> {
    Ok(Json(data::overview(&s).await?))
}

pub(crate) async fn invocations(
    State(s): State<Shared>,
    RawQuery(q): RawQuery,
) -> HttpResult<Json<data::Invocations>> {
    Ok(Json(data::invocations(&s, filter_of(&q)).await?))
}

pub(crate) async fn invocation(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> HttpResult<Json<data::Detail>> {
    Ok(Json(data::detail(&s, &id).await?))
}

pub(crate) async fn tasks(State(s): State<Shared>) -> HttpResult<Response> {
    Ok(Json(json!({ "tasks": data::tasks(&s).await? })).into_response())
}

pub(crate) async fn runners(State(s): State<Shared>) -> HttpResult<Response> {
    Ok(Json(json!({ "runners": data::runners(&s).await? })).into_response())
}

pub(crate) async fn triggers(State(s): State<Shared>) -> HttpResult<Response> {
    Ok(Json(json!({ "triggers": data::triggers(&s).await? })).into_response())
}

pub(crate) async fn failures(State(s): State<Shared>) -> HttpResult<Response> {
    Ok(Json(json!({ "failures": data::failures(&s).await? })).into_response())
}

pub(crate) async fn config(State(s): State<Shared>) -> Response {
    let monitor: serde_json::Map<String, serde_json::Value> = data::monitor_settings(&s)
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    Json(json!({ "config": data::config(&s), "monitor": monitor })).into_response()
}

pub(crate) async fn audit(State(s): State<Shared>) -> Response {
    Json(json!({ "audit": data::audit(&s) })).into_response()
}

/// `GET /api/me`: who is signed in, and the CSRF token a script sends with
/// its POSTs (`X-CSRF-Token`).
pub(crate) async fn me(State(s): State<Shared>, Extension(who): Extension<Principal>) -> Response {
    Json(json!({ "user": who.user, "role": who.role, "csrf_token": s.csrf })).into_response()
}

/// `GET /health` (no authentication): 200 when the backend answers a query,
/// 503 when it does not. Says nothing about the app's data.
pub(crate) async fn health(State(s): State<Shared>) -> Response {
    match s.app.inspect().queue().await {
        Ok(_) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: the backend does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable" })),
            )
                .into_response()
        }
    }
}
