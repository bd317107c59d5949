//! Reaching the app: the connection flags on top of the configuration
//! layers, checked before anything is opened (a missing SQLite file is an
//! error, never a new empty file; an app with no data is named as such).

use std::path::Path;

use pynenc::{BackendKind, Pynenc, PynencBuilder, PynencConfig};
use pynenc_operate::Operate;
use tracing::debug;

use crate::args::{BackendArg, Connection};
use crate::error::{CliError, Result};

/// Which form of the command line runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Inside the user's program: its tasks are registered, runners can start.
    Embedded,
    /// The `pynenc` binary: operates an app on a shared backend without its code.
    Standalone,
}

/// What a command needs of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Data of the app must be there already (reading or acting on it).
    ExistingApp,
    /// A backend that exists, whatever apps it holds (`apps`).
    ExistingBackend,
    /// The backend may be created (starting runners, calling tasks).
    MayCreate,
}

/// `builder` with the connection flags applied on top of what it already has.
pub(crate) fn apply(mut builder: PynencBuilder, c: &Connection) -> Result<PynencBuilder> {
    if let Some(file) = &c.config {
        if !file.is_file() {
            return Err(CliError::Connect(format!(
                "the configuration file {} does not exist",
                file.display()
            )));
        }
        builder = builder.config_file(file);
    }
    // the backend each location flag names
    let named: Vec<(BackendArg, &'static str)> = [
        (c.sqlite_path.is_some(), BackendArg::Sqlite, "--sqlite-path"),
        (c.redis_url.is_some(), BackendArg::Redis, "--redis-url"),
        (
            c.postgres_url.is_some(),
            BackendArg::Postgres,
            "--postgres-url",
        ),
    ]
    .into_iter()
    .filter(|(given, _, _)| *given)
    .map(|(_, kind, flag)| (kind, flag))
    .collect();
    if let [(_, a), (_, b), ..] = named.as_slice() {
        return Err(CliError::Usage(format!(
            "{a} and {b} name two backends: give one"
        )));
    }
    let implied = named.first().copied();
    if let (Some(given), Some((kind, flag))) = (c.backend, implied) {
        if given != kind {
            return Err(CliError::Usage(format!(
                "--backend {} does not go with {flag}",
                backend_name(given),
            )));
        }
    }
    if let Some(kind) = c.backend.or(implied.map(|(kind, _)| kind)) {
        builder = builder.config_value("backend", backend_name(kind));
    }
    if let Some(path) = &c.sqlite_path {
        builder = builder.config_value("sqlite.sqlite_path", path.display().to_string());
    }
    if let Some(url) = &c.redis_url {
        builder = builder.config_value("redis.redis_url", url.clone());
    }
    if let Some(url) = &c.postgres_url {
        builder = builder.config_value("postgres.postgres_url", url.clone());
    }
    if let Some(app_id) = &c.app_id {
        builder = builder.app_id(app_id.clone());
    }
    Ok(builder)
}

fn backend_name(b: BackendArg) -> &'static str {
    let kind = match b {
        BackendArg::Memory => BackendKind::Memory,
        BackendArg::Sqlite => BackendKind::Sqlite,
        BackendArg::Redis => BackendKind::Redis,
        BackendArg::Postgres => BackendKind::Postgres,
    };
    kind.name()
}

/// The effective configuration of `builder` (nothing opened).
pub(crate) fn config_of(builder: &PynencBuilder) -> Result<PynencConfig> {
    builder
        .config()
        .map_err(|e| CliError::Connect(format!("configuration: {e}")))
}

/// Builds the app after checking that the backend can be used as `need`
/// says: a standalone form never runs on the in-process backend, a SQLite
/// file that should exist does, and an app that should have data has.
pub(crate) async fn open(builder: PynencBuilder, form: Form, need: Need) -> Result<Pynenc> {
    let conf = config_of(&builder)?;
    if form == Form::Standalone && conf.backend == BackendKind::Memory {
        return Err(CliError::Connect(
            "no shared backend: pass --sqlite-path FILE, --redis-url URL or --postgres-url URL \
             (or set `backend` in \
             pynenc.toml or PYNENC__BACKEND); the in-memory backend lives inside one program"
                .into(),
        ));
    }
    if conf.backend == BackendKind::Sqlite && need != Need::MayCreate {
        let path = Path::new(&conf.sqlite.sqlite_path);
        if !path.is_file() {
            return Err(CliError::Connect(format!(
                "the SQLite file {} does not exist (nothing was created)",
                path.display()
            )));
        }
    }
    let app = builder.build().map_err(|e| match e {
        pynenc::PynencError::Config(_) => CliError::Connect(e.to_string()),
        other => CliError::Connect(format!(
            "cannot open the {} backend: {other}",
            conf.backend.name()
        )),
    })?;
    debug!(app_id = %app.app_id(), backend = conf.backend.name(), "connected");
    if need == Need::ExistingApp && conf.backend != BackendKind::Memory {
        let apps = app.inspect().apps().await?;
        if !apps.iter().any(|a| a == app.app_id()) {
            let found = if apps.is_empty() {
                "none".to_string()
            } else {
                apps.join(", ")
            };
            return Err(CliError::NotFound(format!(
                "app '{}' has no data on this backend (apps found: {found}); pass --app",
                app.app_id()
            )));
        }
    }
    Ok(app)
}
