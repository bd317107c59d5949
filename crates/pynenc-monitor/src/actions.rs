//! The actions: cancel, rerun, retry now, run a scheduled call now, purge by filter — on ids ticked
//! or on every invocation matching a filter. Each is a POST (the CSRF guard
//! has run), needs the operator role, shows what it will touch first
//! (without `confirm`), then acts through `pynenc_operate`'s controller as
//! `monitor:<user>` and is recorded in the audit log.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use pynenc_model::{InvocationId, InvocationSummary, RunnerId, DEFAULT_PAGE_SIZE};
use pynenc_operate::{Controller, Operate};
use serde::Serialize;
use serde_json::Value;

use crate::auth::{Principal, Role};
use crate::error::{HttpError, HttpResult};
use crate::filter::Filter;
use crate::state::Shared;
use crate::views::{self, layout};

/// An action by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    Cancel,
    Rerun,
    Retry,
    RunNow,
    Purge,
}

impl Action {
    fn parse(name: &str) -> HttpResult<Action> {
        Ok(match name {
            "cancel" => Action::Cancel,
            "rerun" => Action::Rerun,
            "retry" => Action::Retry,
            "run-now" => Action::RunNow,
            "purge" => Action::Purge,
            other => {
                return Err(HttpError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    format!("no action '{}'", other.chars().take(40).collect::<String>()),
                ))
            }
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Rerun => "rerun",
            Action::Retry => "retry",
            Action::RunNow => "run-now",
            Action::Purge => "purge",
        }
    }
}

/// What an action was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct ActionRequest {
    pub(crate) action: Action,
    pub(crate) ids: Vec<InvocationId>,
    pub(crate) all_matching: bool,
    pub(crate) filter: Filter,
    pub(crate) confirm: bool,
}

impl ActionRequest {
    /// What it applies to, for pages and the audit log.
    pub(crate) fn target(&self) -> String {
        if self.all_matching {
            format!("all matching {}", self.filter.describe())
        } else {
            let ids: Vec<String> = self.ids.iter().map(ToString::to_string).collect();
            ids.join(", ")
        }
    }
}

/// Before: what an action will touch.
#[derive(Debug, Serialize)]
pub(crate) struct Preview {
    pub(crate) action: Action,
    pub(crate) target: String,
    pub(crate) items: Vec<InvocationSummary>,
    /// More match than are listed.
    pub(crate) more: bool,
}

/// After: what an action did.
#[derive(Debug, Serialize)]
pub(crate) struct Done {
    pub(crate) action: Action,
    pub(crate) target: String,
    /// How many invocations it changed (cancelled or asked to stop,
    /// rerun, retried, purged).
    pub(crate) changed: usize,
    /// New invocations (reruns and retries).
    pub(crate) new_invocations: Vec<InvocationId>,
    /// What it could not do, one line each.
    pub(crate) refused: Vec<String>,
}

/// `POST /actions/{action}` (a page) and `POST /api/actions/{action}` (JSON).
pub(crate) async fn html(
    state: State<Shared>,
    who: Extension<Principal>,
    name: Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = views::ctx(&state, &who, &uri);
    match run(&state, &who, &name, &headers, &body).await {
        Ok(Outcome::Preview(p)) => layout::respond(views::confirm::preview(&ctx, &p.0, &p.1)),
        Ok(Outcome::Done(d)) => layout::respond(views::confirm::done(&ctx, &d)),
        Err(e) => layout::error_page(&e),
    }
}

/// `POST /api/actions/{action}`.
pub(crate) async fn api(
    state: State<Shared>,
    who: Extension<Principal>,
    name: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match run(&state, &who, &name, &headers, &body).await {
        Ok(Outcome::Preview(p)) => Json(serde_json::json!({ "preview": p.0 })).into_response(),
        Ok(Outcome::Done(d)) => Json(serde_json::json!({ "done": d })).into_response(),
        Err(e) => e.into_response(),
    }
}

enum Outcome {
    Preview(Box<(Preview, ActionRequest)>),
    Done(Done),
}

