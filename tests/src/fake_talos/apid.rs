//! Fake apid: MachineService and COSI State over mutual TLS, with Talos's role checks, serving one simulated node.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use nodectl_proto::common::Data;
use nodectl_proto::cosi::resource::state_server::State;
use nodectl_proto::cosi::resource::{
    GetRequest, GetResponse, ListRequest, ListResponse, Metadata as ResourceMetadata, Resource,
    Spec,
};
use nodectl_proto::machine::apply_configuration_request::Mode;
use nodectl_proto::machine::machine_service_server::MachineService;
use nodectl_proto::machine::{
    ApplyConfiguration, ApplyConfigurationRequest, ApplyConfigurationResponse, DmesgRequest,
    FeaturesInfo, PlatformInfo, ReadRequest, Reboot, RebootRequest, RebootResponse, Upgrade,
    UpgradeRequest, UpgradeResponse, Version, VersionInfo, VersionResponse,
};
use nodectl_proto::resource::config::MachineConfigSpec;
use nodectl_proto::talos::resource::definitions::extensions::Metadata as ExtensionMetadata;
use nodectl_proto::talos::resource::definitions::runtime::{
    ExtensionStatusSpec, KernelCmdlineSpec, SecurityStateSpec,
};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use super::factory::{FactoryState, Schematic};
use super::node::{
    Config, NodeState, Refusal, can_apply_immediate, config_diff, go_duration,
    parse_installer_image,
};

/// One call the fake apid answered, for tests to assert on what a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApidCall {
    /// `ApplyConfiguration`, `Read`, `Version`, `Upgrade`, `Reboot`, `Dmesg`, `Get`, `List`.
    pub method: String,
    /// ApplyConfiguration: the mode as sent.
    pub mode: Option<Mode>,
    /// ApplyConfiguration: `dry_run`.
    pub dry_run: bool,
    /// Upgrade: the installer image.
    pub image: Option<String>,
    /// Read: the path; Get/List: `namespace/type[/id]`.
    pub target: Option<String>,
    /// The `node` gRPC metadata sent, if any.
    pub node: Option<String>,
    /// Organizations of the client certificate.
    pub organizations: Vec<String>,
    /// `None` when the call succeeded, else the status code returned.
    pub error: Option<tonic::Code>,
}

impl ApidCall {
    /// Whether this call changed (or asked to change) the node.
    pub fn is_write(&self) -> bool {
        match self.method.as_str() {
            "ApplyConfiguration" => !self.dry_run,
            "Upgrade" | "Reboot" => true,
            _ => false,
        }
    }
}

/// State shared by the services, the accept loop and the test.
pub struct Shared {
    pub node: Mutex<NodeState>,
    pub calls: Mutex<Vec<ApidCall>>,
    pub factory: Arc<FactoryState>,
    /// `127.0.0.1:PORT` of the fake factory: the only registry whose installers can be pulled.
    pub factory_host: String,
    pub reboot_duration: Duration,
    /// The IP the node answers to in `node` metadata.
    pub node_ip: String,
    /// Cancelled to drop every open connection (the node went down); replaced by a fresh one.
    connections: Mutex<CancellationToken>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(
        node: NodeState,
        factory: Arc<FactoryState>,
        factory_host: String,
        reboot_duration: Duration,
    ) -> Shared {
        Shared {
            node: Mutex::new(node),
            calls: Mutex::new(Vec::new()),
            factory,
            factory_host,
            reboot_duration,
            node_ip: "127.0.0.1".to_owned(),
            connections: Mutex::new(CancellationToken::new()),
        }
    }

    pub fn node(&self) -> MutexGuard<'_, NodeState> {
        lock(&self.node)
    }

    pub fn is_up(&self) -> bool {
        self.node().up
    }

    /// A future that resolves when the node drops its current connections.
    pub fn connection_killed(&self) -> WaitForCancellationFutureOwned {
        lock(&self.connections).clone().cancelled_owned()
    }

    /// Drops every open connection, as a reboot does.
    pub fn drop_connections(&self) {
        let mut token = lock(&self.connections);
        token.cancel();
        *token = CancellationToken::new();
    }

    pub fn calls(&self) -> Vec<ApidCall> {
        lock(&self.calls).clone()
    }

    fn record<T>(&self, call: ApidCall, result: &Result<T, Status>) {
        let mut call = call;
        call.error = result.as_ref().err().map(Status::code);
        lock(&self.calls).push(call);
    }
}

