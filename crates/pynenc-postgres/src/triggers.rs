//! The triggers runners declared (table `pynenc_triggers`: one JSON record
//! per app and name), listed by every process of the app.

use pynenc_model::TriggerRecord;
use pynenc_store::Result;

use crate::txn::{tables, PgTxn};

impl PgTxn<'_> {
    /// Records a declared trigger, replacing the one of the same name.
    pub(crate) fn write_trigger(&mut self, trigger: &TriggerRecord) -> Result<()> {
        let record = serde_json::to_string(trigger).map_err(|e| {
            self.ctx
                .fail(format!("cannot write trigger {}: {e}", trigger.name))
        })?;
        let app = self.app();
        self.exec(
            "INSERT INTO pynenc_triggers (app, name, record) VALUES ($1, $2, $3) \
             ON CONFLICT (app, name) DO UPDATE SET record = excluded.record",
            &[&app, &trigger.name, &record],
            "recording a trigger",
            tables::NONE,
        )?;
        Ok(())
    }

    /// The declared triggers of the app, by name.
    pub(crate) fn triggers(&mut self) -> Result<Vec<TriggerRecord>> {
        let app = self.app();
        let rows = self.query(
            "SELECT name, record FROM pynenc_triggers WHERE app = $1 ORDER BY name",
            &[&app],
            "listing triggers",
            tables::NONE,
        )?;
        rows.iter()
            .map(|r| {
                let name: String = r.get(0);
                serde_json::from_str(r.get(1)).map_err(|e| {
                    self.ctx.fail(format!(
                        "trigger {name}: its stored record cannot be read: {e}"
                    ))
                })
            })
            .collect()
    }
}
