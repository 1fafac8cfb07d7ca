//! Fake apid: MachineService and COSI State over mutual TLS, with Talos's role checks, serving one simulated node.
//!
//! `connection` cuts TLS connections at a reboot and carries the client's roles, `rbac` checks
//! them per call, `machine` is MachineService and `cosi` the COSI State service.

mod connection;
mod cosi;
mod machine;
mod rbac;

pub use connection::{NodeConnection, PeerRoles};
pub use cosi::{
    Cosi, EXTENSION_STATUS_TYPE, KERNEL_CMDLINE_TYPE, MACHINE_CONFIG_TYPE, SECURITY_STATE_TYPE,
};
pub use machine::Machine;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nodectl_proto::machine::apply_configuration_request::Mode;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::Status;

use crate::fake_talos::factory::{FactoryState, Schematic};
use crate::fake_talos::node::NodeState;

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
