//! The writes a group holds back: new invocations and their records,
//! status writes (one per invocation, merged), history entries, counter
//! changes (the task totals included), results and errors, error kinds,
//! queue appends and the removal of call edges. History entries, results
//! and errors live in the invocation's row: they go with its insert or its
//! status write when one is held, else in one update of their own. They are sent together — one statement per table over
//! arrays (`UNNEST`), all in one round trip — before the first statement
//! that reads one of their tables, or when the group commits. The group's
//! own view ([`crate::txn::Row`]) answers its reads of statuses meanwhile.

use pynenc_model::{HistoryStep, InvocationId, InvocationStatus, TotalKey};
use pynenc_store::codes::status_code;
use rustc_hash::FxHashMap;
use tokio_postgres::types::ToSql;

use crate::txn::tables;

/// The code of a status as the schema stores it.
pub(crate) fn code(status: InvocationStatus) -> i16 {
    i16::try_from(status_code(status)).unwrap_or(-1)
}

/// One invocation's held status write (several merged).
pub(crate) struct StatusWrite {
    pub(crate) code: i16,
    pub(crate) at: i64,
    /// The owner, when it changed.
    pub(crate) owner: Option<Option<String>>,
    /// The end time, when it changed.
    pub(crate) final_at: Option<Option<i64>>,
    pub(crate) clear_cancel: bool,
    /// Whether it is no longer waited on (final: see
    /// [`Pending::release_waited`]).
    pub(crate) clear_waited: bool,
    /// What goes into the row with it (filled when the writes are taken).
    pub(crate) extras: Extras,
}

/// What a group adds to an invocation's row besides its status.
#[derive(Default)]
pub(crate) struct Extras {
    /// History lines to append, in the order written ([`HistoryLine`]).
    pub(crate) history: String,
    /// The result, when written.
    pub(crate) result: Option<String>,
    /// The error (JSON), when written.
    pub(crate) error: Option<String>,
}

/// One line of the `history` column, a JSON array: status code, owner,
/// actor, timestamp (µs), execution context.
pub(crate) type HistoryLine<S> = (i16, Option<S>, S, i64, Option<S>);

/// A new invocation's row.
pub(crate) struct NewRow {
    pub(crate) id: InvocationId,
    pub(crate) task: String,
    pub(crate) code: i16,
    pub(crate) owner: Option<String>,
    pub(crate) created: i64,
    /// When it took its status (its creation, or a status write of the
    /// group folded into the insert).
    pub(crate) at: i64,
    pub(crate) due: i64,
    pub(crate) registration_key: Option<String>,
    pub(crate) running_key: Option<String>,
    pub(crate) final_at: Option<i64>,
    pub(crate) parent: Option<String>,
    pub(crate) call_id: String,
    pub(crate) record: String,
    /// What goes into the row with it (filled when the writes are taken).
    pub(crate) extras: Extras,
}

/// The writes a group holds back, by table.
#[derive(Default)]
pub(crate) struct Pending {
    inserts: Vec<NewRow>,
    /// Where each held insert is in `inserts`.
    insert_at: FxHashMap<InvocationId, usize>,
    status: Vec<(InvocationId, StatusWrite)>,
    status_at: FxHashMap<InvocationId, usize>,
    /// History entries, results and errors, by invocation.
    extras: FxHashMap<InvocationId, Extras>,
    status_counts: FxHashMap<(String, i16), i64>,
    failed_counts: FxHashMap<(String, String), i64>,
    /// What to add to the task totals, by task and [`TotalKey::code`].
    totals: FxHashMap<(String, i16), i64>,
    pub(crate) error_kinds: FxHashMap<InvocationId, String>,
    edges_removed: Vec<String>,
    /// Edges added: caller invocation, caller call, callee call.
    edges_added: Vec<(String, String, String)>,
    enqueued: Vec<InvocationId>,
    /// Invocations no longer waited on (final) whose status write is not
    /// held: their flag (the others' goes with their status write).
    unwaited: Vec<String>,
    /// Invocations no longer waited on: their waits, to delete.
    waits_released: Vec<String>,
    mask: u8,
}

