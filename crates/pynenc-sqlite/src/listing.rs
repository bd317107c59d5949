//! `list_invocations`: one SQL statement per page, built from the filters.
//!
//! The statement is driven by one index, chosen by the most selective
//! filter, and read in `invocation_id` order (ids order creation), so a
//! page is one range scan from the cursor:
//!
//! - a parent: `invocations_parent`;
//! - tasks, statuses, an end range, an owner, a call or key arguments: one
//!   range per task of `invocations_open` (invocations not final yet) and
//!   one per task and final status of `invocations_ended`, merged by SQLite
//!   (`UNION ALL` with one `ORDER BY`), leaving out the ranges whose
//!   counter is zero; a call's task is the one in its id; without a task,
//!   the tasks are those the counters know;
//! - nothing else: `invocations_id`.
//!
//! Owners and calls have no index of their own: an index entry per
//! invocation on a column that is not in creation order (the argument
//! hash) or that every run writes (the owner) cost the hot path more than
//! they save these rarer questions, which the task ranges answer with a
//! filter.
//!
//! Every filter is applied in every range (the same rules as
//! [`InvocationQuery::matches`]); values are bound parameters. Key arguments
//! are checked on the stored record, page by page, until the page is full
//! or the candidates run out.

use pynenc_model::status::ALL_STATUSES;
use pynenc_model::{
    CallId, InvocationId, InvocationQuery, InvocationRecord, InvocationSummary, Order, RunnerId,
    Timestamp,
};
use pynenc_store::Result;
use rusqlite::types::Value;
use rustc_hash::FxHashMap;

use crate::codes::status_code;
use crate::counts::TaskNames;
use crate::error::Key;
use crate::rows::{hash_from_hex, hash_to_hex};
use crate::txn::{limit, SqliteTxn};

/// The most ranges merged by one statement (more are read in several
/// statements and merged here).
const MAX_RANGES: usize = 50;

/// How many candidates a page with key arguments reads at a time (at least).
const KEY_ARGUMENT_BATCH: usize = 200;

/// The columns of a summary, in the order the statements select them.
const COLUMNS: &str = "invocation_id, task, status, owner, parent, call_hash, created_at_us, \
                       status_at_us, final_at_us, retries, rid";

/// One row of a listing.
struct Candidate {
    summary: InvocationSummary,
    rid: i64,
}

/// A statement being built: its text and its bound values.
#[derive(Default)]
struct Sql {
    args: Vec<Value>,
}

impl Sql {
    /// Binds a value; its parameter (`?N`).
    fn bind(&mut self, value: impl Into<Value>) -> String {
        self.args.push(value.into());
        format!("?{}", self.args.len())
    }

    /// `column IN (?, ?, …)` of `values`.
    fn in_list(&mut self, column: &str, values: impl IntoIterator<Item = Value>) -> String {
        let params: Vec<String> = values.into_iter().map(|v| self.bind(v)).collect();
        format!("{column} IN ({})", params.join(", "))
    }
}

/// The index that drives one range, and the conditions only it has.
struct Range {
    index: &'static str,
    conditions: Vec<String>,
}

/// Which ranges answer a query.
enum Plan {
    /// Nothing can match.
    Empty,
    /// These ranges, merged.
    Ranges(Vec<Range>),
}

