//! The invocations listing (filters, pages, selection for bulk actions) and
//! one invocation in full.

use maud::{html, Markup};
use pynenc_model::status::ALL_STATUSES;
use pynenc_model::InvocationSummary;

use crate::data::{Detail, Invocations, Node};
use crate::views::layout::{inv_link, ms, q, status, time, Ctx};

/// The filter form (GET: it only reads).
pub(crate) fn filter_form(v: &Invocations) -> Markup {
    let f = &v.filter;
    html! {
        form.filters #filters method="get" action="/invocations" {
            label { "task "
                select name="task" {
                    option value="" { "any" }
                    @for t in &v.tasks {
                        option value=(t) selected[f.task == *t] { (t) }
                    }
                }
            }
            label { "status "
                select name="status" {
                    option value="" { "any" }
                    @for s in ALL_STATUSES {
                        option value=(s.as_lower_str()) selected[f.status == s.as_lower_str()] { (s.as_str()) }
                    }
                }
            }
            label { "since " input type="text" name="since" size="8" placeholder="1h" value=(f.since); }
            label { "until " input type="text" name="until" size="8" placeholder="10m" value=(f.until); }
            label { input type="checkbox" name="order" value="oldest" checked[f.oldest_first]; " oldest first" }
            button type="submit" #apply-filter { "Filter" }
            a href="/invocations" { "clear" }
        }
    }
}

