//! The reads of the query API ([`QueryTxn`]), each answered from an index
//! or a counter.
//!
//! A listing is one statement built from the query's filters, read in
//! `invocation_id` (creation) order from the cursor: PostgreSQL may drive
//! it by `pynenc_invocations_task` (task, status, id) when tasks are named,
//! by `pynenc_invocations_parent` for children, and by the primary key
//! (the planner's choice, by the statistics). The task index leaves out the
//! invocations in a runner's hands ([`IN_HANDS`]: the status writes of a
//! run add no entry to it), so a listing by task selects them apart, where
//! `pynenc_invocations_owned` (as many as the runners hold) may serve, and
//! merges both in id order: two ordered, limited selects joined by
//! `UNION ALL`, their status lists written out so that the planner sees
//! which partial index each may use. Key
//! arguments are checked on the stored records, page by page, until the
//! page is full or the candidates run out.

use pynenc_model::{
    ErrorKindCount, InvocationId, InvocationQuery, InvocationSummary, LeaseHolder, Order, Reuses,
    RunnerId, RunnerInfo, StatusCount, TaskId, TaskTotals, Timestamp, TriggerRecord, WaitGraph,
};
use pynenc_store::{QueryTxn, Result};
use tokio_postgres::types::ToSql;

use crate::pending::code;
use crate::txn::{tables, PgTxn};

/// How many candidates a page with key arguments reads at a time (at least).
const KEY_ARGUMENT_BATCH: usize = 200;

/// The status codes of the invocations in a runner's hands (PENDING,
/// RUNNING, PAUSED, RESUMED): those `pynenc_invocations_owned` holds and
/// `pynenc_invocations_task` leaves out (see `sql/schema.sql`).
const IN_HANDS: [i16; 4] = [5, 7, 8, 9];

/// A statement being built: its conditions and their bound values.
struct Built {
    conditions: Vec<String>,
    args: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Built {
    /// Binds a value; its parameter (`$N`).
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.args.push(Box::new(value));
        format!("${}", self.args.len())
    }

    fn and(&mut self, condition: String) {
        self.conditions.push(condition);
    }
}

