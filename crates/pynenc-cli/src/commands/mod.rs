//! One module per group of commands; `run` connects as each command needs
//! and hands it the app.

mod act;
mod info;
mod invocation;
mod listing;
mod monitor;
mod run;
mod watch;

use pynenc::PynencBuilder;

use crate::args::{Cli, Command, RunnerCommand, StatusCommand};
use crate::connect::{self, Form, Need};
use crate::error::{CliError, Result};
use crate::output::Out;

/// Runs one parsed command line.
pub(crate) async fn run(cli: Cli, builder: PynencBuilder, form: Form) -> Result<()> {
    let out = Out::new(cli.json);
    let mut builder = connect::apply(builder, &cli.connection)?;
    if let Command::Runner(RunnerCommand::Start(a)) = &cli.command {
        builder = run::configure_runner(builder, a)?;
    }
    let need = match &cli.command {
        Command::Config => return info::config(&out, &builder),
        Command::Status(StatusCommand::Graph(g)) => return info::graph(&out, g.mermaid),
        Command::Runner(_) => {
            if form == Form::Standalone {
                return Err(CliError::Usage(
                    "`runner` needs the program's tasks: run it from your program's embedded \
                     command line (pynenc_cli::run_if_requested)"
                        .into(),
                ));
            }
            Need::MayCreate
        }
        // standalone: the triggers runners of the app stored
        // (an app whose runners are up has triggers before any invocation)
        Command::Triggers if form == Form::Standalone => Need::ExistingBackend,
        Command::Triggers => Need::MayCreate,
        Command::Call(_) if form == Form::Standalone => Need::ExistingApp,
        Command::Call(_) => Need::MayCreate,
        Command::Apps => Need::ExistingBackend,
        Command::Monitor(_) if form == Form::Embedded => Need::MayCreate,
        _ => Need::ExistingApp,
    };
    let app = connect::open(builder, form, need).await?;
    match cli.command {
        Command::Runner(RunnerCommand::Start(_)) => run::runner_start(&out, &app).await,
        Command::Call(a) => run::call(&out, &app, &a, form).await,
        Command::List(a) => listing::list(&out, &app, &a).await,
        Command::Show(a) => invocation::show(&out, &app, &a.id).await,
        Command::Tree(a) => invocation::tree(&out, &app, &a).await,
        Command::Tasks => listing::tasks(&out, &app).await,
        Command::Runners => listing::runners(&out, &app).await,
        Command::Queue(a) => listing::queue(&out, &app, a.next).await,
        Command::Apps => listing::apps(&out, &app).await,
        Command::Triggers => listing::triggers(&out, &app).await,
        Command::Cancel(a) => act::cancel(&out, &app, &a).await,
        Command::Rerun(a) => act::rerun(&out, &app, &a).await,
        Command::RetryFailed(a) => act::retry_failed(&out, &app, &a).await,
        Command::Purge(a) => act::purge(&out, &app, &a).await,
        Command::Watch(a) => watch::watch(&out, &app, &a).await,
        Command::Monitor(a) => monitor::monitor(&out, &app, &a).await,
        Command::Config | Command::Status(_) => Ok(()),
    }
}
