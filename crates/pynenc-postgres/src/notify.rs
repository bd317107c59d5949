//! Wake-ups: what a committed group announces on the app's channel
//! (`NOTIFY`), and the waiters that it and the other processes' groups
//! (heard by [`crate::listener`]) wake.
//!
//! A notification's payload is a letter and, for some, invocation ids:
//! `w` (work was queued), `p` (the app was purged), `f id…` (they became
//! final), `s id…` (their status changed). Payloads stay under the
//! server's limit by splitting the ids over several notifications. The
//! listener ignores what its own process's writer sent: the writer wakes
//! this process's waiters itself, right after its commit.

use std::sync::atomic::{AtomicI32, Ordering};

use pynenc_model::InvocationId;
use pynenc_store::{FinalWaiters, GroupWait, KnownOutcomes, WorkSignal};
use rustc_hash::FxHashSet;
use tokio::sync::Notify;
use tracing::debug;

use crate::error::Ctx;
use crate::txn::Effects;

/// The longest payload sent (the server refuses 8,000 bytes and more).
const PAYLOAD_MAX: usize = 7_000;

/// What a store shares between its handles, its writer and its listener.
pub(crate) struct Shared {
    pub(crate) ctx: Ctx,
    /// The app's channel.
    pub(crate) channel: String,
    pub(crate) work: WorkSignal,
    pub(crate) final_waiters: FinalWaiters<GroupWait>,
    pub(crate) status_waiters: FinalWaiters<Notify>,
    /// Outcomes this process committed for its own waits.
    pub(crate) known: KnownOutcomes,
    /// Picks of this process's runners parked until work comes.
    pub(crate) parked: crate::parked::Parked,
    /// The backend process of this store's writer (its notifications are
    /// announced by the writer itself).
    writer_pid: AtomicI32,
    /// The backend process of this store's registered listener (0 while
    /// it has none): the groups notify when another one is registered.
    listener_pid: AtomicI32,
}

impl Shared {
    pub(crate) fn new(ctx: Ctx) -> Shared {
        Shared {
            channel: format!("pynenc_app_{}", ctx.app),
            ctx,
            work: WorkSignal::default(),
            final_waiters: FinalWaiters::default(),
            status_waiters: FinalWaiters::default(),
            known: KnownOutcomes::default(),
            parked: Default::default(),
            writer_pid: AtomicI32::new(0),
            listener_pid: AtomicI32::new(0),
        }
    }

    pub(crate) fn set_writer_pid(&self, pid: i32) {
        self.writer_pid.store(pid, Ordering::Release);
    }

    /// The server process of this store's registered listener (0 while it
    /// has none).
    pub(crate) fn listener_pid(&self) -> i32 {
        self.listener_pid.load(Ordering::Acquire)
    }

    /// The listener registered from server process `pid` (0: it stopped
    /// hearing).
    pub(crate) fn set_listener_pid(&self, pid: i32) {
        self.listener_pid.store(pid, Ordering::Release);
    }

    /// Wakes this process's waiters after a commit of its own writer.
    pub(crate) fn announce_local(&self, effects: &Effects) {
        if effects.purged {
            self.wake_everyone();
            return;
        }
        if effects.enqueued {
            self.work.bump();
        }
        // an outcome kept earlier is no longer the one to read (a deletion
        // announces a final too); those known whole are kept before the
        // waits wake, for the read that follows
        self.known.forget(&effects.finals);
        for (id, outcome) in &effects.outcomes {
            if self.final_waiters.is_waited(id) {
                self.known.keep(*id, outcome.clone());
            }
        }
        for id in &effects.finals {
            self.on_final(id);
        }
        for id in &effects.changed {
            self.on_status(id);
        }
    }

    fn on_final(&self, id: &InvocationId) {
        self.final_waiters.mark_final(id);
        self.on_status(id);
    }

    fn on_status(&self, id: &InvocationId) {
        self.status_waiters.notify(id);
    }

    /// Everything may have changed (a purge, or notifications missed while
    /// the listener reconnected): every waiter looks again.
    pub(crate) fn wake_everyone(&self) {
        // outcomes kept may be of purged invocations
        self.known.forget_all();
        self.work.bump();
        self.final_waiters.wake_all();
        self.status_waiters.notify_all();
    }

    /// Handles a notification of another process.
    pub(crate) fn heard(&self, from_pid: i32, payload: &str) {
        if from_pid == self.writer_pid.load(Ordering::Acquire) {
            return;
        }
        let mut words = payload.split(' ');
        match words.next() {
            Some("w") => self.work.bump(),
            Some("p") => self.wake_everyone(),
            Some(kind @ ("f" | "s")) => {
                for word in words {
                    match InvocationId::parse(word) {
                        Ok(id) if kind == "f" => {
                            self.known.forget([&id]);
                            self.on_final(&id)
                        }
                        Ok(id) => self.on_status(&id),
                        Err(e) => debug!(error = %e, "a notification names no invocation"),
                    }
                }
            }
            _ => debug!(payload, "a notification of unknown kind"),
        }
    }
}

/// The payloads announcing `effects` (none when there is nothing to
/// announce), to notify before `COMMIT`.
pub(crate) fn notify_payloads(effects: &Effects) -> Vec<String> {
    let mut payloads = Vec::new();
    if effects.purged {
        payloads.push("p".to_string());
    } else {
        if effects.enqueued {
            payloads.push("w".to_string());
        }
        split_ids(&mut payloads, "f", &effects.finals);
        // `f` wakes the status waiters too
        let finals: FxHashSet<&InvocationId> = effects.finals.iter().collect();
        let changed = effects.changed.iter().filter(|id| !finals.contains(id));
        split_ids(&mut payloads, "s", changed);
    }
    payloads
}

fn split_ids<'a>(
    out: &mut Vec<String>,
    kind: &str,
    ids: impl IntoIterator<Item = &'a InvocationId>,
) {
    let mut current = String::new();
    for id in ids {
        if current.is_empty() {
            current.push_str(kind);
        }
        current.push(' ');
        current.push_str(id.as_str());
        if current.len() >= PAYLOAD_MAX {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invocation_that_became_final_is_announced_once() {
        let (a, b) = (InvocationId::time_ordered(), InvocationId::time_ordered());
        let effects = Effects {
            finals: vec![a],
            changed: vec![a, b],
            ..Effects::default()
        };
        assert_eq!(
            notify_payloads(&effects),
            vec![format!("f {a}"), format!("s {b}")]
        );
    }
}
