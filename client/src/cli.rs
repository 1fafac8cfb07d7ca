//! The `nodectl` command line: global flags, subcommands, and dispatch to each command's module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit::Outcome;
use crate::output::Format;
use crate::source::Source;

/// Node diagnostics and Talos configuration for AMD Strix Halo (gfx1151) nodes that serve LLMs.
///
/// With no --endpoint, the collectors run in this process on this host (or on --host-root DIR).
#[derive(Debug, Parser)]
#[command(name = "nodectl", version, propagate_version = true)]
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
    /// Run the collectors in-process on this tree instead of `/` (a fixture or an unpacked bundle).
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
    /// The nodes to read: agents, or the collectors in-process.
    pub fn source(&self) -> anyhow::Result<Source> {
        Source::new(&self.endpoint, self.host_root.clone())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a node's amdgpu, firmware, clock, memory, KFD and host state, or check it.
    #[command(subcommand)]
    Node(crate::node::NodeCommand),
    /// amdgpu CWSR on a Talos node: status, or disable/enable it through the node's boot path.
    #[command(subcommand)]
    Cwsr(crate::talos::cwsr::CwsrCommand),
    /// Talos machine configuration: apply patches with a plan, confirmation and read-back.
    #[command(subcommand)]
    Talos(crate::talos::apply_patch::TalosCommand),
    /// Classified amdgpu/KFD kernel events and incidents (agent, this host, or a saved log).
    Events(crate::events::EventsArgs),
}

impl Cli {
    /// Runs the chosen command.
    pub async fn run(self) -> anyhow::Result<Outcome> {
        match self.command {
            Command::Node(command) => crate::node::run(command, &self.global).await,
            Command::Cwsr(command) => crate::talos::cwsr::run(command, &self.global).await,
            Command::Talos(command) => crate::talos::apply_patch::run(command, &self.global).await,
            Command::Events(args) => crate::events::run(args, &self.global).await,
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
