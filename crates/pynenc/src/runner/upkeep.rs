//! What a runner does besides running: backing off after a failed pick,
//! idling until work comes, and its periodic duties (heartbeat and
//! registration, recovery, pruning of silent runners, auto purge).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pynenc_model::{InvocationId, InvocationRecord, RunnerId, RunnerInfo, Timestamp};
use pynenc_store::StoreError;
use tracing::{debug, error, info, warn};

use super::cancel::log_if_cancelled;
use super::ids::host_name;
use super::stop::StopSignal;
use crate::app::Pynenc;
use crate::conf::RunnerKind;
use crate::exceptions::PynencError;
use crate::trigger::{fire_due, TriggerState};

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

/// What a runner does when it found nothing to pick: it promotes the
/// scheduled calls that are due, and when there were none, waits for work
/// (or a stop) up to [`Idle::WAIT`].
///
/// It looks for due scheduled calls at most every [`Idle::LOOK_EVERY`]: a
/// runner idles after every pick that found nothing (behind a sequential
/// caller, after every call), and a look is a step of the store each time.
/// A due call is still promoted within about [`Idle::WAIT`], as when every
/// idle looked: the wait is longer than the pause between looks.
pub(crate) struct Idle {
    looked: Option<Instant>,
}

impl Idle {
    /// The least time between two looks for due scheduled calls.
    pub(crate) const LOOK_EVERY: Duration = Duration::from_millis(50);
    /// The longest wait for work before the runner picks again.
    pub(crate) const WAIT: Duration = Duration::from_millis(100);

    pub(crate) fn new() -> Self {
        Idle { looked: None }
    }

    /// Whether it is time to look for due scheduled calls (and, if so,
    /// the look starts now).
    fn look_now(&mut self) -> bool {
        if self.looked.is_some_and(|t| t.elapsed() < Self::LOOK_EVERY) {
            return false;
        }
        self.looked = Some(Instant::now());
        true
    }

    /// Nothing was picked at work epoch `epoch` (read before the pick).
    pub(crate) async fn wait(&mut self, app: &Pynenc, stop: &StopSignal, epoch: u64) {
        if self.promoted(app).await {
            return;
        }
        stop.or_stopped(app.coordination().wait_for_work(epoch, Self::WAIT))
            .await;
    }

    /// [`Idle::wait`] of a runner that starts what it picks, for `free`
    /// slots: where the orchestrator parks picks
    /// ([`pynenc_store::Orchestrator::start_when_work`]), the pick waits
    /// for the work in the runner's place and what it started is returned
    /// (empty: pick again). A parked pick is awaited to its end, a stop
    /// included (at most [`Idle::WAIT`]): one the store took may have
    /// started invocations for this runner. `epoch`: the work epoch at
    /// which the runner found nothing, `None` when its last parked pick
    /// took fewer than it asked for (only the store knows when the queue
    /// drained; a store that does not park picks returns at once).
    pub(crate) async fn wait_and_start(
        &mut self,
        app: &Pynenc,
        stop: &StopSignal,
        epoch: Option<u64>,
        runner_id: &RunnerId,
        free: usize,
        execution_context: Option<&str>,
    ) -> Result<Vec<Arc<InvocationRecord>>, StoreError> {
        if self.promoted(app).await {
            return Ok(Vec::new());
        }
        let orch = app.orchestrator();
        match orch.start_when_work(runner_id, free, execution_context, epoch, Self::WAIT) {
            Some(parked) => Ok(parked.await?.unwrap_or_default()),
            None => {
                if let Some(epoch) = epoch {
                    stop.or_stopped(app.coordination().wait_for_work(epoch, Self::WAIT))
                        .await;
                }
                Ok(Vec::new())
            }
        }
    }

    /// Promotes the scheduled calls that are due, when it is time to look;
    /// whether it promoted any (the runner then picks at once).
    async fn promoted(&mut self, app: &Pynenc) -> bool {
        if !self.look_now() {
            return false;
        }
        match app.orchestrator().promote_scheduled().await {
            Ok(0) => false,
            Ok(n) => {
                debug!(promoted = n, "scheduled invocations are due");
                // more may be due: the next idle looks again
                self.looked = None;
                true
            }
            Err(e) => {
                warn!(error = %e, "could not promote scheduled invocations");
                false
            }
        }
    }
}

