//! `pynenc`: the standalone command line. Operates any app on a SQLite file
//! or a Redis server without its code (see the crate documentation).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    pynenc_cli::init_logging();
    pynenc_cli::run_args(
        pynenc::Pynenc::builder(),
        pynenc_cli::Form::Standalone,
        std::env::args_os(),
    )
    .await
}
