//! The Talos client over mutual TLS with Ed25519 certificates: connection, the `node` metadata,
//! Read streaming and NotFound, and the errors for a wrong CA, a missing server and RBAC.
//!
//! A minimal MachineService stands in for apid here; the certificates are the fake cluster's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::pin::Pin;

use nodectl::talos::api::{TalosClient, is_unreachable};
use nodectl::talos::talosconfig;
use nodectl_e2e::fake_talos::pki::{CertifiedKey, Pki, Role};
use nodectl_proto::common::{Data, Metadata};
use nodectl_proto::machine::machine_service_server::{MachineService, MachineServiceServer};
use nodectl_proto::machine::{self as pb};
use tokio_stream::Stream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct Machine;

type DataStream = Pin<Box<dyn Stream<Item = Result<Data, Status>> + Send>>;

fn node_of<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("node")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tonic::async_trait]
impl MachineService for Machine {
    async fn apply_configuration(
        &self,
        _request: Request<pb::ApplyConfigurationRequest>,
    ) -> Result<Response<pb::ApplyConfigurationResponse>, Status> {
        Err(Status::permission_denied("not authorized"))
    }

    type DmesgStream = DataStream;
    async fn dmesg(
        &self,
        _request: Request<pb::DmesgRequest>,
    ) -> Result<Response<Self::DmesgStream>, Status> {
        Err(Status::unimplemented("dmesg"))
    }

    type ReadStream = DataStream;
    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        if request.get_ref().path != "/proc/cmdline" {
            return Err(Status::not_found("no such file"));
        }
        let chunks = vec![
            Ok(Data {
                metadata: None,
                bytes: b"console=tty0 amdgpu.cwsr".to_vec(),
            }),
            Ok(Data {
                metadata: None,
                bytes: b"_enable=0\n".to_vec(),
            }),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn version(&self, request: Request<()>) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            messages: vec![pb::Version {
                metadata: Some(Metadata {
                    hostname: node_of(&request),
                    ..Default::default()
                }),
                version: Some(pb::VersionInfo {
                    // The node the call was meant for, so the test sees the metadata arrive.
                    tag: format!("v1.12.1@{}", node_of(&request)),
                    ..Default::default()
                }),
                platform: None,
                features: None,
            }],
        }))
    }

    async fn upgrade(
        &self,
        _request: Request<pb::UpgradeRequest>,
    ) -> Result<Response<pb::UpgradeResponse>, Status> {
        Err(Status::unimplemented("upgrade"))
    }

    async fn reboot(
        &self,
        _request: Request<pb::RebootRequest>,
    ) -> Result<Response<pb::RebootResponse>, Status> {
        Err(Status::unimplemented("reboot"))
    }
}

async fn start_server(pki: &Pki) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            &pki.server.cert_pem,
            &pki.server.key_pem,
        ))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem));
    let server = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(MachineServiceServer::new(Machine))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    address
}

/// A talosconfig whose node (10.5.0.7) differs from the endpoint, so the `node` metadata shows.
fn talosconfig_text(endpoint: &str, ca_pem: &str, client: &CertifiedKey) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "context: test\ncontexts:\n  test:\n    endpoints: [\"{endpoint}\"]\n    nodes: [10.5.0.7]\n    ca: {}\n    crt: {}\n    key: {}\n",
        b64(ca_pem),
        b64(&client.cert_pem),
        b64(&client.talos_key_pem())
    )
}

fn admin_pki() -> (Pki, CertifiedKey) {
    let pki = Pki::generate().unwrap();
    let client = pki.client(Role::Admin).unwrap();
    (pki, client)
}

#[tokio::test]
async fn mutual_tls_with_ed25519_and_node_metadata() {
    let (pki, admin) = admin_pki();
    let address = start_server(&pki).await;
    let text = talosconfig_text(&address.to_string(), &pki.ca_pem, &admin);
    let ctx = talosconfig::parse(&text, std::path::Path::new("talosconfig"), None).unwrap();

    let client = TalosClient::connect(&ctx, None).await.unwrap();
    assert_eq!(client.node, "10.5.0.7");
    assert_eq!(client.version().await.unwrap(), "v1.12.1@10.5.0.7");

    let other = TalosClient::connect(&ctx, Some("10.5.0.9")).await.unwrap();
    assert_eq!(other.version().await.unwrap(), "v1.12.1@10.5.0.9");

    assert_eq!(
        client.read_text("/proc/cmdline").await.unwrap().as_deref(),
        Some("console=tty0 amdgpu.cwsr_enable=0")
    );
    assert_eq!(
        client
            .read_text("/sys/module/amdgpu/parameters/cwsr_enable")
            .await
            .unwrap(),
        None
    );

    let denied = client
        .apply_configuration(
            "version: v1alpha1\n",
            nodectl::talos::api::ApplyMode::NoReboot,
            false,
        )
        .await
        .unwrap_err();
    assert!(
        format!("{denied:#}").contains("lacks os:admin"),
        "{denied:#}"
    );
    assert!(!is_unreachable(&denied));

    let reboot = client
        .apply_configuration(
            "version: v1alpha1\n",
            nodectl::talos::api::ApplyMode::Reboot,
            false,
        )
        .await
        .unwrap_err();
    assert!(reboot.to_string().contains("never sent"));
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused() {
    let (pki_server, _) = admin_pki();
    let address = start_server(&pki_server).await;
    let (stranger, stranger_admin) = admin_pki();
    let text = talosconfig_text(&address.to_string(), &stranger.ca_pem, &stranger_admin);
    let ctx = talosconfig::parse(&text, std::path::Path::new("talosconfig"), None).unwrap();
    let err = match TalosClient::connect(&ctx, None).await {
        Ok(client) => client.version().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(is_unreachable(&err), "{err:#}");
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let (pki, admin) = admin_pki();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let text = talosconfig_text(&address.to_string(), &pki.ca_pem, &admin);
    let ctx = talosconfig::parse(&text, std::path::Path::new("talosconfig"), None).unwrap();
    let err = TalosClient::connect(&ctx, None).await.unwrap_err();
    assert!(is_unreachable(&err), "{err:#}");
    assert!(format!("{err:#}").contains("unreachable"));
}