/// What a runner says of itself to the store: who it is and, at every
/// heartbeat, what it runs now.
///
/// A listed runner registers (`Coordination::register_runner`, which counts
/// as a heartbeat) and appears in `Queries::runners`; an unlisted one (a
/// worker process of a pool, whose pool lists what it runs) only beats its
/// heartbeat, which keeps what it owns from being recovered.
pub(crate) struct Presence {
    app: Pynenc,
    info: RunnerInfo,
    listed: bool,
    now: NowRunning,
}

/// What a runner has now: its slots and the invocations it runs.
type NowRunning = Box<dyn Fn() -> (usize, Vec<InvocationId>) + Send + Sync>;

impl Presence {
    /// The presence of `runner_id`, listed as a runner of `kind` (`None`:
    /// not listed); `now` tells its slots and what it runs now.
    pub(crate) fn new(
        app: &Pynenc,
        runner_id: &RunnerId,
        kind: Option<RunnerKind>,
        now: impl Fn() -> (usize, Vec<InvocationId>) + Send + Sync + 'static,
    ) -> Self {
        let started_at = Timestamp::now();
        Presence {
            app: app.clone(),
            info: RunnerInfo {
                runner_id: runner_id.clone(),
                kind: kind.map_or("", RunnerKind::name).to_string(),
                host: host_name().to_string(),
                pid: std::process::id(),
                started_at,
                heartbeat_at: started_at,
                slots: 0,
                running: Vec::new(),
            },
            listed: kind.is_some(),
            now: Box::new(now),
        }
    }

    /// The runner's id.
    pub(crate) fn runner_id(&self) -> &RunnerId {
        &self.info.runner_id
    }

    /// A heartbeat: registers the runner with what it runs now (a listed
    /// runner), or records that it is alive.
    pub(crate) async fn beat(&self) {
        let coordination = self.app.coordination();
        let written = if self.listed {
            let (slots, running) = (self.now)();
            let mut info = self.info.clone();
            info.slots = u32::try_from(slots).unwrap_or(u32::MAX);
            info.running = running;
            coordination.register_runner(&info).await
        } else {
            coordination.heartbeat(&self.info.runner_id).await
        };
        if let Err(e) = written {
            warn!(error = %e, "could not write the runner heartbeat");
        }
    }

    /// A clean stop: the runner's heartbeat and registration are removed.
    pub(crate) async fn leave(&self) {
        if let Err(e) = self
            .app
            .coordination()
            .remove_heartbeat(self.runner_id())
            .await
        {
            warn!(error = %e, "could not remove the runner heartbeat");
        }
    }
}

/// Forgets the registrations of runners whose heartbeat is older than
/// `keep` (they stopped without leaving, or died).
async fn prune_runners(app: &Pynenc, keep: Duration) {
    let runners = match app.queries().runners().await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "could not list the runners to prune them");
            return;
        }
    };
    let cutoff = Timestamp::now() - keep;
    for runner in runners.into_iter().filter(|r| r.heartbeat_at < cutoff) {
        match app.coordination().remove_heartbeat(&runner.runner_id).await {
            Ok(()) => info!(
                runner = %runner.runner_id,
                last_heartbeat = %runner.heartbeat_at,
                "forgot a runner silent for longer than runner_info_keep_seconds"
            ),
            Err(e) => {
                warn!(runner = %runner.runner_id, error = %e, "could not forget a silent runner")
            }
        }
    }
}

