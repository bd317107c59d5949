//! The child side of the process runners: a child runs one invocation (a
//! [`super::ProcessRunner`] child) or a whole in-process runner (a worker
//! of a pool), reports to its parent on standard output, and exits when the
//! parent's pipe closes.

use std::collections::HashSet;
use std::sync::Arc;

use pynenc_model::{
    InvocationId, InvocationOutcome, InvocationStatus, RunnerId, SerializationError,
};
use tokio::sync::Mutex as AsyncMutex;
use tracing::{info_span, Instrument};

use super::protocol::{flush_reports, report_to_parent};
use super::{
    CANCEL_ENV, CHILD_ENV, CONFIG_ENV, INVOCATION_ENV, ONE_BODY_ENV, OWNER_ENV, SLOTS_ENV,
};
use crate::app::Pynenc;
use crate::context::InvocationContext;
use crate::exceptions::{PynencError, Result};
use crate::runner::ids::process_context;
use crate::runner::run::run_invocation;
use crate::runner::shared::Role;
use crate::runner::{InvocationHost, ThreadRunner};

/// In a worker process: invocations its pool suspects of crashing a
/// worker, to be run alone.
fn quarantine() -> &'static parking_lot::Mutex<HashSet<InvocationId>> {
    static SET: std::sync::OnceLock<parking_lot::Mutex<HashSet<InvocationId>>> =
        std::sync::OnceLock::new();
    SET.get_or_init(Default::default)
}

/// Whether this worker process must run `invocation_id` alone.
pub(crate) fn is_quarantined(invocation_id: &InvocationId) -> bool {
    quarantine().lock().contains(invocation_id)
}

/// `invocation_id` ran to its end in this worker process.
pub(crate) fn end_quarantine(invocation_id: &InvocationId) {
    quarantine().lock().remove(invocation_id);
}

/// Runs the child role and exits if this process was started as a pynenc
/// child; returns at once otherwise. Call it at the start of `main`, after
/// setting up logging (a child logs through the same subscriber).
pub fn run_child_if_requested() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    // a fresh thread, so it works whether or not `main` already runs a runtime
    let code = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let code = rt.block_on(child_main(&mode));
                flush_reports();
                // what is left on blocking threads (a sync body that ignored
                // a cancel or outlived a stop) was ended already: do not wait for it
                rt.shutdown_background();
                code
            }
            Err(e) => {
                eprintln!("pynenc child: cannot start a runtime: {e}");
                70
            }
        }
    })
    .join()
    .unwrap_or(70);
    std::process::exit(code);
}

async fn child_main(mode: &str) -> i32 {
    // the parent's pipe is read from the start: the suspects it sent while
    // this process started are known before the app picks anything (read
    // after building the app, they could come after the first pick-up, and
    // a suspect re-routed meanwhile ran beside others again)
    let (go_tx, go_rx) = tokio::sync::mpsc::unbounded_channel();
    watch_parent(go_tx);
    let app = match child_app() {
        Ok(app) => app,
        Err(e) => {
            eprintln!("pynenc child: cannot build the app: {e}");
            return 78;
        }
    };
    let out = match mode {
        "invocation" => invocation_child(app, go_rx).await,
        "worker" => worker_child(app).await,
        other => Err(PynencError::runner(format!(
            "unknown {CHILD_ENV} mode '{other}'"
        ))),
    };
    match out {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pynenc child ({mode}): {e}");
            1
        }
    }
}

/// Reads the parent's pipe: `go` lines resume a paused child, `suspect
/// <id>` lines quarantine an invocation (answered with `suspected <id>`);
/// end of file means the parent is gone, and the child exits at once.
fn watch_parent(go: tokio::sync::mpsc::UnboundedSender<()>) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let line = line.trim();
            if line == "go" {
                let _ = go.send(());
            } else if let Some(id) = line.strip_prefix("suspect ") {
                if let Ok(id) = InvocationId::parse(id) {
                    quarantine().lock().insert(id);
                    // the parent re-routes it once every worker has said so
                    report_to_parent("suspected", id.as_str());
                }
            }
        }
        // the parent closed the pipe (it stopped or died): never outlive it
        std::process::exit(75);
    });
}

