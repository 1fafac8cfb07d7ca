//! The fake COSI `cosi.resource.State`: the node's resources, read-only like Talos's.

use std::sync::Arc;

use nodectl_proto::cosi::resource::state_server::State;
use nodectl_proto::cosi::resource::{
    GetRequest, GetResponse, ListRequest, ListResponse, Metadata as ResourceMetadata, Resource,
    Spec,
};
use nodectl_proto::resource::config::MachineConfigSpec;
use nodectl_proto::talos::resource::definitions::extensions::Metadata as ExtensionMetadata;
use nodectl_proto::talos::resource::definitions::runtime::{
    ExtensionStatusSpec, KernelCmdlineSpec, SecurityStateSpec,
};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::fake_talos::node::NodeState;

use super::Shared;
use super::rbac::{ADMIN, ANY_ROLE, Caller, reachable};

/// The fake COSI `cosi.resource.State` (read-only, like Talos's).
#[derive(Clone)]
pub struct Cosi {
    pub shared: Arc<Shared>,
}

pub const MACHINE_CONFIG_TYPE: &str = "MachineConfigs.config.talos.dev";
pub const SECURITY_STATE_TYPE: &str = "SecurityStates.talos.dev";
pub const KERNEL_CMDLINE_TYPE: &str = "KernelCmdlines.runtime.talos.dev";
pub const EXTENSION_STATUS_TYPE: &str = "ExtensionStatuses.runtime.talos.dev";

fn resource(
    namespace: &str,
    kind: &str,
    id: &str,
    version: u64,
    proto_spec: Vec<u8>,
    yaml_spec: String,
) -> Resource {
    Resource {
        metadata: Some(ResourceMetadata {
            namespace: namespace.to_owned(),
            r#type: kind.to_owned(),
            id: id.to_owned(),
            version: version.to_string(),
            owner: String::new(),
            phase: "running".to_owned(),
            created: None,
            updated: None,
            finalizers: Vec::new(),
            labels: Default::default(),
            annotations: Default::default(),
        }),
        spec: Some(Spec {
            proto_spec,
            yaml_spec,
        }),
    }
}

fn not_found(namespace: &str, kind: &str, id: &str) -> Status {
    Status::not_found(format!(
        "resource {kind}({namespace}/{id}@undefined) doesn't exist"
    ))
}