/// The runner's periodic duties, off the hot path: its heartbeat (with
/// what it runs now, see [`Presence`]) and, when `upkeep`, recovery of lost
/// work and pruning of silent runners (by the one runner holding the
/// recovery lease) and auto purge. The caller announced the runner already
/// (the first heartbeat comes one interval later).
pub(crate) async fn maintain(presence: Arc<Presence>, upkeep: bool) {
    let app = presence.app.clone();
    let runner_id = presence.runner_id().clone();
    let conf = app.conf();
    let orch = app.orchestrator();
    let coordination = app.coordination();
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.001));
    let heartbeat_every = secs(conf.runner.heartbeat_interval_seconds);
    let recover_every = secs(conf.runner.recovery_interval_seconds);
    let dead_after = secs(conf.runner.runner_dead_after_seconds);
    let max_pending = secs(conf.orchestrator.max_pending_seconds);
    let purge_every = secs(conf.orchestrator.auto_purge_interval_seconds);
    let keep_runners = Duration::from_secs_f64(conf.runner.runner_info_keep_seconds.max(0.0));
    let prune_every = keep_runners.clamp(recover_every, Duration::from_secs(60).max(recover_every));
    let retention = conf.retention_policy();
    let recovery_actor = RunnerId::from(format!("recovery@{runner_id}"));
    // cron triggers are evaluated here; the others react in the runs
    let triggers: Vec<_> = app
        .resolved_triggers()
        .iter()
        .filter(|t| t.is_cron())
        .cloned()
        .collect();
    let trigger_every = secs(conf.triggers.evaluate_interval_seconds);
    let missed_window = secs(conf.triggers.missed_tick_window_seconds);
    // the heartbeat beats on its own: a duty that waits (a lease, a
    // recovery or a purge queued behind busy steps) never holds it back, or
    // this runner's own recovery would find it silent and take back what it
    // runs
    let beats = async {
        loop {
            tokio::time::sleep(heartbeat_every).await;
            presence.beat().await;
        }
    };
    if !upkeep {
        return beats.await;
    }
    let mut tick = recover_every.min(purge_every);
    if !triggers.is_empty() {
        tick = tick.min(trigger_every);
    }
    let mut last_triggers = Instant::now();
    let mut trigger_state = TriggerState::default();
    let (mut last_recover, mut last_purge, mut last_prune) =
        (Instant::now(), Instant::now(), None::<Instant>);
    let duties = async {
        crate::trigger::store_triggers(&app).await;
        loop {
            tokio::time::sleep(tick).await;
            if !triggers.is_empty() && last_triggers.elapsed() >= trigger_every {
                last_triggers = Instant::now();
                // one evaluator at a time; a lease that moves mid-tick fires
                // nothing twice (each firing is keyed)
                match coordination
                    .try_lease("triggers", &runner_id, trigger_every * 3)
                    .await
                {
                    Ok(true) => {
                        fire_due(&app, &triggers, missed_window, &mut trigger_state).await;
                    }
                    // another runner evaluates: start from the whole window
                    // when the lease comes back
                    Ok(false) => trigger_state.forget(),
                    Err(e) => {
                        trigger_state.forget();
                        warn!(error = %e, "could not take the triggers' lease")
                    }
                }
            }
            if last_recover.elapsed() >= recover_every {
                last_recover = Instant::now();
                match coordination
                    .try_lease("recovery", &runner_id, recover_every * 3)
                    .await
                {
                    Ok(true) => {
                        match orch.recover(&recovery_actor, dead_after, max_pending).await {
                            Ok(ids) if ids.is_empty() => {}
                            Ok(ids) => {
                                warn!(recovered = ids.len(), invocations = ?ids, "recovered invocations of dead runners (re-routed, or cancelled when a cancel was pending)");
                                for id in &ids {
                                    log_if_cancelled(&app, &recovery_actor, id, None).await;
                                }
                            }
                            Err(e) => warn!(error = %e, "recovery failed"),
                        }
                        if last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
                            last_prune = Some(Instant::now());
                            prune_runners(&app, keep_runners).await;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "could not take the recovery lease"),
                }
            }
            if last_purge.elapsed() >= purge_every {
                last_purge = Instant::now();
                match orch.auto_purge(&retention).await {
                    Ok(0) => {}
                    Ok(n) => info!(purged = n, "auto purge removed final invocations"),
                    Err(e) => warn!(error = %e, "auto purge failed"),
                }
                // the values of purged invocations (and of calls that never
                // routed) go once unclaimed for the grace period
                match app.sweep_data_store().await {
                    Ok(s) if s.removed > 0 => info!(
                        values = s.removed,
                        bytes = s.bytes_freed,
                        "data store sweep removed values no invocation uses"
                    ),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "data store sweep failed"),
                }
            }
        }
    };
    tokio::join!(beats, duties);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_runner_looks_for_scheduled_calls_at_most_every_50_ms() {
        let mut idle = Idle::new();
        assert!(idle.look_now(), "the first idle looks");
        assert!(!idle.look_now(), "one right after does not");
        idle.looked = Some(Instant::now() - Idle::LOOK_EVERY);
        assert!(idle.look_now(), "one 50 ms later looks again");
        assert!(
            Idle::WAIT > Idle::LOOK_EVERY,
            "a waiting runner looks at every pause"
        );
    }
}