fn child_app() -> Result<Pynenc> {
    let raw = env_var(CONFIG_ENV)?;
    let values: Vec<(String, serde_json::Value)> =
        serde_json::from_str(&raw).map_err(|e| SerializationError::deserialize(CONFIG_ENV, e))?;
    let mut builder = Pynenc::builder();
    for (key, value) in values {
        builder = builder.config_value(&key, value);
    }
    builder.build()
}

/// The host of an invocation running in a child of a [`ProcessRunner`]: it
/// acts as the parent's runner and hands waits to the parent.
struct ChildHost {
    owner: RunnerId,
    app: Pynenc,
    go: AsyncMutex<tokio::sync::mpsc::UnboundedReceiver<()>>,
}

#[async_trait::async_trait]
impl InvocationHost for ChildHost {
    fn runner_id(&self) -> &RunnerId {
        &self.owner
    }

    async fn waiting_for_results(
        &self,
        ctx: &InvocationContext,
        ids: &[InvocationId],
    ) -> Result<Option<Vec<InvocationOutcome>>> {
        // one wait at a time: the parent stops the whole process
        let mut go = self.go.lock().await;
        // the waits and the pause in one step
        if !self
            .app
            .orchestrator()
            .pause_for_results(ctx.invocation_id(), &self.owner, ids)
            .await?
        {
            // everything waited on has ended: go on
            return Ok(None);
        }
        let line = serde_json::to_string(ids)
            .map_err(|e| SerializationError::serialize("waited ids", e))?;
        report_to_parent("wait", &line);
        go.recv().await.ok_or_else(|| {
            PynencError::runner("the parent runner closed the pipe while the child waited")
        })?;
        self.app.coordination().wait_final(ids).await?;
        // RESUMED and the outcomes in one step
        let outcomes = self
            .app
            .orchestrator()
            .resume_with_outcomes(ctx.invocation_id(), &self.owner, ids)
            .await?;
        Ok(Some(outcomes))
    }
}

async fn invocation_child(app: Pynenc, go: tokio::sync::mpsc::UnboundedReceiver<()>) -> Result<()> {
    let id = env_var(INVOCATION_ENV)?;
    let id = InvocationId::parse(&id)
        .map_err(|e| PynencError::runner_caused(format!("{INVOCATION_ENV}: {e}"), e))?;
    let owner = RunnerId::from(env_var(OWNER_ENV)?);
    let record = Arc::new(app.state_backend().get_invocation(&id).await?);
    let span = info_span!("invocation", task_id = %record.call.task_id, invocation_id = %id, runner_id = %owner);
    async {
        app.orchestrator()
            .set_status(
                &id,
                InvocationStatus::Running,
                &owner,
                Some(process_context()),
            )
            .await?;
        let host: Arc<dyn InvocationHost> = Arc::new(ChildHost {
            owner: owner.clone(),
            app: app.clone(),
            go: AsyncMutex::new(go),
        });
        run_invocation(&app, host, record, None).await;
        Ok(())
    }
    .instrument(span)
    .await
}

async fn worker_child(app: Pynenc) -> Result<()> {
    let slots = std::env::var(SLOTS_ENV)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1);
    let owner = RunnerId::from(env_var(OWNER_ENV)?);
    ThreadRunner::with_identity(&app, slots, owner, worker_role())
        .run_until_signal()
        .await
}

/// The role of this worker process: whether its pool stops it on a
/// cancel, and whether it runs one body at a time.
fn worker_role() -> Role {
    Role::PoolWorker {
        cancel_by_parent: std::env::var(CANCEL_ENV).is_ok_and(|v| v == "parent"),
        one_body: std::env::var(ONE_BODY_ENV).is_ok_and(|v| v == "1"),
    }
}

/// A variable the parent sets in a child's environment.
fn env_var(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| PynencError::runner(format!("{name} is not set")))
}
