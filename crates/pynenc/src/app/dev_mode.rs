//! Dev mode (`dev_mode_force_sync_tasks`): calls run in the caller, with
//! the same results, retries and cycle control as on a runner.

use std::sync::Arc;

use pynenc_model::{
    Call, CallRef, ConcurrencySpec, CycleError, InvocationId, InvocationRecord, Timestamp,
};

use super::Pynenc;
use crate::context::{self, InvocationContext};
use crate::exceptions::{PynencError, Result};
use crate::invocation::{SynchronousInvocation, UntypedInvocation};
use crate::runner::{run_body, SlotState};
use crate::task::{RegisteredTask, TaskInput};

impl Pynenc {
    /// The cycle `call` would close with the synchronous invocations that
    /// are running it (each waits for the call it made), if any.
    fn synchronous_cycle(
        &self,
        call: &Call,
        current: Option<&Arc<InvocationContext>>,
    ) -> Option<CycleError> {
        // the running invocations, nearest first
        let mut chain = Vec::new();
        let mut next = current.cloned();
        while let Some(ctx) = next {
            next = ctx.caller.clone();
            chain.push(ctx);
        }
        // the same call (task and arguments) as one of them: compared
        // directly, so that call ids (hashes) are computed only for a cycle
        let at = chain.iter().position(|c| c.record.call == *call)?;
        let mode = self.inner.conf.print_arguments;
        let serializer = self.serializer();
        let of = |ctx: &Arc<InvocationContext>| {
            CallRef::of_call(&ctx.record.call, ctx.call_id(), mode, serializer)
        };
        // the calling call, then the path from the callee back to it
        let mut calls = vec![of(&chain[0])];
        calls.extend(chain[..=at].iter().rev().map(of));
        Some(CycleError { calls })
    }

    /// Runs `call` of `task` here, retrying as a runner would.
    pub(super) async fn run_synchronously(
        &self,
        task: &RegisteredTask,
        call: Call,
    ) -> Result<UntypedInvocation> {
        let current = context::current();
        if self.inner.conf.orchestrator.cycle_control {
            if let Some(cycle) = self.synchronous_cycle(&call, current.as_ref()) {
                return Err(PynencError::CycleDetected(cycle));
            }
        }
        let invocation_id = InvocationId::random();
        let record = Arc::new(InvocationRecord {
            invocation_id,
            call: call.clone(),
            parent_invocation_id: current.as_ref().map(|c| *c.invocation_id()),
            created_at: Timestamp::now(),
            scheduled_at: None,
            concurrency: ConcurrencySpec::default(),
            rerun_of: None,
        });
        let def = task.definition;
        let ctx = Arc::new(InvocationContext {
            app: self.clone(),
            record: record.clone(),
            task_id: def.task_id,
            runner: None,
            slot: tokio::sync::Mutex::new(SlotState::default()),
            caller: current,
            // calls run here, once: nothing to replay
            workflow: None,
        });
        let mut num_retries = 0;
        let outcome = loop {
            let input = TaskInput {
                task_id: def.task_id,
                record: record.clone(),
                serializer: self.serializer(),
            };
            match run_body(def.body, input, ctx.clone()).await {
                Err(e) if task.options.should_retry(&e, num_retries) => {
                    num_retries += 1;
                }
                other => break other,
            }
        };
        Ok(UntypedInvocation::Synchronous(SynchronousInvocation {
            invocation_id,
            call,
            outcome,
            num_retries,
            serializer: self.serializer(),
        }))
    }
}
