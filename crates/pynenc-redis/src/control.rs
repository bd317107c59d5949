//! What operators do on a Redis app: cancel (`cancel.lua`), delete final
//! invocations and the auto purge by retention (`purge.lua`), and the
//! cancel requests a runner reads (`query.lua`).

use pynenc_model::{CancelOutcome, InvocationId, RunnerId};
use pynenc_store::{engine, Result, Retention};
use tracing::{debug, warn};

use crate::backend::{bytes, micros, RedisBackend};
use crate::script::{as_int, as_list, as_string, scripts};
use crate::step::error_json;

impl RedisBackend {
    /// Cancels an invocation in one script call (see `cancel.lua` and
    /// [`pynenc_store::engine::cancel`]).
    pub(crate) async fn cancel_one(
        &self,
        id: &InvocationId,
        actor: &RunnerId,
    ) -> Result<CancelOutcome> {
        let args = [
            bytes(id.as_str()),
            bytes(actor.as_str()),
            bytes(error_json(&engine::cancelled_error(actor))),
        ];
        let v = self.script(&scripts().cancel, &args).await?;
        let parts = as_list(&v);
        let field = |i: usize| parts.get(i).and_then(as_string);
        let outcome = match field(0).as_deref() {
            Some("C") => CancelOutcome::Cancelled,
            Some("R") => CancelOutcome::Requested {
                owner: field(1)
                    .map(RunnerId::from)
                    .ok_or_else(|| self.bad_reply("cancel: a request without its owner"))?,
            },
            Some("F") => CancelOutcome::AlreadyFinal {
                status: self.parse_status(id, &field(1).unwrap_or_default())?,
            },
            _ => return Err(self.bad_reply("cancel: unexpected outcome shape")),
        };
        debug!(invocation_id = %id, actor = %actor, ?outcome, "cancel");
        Ok(outcome)
    }

    /// The invocations `runner` was asked to stop and still owns.
    pub(crate) async fn cancel_requests_of(&self, runner: &RunnerId) -> Result<Vec<InvocationId>> {
        let v = self
            .script(
                &scripts().query,
                &[bytes("cancels"), bytes(runner.as_str())],
            )
            .await?;
        let mut ids = self.ids_of(&v, "a cancel request");
        ids.sort();
        Ok(ids)
    }

    /// Deletes those of `ids` that are final, [`engine::PURGE_BATCH`] per
    /// script call; returns how many were deleted.
    pub(crate) async fn delete_final_ids(&self, ids: &[InvocationId]) -> Result<usize> {
        let mut deleted = 0;
        for chunk in ids.chunks(engine::PURGE_BATCH) {
            let mut args = Vec::with_capacity(chunk.len() + 1);
            args.push(bytes("ids"));
            args.extend(chunk.iter().map(|id| bytes(id.as_str())));
            let v = self.script(&scripts().purge, &args).await?;
            deleted += count(&v);
        }
        Ok(deleted)
    }

    /// The auto purge by `retention`: sections of at most
    /// [`engine::PURGE_BATCH`] (one script call each, see `purge.lua`)
    /// until one deletes fewer.
    pub(crate) async fn purge_retention(&self, retention: &Retention) -> Result<usize> {
        let retention = *retention;
        let deleted = engine::purge_in_batches(|max| async move {
            let args = [
                bytes("retention"),
                bytes(micros(retention.success)),
                bytes(micros(retention.failed)),
                bytes(micros(retention.cancelled)),
                retention
                    .max_final
                    .map(|m| bytes(m.to_string()))
                    .unwrap_or_default(),
                bytes(max.to_string()),
            ];
            let v = self.script(&scripts().purge, &args).await?;
            Ok(count(&v))
        })
        .await?;
        debug!(deleted, "auto purge by retention");
        Ok(deleted)
    }

    /// The ids of a list reply; one that cannot be read is logged and left
    /// out (`what` names what the list holds).
    pub(crate) fn ids_of(&self, v: &redis::Value, what: &str) -> Vec<InvocationId> {
        as_list(v)
            .iter()
            .filter_map(as_string)
            .filter_map(|id| match InvocationId::parse(&id) {
                Ok(id) => Some(id),
                Err(e) => {
                    warn!(redis = %self.address(), error = %e, "{what} names an invocation whose id cannot be read");
                    None
                }
            })
            .collect()
    }
}

/// A count returned by a script (never negative).
fn count(v: &redis::Value) -> usize {
    usize::try_from(as_int(v).unwrap_or(0)).unwrap_or(0)
}
