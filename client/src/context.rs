//! What every command is given: where node state comes from, the output format, and the Talos node to act on (connected on demand).

use std::path::PathBuf;

use crate::nodes::Nodes;
use crate::render::Format;
use crate::talos::api::TalosClient;
use crate::talos::talosconfig;

/// The global flags, resolved once for the command that runs.
#[derive(Debug, Clone)]
pub struct Context {
    endpoints: Vec<String>,
    host_root: Option<PathBuf>,
    /// `-o table|json|yaml`.
    pub format: Format,
    talosconfig: Option<PathBuf>,
    talos_context: Option<String>,
    talos_node: Option<String>,
}

impl Context {
    pub fn new(
        endpoints: Vec<String>,
        host_root: Option<PathBuf>,
        format: Format,
        talosconfig: Option<PathBuf>,
        talos_context: Option<String>,
        talos_node: Option<String>,
    ) -> Self {
        Self {
            endpoints,
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
        Nodes::new(&self.endpoints, self.host_root.clone())
    }

    /// The agent endpoints given (empty in embedded mode).
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Connects to the Talos node: talosconfig lookup, context, node, mutual TLS.
    pub async fn talos(&self) -> anyhow::Result<TalosClient> {
        let ctx = talosconfig::load(self.talosconfig.as_deref(), self.talos_context.as_deref())?;
        TalosClient::connect(&ctx, self.talos_node.as_deref()).await
    }
}
