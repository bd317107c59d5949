//! The pynenc command line, for the people who run an app: list, show,
//! cancel, rerun and purge invocations; see its tasks, runners and queue;
//! start runners and call tasks by name.
//!
//! It comes in two forms that share every command:
//!
//! - **Embedded** in your program, which has the tasks compiled in: it can
//!   also start runners and call tasks by name. One line in `main` hands
//!   the arguments over when the first one is `pynenc`:
//!
//!   ```no_run
//!   # #[pynenc::task] async fn add(x: i64, y: i64) -> i64 { x + y }
//!   fn main() -> std::process::ExitCode {
//!       // `my-program pynenc runner start`, `my-program pynenc list --status failed`, ...
//!       if let Some(code) = pynenc_cli::run_if_requested(pynenc::Pynenc::builder().app_id("shop")) {
//!           return code;
//!       }
//!       // ... the program's own work
//!       std::process::ExitCode::SUCCESS
//!   }
//!   ```
//!
//!   In an `async fn main`, await [`run_if_requested_async`] instead. A clap
//!   application can nest [`Cli`]'s commands ([`Command`]) and run them with
//!   [`execute`].
//! - **Standalone**: the `pynenc` binary of this crate (`cargo install
//!   pynenc-cli`) operates any app on a SQLite file or a Redis server
//!   without its code — everything but starting runners (a call by name
//!   is checked against the task's stored invocations).
//!
//! ```text
//! pynenc --sqlite-path app.db --app shop list --status failed --since 1h
//! pynenc --redis-url redis://host:6379/0 --app shop show 0661e8c1…
//! pynenc --sqlite-path app.db --app shop purge --older-than 7d --status success --yes
//! ```
//!
//! Every command takes `--json` (one JSON document on stdout), prints
//! tables for people (colour only on a terminal), and exits with a code
//! that says what kind of failure it was ([`EXIT_CODES`]); messages go to
//! stderr. The app is found through the library's configuration layers
//! (`pynenc.toml`, `PYNENC__…` variables) and then the flags `--config`,
//! `--backend`, `--sqlite-path`, `--redis-url`, `--postgres-url` and
//! `--app`. A SQLite file that does not exist is an error (never a new
//! empty file), and so is an app with no data on the backend (`apps` lists
//! those there are).
#![deny(missing_docs)]

mod args;
mod commands;
mod connect;
mod error;
mod filters;
mod output;
mod progress;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use pynenc::PynencBuilder;

pub use args::{
    BackendArg, CallArgs, CancelArgs, Cli, Command, Connection, FilterArgs, GraphArgs, IdArg,
    KindArg, ListArgs, MonitorArgs, PurgeArgs, QueueArgs, RerunArgs, RetryArgs, RunnerCommand,
    RunnerStartArgs, StatusCommand, TreeArgs, WatchArgs, EXIT_CODES,
};
pub use connect::Form;
pub use error::CliError;

/// The first argument that hands the rest to the embedded command line.
pub const EMBEDDED_TRIGGER: &str = "pynenc";

/// Runs a parsed command line against the app `builder` describes (the
/// connection flags apply on top of it). Messages are the caller's to
/// print; [`CliError::exit_code`] is the exit code.
///
/// # Errors
///
/// Whatever the command could not do, as a [`CliError`] naming what and where.
pub async fn execute(cli: Cli, builder: PynencBuilder, form: Form) -> Result<(), CliError> {
    commands::run(cli, builder, form).await
}

/// Parses `args` (the program name first) and runs them; prints help,
/// version and errors, and returns the exit code.
pub async fn run_args<I, T>(builder: PynencBuilder, form: Form, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // help and version go to stdout with code 0, mistakes to stderr with 2
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match execute(cli, builder, form).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            e.as_exit()
        }
    }
}

/// The arguments after the trigger, with the program name in front, when
/// the process was started as `program pynenc …`.
fn embedded_args() -> Option<Vec<OsString>> {
    let mut args = std::env::args_os();
    let program = args.next()?;
    let first = args.next()?;
    if first != EMBEDDED_TRIGGER {
        return None;
    }
    Some(std::iter::once(program).chain(args).collect())
}

/// The embedded command line, for a plain `fn main`: when the program was
/// started as `program pynenc …`, runs that command on a runtime of its own
/// and returns its exit code; otherwise returns `None` at once. A child
/// process of a process runner runs its role and exits here.
pub fn run_if_requested(builder: PynencBuilder) -> Option<ExitCode> {
    pynenc::run_child_if_requested();
    let args = embedded_args()?;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    Some(runtime.block_on(run_args(builder, Form::Embedded, args)))
}

/// [`run_if_requested`] for an `async fn main` (it uses the caller's
/// runtime). Call [`pynenc::run_child_if_requested`] before starting the
/// runtime when the program starts process runners.
pub async fn run_if_requested_async(builder: PynencBuilder) -> Option<ExitCode> {
    let args = embedded_args()?;
    Some(run_args(builder, Form::Embedded, args).await)
}

/// Logging for the command line: warnings and errors on stderr, or what
/// `RUST_LOG` asks for.
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| "warn".parse().unwrap_or_default());
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .try_init();
}
