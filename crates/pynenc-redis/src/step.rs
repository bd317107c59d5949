//! The runners' step script, `step.lua`: ends of runs, the pauses and
//! resumes of the runner's waiting invocations, and pick-ups. The script
//! takes any number of each and checks and applies every one on its own. A
//! runner sends the ends it gathered together with the resumes of the
//! invocations it hands their slots to and one pick-up for the other slots
//! those ends free (`runner_step`), so a busy runner makes one step per
//! batch; a pick-up alone serves slots that were free, and ends alone a
//! stopping runner.

use std::sync::atomic::Ordering;

use redis::Value;

use pynenc_model::{InvocationId, RunOutcome, RunnerId, TaskError};
use pynenc_store::{EndOutcome, Result, RunEnd, StepReport, StoreError, WaitChange, WaitOutcome};

use crate::backend::{bytes, RedisBackend};
use crate::client::Lane;
use crate::script::{as_list, as_string, scripts, Reply};

/// A task error as the scripts store it (a `TaskError` always serializes).
pub(crate) fn error_json(e: &TaskError) -> String {
    serde_json::to_string(e).unwrap_or_default()
}

/// The most ends one step writes.
pub(crate) const STEP_ENDS: usize = 256;

/// The most invocations one pick-up claims.
pub(crate) const MAX_PICK: usize = 10_000;

/// A pick-up in a step: at most `max`, for `runner`; `start`: also
/// `RUNNING` with this execution context.
pub(crate) struct PickUp<'a> {
    pub max: usize,
    pub start: Option<&'a str>,
}

impl<'a> PickUp<'a> {
    /// A pick-up of up to `max` invocations (at most [`MAX_PICK`]).
    pub(crate) fn new(max: usize, start: Option<&'a str>) -> Self {
        PickUp {
            max: max.min(MAX_PICK),
            start,
        }
    }
}

/// What one step did: the outcome of each end and each wait change, in
/// order, and the raw outcome of its pick-up (`{picked, corrupt}`), if it
/// had one.
pub(crate) struct StepReply {
    pub ends: Vec<EndOutcome>,
    pub waits: Vec<Result<WaitOutcome>>,
    pub pick: Option<Result<Value>>,
}

impl RedisBackend {
    /// One step of `runner`: the ends of runs `items` (at most
    /// [`STEP_ENDS`]), then the wait changes `waits`, each with its own
    /// outcome, then the pick-up, if any, whose raw outcome the caller
    /// decodes.
    pub(crate) async fn step(
        &self,
        runner: &RunnerId,
        items: &[RunEnd],
        waits: &[WaitChange],
        pick: Option<PickUp<'_>>,
    ) -> StepReply {
        let mut args = Vec::with_capacity(8 + items.len() * 4 + waits.len() * 4);
        // the runner once: every end and the pick-up are its own
        args.push(bytes(runner.as_str()));
        args.push(bytes(items.len().to_string()));
        for end in items {
            // a failure carries its error kind (counted per kind, `fk:{task}`)
            let (kind, payload) = match &end.outcome {
                RunOutcome::Success(result) => ("S".to_string(), result.clone()),
                RunOutcome::Retry(e) => ("R".to_string(), error_json(e)),
                RunOutcome::Failed(e) => (format!("F{}", e.kind), error_json(e)),
                RunOutcome::Cancelled(e) => ("C".to_string(), error_json(e)),
            };
            args.push(bytes(end.invocation_id.as_str()));
            // '+': its record has rarer fields, read with the others
            if self.rare_ends.take(&end.invocation_id) {
                args.push(bytes(format!("+{kind}")));
            } else {
                args.push(bytes(kind));
            }
            args.push(bytes(payload));
            args.push(bytes(
                end.ran_for
                    .map(|d| d.as_micros().to_string())
                    .unwrap_or_default(),
            ));
        }
        args.push(bytes(waits.len().to_string()));
        for change in waits {
            let (kind, waiter, waited) = match change {
                WaitChange::Pause {
                    waiter,
                    waited,
                    take_next,
                } => (if *take_next { "N" } else { "P" }, waiter, waited),
                WaitChange::Resume { waiter, waited } => ("R", waiter, waited),
            };
            args.push(bytes(kind));
            args.push(bytes(waiter.as_str()));
            args.push(bytes(waited.len().to_string()));
            args.extend(waited.iter().map(|id| bytes(id.as_str())));
        }
        match &pick {
            None => args.push(bytes("0")),
            Some(p) => {
                args.push(bytes("1"));
                args.push(bytes(p.max.to_string()));
                // its slot among the runner's latest pick-ups (the count
                // of this backend's pick-ups), then what makes it unique
                let count = self.picks.fetch_add(1, Ordering::Relaxed);
                args.push(bytes(format!("{count}.{}", self.instance)));
                args.push(bytes(if p.start.is_some() { "1" } else { "0" }));
                args.push(bytes(p.start.unwrap_or_default()));
            }
        }
        let (ends, picks, wait_list) = match self.run_step(&args).await {
            Ok(parts) => parts,
            Err(e) => {
                let failed = StepReport::failed_with_waits(items.len(), waits.len(), e.clone());
                return StepReply {
                    ends: failed.ends,
                    waits: failed.waits,
                    pick: pick.map(|_| Err(e)),
                };
            }
        };
        let ends_list = as_list(&ends);
        let ends = items
            .iter()
            .enumerate()
            .map(|(i, end)| {
                let status = match ends_list.get(i) {
                    // the new status, or {'ERR', failure}
                    Some(Value::Array(f)) => {
                        Err(self.script_failure(f.get(1).map(as_list).unwrap_or_default()))
                    }
                    Some(v) => match as_string(v) {
                        Some(status) => self.parse_status(&end.invocation_id, &status),
                        None => Err(self.no_outcome(&end.invocation_id)),
                    },
                    None => Err(self.no_outcome(&end.invocation_id)),
                };
                match status {
                    Ok(status) => EndOutcome::Recorded(status),
                    Err(e) => EndOutcome::NotRecorded(e),
                }
            })
            .collect();
        let wait_list = as_list(&wait_list);
        let waits = waits
            .iter()
            .enumerate()
            .map(|(i, change)| self.wait_outcome(change, wait_list.get(i)))
            .collect();
        StepReply {
            ends,
            waits,
            pick: pick.map(|_| self.pick_outcome(picks)),
        }
    }