impl PgTxn<'_> {
    /// Up to `max` summaries (with their records when `with_records`)
    /// matching every filter of `query` but the key arguments, after `after`.
    fn candidates(
        &mut self,
        query: &InvocationQuery,
        after: Option<InvocationId>,
        max: usize,
        with_records: bool,
    ) -> Result<Vec<(InvocationSummary, Option<String>)>> {
        let mut b = Built {
            conditions: Vec::new(),
            args: Vec::new(),
        };
        let app = b.bind(self.app());
        b.and(format!("i.app = {app}"));
        if !query.task_ids.is_empty() {
            let tasks: Vec<String> = query
                .task_ids
                .iter()
                .map(|t| t.as_str().to_string())
                .collect();
            let p = b.bind(tasks);
            b.and(format!("i.task = ANY({p}::text[])"));
        }
        let codes: Vec<i16> = query.statuses.iter().map(|s| code(*s)).collect();
        let by_status = if query.task_ids.is_empty() {
            if !codes.is_empty() {
                let p = b.bind(codes);
                b.and(format!("i.status = ANY({p}::smallint[])"));
            }
            vec![None]
        } else {
            status_parts(&codes).into_iter().map(Some).collect()
        };
        if let Some(from) = query.created.from {
            let p = b.bind(from.as_micros());
            b.and(format!("i.created_at_us >= {p}"));
        }
        if let Some(to) = query.created.to {
            let p = b.bind(to.as_micros());
            b.and(format!("i.created_at_us < {p}"));
        }
        if !query.ended.is_open() {
            b.and("i.final_at_us IS NOT NULL".to_string());
        }
        if let Some(from) = query.ended.from {
            let p = b.bind(from.as_micros());
            b.and(format!("i.final_at_us >= {p}"));
        }
        if let Some(to) = query.ended.to {
            let p = b.bind(to.as_micros());
            b.and(format!("i.final_at_us < {p}"));
        }
        if let Some(parent) = &query.parent {
            let p = b.bind(parent.as_str().to_string());
            b.and(format!("i.parent = {p}"));
        }
        if let Some(owner) = &query.owner {
            let p = b.bind(owner.as_str().to_string());
            b.and(format!("i.owner = {p}"));
        }
        if let Some(call) = &query.call_id {
            let p = b.bind(call.as_str().to_string());
            b.and(format!("i.call_id = {p}"));
        }
        let (cmp, dir) = match query.order {
            Order::OldestFirst => (">", "ASC"),
            Order::NewestFirst => ("<", "DESC"),
        };
        if let Some(after) = after {
            let p = b.bind(after.as_str().to_string());
            b.and(format!("i.invocation_id {cmp} {p}"));
        }
        let lim = b.bind(i64::try_from(max).unwrap_or(i64::MAX));
        let (record, join) = if with_records {
            (
                ", r.record",
                " LEFT JOIN pynenc_records AS r \
                 ON r.app = i.app AND r.invocation_id = i.invocation_id",
            )
        } else {
            (", NULL::text", "")
        };
        let conditions = b.conditions.join(" AND ");
        let selects: Vec<String> = by_status
            .iter()
            .map(|status| {
                let status = status
                    .as_deref()
                    .map_or(String::new(), |s| format!(" AND {s}"));
                format!(
                    "SELECT i.invocation_id, i.task, i.status, i.owner, i.parent, i.call_id, \
                         i.created_at_us, i.status_at_us, i.final_at_us, i.retries{record} \
                     FROM pynenc_invocations AS i{join} WHERE {conditions}{status} \
                     ORDER BY i.invocation_id {dir} LIMIT {lim}"
                )
            })
            .collect();
        let sql = match selects.as_slice() {
            [one] => one.clone(),
            _ => format!(
                "({}) ORDER BY invocation_id {dir} LIMIT {lim}",
                selects.join(") UNION ALL (")
            ),
        };
        let params: Vec<&(dyn ToSql + Sync)> = b
            .args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = self.query_built(&sql, &params, "listing invocations")?;
        rows.iter()
            .map(|r| {
                let text: &str = r.get(0);
                let summary = InvocationSummary {
                    invocation_id: self.parse_id(text)?,
                    task_id: TaskId::from(r.get::<_, String>(1)),
                    status: self.parse_status(text, r.get(2))?,
                    owner: r.get::<_, Option<String>>(3).map(RunnerId::from),
                    parent_invocation_id: r
                        .get::<_, Option<&str>>(4)
                        .map(|p| self.parse_id(p))
                        .transpose()?,
                    call_id: pynenc_model::CallId::from(r.get::<_, String>(5)),
                    created_at: Timestamp::from_micros(r.get(6)),
                    status_at: Timestamp::from_micros(r.get(7)),
                    ended_at: r.get::<_, Option<i64>>(8).map(Timestamp::from_micros),
                    retries: u32::try_from(r.get::<_, i32>(9)).unwrap_or(0),
                };
                Ok((summary, r.get::<_, Option<String>>(10)))
            })
            .collect()
    }
}