/// A statement parameter of a held write (an array).
pub(crate) type Param<'w> = Box<dyn ToSql + Sync + Send + 'w>;

/// One statement of held writes, ready to send.
pub(crate) enum Write {
    Inserts(Vec<NewRow>),
    /// The records of the rows inserted (taken from them).
    Records(Vec<(InvocationId, String)>),
    Status(Vec<(InvocationId, StatusWrite)>),
    /// History entries, results and errors of rows with no held insert or
    /// status write.
    Extras(Vec<(InvocationId, Extras)>),
    StatusCounts(Vec<((String, i16), i64)>),
    FailedCounts(Vec<((String, String), i64)>),
    /// Additions to the task totals, by task and [`TotalKey::code`].
    Totals(Vec<((String, i16), i64)>),
    ErrorKinds(Vec<(InvocationId, String)>),
    EdgesRemoved(Vec<String>),
    EdgesAdded(Vec<(String, String, String)>),
    Enqueued(Vec<String>),
    Unwaited(Vec<String>),
    WaitsReleased(Vec<String>),
}

/// The statements of the held writes.
pub(crate) mod statements {
    pub(crate) const INSERTS: &str =
        "INSERT INTO pynenc_invocations (app, invocation_id, task, status, owner, \
            status_at_us, created_at_us, due_at_us, registration_key, running_key, final_at_us, \
            parent, call_id, history, result, error) \
        SELECT $1, id, task, status, owner, at, created, due, rkey, runkey, final_at, \
            parent, call_id, history, result, error \
        FROM UNNEST($2::text[], $3::text[], $4::smallint[], $5::text[], $6::bigint[], \
            $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[], \
            $13::text[], $14::text[], $15::text[], $16::bigint[]) \
            AS u(id, task, status, owner, created, due, rkey, runkey, final_at, parent, call_id, \
            history, result, error, at)";

    /// The records of new invocations (a table of their own: written once,
    /// never copied by a status write).
    pub(crate) const RECORDS: &str = "INSERT INTO pynenc_records (app, invocation_id, record) \
        SELECT $1, * FROM UNNEST($2::text[], $3::text[])";

    pub(crate) const STATUS: &str = "UPDATE pynenc_invocations AS i SET status = u.status, status_at_us = u.at, \
            owner = CASE WHEN u.set_owner THEN u.owner ELSE i.owner END, \
            final_at_us = CASE WHEN u.set_final THEN u.final_at ELSE i.final_at_us END, \
            cancel_owner = CASE WHEN u.clear_cancel THEN NULL ELSE i.cancel_owner END, \
            cancel_error = CASE WHEN u.clear_cancel THEN NULL ELSE i.cancel_error END, \
            waited = i.waited AND NOT u.clear_waited, \
            history = i.history || u.history, \
            result = COALESCE(u.result, i.result), error = COALESCE(u.error, i.error) \
        FROM UNNEST($2::text[], $3::smallint[], $4::bigint[], $5::bool[], $6::text[], $7::bool[], \
            $8::bigint[], $9::bool[], $10::bool[], $11::text[], $12::text[], $13::text[]) \
            AS u(id, status, at, set_owner, owner, set_final, final_at, clear_cancel, clear_waited, \
            history, result, error) \
        WHERE i.app = $1 AND i.invocation_id = u.id";

    /// History entries, a result or an error (never cleared: a success after
    /// a retry keeps the retry's error) for rows with no held status write.
    pub(crate) const EXTRAS: &str = "UPDATE pynenc_invocations AS i SET history = i.history || u.history, \
            result = COALESCE(u.result, i.result), error = COALESCE(u.error, i.error) \
        FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[]) AS u(id, history, result, error) \
        WHERE i.app = $1 AND i.invocation_id = u.id";

    pub(crate) const STATUS_COUNTS: &str =
        "INSERT INTO pynenc_status_counts (app, task, status, n) \
        SELECT $1, * FROM UNNEST($2::text[], $3::smallint[], $4::bigint[]) \
        ON CONFLICT (app, task, status) DO UPDATE SET n = pynenc_status_counts.n + excluded.n";