/// Rows of summaries, with a selection box when `select`.
pub(crate) fn rows(items: &[InvocationSummary], select: bool) -> Markup {
    html! {
        table.list {
            thead { tr {
                @if select { th { input type="checkbox" #select-all title="select this page"; } }
                th { "invocation" } th { "task" } th { "status" } th { "created" } th { "status since" } th.n { "retries" }
            } }
            tbody {
                @for s in items {
                    tr data-id=(s.invocation_id) data-status=(s.status.as_lower_str()) {
                        @if select { td { input type="checkbox" name="ids" value=(s.invocation_id); } }
                        td { (inv_link(&s.invocation_id)) }
                        td { (s.task_id) }
                        td.status { (status(s.status)) }
                        td { (time(s.created_at)) }
                        td { (time(s.status_at)) }
                        td.n { (s.retries) }
                    }
                }
            }
        }
    }
}

pub(crate) fn list(ctx: &Ctx, v: &Invocations) -> Markup {
    let qs = v.filter.query_string();
    html! {
        @if v.page.items.is_empty() {
            p.empty { "No invocation matches." }
        } @else {
            @if ctx.operator() {
                form #bulk method="post" action="/actions/cancel" {
                    (ctx.csrf_field())
                    input type="hidden" name="task" value=(v.filter.task);
                    input type="hidden" name="status" value=(v.filter.status);
                    input type="hidden" name="since" value=(v.filter.since);
                    input type="hidden" name="until" value=(v.filter.until);
                    input type="hidden" name="parent" value=(v.filter.parent);
                    input type="hidden" name="call" value=(v.filter.call);
                    div.actions {
                        label { input type="checkbox" name="all_matching" value="1" #all-matching; " every invocation matching the filter (not only those ticked)" }
                        button type="submit" formaction="/actions/cancel" #bulk-cancel { "Cancel…" }
                        button type="submit" formaction="/actions/rerun" #bulk-rerun { "Rerun…" }
                        button type="submit" formaction="/actions/retry" #bulk-retry { "Retry failed…" }
                        button type="submit" formaction="/actions/run-now" #bulk-run-now { "Run scheduled now…" }
                        a.button href={ "/purge?" (qs) } #purge { "Purge ended…" }
                    }
                    (rows(&v.page.items, true))
                }
            } @else {
                (rows(&v.page.items, false))
            }
            @if let Some(next) = &v.page.next {
                p.pager { a #next-page href={ "/invocations?" (qs) @if !qs.is_empty() { "&" } "after=" (next) } { "Next page →" } }
            }
        }
    }
}

pub(crate) fn detail(ctx: &Ctx, d: &Detail) -> Markup {
    let inv = &d.invocation;
    html! {
        dl.fields {
            dt { "invocation" } dd.mono #invocation-id { (inv.invocation_id) }
            dt { "task" } dd { a href={ "/invocations?task=" (q(inv.task_id.as_str())) } { (inv.task_id) } }
            dt { "status" } dd #status { (status(inv.status)) }
            dt { "owner" } dd { @if let Some(o) = &inv.owner { (o) } @else { "—" } }
            dt { "created" } dd { (time(inv.created_at)) }
            @if let Some(e) = inv.ended_at {
                dt { "ended" } dd { (time(e)) " (after " (ms(crate::data::millis(e.since(inv.created_at)))) ")" }
            }
            dt { "retries" } dd { (inv.retries) }
            dt { "call" } dd.mono { a #same-call href={ "/invocations?call=" (q(inv.call_id.as_str())) } title="every invocation of this call" { (inv.call_id) } }
            @if let Some(p) = &d.parent { dt { "parent" } dd { (inv_link(p)) } }
            @if let Some(r) = &d.rerun_of { dt { "rerun of" } dd { (inv_link(r)) } }
        }
        @if ctx.operator() {
            div.actions {
                @if inv.status == pynenc_model::InvocationStatus::Scheduled {
                    form.inline method="post" action="/actions/run-now" {
                        (ctx.csrf_field())
                        input type="hidden" name="ids" value=(inv.invocation_id);
                        button type="submit" id="act-run-now" { "Run now…" }
                    }
                }
                @for (action, label) in [("cancel", "Cancel…"), ("rerun", "Rerun…"), ("retry", "Retry…")] {
                    form.inline method="post" action={ "/actions/" (action) } {
                        (ctx.csrf_field())
                        input type="hidden" name="ids" value=(inv.invocation_id);
                        button type="submit" id={ "act-" (action) } { (label) }
                    }
                }
            }
        }
        h2 { "Arguments" }
        @if d.arguments.is_empty() { p.empty { "none" } } @else {
            table #arguments { tbody { @for a in &d.arguments { tr { th { (a.name) } td.mono { (a.value) } } } } }
        }
        @if let Some(r) = &d.result { h2 { "Result" } pre #result { (r) } }
        @if let Some(e) = &d.error {
            h2 { "Error" }
            p #error { strong { (e.kind) } ": " (e.message) }
            @if let Some(c) = &d.cycle { p { "cycle: " (c.join(" → ")) } }
        }
        h2 { "History" }
        table #history {
            thead { tr { th { "time" } th { "status" } th { "lasted" } th { "owner" } th { "actor" } } }
            tbody {
                @for s in &d.history {
                    tr {
                        td { (time(s.entry.timestamp)) }
                        td { (status(s.entry.status)) }
                        td { @if let Some(l) = s.lasted_ms { (ms(l)) } }
                        td { @if let Some(o) = &s.entry.owner { (o) } }
                        td { (s.entry.actor) }
                    }
                }
            }
        }
        @if d.reuses.total > 0 {
            h2 { "Reused by " (d.reuses.total) " call" @if d.reuses.total != 1 { "s" } }
            p.hint { "Registration concurrency gave these calls this invocation instead of a new one; "
                "each lists its arguments that differ from this invocation's"
                @if d.reuses.total > d.reuses.latest.len() as u64 { " (the latest " (d.reuses.latest.len()) " shown)" } "." }
            table #reuses {
                thead { tr { th { "time" } th { "caller" } th { "differing arguments" } } }
                tbody {
                    @for r in &d.reuses.latest {
                        tr {
                            td { (time(r.at)) }
                            td { @if let Some(c) = &r.caller { (inv_link(c)) } @else { "outside any invocation" } }
                            td.mono {
                                @if r.differing.is_empty() { "none (the same call)" }
                                @for a in &r.differing { div { (a.name) " = " (a.value) } }
                            }
                        }
                    }
                }
            }
        }
        @if !d.waiting_on.is_empty() {
            h2 { "Waiting on" } ul { @for i in &d.waiting_on { li { (inv_link(i)) } } }
        }
        @if !d.waited_by.is_empty() {
            h2 { "Waited by" } ul { @for i in &d.waited_by { li { (inv_link(i)) } } }
        }
        @if !d.tree.is_empty() {
            h2 { "Descendants" }
            ul.tree #tree { @for n in &d.tree { (node(n)) } }
            @if d.children.next.is_some() {
                p { a href={ "/invocations?parent=" (inv.invocation_id) } { "every child…" } }
            }
        }
    }
}

/// A descendant with its own, as nested lists.
fn node(n: &Node) -> Markup {
    let s = &n.summary;
    html! {
        li {
            (status(s.status)) " " (s.task_id) " " (inv_link(&s.invocation_id))
            @if n.more {
                " " a href={ "/invocations?parent=" (s.invocation_id) } { "children…" }
            }
            @if !n.children.is_empty() {
                ul { @for c in &n.children { (node(c)) } }
            }
        }
    }
}