/// Takes the node down now and brings it back after the reboot duration, with `upgrade`
/// (schematic id, schematic, version) installed when given.
pub fn reboot(shared: &Arc<Shared>, upgrade: Option<(String, Schematic, String)>) {
    shared.node().up = false;
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        // Let the answer that started the reboot reach the caller before the connection drops.
        tokio::time::sleep(Duration::from_millis(100)).await;
        shared.drop_connections();
        tokio::time::sleep(shared.reboot_duration).await;
        let mut node = shared.node();
        match upgrade {
            Some((id, schematic, version)) => node.finish_upgrade(id, &schematic, version),
            None => node.finish_reboot(),
        }
    });
}

/// What the TLS handshake learned about the client: the Organizations (roles) of its certificate.
#[derive(Debug, Clone, Default)]
pub struct PeerRoles {
    pub organizations: Vec<String>,
}

/// A mutual-TLS connection to the node that a reboot can cut.
pub struct NodeConnection {
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    roles: PeerRoles,
}

impl NodeConnection {
    pub fn new(
        tls: tokio_rustls::server::TlsStream<TcpStream>,
        killed: WaitForCancellationFutureOwned,
        roles: PeerRoles,
    ) -> NodeConnection {
        NodeConnection {
            tls,
            killed: Box::pin(killed),
            roles,
        }
    }

    fn cut(&mut self, cx: &mut Context<'_>) -> bool {
        self.killed.as_mut().poll(cx).is_ready()
    }
}

fn rebooted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "node rebooted")
}

impl Connected for NodeConnection {
    type ConnectInfo = PeerRoles;
    fn connect_info(&self) -> PeerRoles {
        self.roles.clone()
    }
}

