//! Before an action: what it will touch, and a form to confirm it. After:
//! what it did. And the purge form, which asks for a filter first.

use maud::{html, Markup};
use pynenc_model::status::ALL_STATUSES;

use crate::actions::{Action, ActionRequest, Done, Preview};
use crate::filter::Filter;
use crate::views::invocations::rows;
use crate::views::layout::{inv_link, page, Ctx};

fn verb(a: Action) -> &'static str {
    match a {
        Action::Cancel => "cancelled",
        Action::Rerun => "run again",
        Action::Retry => "retried",
        Action::RunNow => "run now instead of at their scheduled time",
        Action::Purge => "deleted for good",
    }
}

pub(crate) fn preview(ctx: &Ctx, p: &Preview, req: &ActionRequest) -> Markup {
    let title = format!("Confirm {}", p.action.as_str());
    let f = &req.filter;
    page(
        ctx,
        "/invocations",
        &title,
        false,
        html! {
            p #confirm-summary {
                "These invocations will be " strong { (verb(p.action)) } " (" (p.target) "): "
                strong { (p.items.len()) @if p.more { "+ more" } }
            }
            @if p.more {
                p.notice { "Only the first " (p.items.len()) " are listed: every invocation matching the filter when you confirm will be " (verb(p.action)) "." }
            }
            @if p.items.is_empty() {
                p.empty { "Nothing matches: there is nothing to do." }
            } @else {
                form method="post" action={ "/actions/" (p.action.as_str()) } {
                    (ctx.csrf_field())
                    input type="hidden" name="confirm" value="yes";
                    @if req.all_matching {
                        input type="hidden" name="all_matching" value="1";
                        @for (k, v) in [("task", &f.task), ("status", &f.status), ("since", &f.since), ("until", &f.until), ("ended_before", &f.ended_before), ("parent", &f.parent), ("call", &f.call)] {
                            @if !v.is_empty() { input type="hidden" name=(k) value=(v); }
                        }
                    } @else {
                        @for id in &req.ids { input type="hidden" name="ids" value=(id); }
                    }
                    button.danger type="submit" #confirm { "Yes, " (p.action.as_str()) }
                    " "
                    a href="/invocations" { "No, go back" }
                }
            }
            (rows(&p.items, false))
        },
    )
}

pub(crate) fn done(ctx: &Ctx, d: &Done) -> Markup {
    let title = format!("Done: {}", d.action.as_str());
    page(
        ctx,
        "/invocations",
        &title,
        false,
        html! {
            p #done-summary { (d.changed) " " (verb(d.action)) " (" (d.target) ")." }
            @if !d.new_invocations.is_empty() {
                h2 { "New invocations" }
                ul { @for i in &d.new_invocations { li { (inv_link(i)) } } }
            }
            @if !d.refused.is_empty() {
                h2 { "Refused" }
                ul { @for r in &d.refused { li { (r) } } }
            }
            p { a href="/invocations" { "Back to the invocations" } " · " a href="/audit" { "Audit log" } }
        },
    )
}

/// The purge form: a GET that only shows what to choose.
pub(crate) fn purge_form(ctx: &Ctx, f: &Filter, tasks: &[String]) -> Markup {
    page(
        ctx,
        "/invocations",
        "Purge ended invocations",
        false,
        html! {
            p { "Purging deletes ended invocations (their records, results and history) for good. The next page lists what will go before anything is deleted." }
            form method="post" action="/actions/purge" {
                (ctx.csrf_field())
                label { "task "
                    select name="task" {
                        option value="" { "any" }
                        @for t in tasks { option value=(t) selected[f.task == *t] { (t) } }
                    }
                }
                label { " status "
                    select name="status" {
                        option value="" { "any ended" }
                        @for s in ALL_STATUSES.iter().filter(|s| s.is_final()) {
                            option value=(s.as_lower_str()) selected[f.status == s.as_lower_str()] { (s.as_str()) }
                        }
                    }
                }
                label { " ended more than " input type="text" name="ended_before" size="6" placeholder="7d" value=(f.ended_before); " ago" }
                " "
                button type="submit" #purge-preview { "Show what will go…" }
            }
        },
    )
}
