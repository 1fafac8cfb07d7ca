//! nodectl-agent: reads a node's amdgpu, KFD, host and kernel-log state through one host root and serves it.
//!
//! The same library runs in the DaemonSet (`nodectl-agent --host-root /host`) and inside the
//! `nodectl` client (embedded mode), which serves [`server::router`] in-process over an
//! in-memory transport. The data it produces is `nodectl-model`'s.

pub(crate) mod checks;
pub mod collect;
pub mod drill;
pub mod feed;
pub mod held_replies;
pub mod host_root;
pub mod kfd;
pub mod kmsg;
pub mod knowledge;
pub mod limits;
pub(crate) mod listener;
pub mod logging;
pub mod metrics;
pub mod node_health;
pub mod pod_log;
pub mod redact;
pub mod report;
pub mod resident;
pub mod server;
pub mod shutdown;
pub mod snapshot;
pub mod tls;

pub use host_root::HostRoot;

/// Version of this agent, reported in every snapshot.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
