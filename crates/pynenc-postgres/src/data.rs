//! The data store's primitives (see [`pynenc_store::DataTxn`]): values by
//! content digest in `pynenc_data` (with their length and claim time,
//! indexed by claim time for the sweep), and the invocations that refer to
//! each in `pynenc_data_refs` (a set: one row per value and invocation).
//!
//! Every primitive is one statement sent at once: only these primitives
//! write the two tables, and never through the held writes of
//! [`crate::pending`], so no held write needs sending first. Each is
//! idempotent in effect (`ON CONFLICT DO NOTHING`, updates, deletes), as a
//! group may run again on a new connection.

use pynenc_model::{DataRef, DataUsage, InvocationId, Timestamp};
use pynenc_store::{DataTxn, Result, StoreError};

use crate::txn::{tables, PgTxn};

/// A SQL `LIMIT` for `max`.
fn limit(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}

/// The ids as the `text[]` parameter of a statement.
fn id_texts(ids: &[InvocationId]) -> Vec<&str> {
    ids.iter().map(InvocationId::as_str).collect()
}

/// Sets the claim time of a stored value and adds references to it; the
/// one row it returns says whether the value is stored.
const CLAIM: &str = "WITH c AS (UPDATE pynenc_data SET claimed_us = $3 \
        WHERE app = $1 AND digest = $2 RETURNING digest), \
    r AS (INSERT INTO pynenc_data_refs (app, digest, invocation_id) \
        SELECT DISTINCT $1, c.digest, u.id FROM c, UNNEST($4::text[]) AS u(id) \
        ON CONFLICT DO NOTHING) \
    SELECT EXISTS (SELECT 1 FROM c)";

/// Stores a value unless it is stored (then sets its claim time), and adds
/// references to it.
const PUT: &str = "WITH v AS (INSERT INTO pynenc_data (app, digest, length, value, claimed_us) \
        VALUES ($1, $2, $3, $4, $5) \
        ON CONFLICT (app, digest) DO UPDATE SET claimed_us = excluded.claimed_us) \
    INSERT INTO pynenc_data_refs (app, digest, invocation_id) \
    SELECT DISTINCT $1, $2::bytea, u.id FROM UNNEST($6::text[]) AS u(id) \
    ON CONFLICT DO NOTHING";

/// Removes a value and its references.
const DELETE: &str = "WITH r AS (DELETE FROM pynenc_data_refs WHERE app = $1 AND digest = $2) \
    DELETE FROM pynenc_data WHERE app = $1 AND digest = $2";

/// Distinct values, their total length and the references of an app.
const USAGE: &str = "SELECT \
        (SELECT COUNT(*) FROM pynenc_data WHERE app = $1), \
        (SELECT COALESCE(SUM(length), 0)::bigint FROM pynenc_data WHERE app = $1), \
        (SELECT COUNT(*) FROM pynenc_data_refs WHERE app = $1)";

impl PgTxn<'_> {
    /// A stored value that cannot be read back as a [`DataRef`].
    fn corrupt_value(&self, digest: &[u8], detail: impl std::fmt::Display) -> StoreError {
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        StoreError::corrupt(
            format!(
                "PostgreSQL database {}: stored value {hex} (app '{}')",
                self.ctx.shown, self.ctx.app_id
            ),
            detail,
        )
    }

    /// The reference of a stored value from its digest and length columns.
    fn data_ref(&self, digest: &[u8], length: i64) -> Result<DataRef> {
        let d: [u8; 32] = digest
            .try_into()
            .map_err(|_| self.corrupt_value(digest, format!("a {}-byte digest", digest.len())))?;
        let len = u64::try_from(length)
            .map_err(|_| self.corrupt_value(digest, format!("a length of {length}")))?;
        Ok(DataRef::from_parts(d, len))
    }

    /// The length of a value as the schema stores it.
    fn length_of(&self, data: &DataRef) -> Result<i64> {
        i64::try_from(data.len()).map_err(|_| {
            self.ctx.fail(format!(
                "cannot store value {}: {} bytes is too long",
                data.key(),
                data.len()
            ))
        })
    }
}