impl AsyncRead for NodeConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut(cx) {
            return Poll::Ready(Err(rebooted()));
        }
        Pin::new(&mut this.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for NodeConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.cut(cx) {
            return Poll::Ready(Err(rebooted()));
        }
        Pin::new(&mut this.tls).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut(cx) {
            return Poll::Ready(Err(rebooted()));
        }
        Pin::new(&mut this.tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

/// Who called and for which node.
struct Caller {
    organizations: Vec<String>,
    node: Option<String>,
}

impl Caller {
    fn of<T>(request: &Request<T>) -> Caller {
        Caller {
            organizations: request
                .extensions()
                .get::<PeerRoles>()
                .map(|r| r.organizations.clone())
                .unwrap_or_default(),
            node: request
                .metadata()
                .get("node")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    fn call(&self, method: &str) -> ApidCall {
        ApidCall {
            method: method.to_owned(),
            mode: None,
            dry_run: false,
            image: None,
            target: None,
            node: self.node.clone(),
            organizations: self.organizations.clone(),
            error: None,
        }
    }

    /// Talos's RBAC: the certificate must carry one of the roles.
    fn require(&self, roles: &[&str]) -> Result<(), Status> {
        if self
            .organizations
            .iter()
            .any(|o| roles.contains(&o.as_str()))
        {
            Ok(())
        } else {
            Err(Status::permission_denied("not authorized"))
        }
    }
}

const ADMIN: &[&str] = &["os:admin"];
const OPERATOR: &[&str] = &["os:admin", "os:operator"];
const ANY_ROLE: &[&str] = &["os:admin", "os:operator", "os:reader"];

/// Checks the node is up and is the one addressed by `node` metadata.
fn reachable(shared: &Shared, caller: &Caller) -> Result<(), Status> {
    if !shared.is_up() {
        return Err(Status::unavailable("node is rebooting"));
    }
    match &caller.node {
        Some(node) if *node != shared.node_ip => Err(Status::unavailable(format!(
            "connection error: desc = \"transport: Error while dialing: dial tcp {node}:50000: connect: connection refused\""
        ))),
        _ => Ok(()),
    }
}

fn invalid(refusal: Refusal) -> Status {
    Status::invalid_argument(refusal.0)
}

/// The fake `machine.MachineService`.
#[derive(Clone)]
pub struct Machine {
    pub shared: Arc<Shared>,
}

type DataStream = tokio_stream::Iter<std::vec::IntoIter<Result<Data, Status>>>;

fn data_stream(bytes: &[u8], chunk_bytes: usize) -> DataStream {
    let chunks: Vec<Result<Data, Status>> = bytes
        .chunks(chunk_bytes.max(1))
        .map(|chunk| {
            Ok(Data {
                metadata: None,
                bytes: chunk.to_vec(),
            })
        })
        .collect();
    tokio_stream::iter(chunks)
}

impl Machine {
    fn apply(
        &self,
        request: ApplyConfigurationRequest,
    ) -> Result<ApplyConfigurationResponse, Status> {
        let mode = Mode::try_from(request.mode)
            .map_err(|_| Status::invalid_argument("unknown apply mode"))?;
        let mut node = self.shared.node();
        if mode != Mode::Try {
            // Any other apply cancels a pending TRY rollback.
            node.apply_generation += 1;
        }
        let text = String::from_utf8(request.data)
            .map_err(|e| Status::invalid_argument(format!("failed to decode config: {e}")))?;
        let new = Config::parse(&text).map_err(invalid)?;
        let warnings = new.validate(node.booted_with_uki).map_err(invalid)?;
        let (resolved, details, reason) = match mode {
            Mode::Try | Mode::NoReboot => {
                can_apply_immediate(&node.running, &new).map_err(invalid)?;
                (
                    mode,
                    "Applied configuration without a reboot",
                    String::new(),
                )
            }
            Mode::Staged => (
                mode,
                "Staged configuration to be applied after the next reboot",
                String::new(),
            ),
            Mode::Auto => match can_apply_immediate(&node.running, &new) {
                Ok(()) => (
                    Mode::NoReboot,
                    "Applied configuration without a reboot",
                    String::new(),
                ),
                Err(refusal) => (
                    Mode::Reboot,
                    "Applied configuration with a reboot",
                    format!(": {}", refusal.0),
                ),
            },
            Mode::Reboot => (mode, "Applied configuration with a reboot", String::new()),
        };
        let mut details_text = details.to_owned();
        if request.dry_run {
            let mut diff = config_diff(&node.running.text, &new.text);
            if diff.is_empty() {
                diff = "No changes.".to_owned();
            }
            return Ok(ApplyConfigurationResponse {
                messages: vec![ApplyConfiguration {
                    metadata: None,
                    warnings: Vec::new(),
                    mode: resolved.into(),
                    mode_details: format!(
                        "Dry run summary:\n{details} (skipped in dry-run).\nConfig diff:\n\n{diff}"
                    ),
                }],
            });
        }
        match resolved {
            Mode::Try => {
                let timeout = request
                    .try_mode_timeout
                    .and_then(|d| Duration::try_from(d).ok())
                    .unwrap_or(Duration::from_secs(60));
                details_text.push_str(&format!(
                    "\nThe config is applied in 'try' mode and will be automatically reverted back in {}",
                    go_duration(timeout)
                ));
                node.apply_generation += 1;
                node.try_pending = true;
                node.running = new;
                let generation = node.apply_generation;
                let shared = Arc::clone(&self.shared);
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let mut node = shared.node();
                    if node.try_pending && node.apply_generation == generation {
                        node.running = node.persistent.clone();
                        node.try_pending = false;
                    }
                });
            }
            Mode::NoReboot => {
                node.try_pending = false;
                node.persistent = new.clone();
                node.running = new;
            }
            Mode::Staged => {
                node.persistent = new;
            }
            Mode::Reboot | Mode::Auto => {
                node.persistent = new;
                drop(node);
                reboot(&self.shared, None);
            }
        }
        Ok(ApplyConfigurationResponse {
            messages: vec![ApplyConfiguration {
                metadata: None,
                warnings,
                mode: resolved.into(),
                mode_details: format!("{details_text}{reason}"),
            }],
        })
    }

    fn upgrade(&self, image: &str) -> Result<UpgradeResponse, Status> {
        let pull_error = |why: &str| {
            Status::unknown(format!("error validating installer image {image:?}: {why}"))
        };
        let (host, id, version) =
            parse_installer_image(image).ok_or_else(|| pull_error("invalid reference"))?;
        if host != self.shared.factory_host {
            return Err(pull_error(&format!(
                "failed to pull: dial tcp: lookup {host}: no such host"
            )));
        }
        let schematic = self
            .shared
            .factory
            .schematic(&id)
            .ok_or_else(|| pull_error(&format!("failed to pull: {image}: not found")))?;
        reboot(&self.shared, Some((id, schematic, version)));
        Ok(UpgradeResponse {
            messages: vec![Upgrade {
                metadata: None,
                ack: "Upgrade request received".to_owned(),
                actor_id: actor_id(),
            }],
        })
    }
}

fn actor_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "00000000-0000-4000-8000-{:012x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[tonic::async_trait]
impl MachineService for Machine {
    async fn apply_configuration(
        &self,
        request: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let mut call = caller.call("ApplyConfiguration");
        call.mode = Mode::try_from(request.mode).ok();
        call.dry_run = request.dry_run;
        let result = reachable(&self.shared, &caller)
            .and_then(|()| caller.require(ADMIN))
            .and_then(|()| self.apply(request));
        self.shared.record(call, &result);
        result.map(Response::new)
    }

    type DmesgStream = DataStream;

    async fn dmesg(&self, request: Request<DmesgRequest>) -> Result<Response<DataStream>, Status> {
        let caller = Caller::of(&request);
        let result = reachable(&self.shared, &caller)
            .and_then(|()| caller.require(ANY_ROLE))
            .map(|()| {
                let lines = [
                    "kern:    info: [2026-01-06T19:44:34.377086477Z]: [drm] amdgpu kernel modesetting enabled.",
                    "kern:    info: [2026-01-06T19:44:34.501203112Z]: amdgpu 0000:c5:00.0: amdgpu: detected ip block number 0 <soc21_common>",
                ];
                let messages: Vec<Result<Data, Status>> = lines
                    .iter()
                    .map(|l| {
                        Ok(Data {
                            metadata: None,
                            bytes: l.as_bytes().to_vec(),
                        })
                    })
                    .collect();
                tokio_stream::iter(messages)
            });
        self.shared.record(caller.call("Dmesg"), &result);
        result.map(Response::new)
    }

    type ReadStream = DataStream;

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<DataStream>, Status> {
        let caller = Caller::of(&request);
        let path = request.into_inner().path;
        let mut call = caller.call("Read");
        call.target = Some(path.clone());
        let result = reachable(&self.shared, &caller)
            .and_then(|()| caller.require(ADMIN))
            .and_then(|()| {
                let node = self.shared.node();
                let content = match path.as_str() {
                    "/proc/cmdline" => format!("{}\n", node.cmdline),
                    "/proc" | "/sys/module/amdgpu/parameters" => {
                        return Err(Status::unknown("path must be a regular file"));
                    }
                    parameter
                        if let Some(value) = parameter
                            .strip_prefix("/sys/module/amdgpu/parameters/")
                            .and_then(|name| {
                                super::node::amdgpu_parameter(&node.cmdline, name)
                            }) =>
                    {
                        format!("{value}\n")
                    }
                    _ => {
                        return Err(Status::not_found(format!(
                            "stat {path}: no such file or directory"
                        )));
                    }
                };
                // Small chunks, so a client must join them.
                Ok(data_stream(content.as_bytes(), 16))
            });
        self.shared.record(call, &result);
        result.map(Response::new)
    }

    async fn version(&self, request: Request<()>) -> Result<Response<VersionResponse>, Status> {
        let caller = Caller::of(&request);
        let result = reachable(&self.shared, &caller)
            .and_then(|()| caller.require(ANY_ROLE))
            .map(|()| {
                let node = self.shared.node();
                VersionResponse {
                    messages: vec![Version {
                        metadata: None,
                        version: Some(VersionInfo {
                            tag: node.talos_version.clone(),
                            sha: "0123abcd".to_owned(),
                            built: String::new(),
                            go_version: "go1.25.5".to_owned(),
                            os: "linux".to_owned(),
                            arch: "amd64".to_owned(),
                        }),
                        platform: Some(PlatformInfo {
                            name: "metal".to_owned(),
                            mode: "metal".to_owned(),
                        }),
                        features: Some(FeaturesInfo { rbac: true }),
                    }],
                }
            });
        self.shared.record(caller.call("Version"), &result);
        result.map(Response::new)
    }

    async fn upgrade(
        &self,
        request: Request<UpgradeRequest>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        let caller = Caller::of(&request);
        let image = request.into_inner().image;
        let mut call = caller.call("Upgrade");
        call.image = Some(image.clone());
        let result = reachable(&self.shared, &caller)
            .and_then(|()| caller.require(ADMIN))
            .and_then(|()| self.upgrade(&image));
        self.shared.record(call, &result);
        result.map(Response::new)
    }

    async fn reboot(
        &self,
        request: Request<RebootRequest>,
    ) -> Result<Response<RebootResponse>, Status> {
        let caller = Caller::of(&request);
        let result = reachable(&self.shared, &caller)
            .and_then(|()| caller.require(OPERATOR))
            .map(|()| {
                reboot(&self.shared, None);
                RebootResponse {
                    messages: vec![Reboot {
                        metadata: None,
                        actor_id: actor_id(),
                    }],
                }
            });
        self.shared.record(caller.call("Reboot"), &result);
        result.map(Response::new)
    }
}

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
