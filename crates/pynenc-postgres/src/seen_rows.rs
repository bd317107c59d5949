//! The rows of running invocations as this process last committed them,
//! so that the end of a run needs no read before its commit.
//!
//! A run's end reads the row it ends (status, owner, waited, …) before
//! the engine decides what to write, and that read was a round trip of
//! its own: `BEGIN`, the app's lock and the read, then the writes and
//! `COMMIT`. The group that picked the invocation up had the row in its
//! view when it committed, under the app's lock; unless another process
//! changed it since, the end would read exactly that. So every committed
//! group leaves the rows of the invocations it saw RUNNING here
//! ([`SeenRows::learn`]), and an end whose rows are all here takes them
//! without a read ([`crate::txn::PgTxn::prefetch_seen`]).
//!
//! Nothing is trusted unchecked. The rows taken are checked by the first
//! statement the group sends after `BEGIN` and the lock (with its commit
//! at the latest: [`CHECK_SEEN`]): every column the view holds must equal
//! what was taken, or the statement fails, the transaction aborts and
//! nothing it wrote is kept. The group then runs again and reads
//! ([`crate::writer`]); the rows here are forgotten. A row changed by
//! another process (a wait registered on it, a cancel asked, a recovery)
//! costs that second run; a row only this process writes never does.

use std::sync::Mutex;

use pynenc_model::{InvocationId, InvocationStatus};
use pynenc_store::Result;
use rustc_hash::FxHashMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;

use crate::pending::code;
use crate::txn::{PgTxn, Row};

/// The most rows kept (a thread runner's slots across its stores are far
/// fewer; rows past this are read as before).
pub(crate) const MOST: usize = 65_536;

/// The check of rows taken from [`SeenRows`]: fails unless every one of
/// them still has the columns taken (the cast of the text fails, so the
/// transaction aborts, with a message naming the cause in the server's log).
pub(crate) const CHECK_SEEN: &str = "SELECT (CASE WHEN count(*) = $3 THEN '0' \
         ELSE 'pynenc: a row this process saw has changed since; its group runs again' \
         END)::int \
     FROM UNNEST($2::text[], $4::smallint[], $5::text[], $6::text[], $7::bool[], \
                 $8::text[], $9::text[], $10::bool[]) \
         AS u(id, status, owner, running_key, waited, task, error_kind, asked) \
     JOIN pynenc_invocations AS i ON i.app = $1 AND i.invocation_id = u.id \
     WHERE i.status = u.status AND i.owner IS NOT DISTINCT FROM u.owner \
         AND i.running_key IS NOT DISTINCT FROM u.running_key AND i.waited = u.waited \
         AND i.task = u.task AND i.error_kind IS NOT DISTINCT FROM u.error_kind \
         AND (i.cancel_owner IS NOT NULL) = u.asked";

/// The rows of running invocations as this process's writer last
/// committed them (see the module's documentation).
#[derive(Default)]
pub(crate) struct SeenRows {
    rows: Mutex<FxHashMap<InvocationId, Row>>,
}

impl SeenRows {
    fn rows(&self) -> std::sync::MutexGuard<'_, FxHashMap<InvocationId, Row>> {
        // a panic while holding the map leaves rows that are only a hint
        self.rows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The rows of all of `ids`, or `None` when one of them is not here.
    pub(crate) fn all_of<'i>(
        &self,
        ids: impl Iterator<Item = &'i InvocationId>,
    ) -> Option<Vec<(InvocationId, Row)>> {
        let rows = self.rows();
        ids.map(|id| rows.get(id).map(|row| (*id, row.clone())))
            .collect()
    }

    /// What a committed group saw of `rows` (its view at the commit, under
    /// the app's lock): running ones are kept, the others forgotten.
    pub(crate) fn learn<'r>(&self, rows: impl Iterator<Item = (&'r InvocationId, &'r Row)>) {
        let mut kept = self.rows();
        for (id, row) in rows {
            if row.status.status == InvocationStatus::Running {
                if kept.len() < MOST || kept.contains_key(id) {
                    kept.insert(*id, row.clone());
                }
            } else {
                kept.remove(id);
            }
        }
    }

    /// Forgets `id` (deleted).
    pub(crate) fn forget(&self, id: &InvocationId) {
        self.rows().remove(id);
    }

    /// Forgets every row (a check found one changed, or the app was purged).
    pub(crate) fn clear(&self) {
        self.rows().clear();
    }

    /// How many rows are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rows().len()
    }
}

