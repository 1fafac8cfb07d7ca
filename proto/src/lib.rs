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

/// Talos `google.rpc` copy: the status carried in `common.Metadata`.
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// Talos `common` package.
pub mod common {
    tonic::include_proto!("common");
}

/// Talos `machine` package: MachineService.
pub mod machine {
    tonic::include_proto!("machine");
}

/// Talos `resource.config` package: MachineConfigSpec.
pub mod resource {
    pub mod config {
        tonic::include_proto!("resource.config");
    }
}

/// Talos resource definitions (runtime specs and extension metadata).
pub mod talos {
    pub mod resource {
        pub mod definitions {
            pub mod extensions {
                tonic::include_proto!("talos.resource.definitions.extensions");
            }
            pub mod runtime {
                tonic::include_proto!("talos.resource.definitions.runtime");
            }
        }
    }
}

/// COSI `cosi.resource` package: resources and the State service.
pub mod cosi {
    pub mod resource {
        tonic::include_proto!("cosi.resource");
    }
}

/// Encoded `FileDescriptorSet` of every file here, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
