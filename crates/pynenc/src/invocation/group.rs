//! [`InvocationGroup`]: the invocations of one `parallelize`.

use futures::stream::{FuturesUnordered, Stream};
use serde::de::DeserializeOwned;

use super::{decode, Invocation, UntypedInvocation};
use crate::exceptions::{PynencError, Result};

/// The invocations of one `parallelize`, in call order.
pub struct InvocationGroup<R> {
    task_id: pynenc_model::TaskId,
    invocations: Vec<Invocation<R>>,
}

impl<R> std::fmt::Debug for InvocationGroup<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationGroup")
            .field("task_id", &self.task_id)
            .field("len", &self.invocations.len())
            .finish()
    }
}

impl<R: DeserializeOwned + Send + 'static> InvocationGroup<R> {
    /// A group (used by `parallelize`).
    pub fn new(task_id: impl Into<pynenc_model::TaskId>, invocations: Vec<Invocation<R>>) -> Self {
        InvocationGroup {
            task_id: task_id.into(),
            invocations,
        }
    }

    /// The task.
    pub fn task_id(&self) -> &pynenc_model::TaskId {
        &self.task_id
    }

    /// The invocations, in call order.
    pub fn invocations(&self) -> &[Invocation<R>] {
        &self.invocations
    }

    /// How many invocations.
    pub fn len(&self) -> usize {
        self.invocations.len()
    }

    /// Whether the group is empty.
    pub fn is_empty(&self) -> bool {
        self.invocations.is_empty()
    }

    /// Waits for all of them (one pause of the caller) and returns the values
    /// in call order; the first error (in call order) is returned instead.
    pub async fn results(&self) -> Result<Vec<R>> {
        let distributed: Vec<&super::DistributedInvocation> = self
            .invocations
            .iter()
            .filter_map(|inv| match &inv.inner {
                UntypedInvocation::Distributed(d) => Some(d),
                UntypedInvocation::Synchronous(_) => None,
            })
            .collect();
        let mut outcomes = match distributed.first() {
            Some(d) => d.app.outcomes_of(&distributed).await?.into_iter(),
            None => Vec::new().into_iter(),
        };
        let mut values = Vec::with_capacity(self.invocations.len());
        for inv in &self.invocations {
            match &inv.inner {
                UntypedInvocation::Distributed(d) => {
                    let outcome = outcomes.next().ok_or_else(|| {
                        PynencError::StateBackend(pynenc_store::StoreError::not_found(
                            &d.record.invocation_id,
                            "the state backend returned no outcome for it in a group",
                        ))
                    })?;
                    values.push(decode(
                        d.app.serializer(),
                        &d.record.call.task_id,
                        &d.record.invocation_id,
                        outcome,
                    )?);
                }
                UntypedInvocation::Synchronous(_) => values.push(inv.result().await?),
            }
        }
        Ok(values)
    }

    /// The results as they complete: `(index in call order, result)`.
    pub fn stream(&self) -> impl Stream<Item = (usize, Result<R>)> + '_ {
        self.invocations
            .iter()
            .enumerate()
            .map(|(i, inv)| async move { (i, inv.result().await) })
            .collect::<FuturesUnordered<_>>()
    }
}
