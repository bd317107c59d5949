//! Routing calls: who calls, the checks made before a call leaves the
//! process (arguments against parameters, sizes), and the requests sent to
//! the orchestrator.

use std::time::SystemTime;

use futures::StreamExt;
use pynenc_model::{
    Arguments, Call, CallId, ConcurrencySpec, InvocationId, InvocationRecord, RouteOutcome,
    RouteRequest, RunnerId, Timestamp,
};
use tracing::debug;

use super::Pynenc;
use crate::context;
use crate::data::PendingValues;
use crate::exceptions::{PynencError, Result};
use crate::invocation::UntypedInvocation;
use crate::task::{RegisteredTask, TaskDefinition};

/// The batches of one `parallelize` routed at the same time: while one is
/// in flight the next ones go (pipelined on one connection where the
/// backend has round trips), so the caller builds and the backend routes
/// side by side.
const BATCHES_IN_FLIGHT: usize = 4;

/// The parent invocation (inside a task) and the actor of calls made
/// from one context: worked out once for a whole group of calls.
pub(super) struct Caller {
    pub(super) parent_invocation_id: Option<InvocationId>,
    pub(super) parent_call_id: Option<CallId>,
    pub(super) actor: RunnerId,
    /// The calling invocation when it is a workflow (its calls are steps).
    pub(super) workflow: Option<std::sync::Arc<context::InvocationContext>>,
}

/// A step of a workflow being routed: its number, and the call it asks
/// for (to compare with the one recorded when the step was routed before).
struct Step {
    invocation_id: InvocationId,
    number: u32,
    call_id: CallId,
}

/// The arguments of a call of `task` must name its parameters.
pub(crate) fn check_arguments(task: &RegisteredTask, arguments: &Arguments) -> Result<()> {
    let def = task.definition;
    let names_match = arguments.len() == def.params.len()
        && arguments
            .serialized()
            .all(|(name, _)| def.params.contains(&name));
    if names_match {
        return Ok(());
    }
    let unknown: Vec<String> = arguments
        .serialized()
        .filter(|(name, _)| !def.params.contains(name))
        .map(|(name, _)| name.to_string())
        .collect();
    let missing: Vec<String> = def
        .params
        .iter()
        .filter(|p| arguments.get(p).is_none())
        .map(|p| p.to_string())
        .collect();
    Err(PynencError::InvalidArguments {
        task_id: task.task_id.clone(),
        unknown,
        missing,
        parameters: def.params.iter().map(|p| p.to_string()).collect(),
    })
}

/// The invocation of routing one call.
fn only_invocation(mut routed: Vec<UntypedInvocation>) -> Result<UntypedInvocation> {
    routed.pop().ok_or_else(|| {
        PynencError::StateBackend(pynenc_store::StoreError::backend(
            "orchestrator",
            "route_calls returned no outcome for a call",
        ))
    })
}

impl Pynenc {
    /// The registration of `def` in this app.
    fn registered(&self, def: &'static TaskDefinition) -> Result<&RegisteredTask> {
        self.inner.registry.get(def.task_id)
    }

    /// Who makes calls from the current context.
    pub(super) fn caller(&self) -> Caller {
        match context::current() {
            Some(ctx) => Caller {
                parent_invocation_id: Some(*ctx.invocation_id()),
                parent_call_id: Some(ctx.call_id()),
                actor: ctx.actor_id(),
                workflow: ctx.workflow.is_some().then(|| ctx.clone()),
            },
            None => Caller {
                parent_invocation_id: None,
                parent_call_id: None,
                actor: self.inner.external_runner_id.clone(),
                workflow: None,
            },
        }
    }

    /// The call of `task` with `arguments`, checked: the arguments name the
    /// task's parameters and none is over `max_argument_bytes`. Large values
    /// move to `pending`, for the data store (not in dev mode: the call
    /// runs here).
    fn checked_call(
        &self,
        task: &RegisteredTask,
        mut arguments: Arguments,
        pending: &mut PendingValues,
    ) -> Result<Call> {
        check_arguments(task, &arguments)?;
        let max = self.inner.conf.max_argument_bytes;
        for (name, value) in arguments.serialized() {
            if value.len() > max {
                return Err(PynencError::TaskRouting {
                    task_id: task.task_id.to_string(),
                    message: format!(
                        "argument '{name}' is {} bytes serialized, over max_argument_bytes = {max}",
                        value.len()
                    ),
                });
            }
        }
        if !self.inner.conf.dev_mode_force_sync_tasks {
            self.data()
                .externalize(&mut arguments, Some(&task.options), pending);
        }
        Ok(Call::new(task.task_id.clone(), arguments))
    }

