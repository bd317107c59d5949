//! The listener: a connection per store, on a thread of its own, that
//! `LISTEN`s on the app's channel, registers itself (see
//! [`crate::listener_registry`]) and hands what the other processes
//! announce to the store's waiters ([`Shared::heard`]).
//!
//! It asks its connection for its registration after every second in which
//! it heard nothing, so a connection that died silently is found within
//! seconds; after reconnecting it wakes every waiter to look again (what
//! was announced meanwhile is lost).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Notification, Socket};
use tracing::{debug, warn};

use crate::conn::{spawn_with_runtime, Server, Tls};
use crate::error::describe;
use crate::listener_registry as registry;
use crate::notify::Shared;
use crate::{LISTENER_PING, LISTENER_PING_TIMEOUT};

/// Starts the listener thread of a store: it lives until the store is gone.
pub(crate) fn start_listener(shared: &Arc<Shared>, config: Server) -> std::io::Result<()> {
    let weak = Arc::downgrade(shared);
    spawn_with_runtime(
        "pynenc-pg-listen",
        "cannot start the PostgreSQL listener; waits fall back to rechecks",
        move || listen(weak, config),
    )
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

/// What the store's app is, for the listener.
struct App {
    channel: String,
    shown: String,
    app: i32,
    lock_key: i64,
}

/// How hearing on one connection ended.
enum Ended {
    /// The store is gone: the listener stops.
    StoreGone,
    /// The connection failed: the listener connects again.
    Lost,
}

async fn listen(weak: Weak<Shared>, mut server: Server) {
    server.config.application_name(LISTENER_NAME);
    let mut backoff = Duration::from_millis(20);
    let mut reconnected = false;
    loop {
        let Some(app) = weak.upgrade().map(|s| App {
            channel: s.channel.clone(),
            shown: s.ctx.shown.clone(),
            app: s.ctx.app,
            lock_key: s.ctx.lock_key,
        }) else {
            return;
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
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
                // LISTEN, then register: only then does this store hear
                let registered = match client
                    .batch_execute(&format!("LISTEN {}", app.channel))
                    .await
                {
                    Ok(()) => registry::register(&client, app.app, app.lock_key).await,
                    Err(e) => Err(e),
                };
                match registered {
                    Err(e) => {
                        warn!(postgres = %app.shown, error = %describe(&e), "cannot LISTEN and register the listener; retrying");
                    }
                    Ok(pid) => {
                        backoff = Duration::from_millis(20);
                        let Some(s) = weak.upgrade() else { return };
                        s.set_listener_pid(pid);
                        s.ctx.queue.hearing(true);
                        if reconnected {
                            // notifications sent meanwhile are lost: look again
                            s.wake_everyone();
                        }
                        drop(s);
                        let ended = hear(&weak, &client, rx, &app).await;
                        if let Some(s) = weak.upgrade() {
                            s.ctx.queue.hearing(false);
                            s.set_listener_pid(0);
                        }
                        if let Ended::StoreGone = ended {
                            let gone = registry::unregister(&client, app.app);
                            if let Ok(Err(e)) =
                                tokio::time::timeout(LISTENER_PING_TIMEOUT, gone).await
                            {
                                debug!(error = %describe(&e), "the listener's row stays until the next registration");
                            }
                            driver.abort();
                            return;
                        }
                        warn!(postgres = %app.shown, "PostgreSQL listener disconnected; reconnecting");
                    }
                }
                driver.abort();
            }
            Err(e) => {
                debug!(postgres = %app.shown, error = %describe(&e), "PostgreSQL listener cannot connect");
            }
        }
        reconnected = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Hands what `client`'s connection hears to the store's waiters until the
/// store is gone or the connection fails; pings after every second of
/// silence.
async fn hear(
    weak: &Weak<Shared>,
    client: &Client,
    mut rx: UnboundedReceiver<Notification>,
    app: &App,
) -> Ended {
    loop {
        tokio::select! {
            heard = rx.recv() => match heard {
                Some(n) => match weak.upgrade() {
                    Some(s) => s.heard(n.process_id(), n.payload()),
                    None => return Ended::StoreGone,
                },
                None => return Ended::Lost,
            },
            _ = tokio::time::sleep(LISTENER_PING) => {
                if weak.strong_count() == 0 {
                    return Ended::StoreGone;
                }
                if let Some(ended) = ping(weak, client, app).await {
                    return ended;
                }
            }
        }
    }
}

/// Asks the connection whether the listener is registered: a connection
/// that died without closing would otherwise hear nothing, for ever, and a
/// registration removed by hand is written again (every waiter then looks
/// again: what was committed meanwhile was not announced). `None`: all is
/// well.
async fn ping(weak: &Weak<Shared>, client: &Client, app: &App) -> Option<Ended> {
    let asked = registry::ping(client, app.app);
    match tokio::time::timeout(LISTENER_PING_TIMEOUT, asked).await {
        Ok(Ok(true)) => None,
        Ok(Ok(false)) => {
            warn!(postgres = %app.shown, "the listener's registration was removed; registering again");
            if let Err(e) = registry::register(client, app.app, app.lock_key).await {
                debug!(error = %describe(&e), "the listener cannot register again");
                return Some(Ended::Lost);
            }
            match weak.upgrade() {
                Some(s) => {
                    s.wake_everyone();
                    None
                }
                None => Some(Ended::StoreGone),
            }
        }
        Ok(Err(e)) => {
            debug!(error = %describe(&e), "the listener's connection does not answer");
            Some(Ended::Lost)
        }
        Err(_) => {
            debug!("the listener's connection did not answer in time");
            Some(Ended::Lost)
        }
    }
}
