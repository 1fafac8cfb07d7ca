//! `nodectl`: the operator's command, run from a laptop or on the node.

use std::process::ExitCode;

use clap::Parser;
use nodectl::cli::Cli;
use nodectl::exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    nodectl::embedded::init_logging(
        tracing_subscriber::EnvFilter::try_from_env("NODECTL_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        cli.global.log_format,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nodectl: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            eprintln!(
                "nodectl: {}",
                nodectl::render::escape_controls(&format!("{error:#}"))
            );
            exit::exit_code_for(&error)
        }
    }
}