    pub(crate) const FAILED_COUNTS: &str = "INSERT INTO pynenc_failed_counts (app, task, kind, n) \
        SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[]) \
        ON CONFLICT (app, task, kind) DO UPDATE SET n = pynenc_failed_counts.n + excluded.n";

    /// Adds to the task totals (the additions are never negative: the sum
    /// stops at the largest `bigint` rather than failing the group).
    pub(crate) const TOTALS: &str = "INSERT INTO pynenc_task_totals (app, task, counter, n) \
        SELECT $1, * FROM UNNEST($2::text[], $3::smallint[], $4::bigint[]) \
        ON CONFLICT (app, task, counter) DO UPDATE SET n = CASE \
            WHEN pynenc_task_totals.n > 9223372036854775807 - excluded.n \
            THEN 9223372036854775807 ELSE pynenc_task_totals.n + excluded.n END";

    pub(crate) const ERROR_KINDS: &str = "UPDATE pynenc_invocations AS i SET error_kind = u.kind \
        FROM UNNEST($2::text[], $3::text[]) AS u(id, kind) \
        WHERE i.app = $1 AND i.invocation_id = u.id";

    pub(crate) const ENQUEUED: &str = "INSERT INTO pynenc_queue (app, seq, invocation_id) \
        SELECT $1, nextval('pynenc_queue_seq'), u.id \
        FROM UNNEST($2::text[]) WITH ORDINALITY AS u(id, n) ORDER BY u.n";

    pub(crate) const UNWAITED: &str = "UPDATE pynenc_invocations AS i SET waited = FALSE \
        FROM UNNEST($2::text[]) AS u(id) WHERE i.app = $1 AND i.invocation_id = u.id";

    pub(crate) const WAITS_RELEASED: &str =
        "DELETE FROM pynenc_waits AS w USING UNNEST($2::text[]) AS u(id) \
        WHERE w.app = $1 AND w.waited = u.id";

    pub(crate) const EDGES_ADDED: &str = "INSERT INTO pynenc_edges \
        (app, caller_invocation_id, caller_call_id, callee_call_id) \
        SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[])";

    pub(crate) const EDGES_REMOVED: &str =
        "DELETE FROM pynenc_edges AS e USING UNNEST($2::text[]) AS u(id) \
        WHERE e.app = $1 AND e.caller_invocation_id = u.id";
}
use statements::*;

impl Write {
    /// The number of rows in its arrays.
    pub(crate) fn len(&self) -> usize {
        match self {
            Write::Inserts(v) => v.len(),
            Write::Records(v) => v.len(),
            Write::Status(v) => v.len(),
            Write::Extras(v) => v.len(),
            Write::StatusCounts(v) | Write::Totals(v) => v.len(),
            Write::FailedCounts(v) => v.len(),
            Write::ErrorKinds(v) => v.len(),
            Write::EdgesAdded(v) => v.len(),
            Write::EdgesRemoved(v)
            | Write::Enqueued(v)
            | Write::Unwaited(v)
            | Write::WaitsReleased(v) => v.len(),
        }
    }

