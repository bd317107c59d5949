//! The orchestrator of a Redis app: every step one script call.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pynenc_model::{
    Call, CallId, CancelOutcome, InvocationId, InvocationOutcome, InvocationRecord,
    InvocationStatus, ReuseRecord, RouteOutcome, RouteRequest, RunOutcome, RunnerId,
    SerializationError, StatusRecord,
};
use pynenc_store::engine;
use pynenc_store::{
    EndOutcome, Orchestrator, Result, Retention, RunEnd, StepReport, StoreError, WaitChange,
    WaitOutcome,
};
use redis::Value;
use tracing::warn;

use crate::backend::{bytes, micros, opt_bytes, RedisBackend};
use crate::client::Lane;
use crate::decode::scope_field;
use crate::script::{as_int, as_list, as_string, scripts};
use crate::step::{error_json, PickUp, STEP_ENDS};

/// Invocations per `waiting_for_results` script.
const WAIT_CHUNK: usize = 1000;

impl RedisBackend {
    /// Pick-up; `start`: also `RUNNING` with this execution context (one
    /// `step` script, see `step.rs`).
    async fn pick(
        &self,
        runner_id: &RunnerId,
        max: usize,
        start: Option<&str>,
    ) -> Result<Vec<Arc<InvocationRecord>>> {
        // one step claims at most MAX_PICK: more are asked for in further
        // steps while each takes all it asks for, so that fewer than `max`
        // means the queue had no more (runners rely on it)
        let mut picked = Vec::new();
        while picked.len() < max {
            let pick = PickUp::new(max - picked.len(), start);
            let asked = pick.max;
            let body = self.step(runner_id, &[], &[], Some(pick)).await.pick;
            let got = match body {
                Some(Ok(body)) => self.decode_pick(runner_id, body, start.is_some()).await,
                Some(Err(e)) => Err(e),
                None => Err(self.bad_reply("a pick-up returned nothing")),
            };
            let got = match got {
                Ok(got) => got,
                Err(e) if picked.is_empty() => return Err(e),
                // what the earlier steps claimed is this runner's already
                Err(e) => {
                    warn!(runner_id = %runner_id, picked = picked.len(), error = %e, "a further pick-up failed; running what was picked");
                    break;
                }
            };
            let short = got.len() < asked;
            picked.extend(got);
            if short {
                break;
            }
        }
        Ok(picked)
    }

    /// The error of a `CYCLE` failure of routing: `{'CYCLE', request index,
    /// n, n calls of the caller and its ancestors, the cycle's call ids}`.
    /// The request names the callee, the ancestors' calls the others.
    fn cycle_failure(&self, requests: &[RouteRequest], f: &[Value]) -> StoreError {
        let int = |i: usize| {
            f.get(i)
                .and_then(as_int)
                .and_then(|n| usize::try_from(n).ok())
        };
        let (Some(idx), Some(n)) = (int(1), int(2)) else {
            return self.bad_reply("route: a cycle failure without its request");
        };
        let Some(req) = requests.get(idx) else {
            return self.bad_reply("route: a cycle failure on an unknown request");
        };
        let rest = f.get(3..).unwrap_or_default();
        let (calls, call_ids) = rest.split_at(n.min(rest.len()));
        // the ancestors' calls only name the calls: one that cannot be read is left out
        let ancestor_calls: Vec<Call> = calls
            .iter()
            .filter_map(as_string)
            .filter_map(|json| serde_json::from_str(&json).ok())
            .collect();
        let call_ids = call_ids
            .iter()
            .filter_map(as_string)
            .map(CallId::from)
            .collect();
        StoreError::Cycle(engine::cycle_error(
            call_ids,
            &req.call,
            &ancestor_calls,
            req.print_arguments,
            self.serializer,
        ))
    }

    /// One route step for `requests` (see [`crate::coalesce`]).
    pub(crate) async fn route_step(
        &self,
        requests: Vec<RouteRequest>,
    ) -> Result<Vec<RouteOutcome>> {
        let ids = new_ids(&requests);
        self.route_with_ids(requests, ids).await
    }