/// Every resource of a type in a namespace, as the node has them now.
fn resources(node: &NodeState, namespace: &str, kind: &str) -> Result<Vec<Resource>, Status> {
    let generation = node.apply_generation + 1;
    Ok(match (namespace, kind) {
        ("config", MACHINE_CONFIG_TYPE) => [
            ("v1alpha1", &node.running),
            ("persistent", &node.persistent),
        ]
        .into_iter()
        .map(|(id, config)| {
            let spec = MachineConfigSpec {
                yaml_marshalled: config.text.as_bytes().to_vec(),
            };
            let yaml_spec = serde_saphyr::to_string(&config.text).unwrap_or_default();
            resource(
                namespace,
                kind,
                id,
                generation,
                spec.encode_to_vec(),
                yaml_spec,
            )
        })
        .collect(),
        ("runtime", SECURITY_STATE_TYPE) => {
            let spec = SecurityStateSpec {
                secure_boot: false,
                uki_signing_key_fingerprint: String::new(),
                pcr_signing_key_fingerprint: String::new(),
                se_linux_state: 0,
                booted_with_uki: node.booted_with_uki,
                fips_state: 0,
                module_signature_enforced: true,
            };
            let yaml = format!(
                "secureBoot: false\nbootedWithUKI: {}\n",
                node.booted_with_uki
            );
            vec![resource(
                namespace,
                kind,
                "securitystate",
                u64::from(node.boots),
                spec.encode_to_vec(),
                yaml,
            )]
        }
        ("runtime", KERNEL_CMDLINE_TYPE) => {
            let spec = KernelCmdlineSpec {
                cmdline: node.cmdline.clone(),
            };
            let yaml = format!(
                "cmdline: {}\n",
                serde_json::Value::String(node.cmdline.clone())
            );
            vec![resource(
                namespace,
                kind,
                "cmdline",
                u64::from(node.boots),
                spec.encode_to_vec(),
                yaml,
            )]
        }
        ("runtime", EXTENSION_STATUS_TYPE) => {
            let mut specs: Vec<ExtensionStatusSpec> = node
                .extensions
                .iter()
                .enumerate()
                .map(|(index, extension)| ExtensionStatusSpec {
                    image: format!("{index:03}.{}.sqsh", extension.name),
                    metadata: Some(ExtensionMetadata {
                        name: extension.name.clone(),
                        version: extension.version.clone(),
                        author: "Sidero Labs".to_owned(),
                        description: extension.description.clone(),
                        compatibility: None,
                    }),
                })
                .collect();
            specs.push(ExtensionStatusSpec {
                image: String::new(),
                metadata: Some(ExtensionMetadata {
                    name: "schematic".to_owned(),
                    version: node.schematic_id.clone(),
                    author: "Image Factory".to_owned(),
                    description: "This extension carries the schematic ID of the image the node was installed from.".to_owned(),
                    compatibility: None,
                }),
            });
            specs
                .into_iter()
                .enumerate()
                .map(|(index, spec)| {
                    let yaml = format!(
                        "image: {}\nmetadata:\n    name: {}\n",
                        spec.image,
                        spec.metadata
                            .as_ref()
                            .map(|m| m.name.as_str())
                            .unwrap_or_default()
                    );
                    resource(
                        namespace,
                        kind,
                        &index.to_string(),
                        u64::from(node.boots),
                        spec.encode_to_vec(),
                        yaml,
                    )
                })
                .collect()
        }
        _ => {
            return Err(Status::not_found(format!(
                "resource type {kind:?} in namespace {namespace:?} is not registered"
            )));
        }
    })
}

fn cosi_access(caller: &Caller, kind: &str) -> Result<(), Status> {
    caller.require(ANY_ROLE)?;
    if kind == MACHINE_CONFIG_TYPE {
        // Sensitive resources need os:admin.
        caller.require(ADMIN)?;
    }
    Ok(())
}

#[tonic::async_trait]
impl State for Cosi {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let mut call = caller.call("Get");
        call.target = Some(format!(
            "{}/{}/{}",
            request.namespace, request.r#type, request.id
        ));
        let result = reachable(&self.shared, &caller)
            .and_then(|()| cosi_access(&caller, &request.r#type))
            .and_then(|()| {
                let node = self.shared.node();
                resources(&node, &request.namespace, &request.r#type)?
                    .into_iter()
                    .find(|r| r.metadata.as_ref().is_some_and(|m| m.id == request.id))
                    .map(|resource| GetResponse {
                        resource: Some(resource),
                    })
                    .ok_or_else(|| not_found(&request.namespace, &request.r#type, &request.id))
            });
        self.shared.record(call, &result);
        result.map(Response::new)
    }

    type ListStream = tokio_stream::Iter<std::vec::IntoIter<Result<ListResponse, Status>>>;

    async fn list(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let mut call = caller.call("List");
        call.target = Some(format!("{}/{}", request.namespace, request.r#type));
        let result = reachable(&self.shared, &caller)
            .and_then(|()| cosi_access(&caller, &request.r#type))
            .and_then(|()| {
                let node = self.shared.node();
                let items: Vec<Result<ListResponse, Status>> =
                    resources(&node, &request.namespace, &request.r#type)?
                        .into_iter()
                        .map(|resource| {
                            Ok(ListResponse {
                                resource: Some(resource),
                            })
                        })
                        .collect();
                Ok(tokio_stream::iter(items))
            });
        self.shared.record(call, &result);
        result.map(Response::new)
    }
}
