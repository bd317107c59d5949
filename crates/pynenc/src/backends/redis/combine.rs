//! The runners' step script: ends of runs (`finish_many`) and pick-ups
//! (`get_invocations_to_start` / `_to_run`) share one script, `step.lua`,
//! which takes any number of each; every end and every pick-up is checked
//! and applied on its own and gets its own outcome.
//!
//! Each call sends its own step at once. (Combining the ends and the next
//! pick-up of a runner into one step was measured: with one step in flight
//! at a time, a pick-up waits for the ends before it and the other way
//! round, which costs more than the round trips it saves.)

use redis::Value;
use tokio::sync::oneshot;

use super::script::{as_list, as_string, scripts, Reply};
use super::{bytes, RedisBackend};
use crate::exceptions::{PynencError, Result};
use crate::orchestrator::RunOutcome;
use crate::status::InvocationStatus;

/// The most ends one step writes.
pub(crate) const STEP_ENDS: usize = 256;

/// An operation of a step.
pub(crate) enum Op {
    /// Ends of runs of one runner (at most [`STEP_ENDS`]).
    Finish {
        runner: String,
        items: Vec<(String, RunOutcome)>,
        reply: oneshot::Sender<Vec<Result<InvocationStatus>>>,
    },
    /// A pick-up; the reply is the script's raw outcome `{picked, corrupt}`,
    /// decoded by the caller.
    Pick {
        runner: String,
        max: usize,
        start: Option<String>,
        reply: oneshot::Sender<Result<Value>>,
    },
}

impl RedisBackend {
    /// Runs one step and answers each operation.
    pub(crate) async fn run_step(&self, ops: Vec<Op>) {
        let mut ends = Vec::new();
        let mut picks = Vec::new();
        for op in ops {
            match op {
                Op::Finish { .. } => ends.push(op),
                Op::Pick { .. } => picks.push(op),
            }
        }
        let n_ends: usize = ends
            .iter()
            .map(|op| match op {
                Op::Finish { items, .. } => items.len(),
                Op::Pick { .. } => 0,
            })
            .sum();
        let mut args = Vec::with_capacity(2 + n_ends * 4 + picks.len() * 5);
        args.push(bytes(n_ends.to_string()));
        for op in &ends {
            if let Op::Finish { runner, items, .. } = op {
                for (id, outcome) in items {
                    let (kind, payload) = match outcome {
                        RunOutcome::Success(result) => ("S", result.clone()),
                        RunOutcome::Retry(e) => ("R", serde_json::to_string(e).unwrap_or_default()),
                        RunOutcome::Failed(e) => {
                            ("F", serde_json::to_string(e).unwrap_or_default())
                        }
                    };
                    args.push(bytes(id.as_str()));
                    args.push(bytes(runner.as_str()));
                    args.push(bytes(kind));
                    args.push(bytes(payload));
                }
            }
        }
        args.push(bytes(picks.len().to_string()));
        for op in &picks {
            if let Op::Pick {
                runner, max, start, ..
            } = op
            {
                args.push(bytes(runner.as_str()));
                args.push(bytes(max.to_string()));
                args.push(bytes(crate::util::new_invocation_id()));
                args.push(bytes(if start.is_some() { "1" } else { "0" }));
                args.push(bytes(start.clone().unwrap_or_default()));
            }
        }
        let body = match self.run_script(&scripts().step, &args, true).await {
            Err((e, _)) => Err(e),
            Ok(Reply { body: Err(f), .. }) => Err(self.script_failure(&f)),
            Ok(Reply { body: Ok(v), .. }) => Ok(v),
        };
        drop(args);
        let body = match body {
            Ok(v) => v,
            Err(e) => {
                for op in ends.into_iter().chain(picks) {
                    match op {
                        Op::Finish { items, reply, .. } => {
                            let _ = reply.send(items.iter().map(|_| Err(e.clone())).collect());
                        }
                        Op::Pick { reply, .. } => {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
                return;
            }
        };
        let (end_outcomes, pick_outcomes) = match body {
            Value::Array(mut parts) if parts.len() >= 2 => {
                let picks = parts.pop().unwrap_or(Value::Nil);
                let ends = parts.pop().unwrap_or(Value::Nil);
                (ends, picks)
            }
            _ => (Value::Nil, Value::Nil),
        };
        let end_outcomes = as_list(&end_outcomes);
        let mut pick_outcomes = match pick_outcomes {
            Value::Array(v) => v.into_iter(),
            _ => Vec::new().into_iter(),
        };
        let mut next = 0;
        for op in ends {
            if let Op::Finish { items, reply, .. } = op {
                let results = items
                    .iter()
                    .map(|(id, _)| {
                        // the new status, or {'ERR', failure}
                        let item = end_outcomes.get(next);
                        next += 1;
                        match item {
                            Some(Value::Array(f)) => {
                                Err(self.script_failure(f.get(1).map(as_list).unwrap_or_default()))
                            }
                            Some(v) => match as_string(v) {
                                Some(status) => self.parse_status(id, &status),
                                None => Err(no_outcome(self, id)),
                            },
                            None => Err(no_outcome(self, id)),
                        }
                    })
                    .collect();
                let _ = reply.send(results);
            }
        }
        for op in picks {
            if let Op::Pick { reply, .. } = op {
                let res =
                    match pick_outcomes.next() {
                        Some(Value::Array(mut item)) if !item.is_empty() => {
                            match as_string(&item[0]).as_deref() {
                                Some("OK") => {
                                    item.remove(0);
                                    Ok(Value::Array(item))
                                }
                                _ => Err(self
                                    .script_failure(item.get(1).map(as_list).unwrap_or_default())),
                            }
                        }
                        _ => Err(PynencError::backend(format!(
                            "redis at {}: a pick-up returned no outcome",
                            self.settings.address
                        ))),
                    };
                let _ = reply.send(res);
            }
        }
    }
}

fn no_outcome(b: &RedisBackend, id: &str) -> PynencError {
    PynencError::backend(format!(
        "redis at {}: finish returned no outcome for invocation {id}",
        b.settings.address
    ))
}

/// The error of an operation whose step was dropped unanswered.
pub(crate) fn unanswered(what: &str) -> PynencError {
    PynencError::backend(format!(
        "redis: the step carrying {what} ended without an answer"
    ))
}
