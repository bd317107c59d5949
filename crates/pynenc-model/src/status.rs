//! The invocation status state machine.
//!
//! Every backend enforces the same table through [`StatusRecord::transition`]:
//! an illegal transition is an error and changes nothing. Ownership (the id of
//! the runner that holds an invocation) travels with the status: `PENDING`
//! takes it, the running statuses require it, the routing statuses release it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::ids::RunnerId;

/// The status of one invocation.
///
/// Serialized in lower case as in the seed (`"success"`); either case is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvocationStatus {
    /// Registered to run at a specific time; becomes `REGISTERED` when due.
    Scheduled,
    /// Routed and queued, waiting for a runner.
    Registered,
    /// Held back by running concurrency control; re-routed when the task frees up.
    ConcurrencyControlled,
    /// Refused by running concurrency control without re-routing (final).
    ConcurrencyControlledFinal,
    /// Put back into the queue after being stopped, killed or concurrency controlled.
    Rerouted,
    /// Picked by a runner (its owner) and about to run.
    Pending,
    /// A pending invocation whose owner is gone, being recovered.
    PendingRecovery,
    /// Executing on its owner.
    Running,
    /// Waiting for other invocations' results; it holds no runner slot.
    Paused,
    /// Running again after a pause.
    Resumed,
    /// A running invocation whose owner is gone, being recovered.
    RunningRecovery,
    /// Stopped by its runner (shutdown); it will be re-routed.
    Killed,
    /// Finished with a retriable error; it will run again.
    Retry,
    /// Finished without error (final).
    Success,
    /// Finished with an error (final).
    Failed,
    /// Stopped at an operator's request (final): at once while it waited,
    /// or by its owner once a running body stopped.
    Cancelled,
}

/// Every status, in declaration order.
pub const ALL_STATUSES: [InvocationStatus; 16] = [
    InvocationStatus::Scheduled,
    InvocationStatus::Registered,
    InvocationStatus::ConcurrencyControlled,
    InvocationStatus::ConcurrencyControlledFinal,
    InvocationStatus::Rerouted,
    InvocationStatus::Pending,
    InvocationStatus::PendingRecovery,
    InvocationStatus::Running,
    InvocationStatus::Paused,
    InvocationStatus::Resumed,
    InvocationStatus::RunningRecovery,
    InvocationStatus::Killed,
    InvocationStatus::Retry,
    InvocationStatus::Success,
    InvocationStatus::Failed,
    InvocationStatus::Cancelled,
];

/// What entering a status does with the owner of the invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The acting runner becomes the owner (`PENDING`).
    Acquire,
    /// The owner is kept (the running statuses, their final outcomes, and
    /// the recovery statuses, which keep the lost owner on record).
    Keep,
    /// The owner is cleared (`REGISTERED`, `REROUTED`, `RETRY`, `KILLED`,
    /// `SCHEDULED` and the concurrency statuses).
    Release,
}

