//! Who called, and Talos's role and reachability checks on every call.

use tonic::{Request, Status};

use super::connection::PeerRoles;
use super::{ApidCall, Shared};
use crate::fake_talos::node::Refusal;

/// Who called and for which node.
pub(super) struct Caller {
    organizations: Vec<String>,
    node: Option<String>,
}

impl Caller {
    pub(super) fn of<T>(request: &Request<T>) -> Caller {
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

    pub(super) fn call(&self, method: &str) -> ApidCall {
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
    pub(super) fn require(&self, roles: &[&str]) -> Result<(), Status> {
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

pub(super) const ADMIN: &[&str] = &["os:admin"];
pub(super) const OPERATOR: &[&str] = &["os:admin", "os:operator"];
pub(super) const ANY_ROLE: &[&str] = &["os:admin", "os:operator", "os:reader"];

/// Checks the node is up and is the one addressed by `node` metadata.
pub(super) fn reachable(shared: &Shared, caller: &Caller) -> Result<(), Status> {
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

pub(super) fn invalid(refusal: Refusal) -> Status {
    Status::invalid_argument(refusal.0)
}
