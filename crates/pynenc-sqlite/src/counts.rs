//! The counters of the query API: invocations per task and status
//! (`status_counts`; the statuses of a runner's hands — `PENDING`,
//! `RUNNING`, `PAUSED`, `RESUMED` — are not kept there but counted from the
//! index `invocations_owned` when read: they are few, and most of an
//! invocation's transitions go between them, so its steps mostly change no
//! counter), `FAILED` invocations per task and error kind
//! (`failed_counts`), and the task totals (`task_totals`: what was routed,
//! started and ended, and run times; they only grow).
//!
//! The primitives that insert, change the status of, or delete an
//! invocation record a change here; a section writes its changes to the
//! tables when it ends (and before it reads a count), one statement per
//! counter it changed. The changes of one section often cancel out (an
//! invocation that ends and the next one that starts), so a step that moves
//! many invocations writes a few counters, inside its own transaction.

use pynenc_model::{ErrorKindCount, InvocationStatus, StatusCount, TaskId, TaskTotals, TotalKey};
use pynenc_store::Result;
use rusqlite::params;
use rustc_hash::FxHashMap;

use crate::codes::{owned_running, status_code, FAILED_CODE};
use crate::error::Key;
use crate::txn::SqliteTxn;

/// Count changes of a section not written yet.
#[derive(Default)]
pub(crate) struct CountDeltas {
    /// `(task, status code)` → change.
    statuses: FxHashMap<(i64, i64), i64>,
    /// `(task, error kind)` → change of the `FAILED` count.
    failed: FxHashMap<(i64, Option<i64>), i64>,
    /// `(task, total code)` → addition.
    totals: FxHashMap<(i64, i16), i64>,
}

impl CountDeltas {
    /// Whether there is nothing to write.
    fn is_empty(&self) -> bool {
        self.statuses.is_empty() && self.failed.is_empty() && self.totals.is_empty()
    }

    /// Adds `n` to the total `key` of `task`.
    pub(crate) fn total(&mut self, task: i64, key: TotalKey, n: i64) {
        *self.totals.entry((task, key.code())).or_default() += n;
    }

    /// One invocation of `task` more (`delta` 1) or less (-1) in `status`,
    /// whose stored error has the kind `error_kind` (nothing for the
    /// statuses of a runner's hands, counted when read).
    pub(crate) fn status(
        &mut self,
        task: i64,
        status: InvocationStatus,
        error_kind: Option<i64>,
        delta: i64,
    ) {
        if status.is_owned_running() {
            return;
        }
        let code = status_code(status);
        *self.statuses.entry((task, code)).or_default() += delta;
        if code == FAILED_CODE {
            self.failed_kind(task, error_kind, delta);
        }
    }

    /// One `FAILED` invocation of `task` more or less with this error kind.
    pub(crate) fn failed_kind(&mut self, task: i64, error_kind: Option<i64>, delta: i64) {
        *self.failed.entry((task, error_kind)).or_default() += delta;
    }

    /// Forgets every change (the rows they were about are gone).
    pub(crate) fn clear(&mut self) {
        self.statuses.clear();
        self.failed.clear();
        self.totals.clear();
    }
}

/// The kind counted for a `FAILED` invocation without a stored error.
const NO_KIND: &str = "";

