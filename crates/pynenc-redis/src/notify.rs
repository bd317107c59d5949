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
//!
//! The `work` channel is heard only once something in the process waits
//! for work (a runner, a monitor's live page): a process that only calls
//! tasks — a web service enqueuing jobs — would otherwise be woken by every
//! call it makes and every call of the other processes (a caller whose
//! calls alternated with other commands took a fifth longer per call while
//! it heard its own messages). Until then the process learns of its own
//! queued work from its scripts' replies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use redis::aio::{PubSub, PubSubSink, PubSubStream};
use tokio::sync::Notify;
use tracing::{debug, warn};

use pynenc_model::InvocationId;
use pynenc_store::{FinalWaiters, GroupWait, Registered, WorkSignal};

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
    /// Something of this process waited for work: the `work` channel is
    /// (re)subscribed with the others from now on.
    wants_work: AtomicBool,
    /// The current pub/sub connection hears the `work` channel.
    hears_work: AtomicBool,
    /// Subscribes more channels on the current pub/sub connection.
    sink: Mutex<Option<PubSubSink>>,
    /// The id of the backend served (`RedisBackend::instance`): a `work`
    /// message naming it is skipped, the reply of the call that queued the
    /// work moved the epoch already.
    instance: String,
}

impl Notifier {
    /// The notifier of the backend `instance`.
    pub(crate) fn for_instance(instance: String) -> Self {
        Notifier {
            instance,
            ..Notifier::default()
        }
    }

    /// A subscribed connection (hearing `work` or not) is the current one:
    /// its sink is kept for later subscriptions, its stream returned.
    fn listen(&self, pubsub: PubSub, hears_work: bool) -> PubSubStream {
        let (sink, stream) = pubsub.split();
        *self.sink.lock() = Some(sink);
        self.hears_work.store(hears_work, Ordering::Release);
        self.connected.store(true, Ordering::Release);
        stream
    }

    /// The pub/sub connection is gone.
    fn lost(&self) {
        *self.sink.lock() = None;
        self.hears_work.store(false, Ordering::Release);
        self.connected.store(false, Ordering::Release);
    }

    pub fn work_epoch(&self) -> u64 {
        self.work.epoch()
    }

    /// Work may be available.
    pub fn bump_work(&self) {
        self.work.bump();
    }

    /// Resolves when the epoch moved past `epoch` or after `timeout`. The
    /// first wait subscribes the `work` channel and returns at once: work
    /// queued by other processes before it was not announced here.
    /// `prefix`: the app's key prefix (the channels' names start with it).
    pub async fn wait_for_work(&self, epoch: u64, timeout: Duration, prefix: &str) {
        if !self.hears_work.load(Ordering::Acquire) {
            self.wants_work.store(true, Ordering::Release);
            let sink = self.sink.lock().clone();
            if let Some(mut sink) = sink {
                let channel = Channels::of(prefix).work;
                match tokio::time::timeout(timeout, sink.subscribe(&channel)).await {
                    Ok(Ok(())) => {
                        self.hears_work.store(true, Ordering::Release);
                        debug!(%channel, "listening for work");
                        self.bump_work();
                        return;
                    }
                    // the reconnection subscribes it (`wants_work`)
                    Ok(Err(e)) => {
                        debug!(%channel, error = %e, "subscribing the work channel failed")
                    }
                    Err(_) => return,
                }
            }
        }
        self.work.wait(epoch, timeout).await
    }

    /// `id` became final.
    pub fn on_final(&self, id: &InvocationId) {
        self.waiters.mark_final(id);
    }

    /// The status of `id` changed (or it was deleted).
    pub fn on_status(&self, id: &InvocationId) {
        self.status_waiters.notify(id);
    }

    /// Registers a wait for `ids` (before their statuses are read).
    pub fn register(self: &Arc<Self>, ids: &[InvocationId]) -> Registered<Notifier, GroupWait> {
        Registered::new(self, |n| &n.waiters, ids, GroupWait::new(ids))
    }

    /// How many invocations have local waiters.
    #[cfg(test)]
    pub fn waited_len(&self) -> usize {
        self.waiters.len()
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
    let mut stream = connect(&client, &channels, &notifier).await?;
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(mut stream) = stream.take() {
                {
                    while let Some(msg) = stream.next().await {
                        let Some(n) = notifier.upgrade() else {
                            return;
                        };
                        let channel = msg.get_channel_name();
                        if channel == channels.work {
                            // one of this backend's calls queued it: its
                            // reply moved the epoch (a second move would
                            // send the runners to pick again, for nothing)
                            if msg.get_payload_bytes() != n.instance.as_bytes() {
                                n.bump_work();
                            }
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
                    Some(n) => n.lost(),
                    None => return,
                }
                warn!(redis = %address, "redis pub/sub connection lost; reconnecting");
            }
            tokio::time::sleep(backoff).await;
            if notifier.strong_count() == 0 {
                return;
            }
            match connect(&client, &channels, &notifier).await {
                Ok(listening) => {
                    debug!(redis = %address, "redis pub/sub connection restored");
                    backoff = Duration::from_millis(50);
                    let Some(n) = notifier.upgrade() else {
                        return;
                    };
                    stream = listening;
                    // messages may have been missed while disconnected
                    n.recheck.notify_waiters();
                    n.status_waiters.notify_all();
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

/// A new pub/sub connection subscribed to the app's channels (`work` only
/// when something of the process waited for work), made the notifier's
/// current one; its stream of messages (`None` when the notifier is gone).
async fn connect(
    client: &redis::Client,
    channels: &Channels,
    notifier: &Weak<Notifier>,
) -> redis::RedisResult<Option<PubSubStream>> {
    let work = notifier
        .upgrade()
        .is_some_and(|n| n.wants_work.load(Ordering::Acquire));
    let mut ps = client.get_async_pubsub().await?;
    if work {
        ps.subscribe(&[&channels.work, &channels.finals, &channels.status])
            .await?;
    } else {
        ps.subscribe(&[&channels.finals, &channels.status]).await?;
    }
    Ok(notifier.upgrade().map(|n| n.listen(ps, work)))
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
        assert_eq!(r.waiter().left(), 1);
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
        tokio::time::timeout(Duration::from_secs(1), r.waiter().woken())
            .await
            .expect("woken");
    }
}