async fn run(
    state: &Shared,
    who: &Principal,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> HttpResult<Outcome> {
    if who.role != Role::Operator {
        return Err(HttpError::forbidden(format!(
            "{} is a viewer: actions need the operator role",
            who.user
        )));
    }
    let action = Action::parse(name)?;
    let req = parse(action, headers, body, state.max_page_size)?;
    if !req.confirm {
        return Ok(Outcome::Preview(Box::new((
            preview(state, &req).await?,
            req,
        ))));
    }
    let control = state
        .app
        .control()
        .as_actor(RunnerId::from(format!("monitor:{}", who.user)));
    let done = match act(state, &control, &req).await {
        Ok(done) => done,
        Err(e) => {
            // what was done before the failure stays done: say so
            state.audit.record(
                &who.user,
                action.as_str(),
                req.target(),
                format!("failed: {e}"),
            );
            return Err(e);
        }
    };
    state.audit.record(
        &who.user,
        action.as_str(),
        done.target.clone(),
        format!(
            "{} changed{}{}",
            done.changed,
            if done.new_invocations.is_empty() {
                String::new()
            } else {
                format!(", {} new", done.new_invocations.len())
            },
            if done.refused.is_empty() {
                String::new()
            } else {
                format!(", {} refused", done.refused.len())
            }
        ),
    );
    Ok(Outcome::Done(done))
}

/// The request from a urlencoded form or a JSON object.
fn parse(
    action: Action,
    headers: &HeaderMap,
    body: &[u8],
    max_ids: usize,
) -> HttpResult<ActionRequest> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let pairs: Vec<(String, String)> = if is_json {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| HttpError::bad_request(format!("invalid JSON body: {e}")))?;
        let Value::Object(map) = v else {
            return Err(HttpError::bad_request("the JSON body must be an object"));
        };
        let mut pairs = Vec::new();
        for (k, v) in map {
            match v {
                Value::Array(items) => {
                    pairs.extend(items.into_iter().map(|i| (k.clone(), scalar(i))))
                }
                other => pairs.push((k, scalar(other))),
            }
        }
        pairs
    } else {
        form_urlencoded::parse(body).into_owned().collect()
    };
    let flag = |name: &str| {
        pairs
            .iter()
            .any(|(k, v)| k == name && matches!(v.as_str(), "1" | "true" | "yes" | "on"))
    };
    let mut ids = Vec::new();
    for (k, v) in &pairs {
        if k == "ids" {
            for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                ids.push(
                    InvocationId::parse(part).map_err(|e| HttpError::bad_request(e.to_string()))?,
                );
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    if ids.len() > max_ids {
        return Err(HttpError::bad_request(format!(
            "at most {max_ids} ids at once: select all matching a filter instead"
        )));
    }
    let mut filter = Filter::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    filter.limit = None;
    filter.after = String::new();
    let all_matching = action == Action::Purge || flag("all_matching");
    if !all_matching && ids.is_empty() {
        return Err(HttpError::bad_request(
            "nothing selected: tick invocations, or choose every invocation matching the filter",
        ));
    }
    Ok(ActionRequest {
        action,
        ids: if all_matching { Vec::new() } else { ids },
        all_matching,
        filter,
        confirm: flag("confirm"),
    })
}

fn scalar(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

async fn preview(state: &Shared, req: &ActionRequest) -> HttpResult<Preview> {
    let inspect = state.app.inspect();
    let cap = state.max_page_size;
    let (items, more) = if !req.all_matching {
        let mut items = Vec::new();
        for id in &req.ids {
            items.push(inspect.summary(id).await?);
        }
        (items, false)
    } else if req.action == Action::Purge {
        let query = req.filter.query(DEFAULT_PAGE_SIZE, cap)?;
        let mut items = state.app.control().purge_preview(&query, cap + 1).await?;
        let more = items.len() > cap;
        items.truncate(cap);
        (items, more)
    } else {
        let mut query = req.filter.query(DEFAULT_PAGE_SIZE, cap)?;
        if req.action == Action::Retry {
            query.statuses = vec![pynenc_model::InvocationStatus::Failed];
        }
        if req.action == Action::RunNow {
            query.statuses = vec![pynenc_model::InvocationStatus::Scheduled];
        }
        query.limit = cap;
        let page = inspect.list(&query).await?;
        (page.items, page.next.is_some())
    };
    Ok(Preview {
        action: req.action,
        target: req.target(),
        items,
        more,
    })
}

async fn act(state: &Shared, control: &Controller, req: &ActionRequest) -> HttpResult<Done> {
    let mut done = Done {
        action: req.action,
        target: req.target(),
        changed: 0,
        new_invocations: Vec::new(),
        refused: Vec::new(),
    };
    let query = if req.all_matching {
        let mut q = req.filter.query(DEFAULT_PAGE_SIZE, state.max_page_size)?;
        q.after = None;
        Some(q)
    } else {
        None
    };
    match (req.action, &query) {
        (Action::Cancel, Some(q)) => {
            let r = control.cancel_matching(q, false).await?;
            done.changed = r.cancelled() + r.requested();
        }
        (Action::Rerun, Some(q)) => {
            done.new_invocations = control
                .rerun_matching(q)
                .await?
                .into_iter()
                .map(|r| r.new)
                .collect();
            done.changed = done.new_invocations.len();
        }
        (Action::Retry, Some(q)) => {
            done.new_invocations = control
                .retry_failed_matching(q)
                .await?
                .into_iter()
                .map(|r| r.new)
                .collect();
            done.changed = done.new_invocations.len();
        }
        (Action::RunNow, Some(q)) => {
            // the scheduled ones among the matches, as many as a page holds
            let mut q = q.clone();
            q.statuses = vec![pynenc_model::InvocationStatus::Scheduled];
            let matching = state
                .app
                .inspect()
                .list_all(&q, state.max_page_size)
                .await?;
            for s in &matching {
                match control.run_scheduled_now(&s.invocation_id).await {
                    Ok(()) => done.changed += 1,
                    // it moved on meanwhile (its time came, or it was cancelled)
                    Err(e @ pynenc_operate::OperateError::WrongStatus { .. }) => {
                        done.refused.push(e.to_string())
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        (Action::Purge, Some(q)) => done.changed = control.purge_matching(q).await?,
        (Action::Purge, None) => return Err(HttpError::bad_request("purge works by filter only")),
        (action, None) => {
            for id in &req.ids {
                let one = match action {
                    Action::Cancel => control
                        .cancel(id, false)
                        .await
                        .map(|r| (r.cancelled() + r.requested(), None)),
                    Action::Rerun => control.rerun(id).await.map(|r| (1, Some(r.new))),
                    Action::RunNow => control.run_scheduled_now(id).await.map(|()| (1, None)),
                    _ => control.retry_failed(id).await.map(|r| (1, Some(r.new))),
                };
                match one {
                    Ok((n, new)) => {
                        done.changed += n;
                        done.new_invocations.extend(new);
                    }
                    Err(
                        e @ (pynenc_operate::OperateError::WrongStatus { .. }
                        | pynenc_operate::OperateError::NotFound(_)),
                    ) => done.refused.push(e.to_string()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(done)
}