/// The check of the rows a group took from [`SeenRows`], with its
/// parameters, as [`CHECK_SEEN`] wants them.
pub(crate) struct SeenCheck {
    pub(crate) statement: Statement,
    count: i64,
    ids: Vec<String>,
    status: Vec<i16>,
    owner: Vec<Option<String>>,
    running_key: Vec<Option<String>>,
    waited: Vec<bool>,
    task: Vec<String>,
    error_kind: Vec<Option<String>>,
    asked: Vec<bool>,
}

impl SeenCheck {
    /// The statement's parameters for app `app`.
    pub(crate) fn params<'p>(&'p self, app: &'p i32) -> [&'p (dyn ToSql + Sync); 10] {
        [
            app,
            &self.ids,
            &self.count,
            &self.status,
            &self.owner,
            &self.running_key,
            &self.waited,
            &self.task,
            &self.error_kind,
            &self.asked,
        ]
    }
}

impl PgTxn<'_> {
    /// [`pynenc_store::StoreTxn::prefetch`] of a write group: when every
    /// one of `ids` the group has not seen is in [`SeenRows`], the group
    /// takes them from there and checks them with its first statement
    /// (see the module's documentation); otherwise it reads them.
    pub(crate) fn prefetch_seen(&mut self, ids: &[InvocationId]) -> Result<()> {
        if !self.g.read_only {
            let missing = ids.iter().filter(|id| !self.g.rows.contains_key(id));
            if let Some(taken) = self.ctx.seen.all_of(missing) {
                for (id, row) in taken {
                    self.g.rows.insert(id, row.clone());
                    self.g.assumed.push((id, row));
                }
                return Ok(());
            }
        }
        self.read_rows(ids)
    }

    /// The check of the rows taken since the last statement, if any: it
    /// goes after `BEGIN` and the lock, before anything else.
    pub(crate) fn take_check(&mut self) -> Result<Option<SeenCheck>> {
        if self.g.assumed.is_empty() {
            return Ok(None);
        }
        let taken = std::mem::take(&mut self.g.assumed);
        let statement = self
            .conn
            .prepared_for(CHECK_SEEN, taken.len())
            .map_err(|e| self.fail(e, "preparing the check of rows seen"))?;
        let mut check = SeenCheck {
            statement,
            count: i64::try_from(taken.len()).unwrap_or(i64::MAX),
            ids: Vec::with_capacity(taken.len()),
            status: Vec::with_capacity(taken.len()),
            owner: Vec::with_capacity(taken.len()),
            running_key: Vec::with_capacity(taken.len()),
            waited: Vec::with_capacity(taken.len()),
            task: Vec::with_capacity(taken.len()),
            error_kind: Vec::with_capacity(taken.len()),
            asked: Vec::with_capacity(taken.len()),
        };
        for (id, row) in taken {
            check.ids.push(id.as_str().to_string());
            check.status.push(code(row.status.status));
            check
                .owner
                .push(row.status.owner.map(|o| o.as_str().to_string()));
            check.running_key.push(row.running_key);
            check.waited.push(row.waited);
            check.task.push(row.task);
            check.error_kind.push(row.error_kind);
            check.asked.push(row.cancel_asked);
        }
        Ok(Some(check))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pynenc_model::{RunnerId, StatusRecord};

    fn row(status: InvocationStatus) -> Row {
        Row {
            status: StatusRecord {
                status,
                owner: Some(RunnerId::from("r1".to_string())),
            },
            task: "t".to_string(),
            running_key: None,
            waited: false,
            error_kind: None,
            cancel_asked: false,
        }
    }

    #[test]
    fn running_rows_are_kept_and_others_forgotten() {
        let seen = SeenRows::default();
        let (a, b) = (InvocationId::time_ordered(), InvocationId::time_ordered());
        let running = row(InvocationStatus::Running);
        seen.learn([(&a, &running), (&b, &running)].into_iter());
        assert_eq!(seen.len(), 2);
        assert!(seen.all_of([a, b].iter()).is_some());
        let ended = row(InvocationStatus::Success);
        seen.learn([(&a, &ended)].into_iter());
        assert!(
            seen.all_of([a, b].iter()).is_none(),
            "a ended: not all here"
        );
        let only_b = seen.all_of([b].iter()).map(|rows| rows.len());
        assert_eq!(only_b, Some(1));
        seen.forget(&b);
        assert_eq!(seen.len(), 0);
    }
}
