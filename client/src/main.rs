//! `nodectl`: the operator's command, run from a laptop or on the node.

use std::process::ExitCode;

use clap::Parser;
use nodectl::cli::Cli;
use nodectl::exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NODECTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: in a pipe, a file or a log shipper
        // they are noise in every line.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
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
