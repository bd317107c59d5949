//! Wake-ups: the scripts `PUBLISH` on `{prefix}work` when they queue ids,
//! on `{prefix}final` (payload: the ids that became final in that script,
//! separated by spaces) when invocations become final, and on
//! `{prefix}status` (the same payload) when the status of an invocation
//! someone watches changed. One pub/sub connection per backend dispatches
//! them to local waiters: a work epoch with a [`Notify`] for runners, a map
//! from invocation id to the groups waiting for it for `wait_final`, and one
//! to the waits for its next status (`wait_status_change`).
//!
//! The process that ran a script also applies the script's own reply
//! (queued? which became final?) at once, without waiting for the message.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{debug, warn};

use pynenc_model::InvocationId;
use pynenc_store::{FinalWaiters, WorkSignal};

/// A group of invocations one `wait_final` call waits for.
pub(crate) struct GroupWait {
    pub pending: Mutex<HashSet<InvocationId>>,
    pub done: Notify,
}

impl GroupWait {
    /// Marks `id` final; wakes the waiter when nothing is left.
    pub fn mark(&self, id: &InvocationId) {
        let mut p = self.pending.lock();
        if p.remove(id) && p.is_empty() {
            self.done.notify_one();
        }
    }
}

/// Local waiters of one backend.
#[derive(Default)]
pub(crate) struct Notifier {
    work: WorkSignal,
    waiters: FinalWaiters<GroupWait>,
    /// Waits for the next status of an invocation.
    pub status_waiters: FinalWaiters<Notify>,
    /// Woken after the pub/sub connection came back: every waiter re-reads its statuses.
    pub recheck: Notify,
    pub connected: AtomicBool,
}

impl Notifier {
    pub fn work_epoch(&self) -> u64 {
        self.work.epoch()
    }

    /// Work may be available.
    pub fn bump_work(&self) {
        self.work.bump();
    }

    /// Resolves when the epoch moved past `epoch` or after `timeout`.
    pub async fn wait_for_work(&self, epoch: u64, timeout: Duration) {
        self.work.wait(epoch, timeout).await
    }

    /// `id` became final.
    pub fn on_final(&self, id: &InvocationId) {
        for w in self.waiters.take(id) {
            w.mark(id);
        }
    }

    /// The status of `id` changed (or it was deleted).
    pub fn on_status(&self, id: &InvocationId) {
        for w in self.status_waiters.take(id) {
            w.notify_one();
        }
    }

    /// Registers a wait for `ids` (before their statuses are read).
    pub fn register(self: &Arc<Self>, ids: &[InvocationId]) -> Registration {
        let wait = Arc::new(GroupWait {
            pending: Mutex::new(ids.iter().copied().collect()),
            done: Notify::new(),
        });
        self.waiters.add(ids, &wait);
        Registration {
            notifier: self.clone(),
            wait,
        }
    }

    /// How many invocations have local waiters.
    #[cfg(test)]
    pub fn waited_len(&self) -> usize {
        self.waiters.len()
    }
}

/// A registered wait; dropping it forgets the ids still pending.
pub(crate) struct Registration {
    notifier: Arc<Notifier>,
    pub wait: Arc<GroupWait>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let left: Vec<InvocationId> = self.wait.pending.lock().iter().copied().collect();
        if left.is_empty() {
            return;
        }
        self.notifier.waiters.remove(&left, &self.wait);
    }
}

/// Subscribes to the app's channels; returns once the subscription is
/// active, leaving a task that dispatches messages and re-subscribes after
/// a connection loss (then every waiter re-checks, and runners look for work).
pub(crate) async fn start_listener(
    client: redis::Client,
    prefix: String,
    notifier: Weak<Notifier>,
    address: String,
) -> redis::RedisResult<()> {
    let channels = Channels::of(&prefix);
    let pubsub = subscribe(&client, &channels).await?;
    if let Some(n) = notifier.upgrade() {
        n.connected.store(true, Ordering::Release);
    }
    tokio::spawn(async move {
        let mut pubsub = Some(pubsub);
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(mut ps) = pubsub.take() {
                {
                    let mut stream = ps.on_message();
                    while let Some(msg) = stream.next().await {
                        let Some(n) = notifier.upgrade() else {
                            return;
                        };
                        let channel = msg.get_channel_name();
                        if channel == channels.work {
                            n.bump_work();
                            continue;
                        }
                        let on: fn(&Notifier, &InvocationId) = if channel == channels.finals {
                            Notifier::on_final
                        } else if channel == channels.status {
                            Notifier::on_status
                        } else {
                            continue;
                        };
                        // one message per script: the ids, separated by spaces
                        if let Ok(ids) = msg.get_payload::<String>() {
                            for id in ids.split(' ').filter(|id| !id.is_empty()) {
                                match InvocationId::parse(id) {
                                    Ok(id) => on(&n, &id),
                                    Err(e) => {
                                        warn!(redis = %address, channel, error = %e, "ignored a message naming no invocation")
                                    }
                                }
                            }
                        }
                    }
                }
                match notifier.upgrade() {
                    Some(n) => n.connected.store(false, Ordering::Release),
                    None => return,
                }
                warn!(redis = %address, "redis pub/sub connection lost; reconnecting");
            }
            tokio::time::sleep(backoff).await;
            if notifier.strong_count() == 0 {
                return;
            }
            match subscribe(&client, &channels).await {
                Ok(ps) => {
                    debug!(redis = %address, "redis pub/sub connection restored");
                    backoff = Duration::from_millis(50);
                    pubsub = Some(ps);
                    let Some(n) = notifier.upgrade() else {
                        return;
                    };
                    n.connected.store(true, Ordering::Release);
                    // messages may have been missed while disconnected
                    n.recheck.notify_waiters();
                    n.status_waiters
                        .take_all()
                        .iter()
                        .for_each(|w| w.notify_one());
                    n.bump_work();
                }
                Err(e) => {
                    debug!(redis = %address, error = %e, "redis pub/sub reconnect failed");
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    });
    Ok(())
}

/// The channels of one app.
struct Channels {
    work: String,
    finals: String,
    status: String,
}

impl Channels {
    fn of(prefix: &str) -> Channels {
        Channels {
            work: format!("{prefix}work"),
            finals: format!("{prefix}final"),
            status: format!("{prefix}status"),
        }
    }
}

async fn subscribe(
    client: &redis::Client,
    channels: &Channels,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut ps = client.get_async_pubsub().await?;
    ps.subscribe(&[&channels.work, &channels.finals, &channels.status])
        .await?;
    Ok(ps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_forgotten_on_drop() {
        let n = Arc::new(Notifier::default());
        let (a, b) = (InvocationId::from_u128(1), InvocationId::from_u128(2));
        let r = n.register(&[a, b]);
        assert_eq!(n.waited_len(), 2);
        n.on_final(&a);
        assert_eq!(n.waited_len(), 1);
        assert_eq!(r.wait.pending.lock().len(), 1);
        drop(r);
        assert_eq!(n.waited_len(), 0);
    }

    #[tokio::test]
    async fn final_wakes_the_group() {
        let n = Arc::new(Notifier::default());
        let (a, b) = (InvocationId::from_u128(1), InvocationId::from_u128(2));
        let r = n.register(&[a, b]);
        n.on_final(&a);
        n.on_final(&b);
        // the permit is stored: no lost wake-up
        tokio::time::timeout(Duration::from_secs(1), r.wait.done.notified())
            .await
            .expect("woken");
    }
}
