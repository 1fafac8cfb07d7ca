//! What every command is given: where node state comes from, the output format, and the Talos node to act on (connected on demand).

use std::path::PathBuf;

use crate::nodes::Nodes;
use crate::render::Format;
use crate::talos::api::TalosClient;
use crate::talos::talosconfig;

/// The agents a command asks, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct NodeSelection {
    pub endpoints: Vec<String>,
    pub endpoints_file: Option<PathBuf>,
    pub node_timeout: Option<std::time::Duration>,
    /// `--ca`, `--cert`, `--key` (or their variables), before the config file fills the gaps.
    pub tls: crate::nodes::AgentTlsFiles,
}

/// The global flags, resolved once for the command that runs.
#[derive(Debug, Clone)]
pub struct Context {
    selection: NodeSelection,
    host_root: Option<PathBuf>,
    /// `-o table|json|yaml`.
    pub format: Format,
    talosconfig: Option<PathBuf>,
    talos_context: Option<String>,
    talos_node: Option<String>,
}

impl Context {
    pub fn new(
        selection: NodeSelection,
        host_root: Option<PathBuf>,
        format: Format,
        talosconfig: Option<PathBuf>,
        talos_context: Option<String>,
        talos_node: Option<String>,
    ) -> Self {
        Self {
            selection,
            host_root,
            format,
            talosconfig,
            talos_context,
            talos_node,
        }
    }

    /// The nodes to read: agents at `--endpoint`, or the agent in this process on `/` or
    /// `--host-root DIR`.
    pub fn nodes(&self) -> anyhow::Result<Nodes> {
        let mut endpoints = self.selection.endpoints.clone();
        if let Some(path) = &self.selection.endpoints_file {
            endpoints.extend(crate::nodes::read_endpoints_file(path)?);
        }
        let mut tls = self.selection.tls.clone();
        if endpoints.iter().any(|e| e.starts_with("https://")) {
            tls = tls.or(crate::config::ConfigFile::load()?.tls);
        }
        Nodes::new(&endpoints, self.host_root.clone(), &tls)
    }

    /// Whether agents were named (`--endpoint`, `--endpoints-file`); else the node is this host
    /// or a tree.
    pub fn names_agents(&self) -> bool {
        !self.selection.endpoints.is_empty() || self.selection.endpoints_file.is_some()
    }

    /// The agent endpoints given on the command line (not those of `--endpoints-file`).
    pub fn endpoints(&self) -> &[String] {
        &self.selection.endpoints
    }

    /// How long each agent has to answer (`--node-timeout`), before any sampling window.
    pub fn node_timeout(&self) -> std::time::Duration {
        self.selection
            .node_timeout
            .unwrap_or(crate::fleet::DEFAULT_NODE_TIMEOUT)
    }

    /// Connects to the Talos node: talosconfig lookup, context, node, mutual TLS.
    pub async fn talos(&self) -> anyhow::Result<TalosClient> {
        let ctx = talosconfig::load(self.talosconfig.as_deref(), self.talos_context.as_deref())?;
        TalosClient::connect(&ctx, self.talos_node.as_deref()).await
    }
}