    fn route_request(
        &self,
        task: &RegisteredTask,
        caller: &Caller,
        call: Call,
        scheduled_at: Option<Timestamp>,
    ) -> RouteRequest {
        RouteRequest {
            concurrency: ConcurrencySpec::for_call(&call, &task.options),
            call,
            parent_invocation_id: caller.parent_invocation_id,
            parent_call_id: caller.parent_call_id.clone(),
            scheduled_at,
            cycle_control: self.inner.conf.orchestrator.cycle_control,
            print_arguments: self.inner.conf.print_arguments,
            actor: caller.actor.clone(),
            rerun_of: None,
            invocation_id: None,
        }
    }

    /// The request of a call made from a workflow takes the id of its
    /// step: routed again (the workflow runs again), it gives back the
    /// invocation the step made the first time.
    fn step_of(caller: &Caller, req: &mut RouteRequest) -> Option<Step> {
        let (invocation_id, number) = caller.workflow.as_ref()?.next_workflow_step()?;
        req.invocation_id = Some(invocation_id);
        Some(Step {
            invocation_id,
            number,
            call_id: req.call.call_id(),
        })
    }

    /// The invocation of a routed call; for a workflow's step given back
    /// from an earlier run, it must be the same call.
    fn step_outcome(
        &self,
        caller: &Caller,
        step: Option<&Step>,
        req_call: Option<&Call>,
        outcome: RouteOutcome,
    ) -> Result<UntypedInvocation> {
        if let (Some(step), RouteOutcome::Reused { record, .. }) = (step, &outcome) {
            self.check_step(caller, step, req_call, record)?;
        }
        Ok(self.outcome_to_invocation(outcome))
    }

    /// A workflow's step found recorded (`record`) must be the call asked
    /// for now (`req_call`).
    fn check_step(
        &self,
        caller: &Caller,
        step: &Step,
        req_call: Option<&Call>,
        record: &InvocationRecord,
    ) -> Result<()> {
        let Some(wf) = caller.workflow.as_ref() else {
            return Ok(());
        };
        if record.invocation_id != step.invocation_id || record.call.call_id() == step.call_id {
            return Ok(());
        }
        let render = |c: &Call| {
            format!(
                "{}({})",
                c.task_id,
                c.arguments
                    .render(self.inner.conf.print_arguments, self.serializer())
            )
        };
        Err(PynencError::WorkflowNonDeterminism {
            workflow_id: *wf.invocation_id(),
            step: step.number,
            recorded: render(&record.call),
            asked: req_call.map(render).unwrap_or_default(),
        })
    }

    /// While a workflow replays the steps an earlier run recorded: the
    /// steps `steps` looked up in one read and, when each was recorded,
    /// their invocations (with their outcomes when final: a replayed step
    /// costs that one read). `None` when one was not recorded: the workflow
    /// stops replaying and routes them.
    async fn replayed_steps(
        &self,
        caller: &Caller,
        steps: &[Option<Step>],
        asked: &[Option<Call>],
    ) -> Result<Option<Vec<UntypedInvocation>>> {
        let Some(run) = caller.workflow.as_ref().and_then(|w| w.workflow.as_ref()) else {
            return Ok(None);
        };
        if !run.replaying() {
            return Ok(None);
        }
        let ids: Option<Vec<InvocationId>> = steps
            .iter()
            .map(|s| s.as_ref().map(|s| s.invocation_id))
            .collect();
        let Some(ids) = ids else {
            return Ok(None);
        };
        let found = self.state_backend().find_invocations(&ids).await?;
        if found.iter().any(Option::is_none) {
            run.stop_replaying();
            return Ok(None);
        }
        let mut out = Vec::with_capacity(found.len());
        for ((found, step), call) in found.into_iter().flatten().zip(steps).zip(asked) {
            let (record, outcome) = found;
            if let Some(step) = step {
                self.check_step(caller, step, call.as_ref(), &record)?;
            }
            out.push(UntypedInvocation::replayed(
                self.clone(),
                std::sync::Arc::new(record),
                outcome,
            ));
        }
        Ok(Some(out))
    }

