//! The `nodectl` command line: global flags turned into a [`Context`], subcommands, and dispatch to `cmd/`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::cmd;
use crate::context::Context;
use crate::exit::ExitStatus;
use crate::render::Format;

/// Node diagnostics and Talos configuration for AMD Strix Halo (gfx1151) nodes that serve LLMs.
///
/// With no --endpoint, the agent runs in this process on this host (or on --host-root DIR).
/// Each command lists the flags it takes; they may come before its name too, and a flag it does
/// not use is refused.
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

/// Flags given before the command (`nodectl --host-root DIR node show`). Each command also takes
/// the ones it uses after its name, and refuses those it does not use.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct GlobalArgs {
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// How warnings and log lines are written to standard error (their level: NODECTL_LOG):
    /// text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = crate::embedded::LogFormat::Text)]
    pub log_format: crate::embedded::LogFormat,
    /// Node-source flags given before the command.
    #[command(flatten)]
    pub source: NodeSource,
    /// Talos flags given before the command.
    #[command(flatten)]
    pub talos: TalosTarget,
    /// Knowledge files (a TOML file, or a folder of them) over the embedded catalog, for what
    /// runs in this process: kernel rules, checks, known issues, strategies
    /// (`nodectl knowledge check PATH` validates them). Repeatable. An agent uses its own.
    #[arg(long, global = true, value_name = "PATH")]
    pub knowledge: Vec<PathBuf>,
}

/// Where node state comes from: `node show|check`, `events`.
#[derive(Debug, Args, Default, Clone)]
#[deny(missing_docs)]
pub struct NodeSource {
    /// nodectl agent to ask (a nodectl-agent, not Talos apid), `http://HOST:PORT` or
    /// `unix:/path/to.sock`; repeat for several nodes.
    #[arg(long, value_name = "URL")]
    pub endpoint: Vec<String>,
    /// A file of agent endpoints, one per line (`#` starts a comment); with --endpoint, both.
    #[arg(long, value_name = "PATH")]
    pub endpoints_file: Option<PathBuf>,
    /// Find the agents through Kubernetes: the nodectl DaemonSet's pods by label, each asked at
    /// its pod IP and `grpc` port (so from inside the cluster network) and shown under its
    /// node's name; with --endpoint, both.
    #[arg(long)]
    pub discover: bool,
    /// Kubernetes client configuration for --discover (default: KUBECONFIG, ~/.kube/config,
    /// then the pod's service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the agent pods for --discover (default nodectl).
    #[arg(long, value_name = "NAMESPACE")]
    pub discover_namespace: Option<String>,
    /// Label selector of the agent pods for --discover (default
    /// app.kubernetes.io/name=nodectl-agent).
    #[arg(long, value_name = "SELECTOR")]
    pub discover_selector: Option<String>,
    /// How the discovered agents serve (default https, as deploy/ installs them).
    #[arg(long, value_name = "SCHEME", value_enum)]
    pub discover_scheme: Option<crate::discover::Scheme>,
    /// How long each agent has to answer before it is listed as failed and the others are
    /// shown without it (default 10s; a --sample window is added).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_duration)]
    pub node_timeout: Option<std::time::Duration>,
    /// CA certificate (PEM) that signed the agents' certificates, for `https://` endpoints
    /// (also NODECTL_CA, or `ca` in the config file).
    #[arg(long, value_name = "FILE", env = "NODECTL_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) to present to agents that ask for one (also NODECTL_CERT).
    #[arg(long, value_name = "FILE", env = "NODECTL_CERT")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert (also NODECTL_KEY).
    #[arg(long, value_name = "FILE", env = "NODECTL_KEY")]
    pub key: Option<PathBuf>,
    /// Name to check the agents' certificate against instead of the endpoint's host (one
    /// certificate for a DaemonSet reached by pod IP: `nodectl-agent.nodectl.svc`).
    #[arg(long, value_name = "NAME", env = "NODECTL_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Run the agent in-process on this tree instead of `/` (a fixture or an unpacked bundle).
    #[arg(long, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
}

/// The Talos node to act on: `cwsr`, `talos`.
#[derive(Debug, Args, Default, Clone)]
#[deny(missing_docs)]
pub struct TalosTarget {
    /// Talos client configuration (default: $TALOSCONFIG, then $TALOS_HOME/config or
    /// ~/.talos/config, then /var/run/secrets/talos.dev/config).
    #[arg(long, value_name = "PATH")]
    pub talosconfig: Option<PathBuf>,
    /// Context of the talosconfig to use (default: its `context`).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Talos node to act on, as talosctl's `-n` (default: the context's first node).
    #[arg(short = 'n', long = "nodes", visible_alias = "node", value_name = "IP")]
    pub node: Option<String>,
}

/// The flags a command takes after its name, and which kinds it uses.
#[derive(Debug, Default)]
pub struct CommandFlags<'a> {
    /// `nodectl node show`: for messages.
    pub name: &'static str,
    pub source: Option<&'a NodeSource>,
    /// Only `--endpoint` of the node-source flags (`cwsr status`).
    pub endpoint: Option<&'a Option<String>>,
    pub talos: Option<&'a TalosTarget>,
}