impl DataTxn for PgTxn<'_> {
    fn claim_data(
        &mut self,
        data: &DataRef,
        referenced_by: &[InvocationId],
        now: Timestamp,
    ) -> Result<bool> {
        let app = self.app();
        let digest = data.digest().as_slice();
        let ids = id_texts(referenced_by);
        let found = self.query_opt(
            CLAIM,
            &[&app, &digest, &now.as_micros(), &ids],
            "claiming a stored value",
            tables::NONE,
        )?;
        Ok(found.is_some_and(|r| r.get::<_, bool>(0)))
    }

    fn put_data(
        &mut self,
        data: &DataRef,
        value: &str,
        referenced_by: &[InvocationId],
        now: Timestamp,
    ) -> Result<()> {
        let app = self.app();
        let digest = data.digest().as_slice();
        let length = self.length_of(data)?;
        let ids = id_texts(referenced_by);
        self.exec(
            PUT,
            &[&app, &digest, &length, &value, &now.as_micros(), &ids],
            "storing a value",
            tables::NONE,
        )?;
        Ok(())
    }

    fn get_data(&mut self, data: &DataRef) -> Result<Option<String>> {
        let app = self.app();
        let digest = data.digest().as_slice();
        let found = self.query_opt(
            "SELECT value FROM pynenc_data WHERE app = $1 AND digest = $2",
            &[&app, &digest],
            "reading a stored value",
            tables::NONE,
        )?;
        Ok(found.map(|r| r.get(0)))
    }

    fn unclaimed_data(&mut self, before: Timestamp, max: usize) -> Result<Vec<DataRef>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let app = self.app();
        let rows = self.query(
            "SELECT digest, length FROM pynenc_data WHERE app = $1 AND claimed_us < $2 \
             ORDER BY claimed_us, digest LIMIT $3",
            &[&app, &before.as_micros(), &limit(max)],
            "finding unclaimed values",
            tables::NONE,
        )?;
        rows.iter()
            .map(|r| self.data_ref(r.get(0), r.get(1)))
            .collect()
    }

    fn data_references(&mut self, data: &DataRef) -> Result<Vec<InvocationId>> {
        let app = self.app();
        let digest = data.digest().as_slice();
        self.ids(
            "SELECT invocation_id FROM pynenc_data_refs WHERE app = $1 AND digest = $2 \
             ORDER BY invocation_id",
            &[&app, &digest],
            "reading the references of a value",
            tables::NONE,
        )
    }

    fn forget_data_references(&mut self, data: &DataRef, ids: &[InvocationId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let app = self.app();
        let digest = data.digest().as_slice();
        let ids = id_texts(ids);
        self.exec(
            "DELETE FROM pynenc_data_refs AS d USING UNNEST($3::text[]) AS u(id) \
             WHERE d.app = $1 AND d.digest = $2 AND d.invocation_id = u.id",
            &[&app, &digest, &ids],
            "forgetting references of a value",
            tables::NONE,
        )?;
        Ok(())
    }

    fn delete_data(&mut self, data: &DataRef) -> Result<()> {
        let app = self.app();
        let digest = data.digest().as_slice();
        self.exec(
            DELETE,
            &[&app, &digest],
            "removing a stored value",
            tables::NONE,
        )?;
        Ok(())
    }

    fn data_usage(&mut self) -> Result<DataUsage> {
        let app = self.app();
        let found = self.query_opt(USAGE, &[&app], "measuring the data store", tables::NONE)?;
        let Some(r) = found else {
            return Ok(DataUsage::default());
        };
        let count = |i: usize| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
        Ok(DataUsage {
            values: count(0),
            bytes: count(1),
            references: count(2),
        })
    }
}
