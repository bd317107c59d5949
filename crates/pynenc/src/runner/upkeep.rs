//! What a runner does besides running: backing off after a failed pick,
//! idling until work comes, and its periodic duties (heartbeat, recovery,
//! auto purge).

use std::time::{Duration, Instant};

use pynenc_model::RunnerId;
use tracing::{debug, error, info, warn};

use super::stop::StopSignal;
use crate::app::Pynenc;
use crate::exceptions::PynencError;

/// The wait of a runner loop after a failed pick: 10 ms, doubling up to
/// 5 s while picks keep failing, back to 10 ms once one works.
pub(crate) struct PickBackoff(Duration);

impl PickBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const LONGEST: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        PickBackoff(Self::FIRST)
    }

    /// A pick worked.
    pub(crate) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// A pick failed with `error`: logs it and waits (or until a stop).
    pub(crate) async fn failed(&mut self, stop: &StopSignal, error: &PynencError) {
        error!(error = %error, retry_in_ms = self.0.as_millis() as u64, "could not get invocations to run");
        stop.or_stopped(tokio::time::sleep(self.0)).await;
        self.0 = (self.0 * 2).min(Self::LONGEST);
    }
}

/// A runner found nothing to pick: promotes the scheduled calls that are
/// due, and when there were none, waits for work (or a stop) up to 100 ms.
pub(crate) async fn idle(app: &Pynenc, stop: &StopSignal, epoch: u64) {
    match app.orchestrator().promote_scheduled().await {
        Ok(0) => {}
        Ok(n) => {
            debug!(promoted = n, "scheduled invocations are due");
            return;
        }
        Err(e) => warn!(error = %e, "could not promote scheduled invocations"),
    }
    stop.or_stopped(
        app.coordination()
            .wait_for_work(epoch, Duration::from_millis(100)),
    )
    .await;
}

/// The runner's periodic duties, off the hot path: heartbeat, recovery of
/// lost work (by the one runner holding the recovery lease) and auto purge.
pub(crate) async fn maintain(app: Pynenc, runner_id: RunnerId) {
    let conf = app.conf();
    let orch = app.orchestrator();
    let coordination = app.coordination();
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.001));
    let heartbeat_every = secs(conf.runner.heartbeat_interval_seconds);
    let recover_every = secs(conf.runner.recovery_interval_seconds);
    let dead_after = secs(conf.runner.runner_dead_after_seconds);
    let max_pending = secs(conf.orchestrator.max_pending_seconds);
    let purge_every = secs(conf.orchestrator.auto_purge_interval_seconds);
    let purge_after = Duration::from_secs_f64(
        conf.orchestrator.auto_final_invocation_purge_hours.max(0.0) * 3600.0,
    );
    let recovery_actor = RunnerId::from(format!("recovery@{runner_id}"));
    let tick = heartbeat_every.min(recover_every).min(purge_every);
    let (mut last_beat, mut last_recover, mut last_purge) =
        (None::<Instant>, Instant::now(), Instant::now());
    loop {
        if last_beat.map_or(true, |t| t.elapsed() >= heartbeat_every) {
            last_beat = Some(Instant::now());
            if let Err(e) = coordination.heartbeat(&runner_id).await {
                warn!(error = %e, "could not write the runner heartbeat");
            }
        }
        if last_recover.elapsed() >= recover_every {
            last_recover = Instant::now();
            match coordination
                .try_lease("recovery", &runner_id, recover_every * 3)
                .await
            {
                Ok(true) => match orch.recover(&recovery_actor, dead_after, max_pending).await {
                    Ok(ids) if ids.is_empty() => {}
                    Ok(ids) => {
                        warn!(recovered = ids.len(), invocations = ?ids, "re-routed invocations of dead runners")
                    }
                    Err(e) => warn!(error = %e, "recovery failed"),
                },
                Ok(false) => {}
                Err(e) => warn!(error = %e, "could not take the recovery lease"),
            }
        }
        if last_purge.elapsed() >= purge_every {
            last_purge = Instant::now();
            match orch.auto_purge(purge_after).await {
                Ok(0) => {}
                Ok(n) => info!(purged = n, "auto purge removed final invocations"),
                Err(e) => warn!(error = %e, "auto purge failed"),
            }
        }
        tokio::time::sleep(tick).await;
    }
}