    /// The outcome of one wait change: `{'OK', open}` for a pause,
    /// `{'OK', {{status, result, error}...}}` for a resume, or
    /// `{'ERR', failure}`.
    fn wait_outcome(&self, change: &WaitChange, reply: Option<&Value>) -> Result<WaitOutcome> {
        let parts = reply.map(as_list).unwrap_or_default();
        let ok = parts.first().and_then(as_string).as_deref() == Some("OK");
        let Some(body) = parts.get(1) else {
            return Err(self.bad_reply(format!(
                "a step returned no outcome for the wait of invocation {}",
                change.waiter()
            )));
        };
        if !ok {
            return Err(self.script_failure(as_list(body)));
        }
        match change {
            WaitChange::Pause { .. } => match body {
                Value::Int(open) => Ok(WaitOutcome::Paused(*open > 0)),
                _ => Err(self.bad_reply("a pause in a step returned no count")),
            },
            WaitChange::Resume { waited, .. } => self
                .decode_outcome_rows(waited, as_list(body), "a resume in a step")
                .map(WaitOutcome::Resumed),
        }
    }

    /// The outcome of the one pick-up of a step.
    fn pick_outcome(&self, picks: Value) -> Result<Value> {
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

    /// Runs `step.lua`; its three parts: the ends' outcomes, the pick-ups'
    /// and the wait changes'.
    async fn run_step(&self, args: &[Vec<u8>]) -> Result<(Value, Value, Value)> {
        let body = match self
            .run_script(&scripts().step, args, true, Lane::Any)
            .await
        {
            Err((e, _)) => return Err(e),
            Ok(Reply { body: Err(f), .. }) => return Err(self.script_failure(&f)),
            Ok(Reply { body: Ok(v), .. }) => v,
        };
        Ok(match body {
            Value::Array(parts) => {
                let mut parts = parts.into_iter();
                let ends = parts.next().unwrap_or(Value::Nil);
                let picks = parts.next().unwrap_or(Value::Nil);
                let waits = parts.next().unwrap_or(Value::Nil);
                (ends, picks, waits)
            }
            _ => (Value::Nil, Value::Nil, Value::Nil),
        })
    }

    fn no_outcome(&self, id: &InvocationId) -> StoreError {
        self.bad_reply(format!("finish returned no outcome for invocation {id}"))
    }

    fn no_pick_outcome(&self) -> StoreError {
        self.bad_reply("a pick-up returned no outcome")
    }
}