    /// The statement.
    pub(crate) fn sql(&self) -> &'static str {
        match self {
            Write::Inserts(_) => INSERTS,
            Write::Records(_) => RECORDS,
            Write::Status(_) => STATUS,
            Write::Extras(_) => EXTRAS,
            Write::StatusCounts(_) => STATUS_COUNTS,
            Write::FailedCounts(_) => FAILED_COUNTS,
            Write::Totals(_) => TOTALS,
            Write::ErrorKinds(_) => ERROR_KINDS,
            Write::EdgesRemoved(_) => EDGES_REMOVED,
            Write::EdgesAdded(_) => EDGES_ADDED,
            Write::Enqueued(_) => ENQUEUED,
            Write::Unwaited(_) => UNWAITED,
            Write::WaitsReleased(_) => WAITS_RELEASED,
        }
    }

    /// The table it writes (writes of one table are never combined into
    /// one statement: a statement does not see its own changes).
    pub(crate) fn table(&self) -> u8 {
        match self {
            Write::Inserts(_)
            | Write::Status(_)
            | Write::Extras(_)
            | Write::ErrorKinds(_)
            | Write::Unwaited(_) => 0,
            Write::StatusCounts(_) => 1,
            Write::FailedCounts(_) => 2,
            Write::Totals(_) => 3,
            Write::EdgesRemoved(_) | Write::EdgesAdded(_) => 4,
            Write::Enqueued(_) => 5,
            Write::WaitsReleased(_) => 6,
            Write::Records(_) => 7,
        }
    }

    /// Its parameters after the app (`$2` on), one array each.
    pub(crate) fn arrays(&self) -> Vec<Param<'_>> {
        fn p<'x>(v: impl ToSql + Sync + Send + 'x) -> Param<'x> {
            Box::new(v)
        }
        match self {
            Write::Inserts(rows) => {
                let (history, results, errors) = extra_arrays(rows.iter().map(|r| &r.extras));
                vec![
                    p(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>()),
                    p(rows.iter().map(|r| r.task.as_str()).collect::<Vec<_>>()),
                    p(rows.iter().map(|r| r.code).collect::<Vec<_>>()),
                    p(rows.iter().map(|r| r.owner.as_deref()).collect::<Vec<_>>()),
                    p(rows.iter().map(|r| r.created).collect::<Vec<_>>()),
                    p(rows.iter().map(|r| r.due).collect::<Vec<_>>()),
                    p(rows
                        .iter()
                        .map(|r| r.registration_key.as_deref())
                        .collect::<Vec<_>>()),
                    p(rows
                        .iter()
                        .map(|r| r.running_key.as_deref())
                        .collect::<Vec<_>>()),
                    p(rows.iter().map(|r| r.final_at).collect::<Vec<_>>()),
                    p(rows.iter().map(|r| r.parent.as_deref()).collect::<Vec<_>>()),
                    p(rows.iter().map(|r| r.call_id.as_str()).collect::<Vec<_>>()),
                    p(history),
                    p(results),
                    p(errors),
                    p(rows.iter().map(|r| r.at).collect::<Vec<_>>()),
                ]
            }
            Write::Status(writes) => {
                let (history, results, errors) =
                    extra_arrays(writes.iter().map(|(_, w)| &w.extras));
                vec![
                    p(writes.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>()),
                    p(writes.iter().map(|(_, w)| w.code).collect::<Vec<_>>()),
                    p(writes.iter().map(|(_, w)| w.at).collect::<Vec<_>>()),
                    p(writes
                        .iter()
                        .map(|(_, w)| w.owner.is_some())
                        .collect::<Vec<_>>()),
                    p(writes
                        .iter()
                        .map(|(_, w)| w.owner.as_ref().and_then(|o| o.as_deref()))
                        .collect::<Vec<_>>()),
                    p(writes
                        .iter()
                        .map(|(_, w)| w.final_at.is_some())
                        .collect::<Vec<_>>()),
                    p(writes
                        .iter()
                        .map(|(_, w)| w.final_at.flatten())
                        .collect::<Vec<_>>()),
                    p(writes
                        .iter()
                        .map(|(_, w)| w.clear_cancel)
                        .collect::<Vec<_>>()),
                    p(writes
                        .iter()
                        .map(|(_, w)| w.clear_waited)
                        .collect::<Vec<_>>()),
                    p(history),
                    p(results),
                    p(errors),
                ]
            }
            Write::Extras(writes) => {
                let (history, results, errors) = extra_arrays(writes.iter().map(|(_, x)| x));
                vec![
                    p(writes.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>()),
                    p(history),
                    p(results),
                    p(errors),
                ]
            }
            Write::StatusCounts(deltas) | Write::Totals(deltas) => vec![
                p(deltas
                    .iter()
                    .map(|((t, _), _)| t.as_str())
                    .collect::<Vec<_>>()),
                p(deltas.iter().map(|((_, c), _)| *c).collect::<Vec<_>>()),
                p(deltas.iter().map(|(_, n)| *n).collect::<Vec<_>>()),
            ],
            Write::FailedCounts(deltas) => vec![
                p(deltas
                    .iter()
                    .map(|((t, _), _)| t.as_str())
                    .collect::<Vec<_>>()),
                p(deltas
                    .iter()
                    .map(|((_, k), _)| k.as_str())
                    .collect::<Vec<_>>()),
                p(deltas.iter().map(|(_, n)| *n).collect::<Vec<_>>()),
            ],
            Write::Records(values) | Write::ErrorKinds(values) => vec![
                p(values.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>()),
                p(values.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>()),
            ],
            Write::EdgesAdded(edges) => vec![
                p(edges.iter().map(|e| e.0.as_str()).collect::<Vec<_>>()),
                p(edges.iter().map(|e| e.1.as_str()).collect::<Vec<_>>()),
                p(edges.iter().map(|e| e.2.as_str()).collect::<Vec<_>>()),
            ],
            Write::EdgesRemoved(ids)
            | Write::Enqueued(ids)
            | Write::Unwaited(ids)
            | Write::WaitsReleased(ids) => {
                vec![p(ids.iter().map(String::as_str).collect::<Vec<_>>())]
            }
        }
    }
}

