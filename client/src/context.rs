//! What every command is given: where node state comes from, the output format, and the Talos node to act on (connected on demand).

use std::path::PathBuf;

use crate::nodes::{NodeAddress, Nodes};
use crate::render::Format;
use crate::talos::api::TalosClient;
use crate::talos::talosconfig;

/// The agents a command asks, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct NodeSelection {
    /// `--discover`: the DaemonSet's pods found through Kubernetes.
    pub discovery: Option<crate::discover::Discovery>,
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

    /// The nodes to read: agents at `--endpoint`, in `--endpoints-file` and found by
    /// `--discover`, or the agent in this process on `/` or `--host-root DIR`.
    pub async fn nodes(&self) -> anyhow::Result<Nodes> {
        let mut addresses: Vec<NodeAddress> = self
            .selection
            .endpoints
            .iter()
            .cloned()
            .map(NodeAddress::given)
            .collect();
        if let Some(path) = &self.selection.endpoints_file {
            let listed = crate::nodes::read_endpoints_file(path)?;
            addresses.extend(listed.into_iter().map(NodeAddress::given));
        }
        let mut tls = self.selection.tls.clone();
        if let Some(discovery) = &self.selection.discovery {
            // Pod IPs are in no certificate: the agents' one names the headless Service. Only
            // the discovered agents are checked against it, not the endpoints named beside them.
            let service = format!("nodectl-agent.{}.svc", discovery.namespace);
            let found = crate::discover::discover(discovery).await?;
            addresses.extend(found.into_iter().map(|agent| NodeAddress {
                node: Some(agent.node),
                endpoint: agent.endpoint,
                server_name: Some(service.clone()),
            }));
        }
        let https = |a: &NodeAddress| a.endpoint.as_ref().is_ok_and(|e| e.starts_with("https://"));
        if addresses.iter().any(https) {
            tls = tls.or(crate::config::ConfigFile::load()?.tls);
        }
        Nodes::new(addresses, self.host_root.clone(), &tls)
    }

    /// Whether agents were named (`--endpoint`, `--endpoints-file`, `--discover`); else the
    /// node is this host or a tree.
    pub fn names_agents(&self) -> bool {
        !self.selection.endpoints.is_empty()
            || self.selection.endpoints_file.is_some()
            || self.selection.discovery.is_some()
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
