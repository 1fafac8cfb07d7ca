//! The `nodectl` command line: global flags turned into a [`Context`], subcommands, and dispatch to `cmd/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cmd;
use crate::context::Context;
use crate::exit::Outcome;
use crate::render::Format;

/// Node diagnostics and Talos configuration for AMD Strix Halo (gfx1151) nodes that serve LLMs.
///
/// With no --endpoint, the agent runs in this process on this host (or on --host-root DIR).
#[derive(Debug, Parser)]
#[command(
    name = "nodectl",
    version,
    propagate_version = true,
    after_help = crate::exit::EXIT_CODES
)]
pub struct Cli {
    /// Flags every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct GlobalArgs {
    /// Agent to ask, `http://HOST:PORT` or `unix:/path/to.sock`; repeat for several nodes
    /// (`cwsr status` reads the effective value from the first one).
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Vec<String>,
    /// Run the agent in-process on this tree instead of `/` (a fixture or an unpacked bundle).
    #[arg(long, global = true, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Talos client configuration (default: $TALOSCONFIG, then $TALOS_HOME/config or
    /// ~/.talos/config, then /var/run/secrets/talos.dev/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub talosconfig: Option<PathBuf>,
    /// Context of the talosconfig to use (default: its `context`).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Talos node to act on (default: the context's first node).
    #[arg(long, global = true, value_name = "IP")]
    pub node: Option<String>,
}

impl GlobalArgs {
    /// The context every command takes.
    pub fn context(self) -> Context {
        Context::new(
            self.endpoint,
            self.host_root,
            self.output,
            self.talosconfig,
            self.context,
            self.node,
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a node's amdgpu, firmware, clock, memory, KFD and host state, or check it.
    #[command(subcommand)]
    Node(cmd::node::NodeCommand),
    /// amdgpu CWSR on a Talos node: status, or disable/enable it through the node's boot path.
    #[command(subcommand)]
    Cwsr(cmd::cwsr::CwsrCommand),
    /// Talos machine configuration: kernel arguments and patches, each planned, confirmed, applied and read back.
    #[command(subcommand)]
    Talos(cmd::talos::TalosCommand),
    /// Classified amdgpu/KFD kernel events and incidents (agent, this host, or a saved log).
    Events(cmd::events::EventsArgs),
}

impl Cli {
    /// Runs the chosen command. Standard output closing early (`| head`) ends it quietly.
    pub async fn run(self) -> anyhow::Result<Outcome> {
        let ctx = self.global.context();
        let outcome = match self.command {
            Command::Node(command) => cmd::node::run(command, &ctx).await,
            Command::Cwsr(command) => cmd::cwsr::run(command, &ctx).await,
            Command::Talos(command) => cmd::talos::run(command, &ctx).await,
            Command::Events(args) => cmd::events::run(args, &ctx).await,
        };
        match outcome {
            Err(e) if e.chain().any(|c| c.is::<crate::render::OutputClosed>()) => Ok(Outcome::Ok),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