    /// Routes `requests` with the invocation ids `ids`, then records the
    /// reuses it made (see [`RedisBackend::note_reuses`]).
    pub(crate) async fn route_with_ids(
        &self,
        requests: Vec<RouteRequest>,
        ids: Vec<InvocationId>,
    ) -> Result<Vec<RouteOutcome>> {
        let body = self.route_reply(&requests, &ids).await?;
        let (outcomes, reuses) = self.route_outcomes(requests, ids, &body)?;
        self.note_reuses(&reuses).await;
        Ok(outcomes)
    }

    /// Records the reuses of a route step in a step of their own (the
    /// argument differences are worked out here, after the route script):
    /// a failure is logged, the routing stands.
    async fn note_reuses(&self, reuses: &[NotedReuse]) {
        if reuses.is_empty() {
            return;
        }
        let mut args = Vec::with_capacity(2 + reuses.len() * 2);
        args.push(bytes("reuse"));
        args.push(bytes(reuses.len().to_string()));
        for (id, reuse) in reuses {
            args.push(bytes(id.as_str()));
            args.push(bytes(reuse.to_text()));
        }
        if let Err(e) = self.script(&scripts().small, &args).await {
            warn!(redis = %self.address(), error = %e, reuses = reuses.len(),
                "could not record the reuses of routed calls");
        }
    }

    /// Runs the route script for `requests` with the invocation ids `ids`;
    /// its reply, or the failure it names (nothing was routed then).
    pub(crate) async fn route_reply(
        &self,
        requests: &[RouteRequest],
        ids: &[InvocationId],
    ) -> Result<Value> {
        let mut args = Vec::with_capacity(1 + requests.len() * 4);
        args.push(bytes(requests.len().to_string()));
        for (req, id) in requests.iter().zip(ids) {
            self.route_args(req, id, &mut args)?;
        }
        let reply = self
            .run_script(&scripts().route, &args, true, Lane::Routes)
            .await
            .map_err(|(e, _)| e)?;
        drop(args);
        match reply.body {
            Ok(v) => Ok(v),
            Err(f) => match f.first().and_then(as_string).as_deref() {
                Some("REG_CONFLICT") => {
                    let req = f
                        .get(1)
                        .and_then(as_int)
                        .and_then(|i| usize::try_from(i).ok())
                        .and_then(|i| requests.get(i))
                        .ok_or_else(|| self.bad_reply("route: conflict on an unknown request"))?;
                    let record = self.decode_record(f.get(2..).unwrap_or_default())?;
                    let diff = req
                        .registration_diff(&record, false, self.serializer)
                        .unwrap_or_default();
                    Err(StoreError::registration_conflict(
                        req,
                        &record.invocation_id,
                        req.call.call_id(),
                        diff,
                    ))
                }
                Some("CYCLE") => Err(self.cycle_failure(requests, &f)),
                _ => Err(self.script_failure(&f)),
            },
        }
    }