impl InvocationStatus {
    /// The statuses that may follow this one.
    pub fn allowed_next(self) -> &'static [InvocationStatus] {
        use InvocationStatus::*;
        match self {
            Scheduled => &[Registered, Killed, Cancelled],
            Registered => &[
                Pending,
                ConcurrencyControlled,
                ConcurrencyControlledFinal,
                Cancelled,
            ],
            ConcurrencyControlled => &[Rerouted, Cancelled],
            Rerouted => &[Pending, ConcurrencyControlled, Cancelled],
            Pending => &[Running, Killed, Rerouted, PendingRecovery, Cancelled],
            PendingRecovery => &[Rerouted, Cancelled],
            Running => &[
                Paused,
                Killed,
                Retry,
                Success,
                Failed,
                RunningRecovery,
                Cancelled,
            ],
            Paused => &[Resumed, Killed, RunningRecovery, Cancelled],
            Resumed => &[
                Paused,
                Killed,
                Retry,
                Success,
                Failed,
                RunningRecovery,
                Cancelled,
            ],
            RunningRecovery => &[Rerouted, Cancelled],
            Killed => &[Rerouted, Cancelled],
            Retry => &[Pending, Cancelled],
            Success | Failed | ConcurrencyControlledFinal | Cancelled => &[],
        }
    }

    /// The statuses a brand new invocation may start in.
    pub fn initial() -> &'static [InvocationStatus] {
        &[InvocationStatus::Registered, InvocationStatus::Scheduled]
    }

    /// Whether `next` may follow `self`.
    pub fn can_transition_to(self, next: InvocationStatus) -> bool {
        self.allowed_next().contains(&next)
    }

    /// How entering this status treats the owner.
    pub fn ownership(self) -> Ownership {
        use InvocationStatus::*;
        match self {
            Pending => Ownership::Acquire,
            Running | Paused | Resumed | Success | Failed | Cancelled | PendingRecovery
            | RunningRecovery => Ownership::Keep,
            Scheduled
            | Registered
            | Rerouted
            | Retry
            | Killed
            | ConcurrencyControlled
            | ConcurrencyControlledFinal => Ownership::Release,
        }
    }

    /// Whether only the owner may leave this status for `next`: every move
    /// out of `PENDING`, `RUNNING`, `PAUSED` and `RESUMED` except into the
    /// recovery statuses, which the recovery service sets whoever owns it.
    pub fn requires_owner_for(self, next: InvocationStatus) -> bool {
        self.is_owned_running()
            && !matches!(
                next,
                InvocationStatus::PendingRecovery | InvocationStatus::RunningRecovery
            )
    }

    /// Available to be picked by any runner: `REGISTERED`, `REROUTED`, `RETRY`.
    pub fn is_available_for_run(self) -> bool {
        matches!(
            self,
            InvocationStatus::Registered | InvocationStatus::Rerouted | InvocationStatus::Retry
        )
    }

    /// No transition leaves this status: `SUCCESS`, `FAILED`, `CANCELLED`,
    /// `CONCURRENCY_CONTROLLED_FINAL`.
    pub fn is_final(self) -> bool {
        self.allowed_next().is_empty()
    }

    /// The position of this status in [`ALL_STATUSES`] (for tables indexed by status).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Owned by a runner that is working on it (`PENDING` to `RESUMED`).
    pub fn is_owned_running(self) -> bool {
        matches!(
            self,
            InvocationStatus::Pending
                | InvocationStatus::Running
                | InvocationStatus::Paused
                | InvocationStatus::Resumed
        )
    }

    /// Waiting to run, holding no runner: what a cancel ends at once
    /// (`SCHEDULED`, `REGISTERED`, `CONCURRENCY_CONTROLLED`, `REROUTED`,
    /// `RETRY`, and `KILLED` on its way back to the queue).
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            InvocationStatus::Scheduled
                | InvocationStatus::Registered
                | InvocationStatus::ConcurrencyControlled
                | InvocationStatus::Rerouted
                | InvocationStatus::Retry
                | InvocationStatus::Killed
        )
    }

    /// The canonical upper-case name, as shown to people and stored by the
    /// backends that store names.
    pub fn as_str(self) -> &'static str {
        use InvocationStatus::*;
        match self {
            Scheduled => "SCHEDULED",
            Registered => "REGISTERED",
            ConcurrencyControlled => "CONCURRENCY_CONTROLLED",
            ConcurrencyControlledFinal => "CONCURRENCY_CONTROLLED_FINAL",
            Rerouted => "REROUTED",
            Pending => "PENDING",
            PendingRecovery => "PENDING_RECOVERY",
            Running => "RUNNING",
            Paused => "PAUSED",
            Resumed => "RESUMED",
            RunningRecovery => "RUNNING_RECOVERY",
            Killed => "KILLED",
            Retry => "RETRY",
            Success => "SUCCESS",
            Failed => "FAILED",
            Cancelled => "CANCELLED",
        }
    }

    /// The lower-case name, as serialized (the seed's status values).
    pub fn as_lower_str(self) -> &'static str {
        use InvocationStatus::*;
        match self {
            Scheduled => "scheduled",
            Registered => "registered",
            ConcurrencyControlled => "concurrency_controlled",
            ConcurrencyControlledFinal => "concurrency_controlled_final",
            Rerouted => "rerouted",
            Pending => "pending",
            PendingRecovery => "pending_recovery",
            Running => "running",
            Paused => "paused",
            Resumed => "resumed",
            RunningRecovery => "running_recovery",
            Killed => "killed",
            Retry => "retry",
            Success => "success",
            Failed => "failed",
            Cancelled => "cancelled",
        }
    }
}

impl Serialize for InvocationStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_lower_str())
    }
}

impl<'de> Deserialize<'de> for InvocationStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = InvocationStatus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an invocation status name, in either case")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<InvocationStatus, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Name)
    }
}

impl fmt::Display for InvocationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InvocationStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATUSES
            .iter()
            .copied()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown invocation status '{s}'"))
    }
}

