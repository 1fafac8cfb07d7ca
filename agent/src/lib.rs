//! nodectl-agent: reads a node's amdgpu, KFD, host and kernel-log state through one host root and serves it.
//!
//! The same library runs in the DaemonSet (`nodectl-agent --host-root /host`), inside the
//! `nodectl` client (embedded mode) and in the tests (fixture trees).

pub mod checks;
pub mod collect;
pub mod host_root;
pub mod kmsg;
pub mod model;
pub mod server;
pub mod shutdown;
pub mod snapshot;
pub mod wire;

pub use host_root::HostRoot;

/// Version of this agent, reported in every snapshot.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