    /// The outcomes of a route script's reply `body`, one per request, and
    /// the reuses by registration concurrency among them.
    fn route_outcomes(
        &self,
        requests: Vec<RouteRequest>,
        ids: Vec<InvocationId>,
        body: &Value,
    ) -> Result<(Vec<RouteOutcome>, Vec<NotedReuse>)> {
        let items = as_list(body);
        let now = items.first().and_then(as_int);
        let outcomes = items.get(1..).unwrap_or_default();
        if outcomes.len() != requests.len() {
            return Err(self.bad_reply(format!(
                "route returned {} outcomes for {} calls",
                outcomes.len(),
                requests.len()
            )));
        }
        let mut out = Vec::with_capacity(requests.len());
        let mut reuses = Vec::new();
        let at = now.map_or_else(
            pynenc_model::Timestamp::now,
            pynenc_model::Timestamp::from_micros,
        );
        for ((req, id), o) in requests.into_iter().zip(ids).zip(outcomes) {
            // a new invocation is 'N' (created now), or {'N', id, created} after a replay
            let (kind, o) = match o {
                Value::Array(_) => (as_list(o).first().and_then(as_string), as_list(o)),
                other => (as_string(other), &[][..]),
            };
            match kind.as_deref() {
                Some("N") => {
                    let created = if o.is_empty() {
                        now
                    } else {
                        o.get(2).and_then(as_int)
                    }
                    .ok_or_else(|| {
                        self.bad_reply("route: a new invocation without creation time")
                    })?;
                    out.push(RouteOutcome::New(Arc::new(InvocationRecord {
                        invocation_id: id,
                        call: req.call,
                        parent_invocation_id: req.parent_invocation_id,
                        created_at: pynenc_model::Timestamp::from_micros(created),
                        scheduled_at: req.scheduled_at,
                        concurrency: req.concurrency,
                        rerun_of: req.rerun_of,
                    })));
                }
                Some("R") => {
                    let same = o.get(1).and_then(as_int) == Some(1);
                    let record = self.decode_record(o.get(2..).unwrap_or_default())?;
                    let diff = req.registration_diff(&record, same, self.serializer);
                    // a caller-chosen id routed again is not a reuse
                    if req.invocation_id != Some(record.invocation_id) {
                        reuses.push((
                            record.invocation_id,
                            ReuseRecord::new(
                                at,
                                req.parent_invocation_id,
                                &record.call.arguments,
                                &req.call.arguments,
                            ),
                        ));
                    }
                    out.push(RouteOutcome::Reused {
                        record: Arc::new(record),
                        diff,
                    });
                }
                _ => return Err(self.bad_reply("route: unexpected outcome shape")),
            }
        }
        Ok((out, reuses))
    }

    /// The arguments of one request of `route.lua` (see its header).
    fn route_args(
        &self,
        req: &RouteRequest,
        id: &InvocationId,
        args: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        let call_json = serde_json::to_string(&req.call).map_err(|e| {
            SerializationError::serialize(format_args!("call of task {}", req.call.task_id), e)
        })?;
        let c = &req.concurrency;
        args.push(bytes(id.as_str()));
        args.push(call_json.into_bytes());
        let flag = |b: bool| if b { '1' } else { '0' };
        let mut flags: String = [
            flag(c.on_diff_non_key_args_raise),
            flag(c.reroute_on_concurrency_control),
            flag(req.cycle_control),
        ]
        .iter()
        .collect();
        // the call id (`task#hash`) cut to 16 hex digits of the hash: the
        // task and the key of listings by call (field `tc`); cycle control
        // and registration concurrency compare whole call ids
        let call_id = req.call.call_id();
        let task_len = req.call.task_id.as_str().len();
        let id_text = call_id.as_str();
        let tc = id_text.get(..task_len + 17).unwrap_or(id_text);
        // the rest only when there is one (see route.lua)
        let plain = req.parent_invocation_id.is_none()
            && req.parent_call_id.is_none()
            && c.registration_key.is_none()
            && c.running_key.is_none()
            && req.scheduled_at.is_none()
            && req.actor.is_empty()
            && req.rerun_of.is_none()
            && req.invocation_id.is_none();
        if !plain {
            flags.push('+');
            if req.invocation_id.is_some() {
                // the caller chose the id: routed again, it is reused
                flags.push('k');
            }
        }
        args.push(flags.into_bytes());
        args.push(tc.as_bytes().to_vec());
        if plain {
            return Ok(());
        }
        args.push(bytes(id_text));
        args.push(opt_bytes(
            req.parent_invocation_id.as_ref().map(InvocationId::as_str),
        ));
        args.push(opt_bytes(req.parent_call_id.as_deref()));
        args.push(opt_bytes(c.registration_key.as_deref()));
        args.push(opt_bytes(c.running_key.as_deref()));
        args.push(
            req.scheduled_at
                .map(|t| bytes(t.as_micros().to_string()))
                .unwrap_or_default(),
        );
        args.push(bytes(req.actor.as_str()));
        args.push(if c.registration_key.is_some() {
            bytes(scope_field(c.registration_scope))
        } else {
            Vec::new()
        });
        args.push(opt_bytes(req.rerun_of.as_ref().map(InvocationId::as_str)));
        Ok(())
    }
}

