//! The state backend: invocation records, their history, results and errors.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::exceptions::{Result, TaskError};
use crate::invocation::InvocationRecord;
use crate::status::InvocationStatus;

/// One entry of an invocation's history: a status transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The invocation.
    pub invocation_id: String,
    /// The status it entered.
    pub status: InvocationStatus,
    /// Its owner after the transition.
    pub owner: Option<String>,
    /// Who made the transition (a runner id, the external caller id or the recovery service).
    pub actor: String,
    /// When, in microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// Free-form execution context (host, process, thread) of the actor.
    pub execution_context: Option<String>,
}

impl HistoryEntry {
    /// The entry as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An entry read from [`HistoryEntry::to_json`].
    pub fn from_json(json: &str) -> Result<HistoryEntry> {
        serde_json::from_str(json).map_err(|e| {
            crate::exceptions::PynencError::serialization("deserialize", "history entry", e)
        })
    }
}

/// A history entry being written: borrowed, so that a backend copies only
/// what it keeps (the memory store interns runner ids, SQLite stores ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryStep<'a> {
    /// The invocation.
    pub invocation_id: &'a str,
    /// The status it entered.
    pub status: InvocationStatus,
    /// Its owner after the transition.
    pub owner: Option<&'a str>,
    /// Who made the transition.
    pub actor: &'a str,
    /// When, in microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// The actor's execution context.
    pub execution_context: Option<&'a str>,
}

impl HistoryEntry {
    /// The entry as a [`HistoryStep`].
    pub fn as_step(&self) -> HistoryStep<'_> {
        HistoryStep {
            invocation_id: &self.invocation_id,
            status: self.status,
            owner: self.owner.as_deref(),
            actor: &self.actor,
            timestamp_us: self.timestamp_us,
            execution_context: self.execution_context.as_deref(),
        }
    }
}

/// What an invocation ended with, as the state backend stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationOutcome {
    /// The current status.
    pub status: InvocationStatus,
    /// The serialized result, once `SUCCESS`.
    pub result: Option<String>,
    /// The error, once `FAILED` (or the last one that caused a retry).
    pub error: Option<TaskError>,
}

/// Stores everything known about invocations. Reads only: every write goes
/// through the orchestrator's atomic steps, so that a status and the data it
/// implies are always written together.
#[async_trait]
pub trait StateBackend: Send + Sync {
    /// The invocation record. `InvocationNotFoundError` if it does not exist.
    async fn get_invocation(&self, invocation_id: &str) -> Result<InvocationRecord>;
    /// The history, oldest first.
    async fn get_history(&self, invocation_id: &str) -> Result<Vec<HistoryEntry>>;
    /// Status, result and error of each invocation, in the order asked.
    async fn get_outcomes(&self, invocation_ids: &[String]) -> Result<Vec<InvocationOutcome>>;
    /// The ids of every invocation of this app (for inspection and tests).
    async fn list_invocation_ids(&self) -> Result<Vec<String>>;
    /// Removes everything of this app.
    async fn purge(&self) -> Result<()>;
}
