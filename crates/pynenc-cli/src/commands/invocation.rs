//! `show` and `tree`: one invocation in full, and its descendants.

use pynenc::model::{HistoryEntry, InvocationQuery, InvocationSummary, Order, MAX_PAGE_SIZE};
use pynenc::{InvocationId, Pynenc};
use pynenc_operate::Operate;
use serde_json::{json, Value};

use crate::args::TreeArgs;
use crate::commands::listing::summaries;
use crate::error::{CliError, Result};
use crate::filters::invocation_id;
use crate::output::{duration, line, time, Out, Table};

/// `show <id>`.
pub(crate) async fn show(out: &Out, app: &Pynenc, id: &str) -> Result<()> {
    let id = invocation_id(id)?;
    let family = app.inspect().family(&id).await?;
    let history = &family.history;
    let outcome = app
        .outcomes(&[id])
        .await?
        .pop()
        .ok_or_else(|| CliError::NotFound(format!("invocation {id} has no outcome stored")))?;
    let serializer = app.serializer();
    let arguments = family
        .call
        .arguments
        .render(app.conf().print_arguments, serializer);
    let result: Option<Value> = outcome
        .result
        .as_deref()
        .map(|r| serde_json::from_str(r).unwrap_or_else(|_| Value::String(serializer.display(r))));
    let inv = &family.invocation;
    let reuses = app.inspect().reuses(&id).await?;
    // the differing arguments of each reuse, rendered like the arguments
    let reused: Vec<Value> = reuses
        .latest
        .iter()
        .map(|r| {
            let mut differing = pynenc::model::Arguments::new();
            for d in &r.differing {
                let text = match &d.value {
                    Some(v) => v.clone(),
                    None if d.size == 0 => "\"(not given)\"".to_string(),
                    None => format!("\"<{} bytes, not kept>\"", d.size),
                };
                differing.insert_serialized(d.name.clone(), text);
            }
            json!({
                "at": r.at,
                "caller": r.caller,
                "differing": differing.render(app.conf().print_arguments, serializer),
            })
        })
        .collect();
    if out.json {
        return out.json(&json!({
            "invocation": inv,
            "arguments": arguments,
            "result": result,
            "error": outcome.error,
            "history": history,
            "rerun_of": family.rerun_of,
            "children": family.children.items,
            "more_children": family.children.next.is_some(),
            "waiting_on": family.waiting_on,
            "waited_by": family.waited_by,
            "same_call": family.same_call.items,
            "reuses": { "total": reuses.total, "latest": reused },
        }));
    }
    let field = |name: &str, value: String| line(&format!("{:<11} {value}", out.bold(name)));
    field("invocation", id.to_string())?;
    field("task", inv.task_id.to_string())?;
    field("arguments", arguments)?;
    field("status", out.status(inv.status))?;
    field("created", time(inv.created_at))?;
    if let Some(ended) = inv.ended_at {
        field(
            "ended",
            format!(
                "{} (after {})",
                time(ended),
                duration(ended.since(inv.created_at))
            ),
        )?;
    }
    if inv.retries > 0 {
        field("retries", inv.retries.to_string())?;
    }
    if let Some(r) = &result {
        field("result", r.to_string())?;
    }
    if let Some(e) = &outcome.error {
        field("error", format!("{}: {}", e.kind, e.message))?;
    }
    if let Some(p) = family.parent {
        field("parent", p.to_string())?;
    }
    if let Some(r) = family.rerun_of {
        field("rerun of", r.to_string())?;
    }
    field("call", inv.call_id.to_string())?;
    if let (Some(last), Some(shown)) = (reuses.latest.last(), reused.last()) {
        let latest = if last.differing.is_empty() {
            "the latest was the same call".to_string()
        } else {
            format!(
                "the latest differed in {}",
                shown["differing"].as_str().unwrap_or_default()
            )
        };
        field("reused by", format!("{} call(s); {latest}", reuses.total))?;
    }
    line("")?;
    history_table(out, history).print(out, "no history")?;
    let ids = |v: &[InvocationId]| -> String {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !family.waiting_on.is_empty() {
        line(&format!("\nwaiting on  {}", ids(&family.waiting_on)))?;
    }
    if !family.waited_by.is_empty() {
        line(&format!("\nwaited by   {}", ids(&family.waited_by)))?;
    }
    if !family.children.items.is_empty() {
        line("\nchildren")?;
        summaries(out, &family.children.items, false).print(out, "")?;
        if family.children.next.is_some() {
            line(&format!("(more: pynenc list --parent {id})"))?;
        }
    }
    if !family.same_call.items.is_empty() {
        line("\nother invocations of the same call")?;
        summaries(out, &family.same_call.items, false).print(out, "")?;
    }
    Ok(())
}

/// The history with how long each status lasted.
fn history_table(out: &Out, history: &[HistoryEntry]) -> Table {
    let mut t = Table::new(&["TIME", "STATUS", "FOR", "OWNER", "ACTOR"]);
    for (i, e) in history.iter().enumerate() {
        let lasted = history
            .get(i + 1)
            .map(|n| duration(n.timestamp.since(e.timestamp)))
            .unwrap_or_default();
        t.row(vec![
            time(e.timestamp),
            out.status(e.status),
            lasted,
            e.owner
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            e.actor.to_string(),
        ]);
    }
    t
}

/// A node of `tree`: an invocation and its children.
#[derive(serde::Serialize)]
struct Node {
    #[serde(flatten)]
    summary: InvocationSummary,
    children: Vec<Node>,
    /// Children not shown (deeper than `--depth`, or past the page cap).
    more: bool,
}

/// `tree <id>`.
pub(crate) async fn tree(out: &Out, app: &Pynenc, a: &TreeArgs) -> Result<()> {
    let id = invocation_id(&a.id)?;
    let root = app.inspect().summary(&id).await?;
    let node = grow(app, root, a.depth).await?;
    if out.json {
        return out.json(&node);
    }
    let mut lines = Vec::new();
    draw(out, &node, "", true, true, &mut lines);
    for l in lines {
        line(&l)?;
    }
    Ok(())
}

/// The children of `parent`, oldest first: up to `limit`, and whether
/// there are more.
async fn children(
    app: &Pynenc,
    parent: InvocationId,
    limit: usize,
) -> Result<(Vec<InvocationSummary>, bool)> {
    let page = app
        .inspect()
        .list(&InvocationQuery {
            parent: Some(parent),
            order: Order::OldestFirst,
            limit,
            ..InvocationQuery::new()
        })
        .await?;
    Ok((page.items, page.next.is_some()))
}

/// The tree under `summary`, `depth` generations deep (breadth first, one
/// listing per invocation).
async fn grow(app: &Pynenc, summary: InvocationSummary, depth: usize) -> Result<Node> {
    let mut root = Node {
        summary,
        children: Vec::new(),
        more: false,
    };
    // (path of child indexes from the root) of the nodes to expand
    let mut level: Vec<Vec<usize>> = vec![Vec::new()];
    for _ in 0..depth {
        let mut next_level = Vec::new();
        for path in level {
            let node = node_at(&mut root, &path);
            let (items, more) = children(app, node.summary.invocation_id, MAX_PAGE_SIZE).await?;
            node.more = more;
            for (i, child) in items.into_iter().enumerate() {
                node.children.push(Node {
                    summary: child,
                    children: Vec::new(),
                    more: false,
                });
                let mut p = path.clone();
                p.push(i);
                next_level.push(p);
            }
        }
        if next_level.is_empty() {
            return Ok(root);
        }
        level = next_level;
    }
    // the last generation shown: say where more lies below
    for path in level {
        let node = node_at(&mut root, &path);
        node.more = !children(app, node.summary.invocation_id, 1)
            .await?
            .0
            .is_empty();
    }
    Ok(root)
}

fn node_at<'a>(root: &'a mut Node, path: &[usize]) -> &'a mut Node {
    let mut n = root;
    for &i in path {
        n = &mut n.children[i];
    }
    n
}

fn draw(out: &Out, n: &Node, prefix: &str, last: bool, root: bool, lines: &mut Vec<String>) {
    let s = &n.summary;
    let (branch, child_prefix) = if root {
        ("", String::new())
    } else if last {
        ("└── ", format!("{prefix}    "))
    } else {
        ("├── ", format!("{prefix}│   "))
    };
    lines.push(format!(
        "{prefix}{branch}{} {} {}",
        s.task_id,
        out.status(s.status),
        s.invocation_id
    ));
    for (i, c) in n.children.iter().enumerate() {
        draw(
            out,
            c,
            &child_prefix,
            i + 1 == n.children.len(),
            false,
            lines,
        );
    }
    if n.more {
        lines.push(format!("{child_prefix}└── …"));
    }
}
