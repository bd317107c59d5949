//! `runner start` (the embedded form's: it needs the program's tasks) and
//! `call` (by the program's tasks, or standalone by the task's stored
//! invocations).

use std::time::Duration;

use pynenc::{BackendKind, Pynenc, PynencBuilder, TaskId, ThreadRunner};
use pynenc_operate::Operate;
use serde_json::{json, Map, Value};
use tracing::info;

use crate::args::{CallArgs, RunnerStartArgs};
use crate::connect::Form;
use crate::error::{CliError, Result};
use crate::filters;
use crate::output::{line, Out};

/// The runner flags as configuration values (they win over files and the
/// environment).
pub(crate) fn configure_runner(mut b: PynencBuilder, a: &RunnerStartArgs) -> Result<PynencBuilder> {
    if let Some(kind) = a.kind {
        b = b.config_value("runner.kind", kind.config_name());
    }
    if let Some(slots) = a.slots {
        if slots == 0 {
            return Err(CliError::Usage("--slots must be at least 1".into()));
        }
        b = b.config_value("runner.max_parallel_slots", slots);
    }
    if let Some(n) = a.processes {
        if n == 0 {
            return Err(CliError::Usage("--processes must be at least 1".into()));
        }
        b = b.config_value("runner.max_processes", n);
    }
    Ok(b)
}

/// `runner start`: runs until Ctrl-C or SIGTERM, then stops cleanly.
pub(crate) async fn runner_start(out: &Out, app: &Pynenc) -> Result<()> {
    let runner = app.runner();
    let id = runner.runner_id().clone();
    let conf = app.conf();
    info!(runner_id = %id, kind = conf.runner.kind.name(), app_id = %app.app_id(), "runner starting");
    if out.json {
        // one line: the process goes on running after it
        line(
            &json!({
                "runner_id": id,
                "kind": conf.runner.kind.name(),
                "app_id": app.app_id(),
                "backend": conf.backend.name(),
            })
            .to_string(),
        )?;
    } else {
        eprintln!(
            "runner {id} ({}) of app '{}' on {}: Ctrl-C or SIGTERM stops it",
            conf.runner.kind.name(),
            app.app_id(),
            conf.backend.name()
        );
    }
    runner
        .run_until_signal()
        .await
        .map_err(|e| CliError::Failed(format!("runner {id}: {e}")))
}

/// The `--arg name=json` pairs as a JSON object.
fn arguments(args: &[String]) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for a in args {
        let (name, text) = a.split_once('=').ok_or_else(|| {
            CliError::Usage(format!(
                "--arg '{a}': write it as name=json (e.g. x=1, name='\"Ada\"')"
            ))
        })?;
        let name = name.trim();
        if name.is_empty() {
            return Err(CliError::Usage(format!(
                "--arg '{a}': the parameter name is empty"
            )));
        }
        let value: Value = serde_json::from_str(text).map_err(|e| {
            CliError::Usage(format!(
                "--arg {name}: '{text}' is not JSON ({e}); a string needs quotes: {name}='\"{text}\"'"
            ))
        })?;
        if map.insert(name.to_string(), value).is_some() {
            return Err(CliError::Usage(format!("--arg {name} is given twice")));
        }
    }
    Ok(map)
}

/// `call <task>`: routes a call by task id; with `--wait` (always on the
/// in-memory backend, where only this process can run it) waits for the
/// result, running it in this process when the backend lives here.
pub(crate) async fn call(out: &Out, app: &Pynenc, a: &CallArgs, form: Form) -> Result<()> {
    let args = arguments(&a.args)?;
    let timeout = a
        .timeout
        .as_deref()
        .map(|t| filters::duration("--timeout", t))
        .transpose()?;
    let in_process = app.conf().backend == BackendKind::Memory;
    let inv = match form {
        Form::Embedded => app.call_by_name(&a.task, &args).await?,
        Form::Standalone => {
            // the task is not in this binary: known by its stored invocations
            let id = app
                .control()
                .call_by_stored_name(&TaskId::from(a.task.as_str()), &args)
                .await?;
            app.invocation(&id).await?
        }
    };
    let id = *inv.invocation_id();
    if !(a.wait || in_process) {
        if out.json {
            return out.json(&json!({ "invocation_id": id }));
        }
        return line(id.as_str());
    }
    let runner = in_process.then(|| ThreadRunner::new(app).spawn());
    let waited = match timeout {
        Some(t) => tokio::time::timeout(t, inv.result()).await.map_err(|_| {
            CliError::Failed(format!(
                "invocation {id} did not finish within {}; it goes on (see `show {id}`)",
                crate::output::duration(t)
            ))
        }),
        None => Ok(inv.result().await),
    };
    if let Some(r) = runner {
        let _ = tokio::time::timeout(Duration::from_secs(10), r.stop()).await;
    }
    let value = waited?.map_err(|e| CliError::Failed(format!("invocation {id}: {e}")))?;
    if out.json {
        return out.json(&json!({ "invocation_id": id, "result": value }));
    }
    line(&value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_name_equals_json() {
        let m = arguments(&["x=1".into(), "name=\"Ada\"".into(), "l=[1,2]".into()]);
        let m = m.ok().unwrap_or_default();
        assert_eq!(m.get("x"), Some(&json!(1)));
        assert_eq!(m.get("name"), Some(&json!("Ada")));
        assert_eq!(m.get("l"), Some(&json!([1, 2])));
        let e = arguments(&["name=Ada".into()])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("'Ada' is not JSON"), "{e}");
        let e = arguments(&["x".into()])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("name=json"), "{e}");
        let e = arguments(&["x=1".into(), "x=2".into()])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("given twice"), "{e}");
    }
}
