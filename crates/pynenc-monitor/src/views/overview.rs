//! The overview: counts by status, the queue, runners, triggers due.

use maud::{html, Markup};

use crate::data::{Minute, Overview};
use crate::views::layout::{ms, status, time};

pub(crate) fn render(o: &Overview) -> Markup {
    html! {
        section.cards {
            div.card { div.num #total { (o.total) } div.label { "invocations" } }
            a.card href="/invocations?status=registered,rerouted,retry&order=oldest" {
                div.num #queue-depth { (o.queue_depth) } div.label { "queued" }
            }
            div.card {
                div.num { (o.queue_oldest_age_ms.map(ms).unwrap_or_else(|| "—".into())) }
                div.label { "oldest queued" }
            }
            a.card href="/runners" { div.num #runners-alive { (o.runners_alive) } div.label { "runners alive" } }
            div.card { div.num { (o.runners_dead) } div.label { "runners dead" } }
            a.card href="/invocations?status=scheduled&order=oldest" {
                div.num { (o.scheduled) } div.label { "scheduled" }
            }
        }
        h2 { "Last " (o.recent.window_minutes) " minutes" }
        p #recent {
            (o.recent.ended) @if o.recent.capped { "+" } " ended, "
            (o.recent.failed) " failed"
            @if let Some(r) = o.recent.failure_rate { " (failure rate " (format!("{:.1} %", r * 100.0)) ")" }
            @if o.recent.capped { " — only the latest " (pynenc_model::MAX_PAGE_SIZE) " are counted" }
        }
        (chart(&o.recent.per_minute))
        h2 { "By status" }
        @if o.by_status.is_empty() {
            p.empty { "No invocation yet." }
        } @else {
            table #by-status {
                thead { tr { th { "status" } th.n { "count" } } }
                tbody {
                    @for (s, n) in &o.by_status {
                        tr {
                            td { a href={ "/invocations?status=" (s.as_lower_str()) } { (status(*s)) } }
                            td.n data-status=(s.as_lower_str()) { (n) }
                        }
                    }
                }
            }
        }
        h2 { "Triggers due soon" }
        @if o.triggers.is_empty() {
            p.empty { "No trigger: none declared by this program, none stored by a runner of the app." }
        } @else {
            table {
                thead { tr { th { "trigger" } th { "condition" } th { "task" } th { "next tick" } } }
                tbody {
                    @for t in &o.triggers {
                        tr {
                            td { a href="/triggers" { (t.name) } } td.mono { (t.condition) } td { (t.task_id) }
                            td { @if let Some(n) = t.next_tick { (time(n)) } @else { "—" } }
                        }
                    }
                }
            }
        }
    }
}

/// Ended invocations per minute as stacked bars (SVG drawn here: no script,
/// no inline style; colours come from the stylesheet's classes).
fn chart(minutes: &[Minute]) -> Markup {
    const W: i64 = 24;
    const H: u64 = 80;
    let max = minutes
        .iter()
        .map(|m| m.succeeded + m.failed + m.other)
        .max()
        .unwrap_or(0)
        .max(1);
    let height = |n: u64| n * H / max;
    let width = W * i64::try_from(minutes.len()).unwrap_or(0);
    html! {
        svg.chart #throughput width=(width) height=(H + 2) viewBox={ "0 0 " (width) " " (H + 2) }
            role="img" aria-label="ended invocations per minute" {
            @for (i, m) in minutes.iter().enumerate() {
                @let x = i64::try_from(i).unwrap_or(0) * W + 2;
                @let ok = height(m.succeeded);
                @let bad = height(m.failed);
                @let other = height(m.other);
                rect.ok x=(x) y=(H + 1 - ok) width=(W - 4) height=(ok) {
                    title { (m.succeeded) " succeeded" }
                }
                rect.bad x=(x) y=(H + 1 - ok - bad) width=(W - 4) height=(bad) {
                    title { (m.failed) " failed" }
                }
                rect.other x=(x) y=(H + 1 - ok - bad - other) width=(W - 4) height=(other) {
                    title { (m.other) " other" }
                }
            }
        }
    }
}