    fn outcome_to_invocation(&self, outcome: RouteOutcome) -> UntypedInvocation {
        match outcome {
            RouteOutcome::New(record) => UntypedInvocation::distributed(self.clone(), record, None),
            RouteOutcome::Reused { record, diff } => {
                UntypedInvocation::distributed(self.clone(), record, Some(diff))
            }
        }
    }

    /// Routes one call of `def` (or runs it in the caller in dev mode).
    ///
    /// # Errors
    ///
    /// The task is not registered in this app, the arguments do not fit its
    /// parameters, or routing refused the call (cycle, registration
    /// concurrency) or failed.
    pub async fn call_task(
        &self,
        def: &'static TaskDefinition,
        arguments: Arguments,
    ) -> Result<UntypedInvocation> {
        let task = self.registered(def)?;
        let mut pending = PendingValues::default();
        let call = self.checked_call(task, arguments, &mut pending)?;
        if self.inner.conf.dev_mode_force_sync_tasks {
            return self.run_synchronously(task, call).await;
        }
        let inv = self.route_one(task, call, None, &pending).await?;
        debug!(
            task_id = %def.task_id,
            invocation_id = %inv.invocation_id(),
            arguments = %inv.call().arguments.render(self.inner.conf.print_arguments, self.serializer()),
            "routed"
        );
        Ok(inv)
    }

    /// Routes many calls of `def` in batches of its `parallel_batch_size`.
    ///
    /// # Errors
    ///
    /// As [`Pynenc::call_task`]; the batches before a refused call were routed.
    pub async fn call_task_many(
        &self,
        def: &'static TaskDefinition,
        arguments: Vec<Arguments>,
    ) -> Result<Vec<UntypedInvocation>> {
        self.call_task_iter(def, arguments.into_iter().map(Ok))
            .await
    }

    /// [`Pynenc::call_task_many`] over arguments as they are serialized:
    /// each call's large values move to the data store's pending values
    /// before the next is made, so a value given to many calls is held once.
    pub(crate) async fn call_task_iter(
        &self,
        def: &'static TaskDefinition,
        arguments: impl Iterator<Item = Result<Arguments>>,
    ) -> Result<Vec<UntypedInvocation>> {
        let task = self.registered(def)?;
        let mut pending = PendingValues::default();
        let calls = arguments
            .map(|a| self.checked_call(task, a?, &mut pending))
            .collect::<Result<Vec<Call>>>()?;
        let mut out = Vec::with_capacity(calls.len());
        if self.inner.conf.dev_mode_force_sync_tasks {
            for call in calls {
                out.push(self.run_synchronously(task, call).await?);
            }
            return Ok(out);
        }
        let caller = self.caller();
        let batch = task.options.parallel_batch_size.max(1);
        // one batch at a time when the calls carry values for the data store
        // (the first batch that claims a value sends it: batches in flight
        // together would each send it) or come from a workflow (it numbers
        // its steps in call order)
        let one_at_a_time =
            caller.workflow.is_some() || calls.iter().any(|c| c.arguments.has_stored());
        let mut calls = calls.into_iter().peekable();
        let mut batches = Vec::with_capacity(calls.len().div_ceil(batch));
        while calls.peek().is_some() {
            let reqs: Vec<RouteRequest> = calls
                .by_ref()
                .take(batch)
                .map(|c| self.route_request(task, &caller, c, None))
                .collect();
            batches.push(reqs);
        }
        if one_at_a_time {
            for reqs in batches {
                out.extend(self.route_batch(&caller, reqs, &pending, true).await?);
            }
        } else {
            // the next batches go while one is in flight (a backend with
            // round trips pipelines them), their invocations kept in order
            let mut routed = futures::stream::iter(batches)
                .map(|reqs| self.route_batch(&caller, reqs, &pending, false))
                .buffered(BATCHES_IN_FLIGHT);
            while let Some(invocations) = routed.next().await {
                out.extend(invocations?);
            }
        }
        debug!(task_id = %def.task_id, count = out.len(), "routed group");
        Ok(out)
    }