/// The history, result and error arrays of a statement's rows.
#[allow(clippy::type_complexity)]
fn extra_arrays<'x>(
    extras: impl Iterator<Item = &'x Extras>,
) -> (Vec<&'x str>, Vec<Option<&'x str>>, Vec<Option<&'x str>>) {
    let mut history = Vec::new();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for x in extras {
        history.push(x.history.as_str());
        results.push(x.result.as_deref());
        errors.push(x.error.as_deref());
    }
    (history, results, errors)
}

impl Pending {
    /// Whether writes to one of the tables in `mask` are held.
    pub(crate) fn holds(&self, mask: u8) -> bool {
        self.mask & mask != 0
    }

    /// Takes the held writes of the tables in `mask`, in the order they
    /// must be applied (rows before their status writes).
    pub(crate) fn take(&mut self, mut mask: u8) -> Vec<Write> {
        // a released wait clears the flag (rows) and the waits (their
        // table) together: a read of either sends both
        if mask & (tables::INVOCATIONS | tables::WAITS) != 0 && !self.waits_released.is_empty() {
            mask |= tables::INVOCATIONS | tables::WAITS;
        }
        let mut out = Vec::new();
        if mask & tables::INVOCATIONS != 0 {
            // each row's extras go with the first of its writes sent
            if !self.inserts.is_empty() {
                self.insert_at.clear();
                let mut rows = std::mem::take(&mut self.inserts);
                for row in &mut rows {
                    if let Some(extras) = self.extras.remove(&row.id) {
                        row.extras = extras;
                    }
                }
                let records = rows
                    .iter_mut()
                    .map(|r| (r.id, std::mem::take(&mut r.record)))
                    .collect();
                out.push(Write::Inserts(rows));
                out.push(Write::Records(records));
            }
            if !self.status.is_empty() {
                self.status_at.clear();
                let mut writes = std::mem::take(&mut self.status);
                for (id, write) in &mut writes {
                    if let Some(extras) = self.extras.remove(id) {
                        write.extras = extras;
                    }
                }
                out.push(Write::Status(writes));
            }
            if !self.extras.is_empty() {
                out.push(Write::Extras(self.extras.drain().collect()));
            }
            if !self.error_kinds.is_empty() {
                out.push(Write::ErrorKinds(self.error_kinds.drain().collect()));
            }
        }
        if mask & tables::COUNTS != 0 {
            let status: Vec<_> = self
                .status_counts
                .drain()
                .filter(|(_, n)| *n != 0)
                .collect();
            if !status.is_empty() {
                out.push(Write::StatusCounts(status));
            }
            let failed: Vec<_> = self
                .failed_counts
                .drain()
                .filter(|(_, n)| *n != 0)
                .collect();
            if !failed.is_empty() {
                out.push(Write::FailedCounts(failed));
            }
            if !self.totals.is_empty() {
                out.push(Write::Totals(self.totals.drain().collect()));
            }
        }
        if mask & tables::EDGES != 0 {
            // removals first: an edge added after its caller's removal in
            // the group is kept, one added before it was dropped already
            if !self.edges_removed.is_empty() {
                out.push(Write::EdgesRemoved(std::mem::take(&mut self.edges_removed)));
            }
            if !self.edges_added.is_empty() {
                out.push(Write::EdgesAdded(std::mem::take(&mut self.edges_added)));
            }
        }
        if mask & tables::INVOCATIONS != 0 {
            if !self.unwaited.is_empty() {
                out.push(Write::Unwaited(std::mem::take(&mut self.unwaited)));
            }
            if !self.waits_released.is_empty() {
                out.push(Write::WaitsReleased(std::mem::take(
                    &mut self.waits_released,
                )));
            }
        }
        if mask & tables::QUEUE != 0 && !self.enqueued.is_empty() {
            let ids = std::mem::take(&mut self.enqueued);
            out.push(Write::Enqueued(
                ids.iter().map(|id| id.as_str().to_string()).collect(),
            ));
        }
        self.mask &= !mask;
        out
    }

