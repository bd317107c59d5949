//! The queue and the invocations parked by running concurrency, as SQL.

use pynenc_model::InvocationId;
use pynenc_store::Result;
use rusqlite::params;

use crate::error::{inv, Key};
use crate::txn::{limit, SqliteTxn};

impl SqliteTxn<'_> {
    /// See [`pynenc_store::StoreTxn::park_controlled`].
    pub(crate) fn sql_park_controlled(
        &mut self,
        running_key: &str,
        id: &InvocationId,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO controlled (app, running_key, invocation_id) VALUES (?1, ?2, ?3)",
            "parking an invocation",
            inv(id),
            params![self.app(), running_key, id.as_str()],
        )?;
        Ok(())
    }

    /// See [`pynenc_store::StoreTxn::take_controlled`].
    pub(crate) fn sql_take_controlled(&mut self, running_key: &str) -> Result<Vec<InvocationId>> {
        self.seq_ids(
            "DELETE FROM controlled WHERE app = ?1 AND running_key = ?2
             RETURNING seq, invocation_id",
            "taking parked invocations",
            Key::Of("key", running_key),
            params![self.app(), running_key],
        )
    }

    /// See [`pynenc_store::StoreTxn::enqueue`].
    pub(crate) fn sql_enqueue(&mut self, id: &InvocationId) -> Result<()> {
        self.exec(
            "INSERT INTO queue (app, seq, invocation_id)
             VALUES (?1, COALESCE((SELECT seq FROM queue WHERE app = ?1 ORDER BY seq DESC LIMIT 1), 0) + 1, ?2)",
            "queueing",
            inv(id),
            params![self.app(), id.as_str()],
        )?;
        self.effects.enqueued = true;
        Ok(())
    }

    /// See [`pynenc_store::StoreTxn::enqueue_front`].
    pub(crate) fn sql_enqueue_front(&mut self, id: &InvocationId) -> Result<()> {
        self.exec(
            "INSERT INTO queue (app, seq, invocation_id)
             VALUES (?1, COALESCE((SELECT seq FROM queue WHERE app = ?1 ORDER BY seq ASC LIMIT 1), 0) - 1, ?2)",
            "queueing at the head",
            inv(id),
            params![self.app(), id.as_str()],
        )?;
        self.effects.enqueued = true;
        Ok(())
    }

    /// See [`pynenc_store::StoreTxn::dequeue`].
    pub(crate) fn sql_dequeue(&mut self, max: usize) -> Result<Vec<InvocationId>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.seq_ids(
            "DELETE FROM queue WHERE app = ?1 AND seq IN
                 (SELECT seq FROM queue WHERE app = ?1 ORDER BY seq LIMIT ?2)
             RETURNING seq, invocation_id",
            "taking from the queue",
            Key::None,
            params![self.app(), limit(max)],
        )
    }

    /// See [`pynenc_store::StoreTxn::queue_len`].
    pub(crate) fn sql_queue_len(&mut self) -> Result<usize> {
        let op = "counting the queue";
        let n: i64 = self
            .stmt("SELECT COUNT(*) FROM queue WHERE app = ?1", op, Key::None)?
            .query_row(params![self.app()], |r| r.get(0))
            .map_err(|e| self.ctx.err(e, op, Key::None))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}
