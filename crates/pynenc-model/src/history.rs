//! The history of an invocation: every status transition.

use serde::{Deserialize, Serialize};

use crate::ids::{InvocationId, RunnerId};
use crate::serializer::SerializationError;
use crate::status::InvocationStatus;
use crate::time::Timestamp;

/// One entry of an invocation's history: a status transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The invocation.
    pub invocation_id: InvocationId,
    /// The status it entered.
    pub status: InvocationStatus,
    /// Its owner after the transition.
    pub owner: Option<RunnerId>,
    /// Who made the transition (a runner id, the external caller id, the
    /// recovery service or the scheduler).
    pub actor: RunnerId,
    /// When.
    #[serde(rename = "timestamp_us")]
    pub timestamp: Timestamp,
    /// Free-form execution context (host, process) of the actor.
    pub execution_context: Option<String>,
}

impl HistoryEntry {
    /// The entry as JSON.
    ///
    /// # Errors
    ///
    /// Never for an entry a store produced (every field is plain text or a number).
    pub fn to_json(&self) -> Result<String, SerializationError> {
        serde_json::to_string(self).map_err(|e| SerializationError::serialize("history entry", e))
    }

    /// An entry read from [`HistoryEntry::to_json`].
    ///
    /// # Errors
    ///
    /// The text is not such an entry.
    pub fn from_json(json: &str) -> Result<HistoryEntry, SerializationError> {
        serde_json::from_str(json).map_err(|e| SerializationError::deserialize("history entry", e))
    }

    /// The entry as a [`HistoryStep`].
    pub fn as_step(&self) -> HistoryStep<'_> {
        HistoryStep {
            invocation_id: &self.invocation_id,
            status: self.status,
            owner: self.owner.as_ref(),
            actor: &self.actor,
            timestamp: self.timestamp,
            execution_context: self.execution_context.as_deref(),
        }
    }
}

/// A history entry being written: borrowed, so that a backend copies only
/// what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryStep<'a> {
    /// The invocation.
    pub invocation_id: &'a InvocationId,
    /// The status it entered.
    pub status: InvocationStatus,
    /// Its owner after the transition.
    pub owner: Option<&'a RunnerId>,
    /// Who made the transition.
    pub actor: &'a RunnerId,
    /// When.
    pub timestamp: Timestamp,
    /// The actor's execution context.
    pub execution_context: Option<&'a str>,
}
