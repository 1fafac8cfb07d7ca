//! A fake Talos node for tests: apid (mutual TLS, RBAC) and an Image Factory on loopback, sharing one simulated node.
//!
//! No Talos node can run where the tests run, so this stands in for one. It behaves as Talos's
//! documented server behaviour says (apply modes, dry run, TRY rollback, validation texts, roles),
//! and simulates the boot path: an upgrade takes the node down for a while and brings it back with
//! the command line from the new schematic (UKI, `grubUseUKICmdline`) or from
//! `machine.install.extraKernelArgs` (legacy GRUB).

pub mod apid;
pub mod factory;
pub mod node;
pub mod pki;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub use apid::ApidCall;
pub use factory::{FactoryCall, FactoryState, FakeFactory, Schematic};
pub use node::{NodeState, Scenario};
pub use pki::{Pki, Role};

use apid::{Cosi, Machine, NodeConnection, PeerRoles, Shared};
use nodectl_proto::cosi::resource::state_server::StateServer;
use nodectl_proto::machine::machine_service_server::MachineServiceServer;

/// A running fake node (apid on `127.0.0.1:PORT`) and its fake factory; both stop when dropped.
pub struct FakeTalos {
    /// apid's address, `127.0.0.1:PORT`.
    pub apid_addr: SocketAddr,
    pub factory: FakeFactory,
    pub pki: Pki,
    shared: Arc<Shared>,
    stop: CancellationToken,
    dir: tempfile::TempDir,
}

fn server_tls(pki: &Pki) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes())?)?;
    // Mutual TLS: a client without a certificate signed by the CA fails the handshake.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(
                pki.server.cert_pem.as_bytes(),
            )?],
            PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes())?,
        )?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl FakeTalos {
    /// Starts a fake factory (holding the scenario's schematic) and a fake apid for the scenario.
    pub async fn start(scenario: Scenario) -> anyhow::Result<FakeTalos> {
        let factory_state = Arc::new(FactoryState::default());
        let factory = FakeFactory::start(Arc::clone(&factory_state)).await?;
        let schematic_id = factory_state.register(scenario.schematic.clone());
        let node = NodeState::boot(&scenario, schematic_id)
            .map_err(|r| anyhow::anyhow!("scenario config refused: {}", r.0))?;
        let shared = Arc::new(Shared::new(
            node,
            factory_state,
            factory.host(),
            scenario.reboot_duration,
        ));

        let pki = Pki::generate()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls(&pki)?));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake apid")?;
        let apid_addr = listener.local_addr()?;
        let stop = CancellationToken::new();

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<NodeConnection, std::io::Error>>(16);
        let accepting = Arc::clone(&shared);
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stopped.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((tcp, _)) = accepted else { continue };
                if !accepting.is_up() {
                    // Rebooting: nothing answers.
                    drop(tcp);
                    continue;
                }
                let killed = accepting.connection_killed();
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
                    if let Ok(Ok(tls)) = handshake {
                        let organizations = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(|cert| pki::organizations(cert))
                            .unwrap_or_default();
                        let connection =
                            NodeConnection::new(tls, killed, PeerRoles { organizations });
                        let _ = tx.send(Ok(connection)).await;
                    }
                });
            }
        });

        let machine = MachineServiceServer::new(Machine {
            shared: Arc::clone(&shared),
        });
        let cosi = StateServer::new(Cosi {
            shared: Arc::clone(&shared),
        });
        let serving = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(machine)
                .add_service(cosi)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(rx),
                    async move { serving.cancelled().await },
                )
                .await;
        });

        Ok(FakeTalos {
            apid_addr,
            factory,
            pki,
            shared,
            stop,
            dir: tempfile::tempdir()?,
        })
    }

    /// A talosconfig file for a role (context `fake`, endpoint `127.0.0.1:PORT`, node `127.0.0.1`).
    pub fn talosconfig(&self, role: Role) -> anyhow::Result<PathBuf> {
        self.pki
            .write_talosconfig(self.dir.path(), self.apid_addr, role)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn apid_url(&self) -> String {
        format!("https://{}", self.apid_addr)
    }

    /// A raw tonic channel with mutual TLS as a role, or with no client certificate at all.
    pub async fn channel(&self, role: Option<Role>) -> anyhow::Result<Channel> {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.pki.ca_pem));
        if let Some(role) = role {
            let client = self.pki.client(role)?;
            tls = tls.identity(Identity::from_pem(client.cert_pem, client.key_pem));
        }
        let channel = Channel::from_shared(self.apid_url())?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(channel)
    }

    /// A copy of the node as it is now.
    pub fn node(&self) -> NodeState {
        self.shared.node().clone()
    }

    /// Every apid call so far.
    pub fn calls(&self) -> Vec<ApidCall> {
        self.shared.calls()
    }

    /// The calls that changed (or asked to change) the node: non-dry-run applies, upgrades, reboots.
    pub fn writes(&self) -> Vec<ApidCall> {
        self.calls()
            .into_iter()
            .filter(ApidCall::is_write)
            .collect()
    }

    /// Every factory request so far.
    pub fn factory_calls(&self) -> Vec<FactoryCall> {
        self.factory.state.calls()
    }

    /// Factory `POST /schematics` requests so far.
    pub fn factory_posts(&self) -> Vec<FactoryCall> {
        self.factory_calls()
            .into_iter()
            .filter(|c| c.method == "POST")
            .collect()
    }

    /// Waits until the node is up (after a reboot or upgrade), at most `limit`.
    pub async fn wait_until_up(&self, limit: Duration) -> anyhow::Result<NodeState> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let node = self.node();
            if node.up {
                return Ok(node);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("fake node still down after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for FakeTalos {
    fn drop(&mut self) {
        self.stop.cancel();
        self.shared.drop_connections();
    }
}