impl RedisBackend {
    /// One wait step (`wait.lua`): `waiter` waits for `waited`, and is
    /// paused by `pause_by` when given; how many of `waited` are not final.
    async fn wait_step(
        &self,
        waiter: Option<&InvocationId>,
        pause_by: Option<&RunnerId>,
        waited: &[InvocationId],
    ) -> Result<usize> {
        let mut args = Vec::with_capacity(waited.len() + 2);
        args.push(opt_bytes(waiter.map(InvocationId::as_str)));
        args.push(opt_bytes(pause_by.map(RunnerId::as_str)));
        args.extend(waited.iter().map(|id| bytes(id.as_str())));
        let v = self.script(&scripts().wait, &args).await?;
        Ok(usize::try_from(as_int(&v).unwrap_or(0)).unwrap_or(0))
    }
}

/// The invocation ids for `requests`: the one a caller chose, or a fresh
/// one, in creation order (the calls of one step sort in call order in the
/// `blocking` index).
pub(crate) fn new_ids(requests: &[RouteRequest]) -> Vec<InvocationId> {
    requests
        .iter()
        .map(|req| req.invocation_id.unwrap_or_else(InvocationId::time_ordered))
        .collect()
}

/// A reuse to record: the invocation reused, and the call that reused it.
type NotedReuse = (InvocationId, ReuseRecord);