    /// Notes that writes to `table` are held.
    pub(crate) fn hold(&mut self, table: u8) {
        self.mask |= table;
    }

    /// A change of the counters of `task` in `status` (and of the failures
    /// of `kind`, when it is `FAILED`).
    pub(crate) fn count(
        &mut self,
        task: &str,
        status: InvocationStatus,
        kind: Option<&str>,
        delta: i64,
    ) {
        *self
            .status_counts
            .entry((task.to_string(), code(status)))
            .or_default() += delta;
        if status == InvocationStatus::Failed {
            if let Some(kind) = kind {
                *self
                    .failed_counts
                    .entry((task.to_string(), kind.to_string()))
                    .or_default() += delta;
            }
        }
        self.hold(tables::COUNTS);
    }

    /// Adds `n` to the total `key` of `task` (totals only grow).
    pub(crate) fn total(&mut self, task: &str, key: TotalKey, n: u64) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let held = self
            .totals
            .entry((task.to_string(), key.code()))
            .or_default();
        *held = held.saturating_add(n);
        self.hold(tables::COUNTS);
    }

    pub(crate) fn result(&mut self, id: &InvocationId, result: String) {
        self.extras.entry(*id).or_default().result = Some(result);
        self.hold(tables::INVOCATIONS);
    }

    pub(crate) fn error(&mut self, id: &InvocationId, error: String) {
        self.extras.entry(*id).or_default().error = Some(error);
        self.hold(tables::INVOCATIONS);
    }

    /// `id` is final: it is waited on no more. Its flag is cleared by its
    /// held status write (the final one), or by a statement of its own.
    pub(crate) fn release_waited(&mut self, id: &InvocationId) {
        match self.status_at.get(id) {
            Some(&i) => self.status[i].1.clear_waited = true,
            None => self.unwaited.push(id.as_str().to_string()),
        }
        self.waits_released.push(id.as_str().to_string());
        self.hold(tables::INVOCATIONS | tables::WAITS);
    }

    pub(crate) fn enqueue(&mut self, id: &InvocationId) {
        self.enqueued.push(*id);
        self.hold(tables::QUEUE);
    }

    /// The held queue appends, oldest first.
    pub(crate) fn enqueued(&self) -> &[InvocationId] {
        &self.enqueued
    }

    /// Takes up to `max` of the held queue appends, oldest first: they are
    /// not written (see [`crate::txn::Group::own_queue`]).
    pub(crate) fn take_enqueued(&mut self, max: usize) -> Vec<InvocationId> {
        let n = max.min(self.enqueued.len());
        self.enqueued.drain(..n).collect()
    }

    /// Forgets every held write (the app's rows are being deleted).
    pub(crate) fn clear(&mut self) {
        *self = Pending::default();
    }

    /// An edge from a call of invocation `caller` to another call.
    pub(crate) fn add_edge(&mut self, caller: &InvocationId, from: &str, to: &str) {
        self.edges_added.push((
            caller.as_str().to_string(),
            from.to_string(),
            to.to_string(),
        ));
        self.hold(tables::EDGES);
    }

    pub(crate) fn remove_edges(&mut self, id: &InvocationId) {
        self.edges_added.retain(|e| e.0 != id.as_str());
        self.edges_removed.push(id.as_str().to_string());
        self.hold(tables::EDGES);
    }

    /// A history entry, appended to the invocation's `history` column.
    pub(crate) fn history(&mut self, step: &HistoryStep<'_>) -> serde_json::Result<()> {
        let line: HistoryLine<&str> = (
            code(step.status),
            step.owner.map(|o| o.as_str()),
            step.actor.as_str(),
            step.timestamp.as_micros(),
            step.execution_context,
        );
        let line = serde_json::to_string(&line)?;
        let held = &mut self.extras.entry(*step.invocation_id).or_default().history;
        held.push_str(&line);
        held.push('\n');
        self.hold(tables::INVOCATIONS);
        Ok(())
    }

    /// Holds the insert of a new invocation's row.
    pub(crate) fn insert(&mut self, row: NewRow) {
        self.insert_at.insert(row.id, self.inserts.len());
        self.inserts.push(row);
        self.hold(tables::INVOCATIONS);
    }

    /// Holds a status write of `id`, merged with its held insert or status
    /// write: a row is written once per group.
    pub(crate) fn status(&mut self, id: &InvocationId, write: StatusWrite) {
        if let Some(&i) = self.insert_at.get(id) {
            // a new row: not waited on, no cancel asked yet
            let row = &mut self.inserts[i];
            row.code = write.code;
            row.at = write.at;
            if let Some(owner) = write.owner {
                row.owner = owner;
            }
            if let Some(final_at) = write.final_at {
                row.final_at = final_at;
            }
            return;
        }
        match self.status_at.get(id) {
            Some(&i) => {
                let held = &mut self.status[i].1;
                held.code = write.code;
                held.at = write.at;
                if write.owner.is_some() {
                    held.owner = write.owner;
                }
                if write.final_at.is_some() {
                    held.final_at = write.final_at;
                }
                held.clear_cancel |= write.clear_cancel;
                held.clear_waited |= write.clear_waited;
            }
            None => {
                self.status_at.insert(*id, self.status.len());
                self.status.push((*id, write));
            }
        }
        self.hold(tables::INVOCATIONS);
    }
}

