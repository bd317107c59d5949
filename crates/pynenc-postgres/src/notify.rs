//! Wake-ups: what a committed group announces on the app's channel
//! (`NOTIFY`), the listener that hears the other processes' groups
//! (`LISTEN`), and the waiters they wake.
//!
//! A notification's payload is a letter and, for some, invocation ids:
//! `w` (work was queued), `p` (the app was purged), `f id…` (they became
//! final), `s id…` (their status changed). Payloads stay under the
//! server's limit by splitting the ids over several notifications. The
//! listener ignores what its own process's writer sent: the writer wakes
//! this process's waiters itself, right after its commit.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use pynenc_model::InvocationId;
use pynenc_store::{FinalWaiters, GroupWait, KnownOutcomes, WorkSignal};
use rustc_hash::FxHashSet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Connection, NoTls, Notification, Socket};
use tracing::{debug, warn};

use crate::conn::{Server, Tls};
use crate::error::{describe, Ctx};
use crate::txn::Effects;
use crate::{LISTENER_PING, LISTENER_PING_TIMEOUT};

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
    /// The backend process of this store's writer (its notifications are
    /// announced by the writer itself).
    writer_pid: AtomicI32,
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
            writer_pid: AtomicI32::new(0),
        }
    }

    pub(crate) fn set_writer_pid(&self, pid: i32) {
        self.writer_pid.store(pid, Ordering::Release);
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
    fn wake_everyone(&self) {
        // outcomes kept may be of purged invocations
        self.known.forget_all();
        self.work.bump();
        self.final_waiters.wake_all();
        self.status_waiters.notify_all();
    }

    /// Handles a notification of another process.
    fn heard(&self, from_pid: i32, payload: &str) {
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

/// The `SELECT pg_notify(…);` statements announcing `effects` on `channel`
/// (empty when there is nothing to announce), to send before `COMMIT`.
pub(crate) fn notify_sql(channel: &str, effects: &Effects) -> String {
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
    let mut sql = String::new();
    for payload in payloads {
        // ids and letters only; quotes doubled all the same
        sql.push_str(&format!(
            "SELECT pg_notify('{channel}', '{}'); ",
            payload.replace('\'', "''")
        ));
    }
    sql
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

/// Starts the listener thread of a store: it lives until the store is gone.
pub(crate) fn start_listener(shared: &Arc<Shared>, config: Server) -> std::io::Result<()> {
    let weak = Arc::downgrade(shared);
    std::thread::Builder::new()
        .name("pynenc-pg-listen".to_string())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "cannot start the PostgreSQL listener; waits fall back to rechecks");
                    return;
                }
            };
            rt.block_on(listen(weak, config));
        })
        .map(|_| ())
}

/// Drives a listener connection, sending the notifications it hears to
/// `tx` until the connection ends or nobody listens.
fn drive<T>(
    mut connection: Connection<Socket, T>,
    tx: UnboundedSender<Notification>,
) -> tokio::task::JoinHandle<()>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %describe(&e), "PostgreSQL listener connection ended");
                    return;
                }
            }
        }
    })
}

/// The `application_name` of the listener's connection (the other
/// connections of a store are `pynenc`).
const LISTENER_NAME: &str = "pynenc listener";

async fn listen(weak: Weak<Shared>, mut server: Server) {
    server.config.application_name(LISTENER_NAME);
    let mut backoff = Duration::from_millis(20);
    let mut reconnected = false;
    loop {
        let Some((channel, shown)) = weak
            .upgrade()
            .map(|s| (s.channel.clone(), s.ctx.shown.clone()))
        else {
            return;
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let connected = match &server.tls {
            Tls::Plain => server
                .config
                .connect(NoTls)
                .await
                .map(|(client, connection)| (client, drive(connection, tx))),
            #[cfg(feature = "tls")]
            Tls::Rustls(make) => server
                .config
                .connect(make.clone())
                .await
                .map(|(client, connection)| (client, drive(connection, tx))),
        };
        match connected {
            Ok((client, driver)) => {
                if let Err(e) = client.batch_execute(&format!("LISTEN {channel}")).await {
                    warn!(postgres = %shown, error = %describe(&e), "cannot LISTEN; retrying");
                    driver.abort();
                } else {
                    backoff = Duration::from_millis(20);
                    if let Some(s) = weak.upgrade() {
                        s.ctx.queue.hearing(true);
                    }
                    if reconnected {
                        // notifications sent meanwhile are lost: look again
                        if let Some(s) = weak.upgrade() {
                            s.wake_everyone();
                        }
                    }
                    loop {
                        tokio::select! {
                            heard = rx.recv() => match heard {
                                Some(n) => match weak.upgrade() {
                                    Some(s) => s.heard(n.process_id(), n.payload()),
                                    None => return,
                                },
                                None => break,
                            },
                            _ = tokio::time::sleep(LISTENER_PING) => {
                                if weak.strong_count() == 0 {
                                    return;
                                }
                                // a connection that died without closing
                                // would otherwise hear nothing, for ever
                                let ping = client.simple_query("");
                                match tokio::time::timeout(LISTENER_PING_TIMEOUT, ping).await {
                                    Ok(Ok(_)) => {}
                                    Ok(Err(e)) => {
                                        debug!(error = %describe(&e), "the listener's connection does not answer");
                                        break;
                                    }
                                    Err(_) => {
                                        debug!("the listener's connection did not answer in time");
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    driver.abort();
                    if let Some(s) = weak.upgrade() {
                        s.ctx.queue.hearing(false);
                    }
                    warn!(postgres = %shown, "PostgreSQL listener disconnected; reconnecting");
                }
            }
            Err(e) => {
                debug!(postgres = %shown, error = %describe(&e), "PostgreSQL listener cannot connect");
            }
        }
        reconnected = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
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
            notify_sql("ch", &effects),
            format!("SELECT pg_notify('ch', 'f {a}'); SELECT pg_notify('ch', 's {b}'); ")
        );
    }
}
