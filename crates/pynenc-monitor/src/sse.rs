//! `GET /events`: server-sent events telling open pages that something
//! changed, so they reload their data (no polling loop in the page).
//!
//! What drives it: while at least one page listens, one watcher (shared by
//! every stream) waits on the backend's work signal
//! (`Coordination::wait_for_work`, woken when invocations are queued — by
//! notification on Redis and memory, by SQLite's adaptive poll there), for
//! at most [`CHECK_EVERY`]; then it reads a small fingerprint (counts by
//! status, queue depth, live runners, actions taken) through the query API
//! and publishes it when it differs; each stream sends `change` then. Ends
//! of runs do not move the work signal, so they are seen by the check at
//! most [`CHECK_EVERY`] later. The watcher stops when the last page closes:
//! nothing runs while no page is open.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use pynenc_model::InvocationStatus;
use pynenc_operate::Operate;
use tokio::sync::watch;

use crate::state::Shared;

/// The longest time between two checks of the fingerprint.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Checks never come closer together than this, however busy the backend.
const MIN_GAP: Duration = Duration::from_millis(250);

/// What the pages show, in brief: when it changes, they reload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Fingerprint {
    counts: BTreeMap<InvocationStatus, u64>,
    queue: u64,
    runners_alive: usize,
    actions: u64,
}

type Latest = watch::Receiver<Option<Fingerprint>>;

/// The shared watcher's channel, while it runs.
#[derive(Debug, Default)]
pub(crate) struct Live {
    latest: Mutex<Option<Latest>>,
}

async fn fingerprint(s: &Shared) -> Option<Fingerprint> {
    let inspect = s.app.inspect();
    let counts = inspect.counts(&[]).await.ok()?.totals;
    let queue = inspect.queue().await.ok()?.depth;
    let runners_alive = inspect
        .runners()
        .await
        .ok()?
        .iter()
        .filter(|r| r.alive)
        .count();
    Some(Fingerprint {
        counts,
        queue,
        runners_alive,
        actions: s.audit.len(),
    })
}

/// The latest fingerprint's channel, starting the watcher when none runs.
fn subscribe(state: &Shared) -> Latest {
    let mut slot = state
        .live
        .latest
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(rx) = slot.as_ref() {
        // `has_changed` fails once the watcher has stopped
        if rx.has_changed().is_ok() {
            return rx.clone();
        }
    }
    let (tx, rx) = watch::channel(None);
    tokio::spawn(watcher(state.clone(), tx));
    *slot = Some(rx.clone());
    rx
}

/// Publishes the fingerprint when it changes, while any stream listens
/// (the receiver kept in [`Live`] aside).
async fn watcher(state: Shared, tx: watch::Sender<Option<Fingerprint>>) {
    let mut shutdown = state.shutdown.clone();
    tracing::debug!("live watcher started");
    loop {
        let began = Instant::now();
        let epoch = state.app.coordination().work_epoch();
        if let Some(now) = fingerprint(&state).await {
            tx.send_if_modified(|v| {
                let changed = v.as_ref() != Some(&now);
                if changed {
                    *v = Some(now);
                }
                changed
            });
        }
        if tx.receiver_count() <= 1 || *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = state.app.coordination().wait_for_work(epoch, CHECK_EVERY) => {}
            _ = shutdown.changed() => break,
        }
        let gap = began.elapsed();
        if gap < MIN_GAP {
            tokio::time::sleep(MIN_GAP - gap).await;
        }
    }
    tracing::debug!("live watcher stopped: no page listens");
}

struct Stream1 {
    state: Shared,
    latest: Latest,
    last: Option<Fingerprint>,
    shutdown: watch::Receiver<bool>,
    started: bool,
}

/// `GET /events`.
pub(crate) async fn events(
    State(state): State<Shared>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let w = Stream1 {
        latest: subscribe(&state),
        shutdown: state.shutdown.clone(),
        state,
        last: None,
        started: false,
    };
    let stream = futures::stream::unfold(w, |mut w| async move {
        if !w.started {
            w.started = true;
            // "ready" once there is a baseline: what changes after it is sent
            if w.latest.borrow().is_none() {
                let _ = tokio::time::timeout(2 * CHECK_EVERY, w.latest.changed()).await;
            }
            w.last = w.latest.borrow_and_update().clone();
            return Some((Ok(Event::default().event("ready").data("{}")), w));
        }
        loop {
            if *w.shutdown.borrow() {
                return None;
            }
            tokio::select! {
                r = w.latest.changed() => {
                    if r.is_err() {
                        // the watcher stopped (it saw no listener for a
                        // moment): start another
                        w.latest = subscribe(&w.state);
                        continue;
                    }
                }
                _ = w.shutdown.changed() => return None,
            }
            let now = w.latest.borrow_and_update().clone();
            if w.last.is_none() {
                // the first fingerprint read: the baseline
                w.last = now;
                continue;
            }
            if now.is_some() && now != w.last {
                let data = serde_json::to_string(&now).unwrap_or_else(|_| "{}".into());
                w.last = now;
                return Some((Ok(Event::default().event("change").data(data)), w));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
