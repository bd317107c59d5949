//! The triggers runners declared (table `triggers`: one JSON record per
//! app and name), listed by every process of the app.

use pynenc_model::TriggerRecord;
use pynenc_store::Result;
use rusqlite::params;

use crate::error::Key;
use crate::txn::SqliteTxn;

impl SqliteTxn<'_> {
    /// Records a declared trigger, replacing the one of the same name.
    pub(crate) fn write_trigger(&mut self, trigger: &TriggerRecord) -> Result<()> {
        let key = Key::Of("trigger", &trigger.name);
        let record = serde_json::to_string(trigger).map_err(|e| {
            self.ctx
                .fail_caused(format!("cannot write trigger {}", trigger.name), e)
        })?;
        self.exec(
            "INSERT INTO triggers (app, name, record) VALUES (?1, ?2, ?3)
             ON CONFLICT (app, name) DO UPDATE SET record = excluded.record",
            "recording a trigger",
            key,
            params![self.app(), trigger.name, record],
        )?;
        Ok(())
    }

    /// The declared triggers of the app, by name.
    pub(crate) fn triggers(&mut self) -> Result<Vec<TriggerRecord>> {
        let op = "listing triggers";
        let mut stmt = self.stmt(
            "SELECT name, record FROM triggers WHERE app = ?1 ORDER BY name",
            op,
            Key::None,
        )?;
        let rows = stmt
            .query_map(params![self.app()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.ctx.err(e, op, Key::None))?;
        let mut found = Vec::new();
        for row in rows {
            found.push(row.map_err(|e| self.ctx.err(e, op, Key::None))?);
        }
        drop(stmt);
        found
            .into_iter()
            .map(|(name, record)| {
                serde_json::from_str(&record).map_err(|e| {
                    self.ctx
                        .fail_caused(format!("trigger {name}: its stored record"), e)
                })
            })
            .collect()
    }
}
