//! The query primitives of the memory store, answered from its indexes.

use pynenc_model::{
    ErrorKindCount, InvocationId, InvocationQuery, InvocationSummary, LeaseHolder, Reuses,
    RunnerInfo, StatusCount, TaskId, TaskTotals, Timestamp, TriggerRecord, WaitGraph,
};
use pynenc_store::{QueryTxn, Result};

use crate::state::{Entry, MemState};

fn summary(e: &Entry) -> InvocationSummary {
    let record = &e.record;
    InvocationSummary {
        invocation_id: record.invocation_id,
        task_id: record.call.task_id.clone(),
        call_id: record.call.call_id(),
        status: e.status.status,
        owner: e.status.owner.clone(),
        parent_invocation_id: record.parent_invocation_id,
        created_at: record.created_at,
        status_at: e.status_at,
        ended_at: e.final_at,
        retries: e.retries,
    }
}

/// Whether an entry passes every filter of `query` (the cursor aside).
fn matches(query: &InvocationQuery, e: &Entry) -> bool {
    let record = &e.record;
    query.matches_with(
        &record.call.task_id,
        e.status.status,
        record.created_at,
        e.final_at,
        record.parent_invocation_id.as_ref(),
        e.status.owner.as_ref(),
        || record.call.call_id(),
    ) && query.matches_arguments(&record.call)
}

impl QueryTxn for MemState {
    fn list_invocations(&mut self, query: &InvocationQuery) -> Result<Vec<InvocationSummary>> {
        let invocations = &self.invocations;
        let ids = self.index.candidates(
            query,
            || {
                self.open_ids().filter(|id| {
                    invocations
                        .get(id)
                        .is_some_and(|e| !e.status.status.is_final())
                })
            },
            |id| invocations.get(id).is_some_and(|e| matches(query, e)),
        );
        Ok(ids
            .iter()
            .filter_map(|id| invocations.get(id).map(summary))
            .collect())
    }

    fn count_by_status(&mut self, task_ids: &[TaskId]) -> Result<Vec<StatusCount>> {
        Ok(self.index.count_by_status(task_ids))
    }

    fn failed_by_kind(&mut self, task_ids: &[TaskId]) -> Result<Vec<ErrorKindCount>> {
        Ok(self.index.failed_by_kind(task_ids))
    }

    fn reuses_of(&mut self, id: &InvocationId) -> Result<Reuses> {
        Ok(self
            .invocations
            .get(id)
            .and_then(|e| e.rare.as_ref().map(|r| r.reuses.clone()))
            .unwrap_or_default())
    }

    fn task_totals(&mut self, task_ids: &[TaskId]) -> Result<Vec<TaskTotals>> {
        Ok(self.index.task_totals(task_ids))
    }

    fn queue_oldest(&mut self) -> Result<Option<(InvocationId, Timestamp)>> {
        Ok(self.queued().find_map(|id| {
            self.invocations
                .get(id)
                .filter(|e| e.status.status.is_available_for_run())
                .map(|e| (*id, e.record.created_at))
        }))
    }

    fn waits_of(&mut self, id: &InvocationId) -> Result<WaitGraph> {
        Ok(WaitGraph {
            waiting_on: self.waiting_on.get(id).cloned().unwrap_or_default(),
            waited_by: self.waited_by.get(id).cloned().unwrap_or_default(),
        })
    }

    fn list_runners(&mut self) -> Result<Vec<RunnerInfo>> {
        let mut runners: Vec<RunnerInfo> = self
            .runners
            .values()
            .map(|info| {
                let mut info = info.clone();
                if let Some(beat) = self.heartbeats.get(&info.runner_id) {
                    info.heartbeat_at = *beat;
                }
                info
            })
            .collect();
        runners.sort_by(|a, b| a.runner_id.cmp(&b.runner_id));
        Ok(runners)
    }

    fn list_triggers(&mut self) -> Result<Vec<TriggerRecord>> {
        Ok(self.triggers.values().cloned().collect())
    }

    fn get_lease(&mut self, name: &str) -> Result<Option<LeaseHolder>> {
        Ok(self.lease_holder(name))
    }

    fn app_ids(&mut self) -> Result<Vec<String>> {
        // one store holds one app; its id once it has invocations
        Ok(if self.invocations.is_empty() {
            Vec::new()
        } else {
            vec![self.app_id.clone()]
        })
    }
}