/// Why a transition was refused (nothing was changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The table does not allow `to` after `from`.
    #[error("transition {from} -> {to} is not allowed (allowed after {from}: {allowed})")]
    NotAllowed {
        /// The current status (`None` for a new invocation).
        from: String,
        /// The requested status.
        to: InvocationStatus,
        /// The statuses that would have been accepted.
        allowed: String,
    },
    /// The status requires the acting runner to own the invocation, and it does not.
    #[error("{to} requires owner '{actor}', but the invocation is owned by {owner}")]
    NotOwner {
        /// The requested status.
        to: InvocationStatus,
        /// The runner trying the transition.
        actor: String,
        /// The current owner, or "nobody".
        owner: String,
    },
}

/// The current status of an invocation together with its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The status.
    pub status: InvocationStatus,
    /// The runner that owns the invocation, if any.
    pub owner: Option<RunnerId>,
}

impl StatusRecord {
    /// The record of a brand new invocation, after checking `status` may start one.
    pub fn initial(status: InvocationStatus) -> Result<StatusRecord, TransitionError> {
        if !InvocationStatus::initial().contains(&status) {
            return Err(TransitionError::NotAllowed {
                from: "(new)".into(),
                to: status,
                allowed: join(InvocationStatus::initial()),
            });
        }
        Ok(StatusRecord {
            status,
            owner: None,
        })
    }

    /// The one place where transitions are checked: returns the record that
    /// follows `self` when `actor` sets `to`, or why it may not.
    pub fn transition(
        &self,
        to: InvocationStatus,
        actor: &RunnerId,
    ) -> Result<StatusRecord, TransitionError> {
        if !self.status.can_transition_to(to) {
            return Err(TransitionError::NotAllowed {
                from: self.status.to_string(),
                to,
                allowed: join(self.status.allowed_next()),
            });
        }
        if self.status.requires_owner_for(to) && self.owner.as_ref() != Some(actor) {
            return Err(TransitionError::NotOwner {
                to,
                actor: actor.to_string(),
                owner: self
                    .owner
                    .as_ref()
                    .map_or_else(|| "nobody".to_string(), RunnerId::to_string),
            });
        }
        let owner = match to.ownership() {
            Ownership::Acquire => match &self.owner {
                // the same runner again: keep its shared id
                Some(owner) if owner == actor => Some(owner.clone()),
                _ => Some(actor.clone()),
            },
            Ownership::Keep => self.owner.clone(),
            Ownership::Release => None,
        };
        Ok(StatusRecord { status: to, owner })
    }
}