impl GlobalArgs {
    /// The context of a command: its own flags, else those given before it; a flag given before
    /// a command that does not use it is a usage error naming both.
    pub fn context(self, flags: &CommandFlags<'_>) -> anyhow::Result<Context> {
        let name = flags.name;
        let refuse = |flag: &str| anyhow::anyhow!("{flag} does not apply to `{name}`");
        let mut source = flags.source.cloned().unwrap_or_default();
        if flags.source.is_some() || flags.endpoint.is_some() {
            if source.endpoint.is_empty() {
                source.endpoint = self.source.endpoint;
            }
            source.endpoints_file = source.endpoints_file.or(self.source.endpoints_file);
            source.node_timeout = source.node_timeout.or(self.source.node_timeout);
            source.ca = source.ca.or(self.source.ca);
            source.cert = source.cert.or(self.source.cert);
            source.key = source.key.or(self.source.key);
            source.tls_server_name = source.tls_server_name.or(self.source.tls_server_name);
            source.discover |= self.source.discover;
            source.kubeconfig = source.kubeconfig.or(self.source.kubeconfig);
            source.discover_namespace =
                source.discover_namespace.or(self.source.discover_namespace);
            source.discover_selector = source.discover_selector.or(self.source.discover_selector);
            source.discover_scheme = source.discover_scheme.or(self.source.discover_scheme);
            if flags.source.is_none() && source.discover {
                return Err(refuse("--discover"));
            }
            if flags.source.is_none() && source.endpoints_file.is_some() {
                return Err(refuse("--endpoints-file"));
            }
            if flags.source.is_none() && source.node_timeout.is_some() {
                return Err(refuse("--node-timeout"));
            }
            if let Some(Some(endpoint)) = flags.endpoint {
                source.endpoint = vec![endpoint.clone()];
            }
            if flags.source.is_some() {
                source.host_root = source.host_root.or(self.source.host_root);
            } else if self.source.host_root.is_some() {
                return Err(refuse("--host-root"));
            }
        } else if !self.source.endpoint.is_empty() {
            return Err(refuse("--endpoint (a nodectl agent)"));
        } else if self.source.endpoints_file.is_some() {
            return Err(refuse("--endpoints-file"));
        } else if self.source.discover {
            return Err(refuse("--discover"));
        } else if self.source.node_timeout.is_some() {
            return Err(refuse("--node-timeout"));
        } else if self.source.host_root.is_some() {
            return Err(refuse("--host-root"));
        }
        let talos = match flags.talos {
            Some(own) => TalosTarget {
                talosconfig: own.talosconfig.clone().or(self.talos.talosconfig),
                context: own.context.clone().or(self.talos.context),
                node: own.node.clone().or(self.talos.node),
            },
            None => {
                if self.talos.talosconfig.is_some() {
                    return Err(refuse("--talosconfig"));
                }
                if self.talos.context.is_some() {
                    return Err(refuse("--context"));
                }
                if self.talos.node.is_some() {
                    return Err(refuse("-n/--nodes"));
                }
                TalosTarget::default()
            }
        };
        let discovery = discovery_of(&source)?;
        Ok(Context::new(
            crate::context::NodeSelection {
                discovery,
                endpoints: source.endpoint,
                endpoints_file: source.endpoints_file,
                node_timeout: source.node_timeout,
                tls: crate::nodes::AgentTlsFiles {
                    ca: source.ca,
                    cert: source.cert,
                    key: source.key,
                    server_name: source.tls_server_name,
                },
            },
            source.host_root,
            self.output,
            talos.talosconfig,
            talos.context,
            talos.node,
        ))
    }
}

/// `--discover` and its settings; a setting without it is a usage error.
fn discovery_of(source: &NodeSource) -> anyhow::Result<Option<crate::discover::Discovery>> {
    if !source.discover {
        let stray = [
            ("--kubeconfig", source.kubeconfig.is_some()),
            ("--discover-namespace", source.discover_namespace.is_some()),
            ("--discover-selector", source.discover_selector.is_some()),
            ("--discover-scheme", source.discover_scheme.is_some()),
        ];
        if let Some((flag, _)) = stray.iter().find(|(_, given)| *given) {
            anyhow::bail!("{flag} applies with --discover");
        }
        return Ok(None);
    }
    if source.host_root.is_some() {
        anyhow::bail!("--discover and --host-root exclude each other");
    }
    use crate::discover::{DEFAULT_NAMESPACE, DEFAULT_SELECTOR, Discovery, Scheme};
    Ok(Some(Discovery {
        kubeconfig: source.kubeconfig.clone(),
        namespace: source
            .discover_namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        selector: source
            .discover_selector
            .clone()
            .unwrap_or_else(|| DEFAULT_SELECTOR.to_owned()),
        scheme: source.discover_scheme.unwrap_or(Scheme::Https),
    }))
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
    /// Where a llama.cpp run stopped, what the node did then, the known issue, what to try next.
    ///
    /// With --log, --pod or --url: that run (JSON: one diagnosis). With none of them: every
    /// llama.cpp/ollama process on the node, each with its pod's log (JSON: `diagnoses`).
    /// Exit 1 when a run stalled or crashed.
    Diagnose(cmd::diagnose::DiagnoseArgs),
    /// The experiment log: strategies tried on a node and how far each run got, as a table.
    #[command(subcommand)]
    Experiment(cmd::experiment::ExperimentCommand),
    /// A bug-report bundle to attach to an issue: the node's files as a host root that
    /// `nodectl --host-root` replays, its findings, kernel incidents, processes, the diagnosis,
    /// report.md (paste it) and report.json; redacted unless --no-redact.
    Report(cmd::report::ReportArgs),
    /// The knowledge catalog: kernel rules, incident kinds, node checks, known issues and the
    /// strategies they name; list it, show an entry, check a user's files.
    #[command(subcommand)]
    Knowledge(cmd::knowledge::KnowledgeCommand),
}