    /// Routes a call that stays `SCHEDULED` until `at`.
    ///
    /// # Errors
    ///
    /// As [`Pynenc::call_task`].
    pub async fn schedule_task(
        &self,
        def: &'static TaskDefinition,
        arguments: Arguments,
        at: SystemTime,
    ) -> Result<UntypedInvocation> {
        let task = self.registered(def)?;
        let mut pending = PendingValues::default();
        let call = self.checked_call(task, arguments, &mut pending)?;
        self.route_one(task, call, Some(Timestamp::from(at)), &pending)
            .await
    }

    /// Routes a call of `def` under the caller-chosen `invocation_id` (an
    /// invocation of that id already there is given back), scheduled for
    /// `at` when given. Made from a workflow it is not a numbered step:
    /// its id says what it is (a workflow's wait for a signal).
    pub(crate) async fn route_keyed(
        &self,
        def: &'static TaskDefinition,
        arguments: Arguments,
        at: Option<Timestamp>,
        invocation_id: InvocationId,
    ) -> Result<UntypedInvocation> {
        let task = self.registered(def)?;
        let mut pending = PendingValues::default();
        let call = self.checked_call(task, arguments, &mut pending)?;
        let caller = self.caller();
        let mut req = self.route_request(task, &caller, call, at);
        req.invocation_id = Some(invocation_id);
        only_invocation(
            self.route_batch(&caller, vec![req], &pending, false)
                .await?,
        )
    }

    /// Routes one call made from the current context.
    async fn route_one(
        &self,
        task: &RegisteredTask,
        call: Call,
        scheduled_at: Option<Timestamp>,
        pending: &PendingValues,
    ) -> Result<UntypedInvocation> {
        let caller = self.caller();
        let req = self.route_request(task, &caller, call, scheduled_at);
        only_invocation(self.route_batch(&caller, vec![req], pending, true).await?)
    }

    /// Routes `reqs` made by `caller` (from a workflow with `as_steps`,
    /// each a step: given back without routing when an earlier run
    /// recorded it), large values claimed first; their invocations in order.
    async fn route_batch(
        &self,
        caller: &Caller,
        mut reqs: Vec<RouteRequest>,
        pending: &PendingValues,
        as_steps: bool,
    ) -> Result<Vec<UntypedInvocation>> {
        let steps: Vec<Option<Step>> = reqs
            .iter_mut()
            .map(|r| as_steps.then(|| Self::step_of(caller, r)).flatten())
            .collect();
        let asked: Vec<Option<Call>> = steps
            .iter()
            .zip(&reqs)
            .map(|(s, r)| s.as_ref().map(|_| r.call.clone()))
            .collect();
        if let Some(replayed) = self.replayed_steps(caller, &steps, &asked).await? {
            return Ok(replayed);
        }
        self.data()
            .claim_for(self.data_store(), &mut reqs, pending)
            .await?;
        let outcomes = self.orchestrator().route_calls(reqs).await?;
        outcomes
            .into_iter()
            .zip(&steps)
            .zip(&asked)
            .map(|((outcome, step), call)| {
                self.step_outcome(caller, step.as_ref(), call.as_ref(), outcome)
            })
            .collect()
    }

    /// Routes requests built elsewhere (an operator's rerun, a call by task
    /// name): large argument values go to the data store first (with the
    /// options of the task when this program has it, the app's settings
    /// otherwise), and values the arguments already refer to are claimed
    /// for the new invocations, then the orchestrator routes them.
    ///
    /// # Errors
    ///
    /// The data store failed (nothing is routed), or routing failed.
    pub async fn route_requests(
        &self,
        mut requests: Vec<RouteRequest>,
    ) -> Result<Vec<RouteOutcome>> {
        let mut pending = PendingValues::default();
        for req in &mut requests {
            let options = self.inner.registry.options(req.call.task_id.as_str());
            self.data()
                .externalize(&mut req.call.arguments, options, &mut pending);
        }
        self.data()
            .claim_for(self.data_store(), &mut requests, &pending)
            .await?;
        Ok(self.orchestrator().route_calls(requests).await?)
    }
}