impl SqliteTxn<'_> {
    /// The page of `query` (see [`pynenc_store::QueryTxn::list_invocations`]).
    pub(crate) fn list(&mut self, query: &InvocationQuery) -> Result<Vec<InvocationSummary>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        if query.key_arguments.is_empty() {
            let rows = self.candidates(query, query.after.map(|c| c.0), query.limit)?;
            return Ok(rows.into_iter().map(|c| c.summary).collect());
        }
        let batch = query.limit.max(KEY_ARGUMENT_BATCH);
        let mut after = query.after.map(|c| c.0);
        let mut out = Vec::with_capacity(query.limit);
        loop {
            let rows = self.candidates(query, after, batch)?;
            let exhausted = rows.len() < batch;
            after = rows.last().map(|c| c.summary.invocation_id);
            for row in rows {
                if self
                    .record_of(&row)?
                    .is_some_and(|r| query.matches_arguments(&r.call))
                {
                    out.push(row.summary);
                    if out.len() == query.limit {
                        return Ok(out);
                    }
                }
            }
            if exhausted {
                return Ok(out);
            }
        }
    }

    /// The stored record of a candidate.
    fn record_of(&self, row: &Candidate) -> Result<Option<InvocationRecord>> {
        let json: Option<String> = self.opt_row(
            "SELECT record FROM records WHERE rid = ?1",
            "reading an invocation",
            Key::None,
            rusqlite::params![row.rid],
            |r| r.get(0),
        )?;
        json.map(|j| {
            InvocationRecord::from_json(&j).map_err(|e| {
                self.ctx
                    .corrupt_by(row.summary.invocation_id.as_str(), "record", e)
            })
        })
        .transpose()
    }

    /// Up to `max` invocations matching every filter of `query` but its key
    /// arguments, after `after`, in the query's order.
    fn candidates(
        &mut self,
        query: &InvocationQuery,
        after: Option<InvocationId>,
        max: usize,
    ) -> Result<Vec<Candidate>> {
        let statements = self.statements(query, after, max)?;
        let mut names = TaskNames::default();
        let mut out = Vec::new();
        for (text, args) in &statements {
            out.extend(self.run_listing(text, args, &mut names)?);
        }
        if statements.len() > 1 {
            out.sort_unstable_by_key(|c| c.summary.invocation_id);
            if query.order == Order::NewestFirst {
                out.reverse();
            }
            out.truncate(max);
        }
        Ok(out)
    }

    /// The statements (text and bound values) that list up to `max`
    /// invocations of `query` after `after`: one, or one per
    /// [`MAX_RANGES`] ranges; none when nothing can match.
    pub(crate) fn statements(
        &mut self,
        query: &InvocationQuery,
        after: Option<InvocationId>,
        max: usize,
    ) -> Result<Vec<(String, Vec<Value>)>> {
        let mut sql = Sql::default();
        let Some(common) = self.common_conditions(query, after, &mut sql)? else {
            return Ok(Vec::new());
        };
        let ranges = match self.plan(query, &mut sql)? {
            Plan::Empty => return Ok(Vec::new()),
            Plan::Ranges(r) => r,
        };
        let dir = match query.order {
            Order::OldestFirst => "ASC",
            Order::NewestFirst => "DESC",
        };
        let mut out = Vec::new();
        for chunk in ranges.chunks(MAX_RANGES) {
            let mut chunk_sql = Sql {
                args: sql.args.clone(),
            };
            let limit_param = chunk_sql.bind(limit(max));
            let arms: Vec<String> = chunk
                .iter()
                .map(|r| {
                    let mut conditions = common.clone();
                    conditions.extend(r.conditions.iter().cloned());
                    format!(
                        "SELECT {COLUMNS} FROM invocations INDEXED BY {} WHERE {}",
                        r.index,
                        conditions.join(" AND ")
                    )
                })
                .collect();
            let text = if arms.len() == 1 {
                format!(
                    "{} ORDER BY invocation_id {dir} LIMIT {limit_param}",
                    arms.join("")
                )
            } else {
                format!(
                    "{} ORDER BY 1 {dir} LIMIT {limit_param}",
                    arms.join(" UNION ALL ")
                )
            };
            out.push((text, chunk_sql.args));
        }
        Ok(out)
    }

    /// The conditions every range has: the app, the filters and the
    /// cursor; `None` when nothing can match.
    fn common_conditions(
        &mut self,
        query: &InvocationQuery,
        after: Option<InvocationId>,
        sql: &mut Sql,
    ) -> Result<Option<Vec<String>>> {
        let mut c = vec![format!("app = {}", sql.bind(self.app()))];
        if !query.statuses.is_empty() {
            let codes = query.statuses.iter().map(|s| Value::from(status_code(*s)));
            c.push(sql.in_list("status", codes));
        }
        let (low, high) = query.created_id_bounds();
        if let Some(from) = query.created.from {
            c.push(format!("created_at_us >= {}", sql.bind(from.as_micros())));
        }
        if let Some(to) = query.created.to {
            c.push(format!("created_at_us < {}", sql.bind(to.as_micros())));
        }
        if let Some(low) = low {
            c.push(format!(
                "invocation_id >= {}",
                sql.bind(low.as_str().to_string())
            ));
        }
        if let Some(high) = high {
            c.push(format!(
                "invocation_id < {}",
                sql.bind(high.as_str().to_string())
            ));
        }
        if !query.ended.is_open() {
            c.push("final_at_us IS NOT NULL".to_string());
            if let Some(from) = query.ended.from {
                c.push(format!("final_at_us >= {}", sql.bind(from.as_micros())));
            }
            if let Some(to) = query.ended.to {
                c.push(format!("final_at_us < {}", sql.bind(to.as_micros())));
            }
        }
        if let Some(parent) = &query.parent {
            c.push(format!(
                "parent = {}",
                sql.bind(parent.as_str().to_string())
            ));
        }
        if let Some(owner) = &query.owner {
            c.push(format!("owner = {}", sql.bind(owner.as_str().to_string())));
        }
        if let Some(call) = &query.call_id {
            let Some((task, hash)) = self.call_of(call)? else {
                return Ok(None);
            };
            c.push(format!("call_hash = {}", sql.bind(hash.to_vec())));
            c.push(format!("task = {}", sql.bind(task)));
        }
        if let Some(cursor) = after {
            let op = match query.order {
                Order::OldestFirst => ">",
                Order::NewestFirst => "<",
            };
            c.push(format!(
                "invocation_id {op} {}",
                sql.bind(cursor.as_str().to_string())
            ));
        }
        Ok(Some(c))
    }

    /// The task and argument hash of a call id, if its task is known.
    fn call_of(&mut self, call: &CallId) -> Result<Option<(i64, [u8; 32])>> {
        let Some((task, digits)) = call.as_str().split_once('#') else {
            return Ok(None);
        };
        let Some(hash) = hash_from_hex(digits) else {
            return Ok(None);
        };
        Ok(self.lookup_name_id(task)?.map(|t| (t, hash)))
    }

    /// The ranges that answer `query` (see the module documentation).
    fn plan(&mut self, query: &InvocationQuery, sql: &mut Sql) -> Result<Plan> {
        if query.parent.is_some() {
            let mut range = Range::new("invocations_parent");
            if !query.task_ids.is_empty() {
                let tasks = self.task_numbers(&query.task_ids)?;
                if tasks.is_empty() {
                    return Ok(Plan::Empty);
                }
                range
                    .conditions
                    .push(sql.in_list("task", tasks.into_iter().map(Value::from)));
            }
            return Ok(Plan::Ranges(vec![range]));
        }
        if query.task_ids.is_empty()
            && query.statuses.is_empty()
            && query.ended.is_open()
            && query.owner.is_none()
            && query.call_id.is_none()
            && query.key_arguments.is_empty()
        {
            return Ok(Plan::Ranges(vec![Range::new("invocations_id")]));
        }
        self.task_ranges(query, sql)
    }

    /// A range per task of the invocations not final yet, and per task
    /// and final status of the final ones; only where the counters say
    /// there is something.
    fn task_ranges(&mut self, query: &InvocationQuery, sql: &mut Sql) -> Result<Plan> {
        let wanted = |code: i64| {
            query.statuses.is_empty() || query.statuses.iter().any(|s| status_code(*s) == code)
        };
        let mut numbers = None;
        if !query.task_ids.is_empty() {
            numbers = Some(self.task_numbers(&query.task_ids)?);
        }
        if let Some(call) = &query.call_id {
            // a call's task is the part of its id before '#'
            let task = match self.call_of(call)? {
                Some((task, _)) => task,
                None => return Ok(Plan::Empty),
            };
            if numbers.as_ref().is_some_and(|n| !n.contains(&task)) {
                return Ok(Plan::Empty);
            }
            numbers = Some(vec![task]);
        }
        let tasks = numbers.as_deref();
        let mut per_task: FxHashMap<i64, Vec<i64>> = FxHashMap::default();
        let mut order: Vec<i64> = Vec::new();
        for (task, code, _) in self.status_counts(tasks)? {
            if wanted(code) {
                if !per_task.contains_key(&task) {
                    order.push(task);
                }
                per_task.entry(task).or_default().push(code);
            }
        }
        let final_codes: Vec<i64> = ALL_STATUSES
            .iter()
            .filter(|s| s.is_final())
            .map(|s| status_code(*s))
            .collect();
        let mut ranges = Vec::new();
        for task in order {
            let codes = per_task.remove(&task).unwrap_or_default();
            let task_param = sql.bind(task);
            if query.ended.is_open() && codes.iter().any(|c| !final_codes.contains(c)) {
                let mut r = Range::new("invocations_open");
                r.conditions.push(format!("task = {task_param}"));
                r.conditions.push("final_at_us IS NULL".to_string());
                ranges.push(r);
            }
            for code in codes.iter().filter(|c| final_codes.contains(c)) {
                let mut r = Range::new("invocations_ended");
                r.conditions.push(format!("task = {task_param}"));
                r.conditions.push(format!("status = {}", sql.bind(*code)));
                r.conditions.push("final_at_us IS NOT NULL".to_string());
                ranges.push(r);
            }
        }
        Ok(if ranges.is_empty() {
            Plan::Empty
        } else {
            Plan::Ranges(ranges)
        })
    }

    /// Runs a listing statement (not cached: its text depends on the filters).
    fn run_listing(
        &self,
        text: &str,
        args: &[Value],
        names: &mut TaskNames,
    ) -> Result<Vec<Candidate>> {
        let op = "listing invocations";
        let fail = |e| self.ctx.err(e, op, Key::None);
        self.flush_status()?;
        let mut stmt = self.conn.prepare(text).map_err(fail)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args.iter()))
            .map_err(fail)?;
        let mut raw = Vec::new();
        while let Some(r) = rows.next().map_err(fail)? {
            raw.push(RawRow {
                id: r.get(0).map_err(fail)?,
                task: r.get(1).map_err(fail)?,
                status: r.get(2).map_err(fail)?,
                owner: r.get(3).map_err(fail)?,
                parent: r.get(4).map_err(fail)?,
                call_hash: r.get(5).map_err(fail)?,
                created: r.get(6).map_err(fail)?,
                status_at: r.get(7).map_err(fail)?,
                final_at: r.get(8).map_err(fail)?,
                retries: r.get(9).map_err(fail)?,
                rid: r.get(10).map_err(fail)?,
            });
        }
        drop(rows);
        drop(stmt);
        raw.into_iter().map(|r| self.candidate(r, names)).collect()
    }

    fn candidate(&self, r: RawRow, names: &mut TaskNames) -> Result<Candidate> {
        let task_id = names.get(self, r.task)?;
        let call_id = CallId::from(format!("{task_id}#{}", hash_to_hex(&r.call_hash)));
        Ok(Candidate {
            summary: InvocationSummary {
                invocation_id: self.parse_id(&r.id)?,
                task_id,
                call_id,
                status: self.parse_status(&r.id, r.status)?,
                owner: r.owner.map(RunnerId::from),
                parent_invocation_id: r.parent.as_deref().map(|p| self.parse_id(p)).transpose()?,
                created_at: Timestamp::from_micros(r.created),
                status_at: Timestamp::from_micros(r.status_at),
                ended_at: r.final_at.map(Timestamp::from_micros),
                retries: u32::try_from(r.retries).unwrap_or(0),
            },
            rid: r.rid,
        })
    }
}

/// The columns of one listed row, as read.
struct RawRow {
    id: String,
    task: i64,
    status: i64,
    owner: Option<String>,
    parent: Option<String>,
    call_hash: Vec<u8>,
    created: i64,
    status_at: i64,
    final_at: Option<i64>,
    retries: i64,
    rid: i64,
}

impl Range {
    fn new(index: &'static str) -> Self {
        Range {
            index,
            conditions: Vec::new(),
        }
    }
}
