//! The runners' step script, `step.lua`: ends of runs (`finish_many`) and
//! pick-ups (`get_invocations_to_start` / `_to_run`). The script takes any
//! number of each and checks and applies every one on its own; each call
//! here sends one kind. (Combining the ends and the next pick-up of a runner
//! into one step was measured: with one step in flight at a time, a pick-up
//! waits for the ends before it and the other way round, which costs more
//! than the round trips it saves.)

use redis::Value;

use super::script::{as_list, as_string, scripts, Reply};
use super::{bytes, RedisBackend};
use crate::exceptions::{PynencError, Result};
use crate::orchestrator::RunOutcome;
use crate::status::InvocationStatus;

/// The most ends one step writes.
pub(crate) const STEP_ENDS: usize = 256;

impl RedisBackend {
    /// Ends of runs of `runner` (at most [`STEP_ENDS`]) in one step; each
    /// gets its own result.
    pub(crate) async fn step_finish(
        &self,
        runner: &str,
        items: &[(String, RunOutcome)],
    ) -> Vec<Result<InvocationStatus>> {
        let mut args = Vec::with_capacity(2 + items.len() * 4);
        args.push(bytes(items.len().to_string()));
        for (id, outcome) in items {
            let (kind, payload) = match outcome {
                RunOutcome::Success(result) => ("S", result.clone()),
                RunOutcome::Retry(e) => ("R", serde_json::to_string(e).unwrap_or_default()),
                RunOutcome::Failed(e) => ("F", serde_json::to_string(e).unwrap_or_default()),
            };
            args.push(bytes(id.as_str()));
            args.push(bytes(runner));
            args.push(bytes(kind));
            args.push(bytes(payload));
        }
        args.push(bytes("0"));
        let ends = match self.run_step(&args).await {
            Ok((ends, _)) => ends,
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        };
        let ends = as_list(&ends);
        items
            .iter()
            .enumerate()
            .map(|(i, (id, _))| match ends.get(i) {
                // the new status, or {'ERR', failure}
                Some(Value::Array(f)) => {
                    Err(self.script_failure(f.get(1).map(as_list).unwrap_or_default()))
                }
                Some(v) => match as_string(v) {
                    Some(status) => self.parse_status(id, &status),
                    None => Err(self.no_outcome(id)),
                },
                None => Err(self.no_outcome(id)),
            })
            .collect()
    }

    /// One pick-up of at most `max` for `runner` (also `RUNNING` with this
    /// execution context when `start` is given); the script's raw outcome
    /// `{picked, corrupt}`, decoded by the caller.
    pub(crate) async fn step_pick(
        &self,
        runner: &str,
        max: usize,
        start: Option<&str>,
    ) -> Result<Value> {
        let args = [
            bytes("0"),
            bytes("1"),
            bytes(runner),
            bytes(max.to_string()),
            bytes(crate::util::new_invocation_id()),
            bytes(if start.is_some() { "1" } else { "0" }),
            bytes(start.unwrap_or_default()),
        ];
        let (_, picks) = self.run_step(&args).await?;
        match picks {
            Value::Array(mut picks) if !picks.is_empty() => match picks.swap_remove(0) {
                Value::Array(mut item) if !item.is_empty() => {
                    match as_string(&item[0]).as_deref() {
                        Some("OK") => {
                            item.remove(0);
                            Ok(Value::Array(item))
                        }
                        _ => Err(self.script_failure(item.get(1).map(as_list).unwrap_or_default())),
                    }
                }
                _ => Err(self.no_pick_outcome()),
            },
            _ => Err(self.no_pick_outcome()),
        }
    }

    /// Runs `step.lua`; its two parts: the ends' outcomes and the pick-ups'.
    async fn run_step(&self, args: &[Vec<u8>]) -> Result<(Value, Value)> {
        let body = match self.run_script(&scripts().step, args, true).await {
            Err((e, _)) => return Err(e),
            Ok(Reply { body: Err(f), .. }) => return Err(self.script_failure(&f)),
            Ok(Reply { body: Ok(v), .. }) => v,
        };
        Ok(match body {
            Value::Array(mut parts) if parts.len() >= 2 => {
                let picks = parts.pop().unwrap_or(Value::Nil);
                let ends = parts.pop().unwrap_or(Value::Nil);
                (ends, picks)
            }
            _ => (Value::Nil, Value::Nil),
        })
    }

    fn no_outcome(&self, id: &str) -> PynencError {
        PynencError::backend(format!(
            "redis at {}: finish returned no outcome for invocation {id}",
            self.settings.address
        ))
    }

    fn no_pick_outcome(&self) -> PynencError {
        PynencError::backend(format!(
            "redis at {}: a pick-up returned no outcome",
            self.settings.address
        ))
    }
}