impl Cli {
    /// Runs the chosen command. Standard output closing early (`| head`) ends it quietly.
    pub async fn run(self) -> anyhow::Result<ExitStatus> {
        let mut knowledge = self.global.knowledge.clone();
        if let Command::Events(args) = &self.command {
            knowledge.extend(args.rules.iter().cloned());
        }
        // `knowledge check PATH` checks its own paths over the embedded catalog.
        if !knowledge.is_empty() {
            let loaded = cmd::knowledge::load(&knowledge).context("--knowledge")?;
            nodectl_model::knowledge::Knowledge::install(loaded);
        }
        let ctx = self.global.context(&self.command.flags())?;
        let outcome = match self.command {
            Command::Node(command) => cmd::node::run(command, &ctx).await,
            Command::Cwsr(command) => cmd::cwsr::run(command, &ctx).await,
            Command::Talos(command) => cmd::talos::run(command, &ctx).await,
            Command::Events(args) => cmd::events::run(args, &ctx).await,
            Command::Diagnose(args) => cmd::diagnose::run(args, &ctx).await,
            Command::Experiment(command) => cmd::experiment::run(command, &ctx).await,
            Command::Report(args) => cmd::report::run(args, &ctx).await,
            Command::Knowledge(command) => cmd::knowledge::run(command, &ctx).await,
        };
        match outcome {
            Err(e) if e.chain().any(|c| c.is::<crate::render::OutputClosed>()) => {
                Ok(ExitStatus::Ok)
            }
            other => other,
        }
    }
}

impl Command {
    /// The flags this command took after its name, and which kinds it uses.
    fn flags(&self) -> CommandFlags<'_> {
        use cmd::cwsr::CwsrCommand;
        use cmd::node::NodeCommand;
        use cmd::talos::{KernelArgCommand, TalosCommand};
        match self {
            Command::Node(NodeCommand::Show(args)) => CommandFlags {
                name: "node show",
                source: Some(&args.source),
                ..CommandFlags::default()
            },
            Command::Node(NodeCommand::Check(args)) => CommandFlags {
                name: "node check",
                source: Some(&args.source),
                ..CommandFlags::default()
            },
            Command::Events(args) => CommandFlags {
                name: "events",
                source: Some(&args.source),
                ..CommandFlags::default()
            },
            Command::Diagnose(args) => CommandFlags {
                name: "diagnose",
                source: Some(&args.source),
                ..CommandFlags::default()
            },
            Command::Report(args) => CommandFlags {
                name: "report",
                source: Some(&args.source),
                talos: Some(&args.talos),
                ..CommandFlags::default()
            },
            // The log is a local file: no node, no Talos.
            Command::Experiment(_) => CommandFlags {
                name: "experiment",
                ..CommandFlags::default()
            },
            Command::Knowledge(_) => CommandFlags {
                name: "knowledge",
                ..CommandFlags::default()
            },
            Command::Cwsr(CwsrCommand::Status(args)) => CommandFlags {
                name: "cwsr status",
                endpoint: Some(&args.endpoint),
                talos: Some(&args.talos),
                ..CommandFlags::default()
            },
            Command::Cwsr(CwsrCommand::Disable(args)) => CommandFlags {
                name: "cwsr disable",
                talos: Some(&args.talos),
                ..CommandFlags::default()
            },
            Command::Cwsr(CwsrCommand::Enable(args)) => CommandFlags {
                name: "cwsr enable",
                talos: Some(&args.talos),
                ..CommandFlags::default()
            },
            Command::Talos(TalosCommand::ApplyPatch(args)) => CommandFlags {
                name: "talos apply-patch",
                talos: Some(&args.talos),
                ..CommandFlags::default()
            },
            Command::Talos(TalosCommand::KernelArg(KernelArgCommand::Set(args))) => CommandFlags {
                name: "talos kernel-arg set",
                talos: Some(&args.change.talos),
                ..CommandFlags::default()
            },
            Command::Talos(TalosCommand::KernelArg(KernelArgCommand::Remove(args))) => {
                CommandFlags {
                    name: "talos kernel-arg remove",
                    talos: Some(&args.change.talos),
                    ..CommandFlags::default()
                }
            }
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
