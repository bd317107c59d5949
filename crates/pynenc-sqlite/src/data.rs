//! The data store's primitives (see [`pynenc_store::DataTxn`]): a value per
//! app and content digest in `data_values` (its text in `data_texts`, so
//! that a claim never rewrites it) and its references in `data_references`.

use pynenc_model::{DataRef, DataUsage, InvocationId, Timestamp};
use pynenc_store::{DataTxn, Result, StoreError};
use rusqlite::params;

use crate::error::Key;
use crate::txn::{limit, SqliteTxn};

/// Up to `?3` values of app `?1` claimed before `?2`, the oldest claim
/// first: a range of `data_values_claim`.
pub(crate) const UNCLAIMED: &str = "SELECT digest, len FROM data_values
     WHERE app = ?1 AND claimed_at_us < ?2 ORDER BY claimed_at_us, dv LIMIT ?3";

/// The key of a value in errors.
fn key_of(key: &str) -> Key<'_> {
    Key::Of("stored value", key)
}

impl SqliteTxn<'_> {
    /// The error for a row of `data_values` that cannot be read.
    fn corrupt_value(&self, key: &str, detail: impl std::fmt::Display) -> StoreError {
        StoreError::corrupt(
            format!(
                "SQLite database {}: data_values (app '{}'), stored value {key}",
                self.ctx.shown, self.ctx.app_id
            ),
            detail,
        )
    }

    /// A length as SQLite stores it.
    fn len_column(&self, data: &DataRef) -> Result<i64> {
        i64::try_from(data.len()).map_err(|_| {
            self.ctx.fail(format!(
                "cannot store value {}: its length {} does not fit a 64-bit integer",
                data.key(),
                data.len()
            ))
        })
    }

    /// The `dv` of a stored value, if any.
    fn value_row(&self, key: &str, op: &str) -> Result<Option<i64>> {
        self.opt_row(
            "SELECT dv FROM data_values WHERE app = ?1 AND digest = ?2",
            op,
            key_of(key),
            params![self.app(), key],
            |r| r.get(0),
        )
    }

    /// Adds references to value `dv` (one already recorded stays one).
    fn add_references(&self, dv: i64, key: &str, ids: &[InvocationId]) -> Result<()> {
        for id in ids {
            self.exec(
                "INSERT OR IGNORE INTO data_references (dv, invocation_id) VALUES (?1, ?2)",
                "recording a reference to a stored value",
                key_of(key),
                params![dv, id.as_str()],
            )?;
        }
        Ok(())
    }

    /// Claims a stored value (see [`DataTxn::claim_data`]) by its key.
    fn claim_key(&self, key: &str, ids: &[InvocationId], now: Timestamp) -> Result<bool> {
        let dv: Option<i64> = self.opt_row(
            "UPDATE data_values SET claimed_at_us = ?3 WHERE app = ?1 AND digest = ?2
             RETURNING dv",
            "claiming a stored value",
            key_of(key),
            params![self.app(), key, now.as_micros()],
            |r| r.get(0),
        )?;
        match dv {
            Some(dv) => {
                self.add_references(dv, key, ids)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl DataTxn for SqliteTxn<'_> {
    fn claim_data(
        &mut self,
        data: &DataRef,
        referenced_by: &[InvocationId],
        now: Timestamp,
    ) -> Result<bool> {
        self.claim_key(&data.key(), referenced_by, now)
    }

    fn put_data(
        &mut self,
        data: &DataRef,
        value: &str,
        referenced_by: &[InvocationId],
        now: Timestamp,
    ) -> Result<()> {
        let key = data.key();
        // a stored value stays as it is (the same digest, the same text)
        if self.claim_key(&key, referenced_by, now)? {
            return Ok(());
        }
        let op = "storing a value";
        let len = self.len_column(data)?;
        let dv: i64 = self
            .stmt(
                "INSERT INTO data_values (app, digest, len, claimed_at_us)
                 VALUES (?1, ?2, ?3, ?4) RETURNING dv",
                op,
                key_of(&key),
            )?
            .query_row(params![self.app(), key, len, now.as_micros()], |r| r.get(0))
            .map_err(|e| self.ctx.err(e, op, key_of(&key)))?;
        self.exec(
            "INSERT INTO data_texts (dv, value) VALUES (?1, ?2)",
            op,
            key_of(&key),
            params![dv, value],
        )?;
        self.add_references(dv, &key, referenced_by)
    }

    fn get_data(&mut self, data: &DataRef) -> Result<Option<String>> {
        let key = data.key();
        self.opt_row(
            "SELECT t.value FROM data_values AS v JOIN data_texts AS t ON t.dv = v.dv
             WHERE v.app = ?1 AND v.digest = ?2",
            "reading a stored value",
            key_of(&key),
            params![self.app(), key],
            |r| r.get(0),
        )
    }

    fn unclaimed_data(&mut self, before: Timestamp, max: usize) -> Result<Vec<DataRef>> {
        let op = "listing unclaimed stored values";
        let mut stmt = self.stmt(UNCLAIMED, op, Key::None)?;
        let rows = stmt
            .query_map(params![self.app(), before.as_micros(), limit(max)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| self.ctx.err(e, op, Key::None))?;
        let mut found = Vec::new();
        for row in rows {
            let (key, len) = row.map_err(|e| self.ctx.err(e, op, Key::None))?;
            let len = u64::try_from(len)
                .map_err(|_| self.corrupt_value(&key, format!("negative length {len}")))?;
            let data = DataRef::from_key(&key, len)
                .ok_or_else(|| self.corrupt_value(&key, "the digest is not 64 hex digits"))?;
            found.push(data);
        }
        Ok(found)
    }

    fn data_references(&mut self, data: &DataRef) -> Result<Vec<InvocationId>> {
        let key = data.key();
        self.ids(
            "SELECT r.invocation_id FROM data_values AS v
             JOIN data_references AS r ON r.dv = v.dv
             WHERE v.app = ?1 AND v.digest = ?2",
            "reading the references of a stored value",
            key_of(&key),
            params![self.app(), key],
        )
    }

    fn forget_data_references(&mut self, data: &DataRef, ids: &[InvocationId]) -> Result<()> {
        let key = data.key();
        let op = "forgetting references to a stored value";
        let Some(dv) = self.value_row(&key, op)? else {
            return Ok(());
        };
        for id in ids {
            self.exec(
                "DELETE FROM data_references WHERE dv = ?1 AND invocation_id = ?2",
                op,
                key_of(&key),
                params![dv, id.as_str()],
            )?;
        }
        Ok(())
    }

    fn delete_data(&mut self, data: &DataRef) -> Result<()> {
        let key = data.key();
        let op = "removing a stored value";
        let dv: Option<i64> = self.opt_row(
            "DELETE FROM data_values WHERE app = ?1 AND digest = ?2 RETURNING dv",
            op,
            key_of(&key),
            params![self.app(), key],
            |r| r.get(0),
        )?;
        if let Some(dv) = dv {
            self.exec(
                "DELETE FROM data_texts WHERE dv = ?1",
                op,
                key_of(&key),
                params![dv],
            )?;
            self.exec(
                "DELETE FROM data_references WHERE dv = ?1",
                op,
                key_of(&key),
                params![dv],
            )?;
        }
        Ok(())
    }

    /// Reads the app's rows of `data_values` (and of their references):
    /// a usage report, not a step of the orchestration.
    fn data_usage(&mut self) -> Result<DataUsage> {
        let op = "measuring the data store";
        let (values, bytes, references): (i64, i64, i64) = self
            .stmt(
                "SELECT COUNT(*), COALESCE(SUM(len), 0),
                     (SELECT COUNT(*) FROM data_values AS v
                      JOIN data_references AS r ON r.dv = v.dv WHERE v.app = ?1)
                 FROM data_values WHERE app = ?1",
                op,
                Key::None,
            )?
            .query_row(params![self.app()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.ctx.err(e, op, Key::None))?;
        let count = |n: i64, what: &str| {
            u64::try_from(n).map_err(|_| {
                self.ctx
                    .fail(format!("the data store's {what} add up to {n}, below zero"))
            })
        };
        Ok(DataUsage {
            values: count(values, "values")?,
            bytes: count(bytes, "lengths")?,
            references: count(references, "references")?,
        })
    }
}