#[async_trait]
impl Orchestrator for RedisBackend {
    async fn route_calls(&self, requests: Vec<RouteRequest>) -> Result<Vec<RouteOutcome>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        self.coalescer.route(self, requests).await
    }

    async fn get_invocations_to_run(
        &self,
        runner_id: &RunnerId,
        max: usize,
    ) -> Result<Vec<Arc<InvocationRecord>>> {
        self.pick(runner_id, max, None).await
    }

    async fn get_invocations_to_start(
        &self,
        runner_id: &RunnerId,
        max: usize,
        execution_context: Option<&str>,
    ) -> Result<Vec<Arc<InvocationRecord>>> {
        self.pick(runner_id, max, Some(execution_context.unwrap_or_default()))
            .await
    }

    async fn set_status(
        &self,
        id: &InvocationId,
        status: InvocationStatus,
        actor: &RunnerId,
        execution_context: Option<&str>,
    ) -> Result<StatusRecord> {
        let args = [
            bytes(id.as_str()),
            bytes(status.as_str()),
            bytes(actor.as_str()),
            opt_bytes(execution_context),
        ];
        let v = self.script(&scripts().set_status, &args).await?;
        let parts = as_list(&v);
        let st = parts.first().and_then(as_string).unwrap_or_default();
        Ok(StatusRecord {
            status: self.parse_status(id, &st)?,
            owner: parts.get(1).and_then(as_string).map(RunnerId::from),
        })
    }

    async fn finish(
        &self,
        id: &InvocationId,
        runner_id: &RunnerId,
        outcome: RunOutcome,
    ) -> Result<InvocationStatus> {
        let end = RunEnd::new(*id, outcome);
        let report = self
            .finish_many_and_start(runner_id, vec![end], 0, None)
            .await;
        report
            .ends
            .into_iter()
            .next()
            .map(EndOutcome::into_result)
            .unwrap_or_else(|| Err(self.bad_reply("the end of a run got no outcome")))
    }

    async fn runner_step(
        &self,
        runner_id: &RunnerId,
        ends: Vec<RunEnd>,
        waits: Vec<WaitChange>,
        max_next: usize,
        execution_context: Option<&str>,
    ) -> StepReport {
        if ends.is_empty() && waits.is_empty() && max_next == 0 {
            return StepReport::default();
        }
        // one `step` script per STEP_ENDS ends (at least one), the last with
        // the wait changes and the pick-up (see `step.rs`); a pause on more
        // invocations than one step records goes in chunks of its own, after
        let big = |w: &WaitChange| matches!(w, WaitChange::Pause { waited, .. } if waited.len() > WAIT_CHUNK);
        let (in_step, apart): (Vec<_>, Vec<_>) =
            waits.into_iter().enumerate().partition(|(_, w)| !big(w));
        let mut outcomes = Vec::with_capacity(ends.len());
        let mut chunks: Vec<&[RunEnd]> = ends.chunks(STEP_ENDS).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let step_waits: Vec<WaitChange> = in_step.iter().map(|(_, w)| w.clone()).collect();
        let mut wait_outcomes: Vec<(usize, Result<WaitOutcome>)> = Vec::new();
        let mut picked = None;
        for (i, items) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            // a pause that takes the next invocation for its slot needs the
            // pick-up, whose size the script grows
            let pauses_take = step_waits.iter().any(|w| {
                matches!(
                    w,
                    WaitChange::Pause {
                        take_next: true,
                        ..
                    }
                )
            });
            let pick = (last && (max_next > 0 || pauses_take))
                .then(|| PickUp::new(max_next, Some(execution_context.unwrap_or_default())));
            let waits: &[WaitChange] = if last { &step_waits } else { &[] };
            let reply = self.step(runner_id, items, waits, pick).await;
            outcomes.extend(reply.ends);
            if last {
                wait_outcomes.extend(in_step.iter().map(|(i, _)| *i).zip(reply.waits));
            }
            picked = reply.pick;
        }
        for (i, change) in apart {
            if let WaitChange::Pause { waiter, waited, .. } = change {
                // (the slot it frees is filled by the runner's next pick-up)
                let paused = self.pause_for_results(&waiter, runner_id, &waited).await;
                wait_outcomes.push((i, paused.map(WaitOutcome::Paused)));
            }
        }
        wait_outcomes.sort_by_key(|(i, _)| *i);
        let (next, pick_error) = match picked {
            None => (Vec::new(), None),
            Some(Err(e)) => (Vec::new(), Some(e)),
            Some(Ok(body)) => match self.decode_pick(runner_id, body, true).await {
                Ok(next) => (next, None),
                Err(e) => (Vec::new(), Some(e)),
            },
        };
        StepReport {
            ends: outcomes,
            waits: wait_outcomes.into_iter().map(|(_, o)| o).collect(),
            next,
            pick_error,
        }
    }

    async fn kill_and_reroute(&self, id: &InvocationId, runner_id: &RunnerId) -> Result<()> {
        // it will not end here
        self.rare_ends.take(id);
        let args = [
            bytes(id.as_str()),
            bytes(runner_id.as_str()),
            bytes(error_json(&engine::cancelled_error(runner_id))),
        ];
        self.script(&scripts().kill_reroute, &args)
            .await
            .map(|_| ())
    }

    async fn get_status(&self, id: &InvocationId) -> Result<StatusRecord> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.invocation_key(id))
            .arg(&["status", "owner"]);
        let ((status, owner),): ((Option<String>, Option<String>),) =
            self.query("HMGET status", &pipe).await?;
        let status = status.ok_or_else(|| StoreError::not_found(id, ""))?;
        Ok(StatusRecord {
            status: self.parse_status(id, &status)?,
            // a released owner is stored empty
            owner: owner.filter(|o| !o.is_empty()).map(RunnerId::from),
        })
    }

    async fn get_num_retries(&self, id: &InvocationId) -> Result<u32> {
        let key = self.invocation_key(id);
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(&key).arg(&["status", "retries"]);
        let ((status, retries),): ((Option<String>, Option<String>),) =
            self.query("HMGET retries", &pipe).await?;
        if status.is_none() {
            return Err(StoreError::not_found(id, ""));
        }
        match retries {
            None => Ok(0),
            Some(r) => r
                .parse()
                .map_err(|e| crate::decode::corrupt_by(&key, "retries", e)),
        }
    }

    async fn waiting_for_results(
        &self,
        waiter: Option<&InvocationId>,
        waited: &[InvocationId],
    ) -> Result<()> {
        if waited.is_empty() {
            return Ok(());
        }
        // chunks keep each script short (a wait is recorded per invocation)
        for chunk in waited.chunks(WAIT_CHUNK) {
            self.wait_step(waiter, None, chunk).await?;
        }
        Ok(())
    }

    async fn pause_for_results(
        &self,
        waiter: &InvocationId,
        runner_id: &RunnerId,
        waited: &[InvocationId],
    ) -> Result<bool> {
        if waited.len() > WAIT_CHUNK {
            // too many for one step: the waits in chunks, then the pause
            // (unless everything waited on has ended meanwhile)
            let mut open = 0;
            for chunk in waited.chunks(WAIT_CHUNK) {
                open += self.wait_step(Some(waiter), None, chunk).await?;
            }
            if open > 0 {
                self.set_status(waiter, InvocationStatus::Paused, runner_id, None)
                    .await?;
            }
            return Ok(open > 0);
        }
        Ok(self
            .wait_step(Some(waiter), Some(runner_id), waited)
            .await?
            > 0)
    }

    async fn resume_with_outcomes(
        &self,
        waiter: &InvocationId,
        runner_id: &RunnerId,
        waited: &[InvocationId],
    ) -> Result<Vec<InvocationOutcome>> {
        let mut args = Vec::with_capacity(waited.len() + 4);
        args.extend([
            bytes(waiter.as_str()),
            bytes(InvocationStatus::Resumed.as_str()),
            bytes(runner_id.as_str()),
            Vec::new(),
        ]);
        args.extend(waited.iter().map(|id| bytes(id.as_str())));
        let v = self.script(&scripts().set_status, &args).await?;
        let parts = as_list(&v);
        let rows = parts.get(2).map(as_list).unwrap_or_default();
        self.decode_outcome_rows(waited, rows, "set_status")
    }

    async fn promote_scheduled(&self) -> Result<usize> {
        let v = self
            .script(&scripts().promote, &[bytes("scheduler")])
            .await?;
        Ok(as_int(&v).unwrap_or(0).max(0) as usize)
    }

    async fn run_scheduled_now(&self, id: &InvocationId, actor: &RunnerId) -> Result<()> {
        self.script(
            &scripts().promote,
            &[bytes(actor.as_str()), bytes(id.as_str())],
        )
        .await
        .map(|_| ())
    }

    async fn auto_purge(&self, retention: &Retention) -> Result<usize> {
        self.purge_retention(retention).await
    }

    async fn delete_final(&self, ids: &[InvocationId]) -> Result<usize> {
        self.delete_final_ids(ids).await
    }

    async fn cancel(&self, id: &InvocationId, actor: &RunnerId) -> Result<CancelOutcome> {
        self.cancel_one(id, actor).await
    }

    async fn cancel_requests(&self, runner_id: &RunnerId) -> Result<Vec<InvocationId>> {
        self.cancel_requests_of(runner_id).await
    }

    async fn recover(
        &self,
        actor: &RunnerId,
        dead_after: Duration,
        max_pending: Duration,
    ) -> Result<Vec<InvocationId>> {
        let args = [
            bytes(actor.as_str()),
            bytes(micros(dead_after)),
            bytes(micros(max_pending)),
            bytes(error_json(&engine::cancelled_error(actor))),
        ];
        let v = self.script(&scripts().recover, &args).await?;
        // the step has run: an id that cannot be read is reported, not an error
        let recovered = as_list(&v)
            .iter()
            .filter_map(as_string)
            .filter_map(|id| match InvocationId::parse(&id) {
                Ok(id) => Some(id),
                Err(e) => {
                    warn!(redis = %self.address(), error = %e, "recovery re-routed an invocation whose id cannot be read");
                    None
                }
            })
            .collect();
        Ok(recovered)
    }
}