fn join(list: &[InvocationStatus]) -> String {
    if list.is_empty() {
        return "none, it is final".into();
    }
    list.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replays a history (oldest first) of `(status, owner after the step,
/// actor)` through the state machine, returning the first illegal step: a
/// transition the table forbids, one made by a runner that did not own the
/// invocation, or a recorded owner that is not the one the step implies.
/// Used by the conformance suite after every test.
pub fn replay_history<'a>(
    entries: impl IntoIterator<Item = (InvocationStatus, Option<&'a str>, &'a str)>,
) -> Result<(), (usize, TransitionError)> {
    let mut current: Option<StatusRecord> = None;
    for (i, (status, owner, actor)) in entries.into_iter().enumerate() {
        let next = match &current {
            None => StatusRecord::initial(status).map_err(|e| (i, e))?,
            Some(rec) => rec
                .transition(status, &RunnerId::from(actor))
                .map_err(|e| (i, e))?,
        };
        if next.owner.as_deref() != owner {
            return Err((
                i,
                TransitionError::NotOwner {
                    to: status,
                    actor: actor.to_string(),
                    owner: format!(
                        "{} according to the state machine, but the history records {}",
                        next.owner.as_deref().unwrap_or("nobody"),
                        owner.unwrap_or("nobody")
                    ),
                },
            ));
        }
        current = Some(next);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::InvocationStatus::*;
    use super::*;

    #[test]
    fn every_allowed_transition_is_accepted() {
        for from in ALL_STATUSES {
            for &to in from.allowed_next() {
                let rec = StatusRecord {
                    status: from,
                    owner: Some("r1".into()),
                };
                let next = rec.transition(to, &"r1".into()).unwrap_or_else(|e| {
                    panic!("{from} -> {to} should be allowed: {e}");
                });
                assert_eq!(next.status, to);
                match to.ownership() {
                    Ownership::Release => assert_eq!(next.owner, None),
                    _ => assert_eq!(next.owner.as_deref(), Some("r1")),
                }
                if from.requires_owner_for(to) {
                    assert!(
                        rec.transition(to, &"r2".into()).is_err(),
                        "{from} -> {to} by a non-owner"
                    );
                }
            }
        }
    }

    #[test]
    fn every_other_transition_is_refused() {
        let mut refused = 0;
        for from in ALL_STATUSES {
            for to in ALL_STATUSES {
                if from.allowed_next().contains(&to) {
                    continue;
                }
                let rec = StatusRecord {
                    status: from,
                    owner: Some("r1".into()),
                };
                assert!(
                    matches!(
                        rec.transition(to, &"r1".into()),
                        Err(TransitionError::NotAllowed { .. })
                    ),
                    "{from} -> {to} must be refused"
                );
                refused += 1;
            }
        }
        assert!(refused > 150, "only {refused} forbidden pairs checked");
    }

    #[test]
    fn sample_of_forbidden_transitions() {
        let cases = [
            (Success, Running),
            (Failed, Registered),
            (Registered, Running),
            (Registered, Success),
            (Pending, Success),
            (Paused, Success),
            (Retry, Running),
            (ConcurrencyControlledFinal, Rerouted),
            (Killed, Pending),
            (Scheduled, Pending),
        ];
        for (from, to) in cases {
            let rec = StatusRecord {
                status: from,
                owner: Some("r".into()),
            };
            let err = rec.transition(to, &"r".into()).unwrap_err();
            assert!(err.to_string().contains("not allowed"), "{err}");
        }
    }

    #[test]
    fn ownership_rules() {
        let reg = StatusRecord::initial(Registered).unwrap();
        let pending = reg.transition(Pending, &"runner-a".into()).unwrap();
        assert_eq!(pending.owner.as_deref(), Some("runner-a"));
        // another runner cannot move it to RUNNING
        let err = pending.transition(Running, &"runner-b".into()).unwrap_err();
        assert!(matches!(err, TransitionError::NotOwner { .. }), "{err}");
        let running = pending.transition(Running, &"runner-a".into()).unwrap();
        // recovery may be set by anybody
        // RETRY releases the owner
        assert_eq!(
            running.transition(Retry, &"runner-a".into()).unwrap().owner,
            None
        );
        let rec = running
            .transition(RunningRecovery, &"recovery".into())
            .unwrap();
        assert_eq!(rec.owner.as_deref(), Some("runner-a"));
        let rerouted = rec.transition(Rerouted, &"recovery".into()).unwrap();
        assert_eq!(rerouted.owner, None);
        // a new invocation may only start REGISTERED or SCHEDULED
        assert!(StatusRecord::initial(Running).is_err());
        assert!(StatusRecord::initial(Scheduled).is_ok());
    }

    #[test]
    fn available_and_final() {
        let available: Vec<_> = ALL_STATUSES
            .iter()
            .filter(|s| s.is_available_for_run())
            .collect();
        assert_eq!(available, vec![&Registered, &Rerouted, &Retry]);
        let finals: Vec<_> = ALL_STATUSES.iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            vec![&ConcurrencyControlledFinal, &Success, &Failed, &Cancelled]
        );
    }

    #[test]
    fn index_is_the_position_in_all_statuses() {
        for (i, s) in ALL_STATUSES.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }

    #[test]
    fn names_round_trip() {
        for s in ALL_STATUSES {
            assert_eq!(s.as_str().parse::<InvocationStatus>().unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_lower_str()));
            assert_eq!(json, json.to_lowercase());
            let upper: InvocationStatus =
                serde_json::from_str(&format!("\"{}\"", s.as_str())).unwrap();
            assert_eq!(upper, s);
            let lower: InvocationStatus = serde_json::from_str(&json).unwrap();
            assert_eq!(lower, s);
        }
    }

    #[test]
    fn replay_detects_illegal_history() {
        let ok = [
            (Registered, None, "caller"),
            (Pending, Some("r"), "r"),
            (Running, Some("r"), "r"),
            (Retry, None, "r"),
            (Pending, Some("r2"), "r2"),
            (Running, Some("r2"), "r2"),
            (Success, Some("r2"), "r2"),
        ];
        assert!(replay_history(ok).is_ok());
        let bad = [(Registered, None, "c"), (Running, Some("r"), "r")];
        assert_eq!(replay_history(bad).unwrap_err().0, 1);
        let wrong_actor = [
            (Registered, None, "c"),
            (Pending, Some("r"), "r"),
            (Running, Some("r"), "x"),
        ];
        assert_eq!(replay_history(wrong_actor).unwrap_err().0, 2);
        let wrong_owner = [(Registered, None, "c"), (Pending, Some("x"), "r")];
        assert_eq!(replay_history(wrong_owner).unwrap_err().0, 1);
    }
}