impl SqliteTxn<'_> {
    /// Writes the section's count changes.
    pub(crate) fn flush_counts(&mut self) -> Result<()> {
        if self.deltas.is_empty() {
            return Ok(());
        }
        let deltas = std::mem::take(&mut self.deltas);
        let op = "counting invocations";
        for ((task, status), n) in deltas.statuses {
            if n == 0 {
                continue;
            }
            self.exec(
                "INSERT INTO status_counts (app, task, status, n) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app, task, status) DO UPDATE SET n = n + excluded.n",
                op,
                Key::None,
                params![self.app(), task, status, n],
            )?;
        }
        for ((task, kind), n) in deltas.failed {
            if n == 0 {
                continue;
            }
            let kind = match kind {
                Some(kind) => kind,
                None => self.name_id(NO_KIND)?,
            };
            self.exec(
                "INSERT INTO failed_counts (app, task, kind, n) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app, task, kind) DO UPDATE SET n = n + excluded.n",
                op,
                Key::None,
                params![self.app(), task, kind, n],
            )?;
        }
        for ((task, code), n) in deltas.totals {
            self.exec(
                "INSERT INTO task_totals (app, task, counter, n) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app, task, counter) DO UPDATE SET n = n + excluded.n",
                op,
                Key::None,
                params![self.app(), task, code, n],
            )?;
        }
        Ok(())
    }

    /// The totals of `task_ids` (every task when empty; see
    /// [`pynenc_store::QueryTxn::task_totals`]).
    pub(crate) fn task_totals_of(&mut self, task_ids: &[TaskId]) -> Result<Vec<TaskTotals>> {
        let rows = self.counters_of_tasks("task_totals", "counter", task_ids)?;
        let mut names = TaskNames::default();
        let mut named = Vec::with_capacity(rows.len());
        for (task, code, n) in rows {
            let name = names.get(self, task)?;
            named.push((
                name.as_str().to_string(),
                i16::try_from(code).unwrap_or(-1),
                n,
            ));
        }
        Ok(TaskTotals::from_rows(named))
    }

    /// The `names` ids of `task_ids` that name a task (unknown names left out).
    pub(crate) fn task_numbers(&mut self, task_ids: &[TaskId]) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(task_ids.len());
        for task in task_ids {
            if let Some(n) = self.lookup_name_id(task.as_str())? {
                out.push(n);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// `(task, status code, count)` of the non-zero counters of the tasks
    /// `tasks` (every task when `None`), by task then status: the kept
    /// counters and those of a runner's hands.
    pub(crate) fn status_counts(&mut self, tasks: Option<&[i64]>) -> Result<Vec<(i64, i64, u64)>> {
        let mut rows = self.counter_rows("status_counts", "status", tasks)?;
        rows.extend(self.owned_counts(tasks)?);
        rows.sort_unstable_by_key(|&(task, status, _)| (task, status));
        Ok(rows)
    }

    /// `(task, status code, count)` of the invocations of `tasks` (every
    /// task when `None`) in a runner's hands, read through the index
    /// `invocations_owned` and counted here (no temporary b-tree).
    fn owned_counts(&mut self, tasks: Option<&[i64]>) -> Result<Vec<(i64, i64, u64)>> {
        let op = "counting the invocations in runners' hands";
        let sql = concat!(
            "SELECT task, status FROM invocations WHERE app = ?1 AND ",
            owned_running!()
        );
        let mut stmt = self.stmt(sql, op, Key::None)?;
        let rows = stmt
            .query_map(params![self.app()], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| self.ctx.err(e, op, Key::None))?;
        let mut counted: FxHashMap<(i64, i64), u64> = FxHashMap::default();
        for row in rows {
            let (task, status) = row.map_err(|e| self.ctx.err(e, op, Key::None))?;
            if tasks.is_none_or(|t| t.contains(&task)) {
                *counted.entry((task, status)).or_default() += 1;
            }
        }
        Ok(counted.into_iter().map(|((t, s), n)| (t, s, n)).collect())
    }

    /// [`SqliteTxn::counter_rows`] of the tasks named `task_ids` (every
    /// task when empty; unknown names have none).
    fn counters_of_tasks(
        &mut self,
        table: &str,
        key: &str,
        task_ids: &[TaskId],
    ) -> Result<Vec<(i64, i64, u64)>> {
        if task_ids.is_empty() {
            return self.counter_rows(table, key, None);
        }
        let numbers = self.task_numbers(task_ids)?;
        self.counter_rows(table, key, Some(&numbers))
    }

    /// `(task, key, n)` of the non-zero rows of the counters table `table`
    /// (`status_counts`, `failed_counts`, `task_totals`, keyed by the column
    /// `key`) of the tasks `tasks` (every task when `None`), by task then
    /// key; the section's own changes written first.
    fn counter_rows(
        &mut self,
        table: &str,
        key: &str,
        tasks: Option<&[i64]>,
    ) -> Result<Vec<(i64, i64, u64)>> {
        self.flush_counts()?;
        let op = "reading counts";
        let select = format!("SELECT task, {key}, n FROM {table} WHERE app = ?1 AND n > 0");
        match tasks {
            None => self.count_rows(
                &format!("{select} ORDER BY task, {key}"),
                op,
                params![self.app()],
            ),
            Some(tasks) => {
                let one = format!("{select} AND task = ?2 ORDER BY {key}");
                let mut out = Vec::new();
                for task in tasks {
                    out.extend(self.count_rows(&one, op, params![self.app(), task])?);
                }
                Ok(out)
            }
        }
    }

    /// `(a, b, n)` rows of a count query.
    fn count_rows(
        &self,
        sql: &str,
        op: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<(i64, i64, u64)>> {
        let mut stmt = self.stmt(sql, op, Key::None)?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.ctx.err(e, op, Key::None))?;
        let mut out = Vec::new();
        for row in rows {
            let (a, b, n) = row.map_err(|e| self.ctx.err(e, op, Key::None))?;
            out.push((a, b, u64::try_from(n).unwrap_or(0)));
        }
        Ok(out)
    }

    /// Counts per task and status (see [`pynenc_store::QueryTxn::count_by_status`]).
    pub(crate) fn count_by_status_of(&mut self, task_ids: &[TaskId]) -> Result<Vec<StatusCount>> {
        let numbers;
        let tasks = if task_ids.is_empty() {
            None
        } else {
            numbers = self.task_numbers(task_ids)?;
            Some(numbers.as_slice())
        };
        let mut names = TaskNames::default();
        let mut out = Vec::new();
        for (task, code, count) in self.status_counts(tasks)? {
            let status = self.parse_status("(a count)", code)?;
            out.push(StatusCount {
                task_id: names.get(self, task)?,
                status,
                count,
            });
        }
        Ok(out)
    }

    /// `FAILED` counts per task and error kind (see
    /// [`pynenc_store::QueryTxn::failed_by_kind`]), by task then kind.
    pub(crate) fn failed_by_kind_of(&mut self, task_ids: &[TaskId]) -> Result<Vec<ErrorKindCount>> {
        let rows = self.counters_of_tasks("failed_counts", "kind", task_ids)?;
        let mut names = TaskNames::default();
        let mut out = Vec::with_capacity(rows.len());
        for (task, kind, count) in rows {
            out.push(ErrorKindCount {
                task_id: names.get(self, task)?,
                kind: self.name_of(kind)?,
                count,
            });
        }
        out.sort_by(|a, b| (&a.task_id, &a.kind).cmp(&(&b.task_id, &b.kind)));
        Ok(out)
    }
}

/// Task names read once per answer.
#[derive(Default)]
pub(crate) struct TaskNames(FxHashMap<i64, TaskId>);

impl TaskNames {
    /// The task id of a `names` row.
    pub(crate) fn get(&mut self, txn: &SqliteTxn<'_>, task: i64) -> Result<TaskId> {
        if let Some(t) = self.0.get(&task) {
            return Ok(t.clone());
        }
        let t = TaskId::from(txn.name_of(task)?);
        self.0.insert(task, t.clone());
        Ok(t)
    }
}
