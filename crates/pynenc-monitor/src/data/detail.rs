//! One invocation in full: arguments, outcome, history, family, waits.

use pynenc_model::{
    ErrorDetail, HistoryEntry, InvocationId, InvocationQuery, InvocationSummary, Order, Page,
    TaskError, Timestamp, DEFAULT_PAGE_SIZE,
};
use pynenc_operate::Operate;
use serde::Serialize;

use super::millis;
use crate::error::{HttpError, HttpResult};
use crate::redact::ShownArgument;
use crate::state::MonitorState;

/// One status of an invocation's history, with how long it lasted.
#[derive(Debug, Serialize)]
pub(crate) struct Step {
    #[serde(flatten)]
    pub(crate) entry: HistoryEntry,
    /// Until the next status (`None` for the current one).
    pub(crate) lasted_ms: Option<u64>,
}

/// One invocation in full.
#[derive(Debug, Serialize)]
pub(crate) struct Detail {
    pub(crate) invocation: InvocationSummary,
    pub(crate) arguments: Vec<ShownArgument>,
    pub(crate) result: Option<String>,
    pub(crate) error: Option<TaskError>,
    pub(crate) cycle: Option<Vec<String>>,
    pub(crate) history: Vec<Step>,
    pub(crate) parent: Option<InvocationId>,
    pub(crate) rerun_of: Option<InvocationId>,
    pub(crate) children: Page,
    pub(crate) waiting_on: Vec<InvocationId>,
    pub(crate) waited_by: Vec<InvocationId>,
    /// Its descendants, [`TREE_DEPTH`] generations deep.
    pub(crate) tree: Vec<Node>,
    /// The calls registration concurrency folded into it.
    pub(crate) reuses: ReuseView,
}

/// The calls folded into an invocation, as shown.
#[derive(Debug, Serialize)]
pub(crate) struct ReuseView {
    /// How many in all.
    pub(crate) total: u64,
    /// The latest kept, newest first.
    pub(crate) latest: Vec<ShownReuse>,
}

/// One call folded into an invocation, as shown.
#[derive(Debug, Serialize)]
pub(crate) struct ShownReuse {
    pub(crate) at: Timestamp,
    /// The invocation that made the call, if any.
    pub(crate) caller: Option<InvocationId>,
    /// Its values of the arguments that differ (redacted like arguments).
    pub(crate) differing: Vec<ShownArgument>,
}

/// How many generations of descendants the invocation page shows.
pub(crate) const TREE_DEPTH: usize = 3;

/// The most descendants the invocation page lists (each generation is one
/// listing per invocation of the previous one).
pub(crate) const TREE_NODES: usize = 100;

/// A descendant and its own children.
#[derive(Debug, Serialize)]
pub(crate) struct Node {
    #[serde(flatten)]
    pub(crate) summary: InvocationSummary,
    pub(crate) children: Vec<Node>,
    /// It has children not listed (deeper than shown, or past the cap).
    pub(crate) more: bool,
}

