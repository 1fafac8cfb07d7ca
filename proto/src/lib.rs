//! Wire types of nodectl: generated tonic/prost code and nothing else.
//!
//! `nodectl.v1` is the agent's API. The Talos modules are a wire-compatible subset of the
//! Talos public API (same packages, services, messages and field numbers).

#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]

/// The node agent's API.
pub mod nodectl {
    pub mod v1 {
        tonic::include_proto!("nodectl.v1");
    }
}

/// Encoded `FileDescriptorSet` of every file here, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