/// A connection of a test's own to `url`, whose schema a store of `app`
/// created.
#[cfg(test)]
pub(crate) async fn client_on_schema(url: &str, app: &str) -> tokio_postgres::Client {
    let store =
        crate::PostgresStore::open(&crate::PostgresOptions::new(url), app).expect("open the store");
    drop(store);
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

#[cfg(test)]
mod tests {
    use crate::one_row::one_row;

    /// Every held write, in both forms, is a statement the server accepts
    /// on the library's schema (on a server the test starts; skipped with a
    /// message when the server binaries are missing).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_held_write_prepares_in_both_forms() {
        let Some(db) = pynenc_testservers::postgres::test_database() else {
            return;
        };
        let client = super::client_on_schema(&db.url(), "forms").await;
        use super::statements as s;
        for sql in [
            s::INSERTS,
            s::RECORDS,
            s::STATUS,
            s::EXTRAS,
            s::STATUS_COUNTS,
            s::FAILED_COUNTS,
            s::TOTALS,
            s::ERROR_KINDS,
            s::ENQUEUED,
            s::UNWAITED,
            s::WAITS_RELEASED,
            s::EDGES_ADDED,
            s::EDGES_REMOVED,
        ] {
            for text in [sql.to_string(), one_row(sql)] {
                if let Err(e) = client.prepare(&text).await {
                    panic!("{text}: {e}");
                }
            }
        }
    }
}
