//! The table views: tasks, runners, failures, configuration, audit.

use maud::{html, Markup};

use crate::audit::AuditEntry;
use crate::data::{ConfigRow, TaskRow};
use crate::views::layout::{inv_link, ms, q, status, time};
use pynenc_model::{ErrorKindCount, TaskCounter, TaskTotals};
use pynenc_operate::RunnerView;

pub(crate) fn tasks(rows: &[TaskRow]) -> Markup {
    html! {
        p.hint { "p50 / p95: time from creation to end of each task's latest " (crate::data::LATENCY_SAMPLE) " successes (queue wait included). "
            "Routed, started, ended: since the app's data began (purges keep them); run: the body's time as runners measured it, mean and the bucket 95 % of runs fit in." }
        @if rows.is_empty() { p.empty { "No task registered or seen." } } @else {
            table #tasks {
                thead { tr { th { "task" } th.n { "total" } th { "by status" } th.n { "failure rate" } th.n { "p50" } th.n { "p95" }
                    th.n { "routed" } th.n { "started" } th { "ended" } th.n { "run mean" } th.n { "run p95 ≤" } th { "here" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { a href={ "/invocations?task=" (q(r.task_id.as_str())) } { (r.task_id) } }
                            td.n { (r.total) }
                            td { @for (s, n) in &r.by_status { (status(*s)) " " (n) " " } }
                            td.n { @if let Some(f) = r.failure_rate { (format!("{:.1} %", f * 100.0)) } @else { "—" } }
                            td.n { @if let Some(p) = r.latency_p50_ms { (ms(p)) } @else { "—" } }
                            td.n { @if let Some(p) = r.latency_p95_ms { (ms(p)) } @else { "—" } }
                            (totals_cells(r.totals.as_ref()))
                            td {
                                @if let Some(serde_json::Value::Object(o)) = &r.options {
                                    details {
                                        summary { "registered" }
                                        dl.options { @for (k, v) in o { dt { (k) } dd.mono { (v) } } }
                                    }
                                } @else if r.registered_here { "registered" } @else { "seen" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The task totals' cells of a task row: routed, started, the ends, run
/// mean and the bound 95 % of runs fit in.
fn totals_cells(t: Option<&TaskTotals>) -> Markup {
    let Some(t) = t else {
        return html! { td.n { "0" } td.n { "0" } td { "—" } td.n { "—" } td.n { "—" } };
    };
    let us = |v: u64| {
        if v < 1000 {
            format!("{v} µs")
        } else {
            ms(v / 1000)
        }
    };
    html! {
        td.n { (t.get(TaskCounter::Routed)) }
        td.n { (t.get(TaskCounter::Started)) }
        td {
            @for c in [TaskCounter::Succeeded, TaskCounter::Failed, TaskCounter::Retried, TaskCounter::Cancelled] {
                @if t.get(c) > 0 { (c.name()) " " (t.get(c)) " " }
            }
        }
        td.n { @if let Some(m) = t.run_times.mean_us() { (us(m)) } @else { "—" } }
        td.n {
            @match t.run_times.quantile_bound_us(0.95) {
                Some(Some(b)) => (us(b)),
                Some(None) => "> 10 min",
                None => "—",
            }
        }
    }
}

pub(crate) fn runners(rows: &[RunnerView]) -> Markup {
    html! {
        @if rows.is_empty() { p.empty { "No runner has registered." } } @else {
            table #runners {
                thead { tr {
                    th { "runner" } th { "state" } th { "kind" } th { "host" } th.n { "pid" }
                    th.n { "slots" } th.n { "running" } th { "heartbeat" } th { "started" } th { "recovery lease" }
                } }
                tbody {
                    @for r in rows {
                        tr {
                            td.mono { (r.info.runner_id) }
                            td { @if r.alive { span.st.ok { "alive" } } @else { span.st.bad { "dead" } } }
                            td { (r.info.kind) } td { (r.info.host) } td.n { (r.info.pid) }
                            td.n { (r.info.slots) }
                            td.n { (r.info.running.len()) }
                            td { (ms(r.heartbeat_age_ms)) " ago" }
                            td { (time(r.info.started_at)) }
                            td { @if r.holds_recovery_lease { "holds it" } }
                        }
                    }
                }
            }
            @for r in rows.iter().filter(|r| !r.info.running.is_empty()) {
                h2 { "Running on " (r.info.runner_id) }
                ul { @for i in &r.info.running { li { (inv_link(i)) } } }
            }
        }
    }
}

pub(crate) fn failures(rows: &[ErrorKindCount]) -> Markup {
    html! {
        @if rows.is_empty() { p.empty { "No failure." } } @else {
            table #failures {
                thead { tr { th { "error kind" } th { "task" } th.n { "failed" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { strong { (r.kind) } }
                            td { (r.task_id) }
                            td.n { a href={ "/invocations?status=failed&task=" (q(r.task_id.as_str())) } { (r.count) } }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn triggers(rows: &[pynenc::TriggerInfo]) -> Markup {
    html! {
        p.hint { "The triggers this program declares and those the app stored (when a program declaring them was built, and when its runners started). A cron trigger shows what its latest ticks fired; a reaction's calls are invocations of its task with the actor trigger:<name>." }
        @if rows.is_empty() { p.empty { "No trigger: none declared by this program, none stored by a runner of the app." } } @else {
            table #triggers {
                thead { tr { th { "trigger" } th { "condition" } th { "task" } th { "arguments" } th { "declared" } th { "next tick" } th { "latest ticks" } } }
                tbody {
                    @for t in rows {
                        tr {
                            td { strong { (t.name) } }
                            td.mono { (t.condition) }
                            td { a href={ "/invocations?task=" (q(&t.task_id)) } { (t.task_id) } }
                            td.mono { (t.arguments.as_deref().unwrap_or("made from the source")) }
                            td {
                                @if t.declared_here { "in this program" @if t.declared_at.is_some() { "; " } }
                                @if let Some(at) = t.declared_at { "stored " (time(at)) }
                            }
                            td { @if let Some(n) = t.next_tick { (time(n)) } @else { "—" } }
                            td {
                                @for f in &t.recent {
                                    div {
                                        (time(f.tick)) " "
                                        @match f.status {
                                            Some(st) => { (status(st)) " " (inv_link(&f.invocation_id)) }
                                            None => { "not fired" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn config(rows: &[ConfigRow], monitor: &[(String, String)]) -> Markup {
    html! {
        h2 { "Monitor" }
        table #monitor-config { tbody { @for (k, v) in monitor { tr { th { (k) } td.mono { (v) } } } } }
        h2 { "App (secrets masked)" }
        table #config {
            thead { tr { th { "key" } th { "value" } th { "source" } } }
            tbody { @for r in rows { tr { td.mono { (r.key) } td.mono { (r.value) } td { (r.source) } } } }
        }
    }
}

pub(crate) fn audit(rows: &[AuditEntry]) -> Markup {
    html! {
        p.hint { "Actions taken through this monitor process since it started (kept in its memory, and written to its log). Each change is also in the history of every invocation it touched." }
        @if rows.is_empty() { p.empty { "No action taken yet." } } @else {
            table #audit {
                thead { tr { th { "when" } th { "who" } th { "action" } th { "on" } th { "outcome" } } }
                tbody {
                    @for e in rows {
                        tr { td { (time(e.at)) } td { (e.user) } td { (e.action) } td.mono { (e.target) } td { (e.outcome) } }
                    }
                }
            }
        }
    }
}
