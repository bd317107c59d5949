//! The components of an app, each a trait holding what its concept owns:
//!
//! - [`Broker`]: the queue of invocation ids;
//! - [`Orchestrator`]: statuses and their owners, routing, pick-up, the ends
//!   of runs, blocking and cycle control, retries, scheduled calls, auto purge
//!   and recovery;
//! - [`StateBackend`]: what is remembered of every invocation (records,
//!   history, results, errors), and the one purge of an app;
//! - [`Coordination`]: what runners tell each other (heartbeats, leases,
//!   who they are) and the wake-ups that spare them polling;
//! - [`Queries`]: what operators ask (listings, counts, the queue, the
//!   blocking graph, the runners);
//! - [`DataStore`]: large values kept out of band, once per content digest;
//! - [`WorkflowData`]: values kept per workflow invocation.
//!
//! Every method that changes state is one atomic step in the backend. A
//! backend usually implements all four on one object ([`Components::of`]);
//! [`crate::TxnBackend`] does so for any [`crate::AtomicStore`].

mod broker;
mod coordination;
mod data_store;
mod orchestrator;
mod queries;
mod state_backend;
mod workflow_data;

use std::sync::Arc;

pub use broker::Broker;
pub use coordination::Coordination;
pub use data_store::DataStore;
pub use orchestrator::{
    EndOutcome, Orchestrator, ParkedPick, Retention, RunEnd, StepReport, WaitChange, WaitOutcome,
};
pub use queries::Queries;
pub use state_backend::StateBackend;
pub use workflow_data::WorkflowData;

/// The components an app works with.
#[derive(Clone)]
pub struct Components {
    /// The queue of invocation ids.
    pub broker: Arc<dyn Broker>,
    /// Statuses, routing, pick-up and the control features.
    pub orchestrator: Arc<dyn Orchestrator>,
    /// Records, history, results and errors.
    pub state_backend: Arc<dyn StateBackend>,
    /// Heartbeats, leases and wake-ups.
    pub coordination: Arc<dyn Coordination>,
    /// Listings, counts and the runners, for operators.
    pub queries: Arc<dyn Queries>,
    /// Large values kept out of band.
    pub data_store: Arc<dyn DataStore>,
    /// Values kept per workflow.
    pub workflow_data: Arc<dyn WorkflowData>,
}

impl Components {
    /// The components of one backend object that is all of them at once.
    pub fn of<B>(backend: Arc<B>) -> Self
    where
        B: Broker
            + Orchestrator
            + StateBackend
            + Coordination
            + Queries
            + DataStore
            + WorkflowData
            + 'static,
    {
        Components {
            broker: backend.clone(),
            orchestrator: backend.clone(),
            state_backend: backend.clone(),
            coordination: backend.clone(),
            queries: backend.clone(),
            data_store: backend.clone(),
            workflow_data: backend,
        }
    }
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Components")
    }
}