/// The status conditions of a listing by task, one per index that serves
/// it: the codes asked for (all when `codes` is empty) in a runner's hands,
/// and the others, each part written out only when it can match.
fn status_parts(codes: &[i16]) -> Vec<String> {
    let list = |codes: &[i16]| {
        codes
            .iter()
            .map(i16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if codes.is_empty() {
        let held = list(&IN_HANDS);
        return vec![
            format!("i.status IN ({held})"),
            format!("i.status NOT IN ({held})"),
        ];
    }
    let (held, other): (Vec<i16>, Vec<i16>) = codes.iter().partition(|c| IN_HANDS.contains(c));
    [held, other]
        .iter()
        .filter(|part| !part.is_empty())
        .map(|part| format!("i.status IN ({})", list(part)))
        .collect()
}

impl QueryTxn for PgTxn<'_> {
    fn list_invocations(&mut self, query: &InvocationQuery) -> Result<Vec<InvocationSummary>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        if query.key_arguments.is_empty() {
            let rows = self.candidates(query, query.after.map(|c| c.0), query.limit, false)?;
            return Ok(rows.into_iter().map(|(s, _)| s).collect());
        }
        let batch = query.limit.max(KEY_ARGUMENT_BATCH);
        let mut after = query.after.map(|c| c.0);
        let mut out = Vec::with_capacity(query.limit);
        loop {
            let rows = self.candidates(query, after, batch, true)?;
            let exhausted = rows.len() < batch;
            after = rows.last().map(|(s, _)| s.invocation_id);
            for (summary, json) in rows {
                let Some(json) = json else { continue };
                let record = self.parse_record(summary.invocation_id.as_str(), &json)?;
                if query.matches_arguments(&record.call) {
                    out.push(summary);
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

    fn count_by_status(&mut self, task_ids: &[TaskId]) -> Result<Vec<StatusCount>> {
        let app = self.app();
        let tasks: Vec<&str> = task_ids.iter().map(TaskId::as_str).collect();
        let rows = self.query(
            "SELECT task, status, n FROM pynenc_status_counts \
             WHERE app = $1 AND n > 0 AND (cardinality($2::text[]) = 0 OR task = ANY($2::text[])) \
             ORDER BY task, status",
            &[&app, &tasks],
            "counting invocations",
            tables::COUNTS,
        )?;
        rows.iter()
            .map(|r| {
                let task: String = r.get(0);
                Ok(StatusCount {
                    status: self.parse_status(&task, r.get(1))?,
                    count: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                    task_id: TaskId::from(task),
                })
            })
            .collect()
    }

    fn failed_by_kind(&mut self, task_ids: &[TaskId]) -> Result<Vec<ErrorKindCount>> {
        let app = self.app();
        let tasks: Vec<&str> = task_ids.iter().map(TaskId::as_str).collect();
        let rows = self.query(
            "SELECT task, kind, n FROM pynenc_failed_counts \
             WHERE app = $1 AND n > 0 AND (cardinality($2::text[]) = 0 OR task = ANY($2::text[])) \
             ORDER BY task, kind",
            &[&app, &tasks],
            "counting failures",
            tables::COUNTS,
        )?;
        Ok(rows
            .iter()
            .map(|r| ErrorKindCount {
                task_id: TaskId::from(r.get::<_, String>(0)),
                kind: r.get(1),
                count: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
            })
            .collect())
    }

    /// The totals rows of the tasks asked for (held additions sent first),
    /// gathered by [`TaskTotals::from_rows`].
    fn task_totals(&mut self, task_ids: &[TaskId]) -> Result<Vec<TaskTotals>> {
        let app = self.app();
        let tasks: Vec<&str> = task_ids.iter().map(TaskId::as_str).collect();
        let rows = self.query(
            "SELECT task, counter, n FROM pynenc_task_totals \
             WHERE app = $1 AND (cardinality($2::text[]) = 0 OR task = ANY($2::text[]))",
            &[&app, &tasks],
            "reading task totals",
            tables::COUNTS,
        )?;
        Ok(TaskTotals::from_rows(rows.iter().map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, i16>(1),
                u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
            )
        })))
    }

    /// One statement over the latest rows of `pynenc_reuses` (see
    /// [`crate::reuses`]).
    fn reuses_of(&mut self, id: &InvocationId) -> Result<Reuses> {
        self.read_reuses(id)
    }

    /// The first row of the queue whose invocation is still available for
    /// a run (rows of invocations cancelled meanwhile are skipped).
    fn queue_oldest(&mut self) -> Result<Option<(InvocationId, Timestamp)>> {
        let app = self.app();
        let found = self.query_opt(
            "SELECT q.invocation_id, i.created_at_us FROM pynenc_queue AS q \
             JOIN pynenc_invocations AS i ON i.app = q.app AND i.invocation_id = q.invocation_id \
             WHERE q.app = $1 AND i.status IN (1, 4, 12) ORDER BY q.seq LIMIT 1",
            &[&app],
            "reading the queue",
            tables::QUEUE | tables::INVOCATIONS,
        )?;
        found
            .map(|r| Ok((self.parse_id(r.get(0))?, Timestamp::from_micros(r.get(1)))))
            .transpose()
    }

    /// The waits recorded between invocations that are not final.
    fn waits_of(&mut self, id: &InvocationId) -> Result<WaitGraph> {
        let app = self.app();
        let found = self.query_opt(
            "SELECT final_at_us IS NOT NULL FROM pynenc_invocations \
             WHERE app = $1 AND invocation_id = $2",
            &[&app, &id.as_str()],
            "reading waits",
            tables::INVOCATIONS | tables::WAITS,
        )?;
        if found.is_none_or(|r| r.get::<_, bool>(0)) {
            return Ok(WaitGraph::default());
        }
        let waiting_on = self.ids(
            "SELECT w.waited FROM pynenc_waits AS w \
             JOIN pynenc_invocations AS i ON i.app = w.app AND i.invocation_id = w.waited \
             WHERE w.app = $1 AND w.waiter = $2 AND i.final_at_us IS NULL ORDER BY w.waited",
            &[&app, &id.as_str()],
            "reading waits",
            tables::INVOCATIONS | tables::WAITS,
        )?;
        let waited_by = self.ids(
            "SELECT w.waiter FROM pynenc_waits AS w \
             JOIN pynenc_invocations AS i ON i.app = w.app AND i.invocation_id = w.waiter \
             WHERE w.app = $1 AND w.waited = $2 AND i.final_at_us IS NULL ORDER BY w.waiter",
            &[&app, &id.as_str()],
            "reading waits",
            tables::INVOCATIONS | tables::WAITS,
        )?;
        Ok(WaitGraph {
            waiting_on,
            waited_by,
        })
    }

    fn list_runners(&mut self) -> Result<Vec<RunnerInfo>> {
        let app = self.app();
        let rows = self.query(
            "SELECT r.runner_id, r.kind, r.host, r.pid, r.started_us, r.slots, r.running, \
                 COALESCE(h.beat_us, r.started_us) \
             FROM pynenc_runners AS r \
             LEFT JOIN pynenc_heartbeats AS h ON h.app = r.app AND h.runner_id = r.runner_id \
             WHERE r.app = $1 ORDER BY r.runner_id",
            &[&app],
            "listing runners",
            tables::NONE,
        )?;
        rows.iter()
            .map(|r| {
                let runner_id: String = r.get(0);
                let running: Vec<InvocationId> = serde_json::from_str(r.get(6)).map_err(|e| {
                    self.ctx.fail(format!(
                        "runner {runner_id}: its running ids cannot be read: {e}"
                    ))
                })?;
                Ok(RunnerInfo {
                    runner_id: RunnerId::from(runner_id),
                    kind: r.get(1),
                    host: r.get(2),
                    pid: u32::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                    started_at: Timestamp::from_micros(r.get(4)),
                    heartbeat_at: Timestamp::from_micros(r.get(7)),
                    slots: u32::try_from(r.get::<_, i64>(5)).unwrap_or(0),
                    running,
                })
            })
            .collect()
    }

    fn list_triggers(&mut self) -> Result<Vec<TriggerRecord>> {
        self.triggers()
    }

    fn get_lease(&mut self, name: &str) -> Result<Option<LeaseHolder>> {
        let app = self.app();
        let found = self.query_opt(
            "SELECT holder, expires_us FROM pynenc_leases WHERE app = $1 AND name = $2",
            &[&app, &name],
            "reading a lease",
            tables::NONE,
        )?;
        Ok(found.map(|r| LeaseHolder {
            name: name.to_string(),
            holder: RunnerId::from(r.get::<_, String>(0)),
            expires_at: Timestamp::from_micros(r.get(1)),
        }))
    }

    fn app_ids(&mut self) -> Result<Vec<String>> {
        let rows = self.query(
            "SELECT a.app_id FROM pynenc_apps AS a \
             WHERE EXISTS (SELECT 1 FROM pynenc_invocations AS i WHERE i.app = a.app) \
             ORDER BY a.app_id",
            &[],
            "listing apps",
            tables::INVOCATIONS,
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status lists are written out (a bound array would hide from the
    /// planner which partial index may serve), one part per index.
    #[test]
    fn a_listing_by_task_splits_its_statuses_by_index() {
        assert_eq!(
            status_parts(&[]),
            vec![
                "i.status IN (5, 7, 8, 9)".to_string(),
                "i.status NOT IN (5, 7, 8, 9)".to_string()
            ]
        );
        assert_eq!(
            status_parts(&[7, 5]),
            vec!["i.status IN (7, 5)".to_string()]
        );
        assert_eq!(
            status_parts(&[13, 14]),
            vec!["i.status IN (13, 14)".to_string()]
        );
        assert_eq!(
            status_parts(&[13, 7, 1]),
            vec![
                "i.status IN (7)".to_string(),
                "i.status IN (13, 1)".to_string()
            ]
        );
    }

    /// The schema and its upgrade leave out of the task index exactly the
    /// statuses listed apart.
    #[test]
    fn the_task_index_leaves_out_the_statuses_listed_apart() {
        let held = IN_HANDS.map(|c| c.to_string()).join(", ");
        let predicate = format!("WHERE status NOT IN ({held});");
        for (name, sql) in [
            ("schema.sql", include_str!("sql/schema.sql")),
            ("upgrade_7.sql", include_str!("sql/upgrade_7.sql")),
        ] {
            let index = sql
                .split("CREATE INDEX pynenc_invocations_task")
                .nth(1)
                .and_then(|rest| rest.split(';').next())
                .unwrap_or_default();
            assert!(format!("{index};").contains(&predicate), "{name}: {index}");
        }
        let owned = include_str!("sql/schema.sql")
            .split("CREATE INDEX pynenc_invocations_owned")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_default()
            .to_string();
        assert!(
            owned.contains(&format!("WHERE status IN ({held})")),
            "{owned}"
        );
    }
}
