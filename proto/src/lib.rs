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

/// Encoded `FileDescriptorSet` of the nodectl.v1 API and the well-known types it imports, for
/// the agent's gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message as _;

    #[test]
    fn reflection_describes_the_agent_api_and_its_imports_only() -> Result<(), prost::DecodeError> {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)?;
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        for wanted in [
            "nodectl/v1/diagnostics.proto",
            "nodectl/v1/snapshot.proto",
            "nodectl/v1/kernel.proto",
            "google/protobuf/timestamp.proto",
        ] {
            assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
        }
        // Every import of a described file is described too, so clients can resolve it.
        for file in &set.file {
            for dependency in &file.dependency {
                assert!(names.contains(&dependency.as_str()), "{dependency} missing");
            }
        }
        assert!(!names.iter().any(|n| n.starts_with("machine/")));
        Ok(())
    }
}