/// The descendants of `root` whose first generation is `children`,
/// breadth first, within [`TREE_DEPTH`] and [`TREE_NODES`].
async fn tree(s: &MonitorState, children: &Page) -> HttpResult<Vec<Node>> {
    let inspect = s.app.inspect();
    let mut nodes: Vec<Node> = children
        .items
        .iter()
        .map(|c| Node {
            summary: c.clone(),
            children: Vec::new(),
            more: false,
        })
        .collect();
    let mut count = nodes.len();
    // paths (child indexes from the top) of the nodes to expand
    let mut level: Vec<Vec<usize>> = (0..nodes.len()).map(|i| vec![i]).collect();
    for depth in 1..=TREE_DEPTH {
        let mut next = Vec::new();
        for path in level {
            let Some(node) = node_at(&mut nodes, &path) else {
                continue;
            };
            let last = depth == TREE_DEPTH || count >= TREE_NODES;
            let page = inspect
                .list(&InvocationQuery {
                    parent: Some(node.summary.invocation_id),
                    order: Order::OldestFirst,
                    limit: if last {
                        1
                    } else {
                        (TREE_NODES - count).min(DEFAULT_PAGE_SIZE)
                    },
                    ..InvocationQuery::default()
                })
                .await?;
            if last {
                node.more = !page.items.is_empty();
                continue;
            }
            node.more = page.next.is_some();
            for (i, child) in page.items.into_iter().enumerate() {
                node.children.push(Node {
                    summary: child,
                    children: Vec::new(),
                    more: false,
                });
                count += 1;
                let mut p = path.clone();
                p.push(i);
                next.push(p);
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    Ok(nodes)
}

fn node_at<'a>(nodes: &'a mut [Node], path: &[usize]) -> Option<&'a mut Node> {
    let (first, rest) = path.split_first()?;
    let mut n = nodes.get_mut(*first)?;
    for i in rest {
        n = n.children.get_mut(*i)?;
    }
    Some(n)
}

/// One invocation in full. Its parts are read one by one (record, history,
/// summary, first page of children, waits) rather than through
/// `Inspector::family`, which also lists the other invocations of the same
/// call: on SQLite that listing reads every invocation of the task (there is
/// no index by call), too slow for a page; the page links to it instead.
pub(crate) async fn detail(s: &MonitorState, id: &str) -> HttpResult<Detail> {
    let id = InvocationId::parse(id.trim()).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let inspect = s.app.inspect();
    let invocation = inspect.summary(&id).await?;
    let record = s
        .app
        .state_backend()
        .get_invocation(&id)
        .await
        .map_err(pynenc_operate::OperateError::from)?;
    let history = s
        .app
        .state_backend()
        .get_history(&id)
        .await
        .map_err(pynenc_operate::OperateError::from)?;
    let children = inspect
        .list(&InvocationQuery {
            parent: Some(id),
            order: Order::OldestFirst,
            ..InvocationQuery::new()
        })
        .await?;
    let waits = s
        .app
        .queries()
        .wait_graph(&id)
        .await
        .map_err(pynenc_operate::OperateError::from)?;
    let reuses = inspect.reuses(&id).await?;
    let outcome = s.app.outcomes(&[id]).await?.pop();
    let tree = tree(s, &children).await?;
    let serializer = s.app.serializer();
    let arguments = s.redactor.arguments(
        &record.call.arguments,
        s.app.conf().print_arguments,
        serializer,
    );
    let reuses = ReuseView {
        total: reuses.total,
        latest: reuses
            .latest
            .iter()
            .rev()
            .map(|r| ShownReuse {
                at: r.at,
                caller: r.caller,
                differing: s.redactor.differing(
                    &r.differing,
                    s.app.conf().print_arguments,
                    serializer,
                ),
            })
            .collect(),
    };
    let result = outcome.as_ref().and_then(|o| o.result.as_deref()).map(|r| {
        crate::redact::truncate(
            &s.redactor.value(&serializer.display(r)),
            crate::redact::MAX_RESULT_CHARS,
        )
    });
    let error = outcome.and_then(|o| o.error);
    let cycle = error.as_ref().and_then(|e| match &e.detail {
        Some(ErrorDetail::Cycle { calls }) => Some(
            calls
                .iter()
                .map(|c| format!("{} ({})", c.task_id, c.call_id.short_hash(12)))
                .collect(),
        ),
        _ => None,
    });
    let history = history
        .iter()
        .enumerate()
        .map(|(i, e)| Step {
            entry: e.clone(),
            lasted_ms: history
                .get(i + 1)
                .map(|n| millis(n.timestamp.since(e.timestamp))),
        })
        .collect();
    Ok(Detail {
        invocation,
        arguments,
        result,
        error,
        cycle,
        history,
        parent: record.parent_invocation_id,
        rerun_of: record.rerun_of,
        children,
        waiting_on: waits.waiting_on,
        waited_by: waits.waited_by,
        tree,
        reuses,
    })
}
