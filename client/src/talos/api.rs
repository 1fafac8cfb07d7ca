//! The Talos API client: one node per call (`node` metadata), MachineService and COSI State, errors that say what to do.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use nodectl_proto::cosi::resource as cosi;
use nodectl_proto::machine;
use nodectl_proto::resource::config::MachineConfigSpec;
use nodectl_proto::talos::resource::definitions::runtime::{
    ExtensionStatusSpec, SecurityStateSpec,
};
use prost::Message as _;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::talosconfig::Context;
use super::tls;
use crate::exit::Unreachable;

pub use machine::apply_configuration_request::Mode as ApplyMode;

/// How long one call may take before the node counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to apid for one target node.
#[derive(Debug, Clone)]
pub struct TalosClient {
    /// The node every call is sent to (`node` metadata).
    pub node: String,
    /// The apid endpoint in use (`host:port`).
    pub endpoint: String,
    endpoints: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
    channel: Channel,
}

/// What ApplyConfiguration answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub mode: ApplyMode,
    pub mode_details: String,
    pub warnings: Vec<String>,
}

/// One installed extension, as `talosctl get extensions` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Extension {
    pub name: String,
    pub version: String,
    pub image: String,
}

/// The name of the virtual extension whose version is the running schematic id.
pub const SCHEMATIC_EXTENSION: &str = "schematic";

impl TalosClient {
    /// Connects to the first reachable endpoint of the context. The node is `--node`, else the
    /// context's first node, else the endpoint's host.
    pub async fn connect(ctx: &Context, node: Option<&str>) -> anyhow::Result<TalosClient> {
        tls::install_crypto_provider();
        let tls = Arc::new(tls::client_config(ctx)?);
        let node = match node {
            Some(n) => n.to_owned(),
            None => match ctx.nodes.first() {
                Some(n) => n.clone(),
                None => ctx
                    .endpoints
                    .first()
                    .map(|e| tls::endpoint_host(e).to_owned())
                    .ok_or_else(|| anyhow!("talosconfig has no endpoint"))?,
            },
        };
        let (endpoint, channel) = dial(&tls, &ctx.endpoints, &node).await?;
        Ok(TalosClient {
            node,
            endpoint,
            endpoints: ctx.endpoints.clone(),
            tls,
            channel,
        })
    }

    /// A fresh connection to the same endpoints (used while a node reboots).
    pub async fn reconnect(&self) -> anyhow::Result<TalosClient> {
        let (endpoint, channel) = dial(&self.tls, &self.endpoints, &self.node).await?;
        Ok(TalosClient {
            endpoint,
            channel,
            ..self.clone()
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        if let Ok(value) = MetadataValue::try_from(self.node.as_str()) {
            request.metadata_mut().insert("node", value);
        }
        request
    }

    fn machine(&self) -> machine::machine_service_client::MachineServiceClient<Channel> {
        machine::machine_service_client::MachineServiceClient::new(self.channel.clone())
    }

    fn state(&self) -> cosi::state_client::StateClient<Channel> {
        cosi::state_client::StateClient::new(self.channel.clone())
    }

    /// The Talos version tag, e.g. `v1.12.1`.
    pub async fn version(&self) -> anyhow::Result<String> {
        let response = self
            .machine()
            .version(self.request(()))
            .await
            .map_err(|s| self.status_error("Version", &s))?
            .into_inner();
        response
            .messages
            .into_iter()
            .find_map(|m| m.version.map(|v| v.tag))
            .ok_or_else(|| anyhow!("node {}: Version returned no version", self.node))
    }

    /// A file's contents via MachineService.Read; `None` when the node says NotFound.
    pub async fn read_file(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let op = format!("Read {path}");
        let stream = match self
            .machine()
            .read(self.request(machine::ReadRequest {
                path: path.to_owned(),
            }))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(self.status_error(&op, &s)),
        };
        let mut stream = stream;
        let mut bytes = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(data) => {
                    if let Some(error) = data.metadata.as_ref().map(|m| &m.error)
                        && !error.is_empty()
                    {
                        return Err(anyhow!("node {}: {op}: {error}", self.node));
                    }
                    bytes.extend_from_slice(&data.bytes);
                }
                Err(s) if s.code() == Code::NotFound => return Ok(None),
                Err(s) => return Err(self.status_error(&op, &s)),
            }
        }
        Ok(Some(bytes))
    }

    /// A file read as trimmed text (`None` when missing).
    pub async fn read_text(&self, path: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .read_file(path)
            .await?
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned()))
    }

    async fn get_resource(
        &self,
        namespace: &str,
        kind: &str,
        id: &str,
    ) -> anyhow::Result<Option<cosi::Resource>> {
        let op = format!("COSI Get {namespace}/{kind}/{id}");
        match self
            .state()
            .get(self.request(cosi::GetRequest {
                namespace: namespace.to_owned(),
                r#type: kind.to_owned(),
                id: id.to_owned(),
                options: None,
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().resource),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(self.status_error(&op, &s)),
        }
    }

    /// The running machine configuration (multi-document YAML, as submitted). Needs `os:admin`.
    pub async fn machine_config(&self) -> anyhow::Result<String> {
        self.machine_config_by_id("v1alpha1")
            .await?
            .ok_or_else(|| anyhow!("node {}: no running machine configuration (MachineConfigs.config.talos.dev/v1alpha1 not found)", self.node))
    }

    /// A MachineConfig resource by id: `v1alpha1` (running) or `persistent` (on disk).
    pub async fn machine_config_by_id(&self, id: &str) -> anyhow::Result<Option<String>> {
        let Some(resource) = self
            .get_resource("config", "MachineConfigs.config.talos.dev", id)
            .await?
        else {
            return Ok(None);
        };
        let spec = resource.spec.unwrap_or_default();
        let decoded = MachineConfigSpec::decode(spec.proto_spec.as_slice()).map_err(|e| {
            anyhow!(
                "node {}: MachineConfig {id}: undecodable spec: {e}",
                self.node
            )
        })?;
        Ok(Some(
            String::from_utf8_lossy(&decoded.yaml_marshalled).into_owned(),
        ))
    }

    /// `SecurityState` (booted with UKI, secure boot); `None` when the node has none.
    pub async fn security_state(&self) -> anyhow::Result<Option<SecurityStateSpec>> {
        let Some(resource) = self
            .get_resource("runtime", "SecurityStates.talos.dev", "securitystate")
            .await?
        else {
            return Ok(None);
        };
        let spec = resource.spec.unwrap_or_default();
        Ok(Some(
            SecurityStateSpec::decode(spec.proto_spec.as_slice())
                .map_err(|e| anyhow!("node {}: SecurityState: undecodable spec: {e}", self.node))?,
        ))
    }

    /// Installed extensions, including the virtual `schematic` one.
    pub async fn extensions(&self) -> anyhow::Result<Vec<Extension>> {
        let op = "COSI List runtime/ExtensionStatuses.runtime.talos.dev";
        let mut stream = self
            .state()
            .list(self.request(cosi::ListRequest {
                namespace: "runtime".to_owned(),
                r#type: "ExtensionStatuses.runtime.talos.dev".to_owned(),
                options: None,
            }))
            .await
            .map_err(|s| self.status_error(op, &s))?
            .into_inner();
        let mut extensions = Vec::new();
        while let Some(item) = stream.next().await {
            let item = item.map_err(|s| self.status_error(op, &s))?;
            let Some(resource) = item.resource else {
                continue;
            };
            let spec = resource.spec.unwrap_or_default();
            let status = ExtensionStatusSpec::decode(spec.proto_spec.as_slice()).map_err(|e| {
                anyhow!("node {}: ExtensionStatus: undecodable spec: {e}", self.node)
            })?;
            let metadata = status.metadata.unwrap_or_default();
            extensions.push(Extension {
                name: metadata.name,
                version: metadata.version,
                image: status.image,
            });
        }
        Ok(extensions)
    }

    /// ApplyConfiguration with the full configuration. REBOOT is refused here: nodectl never sends it.
    pub async fn apply_configuration(
        &self,
        config_yaml: &str,
        mode: ApplyMode,
        dry_run: bool,
    ) -> anyhow::Result<ApplyOutcome> {
        if mode == ApplyMode::Reboot {
            anyhow::bail!("mode REBOOT is never sent; use auto or no-reboot");
        }
        let response = self
            .machine()
            .apply_configuration(self.request(machine::ApplyConfigurationRequest {
                data: config_yaml.as_bytes().to_vec(),
                mode: mode as i32,
                dry_run,
                try_mode_timeout: None,
            }))
            .await
            .map_err(|s| self.status_error("ApplyConfiguration", &s))?
            .into_inner();
        let message =
            response.messages.into_iter().next().ok_or_else(|| {
                anyhow!("node {}: ApplyConfiguration returned no answer", self.node)
            })?;
        Ok(ApplyOutcome {
            mode: ApplyMode::try_from(message.mode).unwrap_or(mode),
            mode_details: message.mode_details,
            warnings: message.warnings,
        })
    }

    /// Upgrade to an installer image; returns apid's acknowledgement.
    pub async fn upgrade(&self, image: &str) -> anyhow::Result<String> {
        let response = self
            .machine()
            .upgrade(self.request(machine::UpgradeRequest {
                image: image.to_owned(),
                ..Default::default()
            }))
            .await
            .map_err(|s| self.status_error("Upgrade", &s))?
            .into_inner();
        Ok(response
            .messages
            .into_iter()
            .next()
            .map(|m| m.ack)
            .unwrap_or_default())
    }

    fn status_error(&self, op: &str, status: &tonic::Status) -> anyhow::Error {
        status_error(&self.node, &self.endpoint, op, status)
    }
}

async fn dial(
    tls: &Arc<rustls::ClientConfig>,
    endpoints: &[String],
    node: &str,
) -> anyhow::Result<(String, Channel)> {
    let mut failures = Vec::new();
    for endpoint in endpoints {
        match tls::connect(tls.clone(), endpoint, CONNECT_TIMEOUT, tls::APID, None).await {
            Ok(channel) => return Ok((endpoint.clone(), channel)),
            Err(tls::ConnectError::Setup(reason)) => anyhow::bail!(reason),
            Err(tls::ConnectError::Unreachable(reason)) => {
                failures.push(format!("{endpoint}: {reason}"));
            }
        }
    }
    Err(Unreachable(format!(
        "node {node} unreachable: no apid endpoint answered ({}); check the talosconfig endpoints and that the node is up",
        failures.join("; ")
    ))
    .into())
}

/// A gRPC status from apid as an error that says what to do. Unreachable and timeouts carry
/// `exit::Unreachable` (exit 3); the rest exit 2.
pub fn status_error(node: &str, endpoint: &str, op: &str, status: &tonic::Status) -> anyhow::Error {
    let message = status.message();
    match status.code() {
        Code::Unavailable => Unreachable(format!(
            "node {node} unreachable through {endpoint} ({op}): {message}; check that the node is up and the endpoint is right"
        ))
        .into(),
        Code::DeadlineExceeded => Unreachable(format!(
            "node {node}: {op} timed out through {endpoint}: {message}"
        ))
        .into(),
        Code::PermissionDenied => anyhow!(
            "node {node}: {op}: permission denied ({message}): the certificate lacks os:admin; use a talosconfig with the os:admin role (e.g. the one `talosctl gen config` wrote)"
        ),
        Code::Unauthenticated => anyhow!(
            "node {node}: {op}: the node refused the client certificate ({message}); is the talosconfig for this cluster?"
        ),
        Code::InvalidArgument => anyhow!("node {node}: {op}: apid refused it: {message}"),
        Code::NotFound => anyhow!("node {node}: {op}: not found: {message}"),
        code => anyhow!("node {node}: {op} failed ({code:?}): {message}"),
    }
}

/// apid's dry-run summary without the configuration diff it appends (the plan already shows
/// nodectl's own diff of the same change).
pub fn dry_run_summary(mode_details: &str) -> String {
    mode_details
        .lines()
        .take_while(|l| {
            !(l.starts_with("Config diff") || l.starts_with("--- ") || l.starts_with("@@"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// True when the error means the node (or a service) could not be reached.
pub fn is_unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|c| c.is::<Unreachable>())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_summaries_drop_the_diff() {
        let details = "Dry run summary:\nApplied configuration without a reboot (skipped in dry-run).\nConfig diff:\n--- a\n+++ b\n";
        assert_eq!(
            dry_run_summary(details),
            "Dry run summary:\nApplied configuration without a reboot (skipped in dry-run)."
        );
        assert_eq!(dry_run_summary("x\n--- a\n+b"), "x");
    }

    #[test]
    fn statuses_map_to_advice_and_exit_codes() {
        let denied = status_error(
            "10.0.0.5",
            "10.0.0.2:50000",
            "ApplyConfiguration",
            &tonic::Status::permission_denied("not authorized"),
        );
        assert!(denied.to_string().contains("lacks os:admin"));
        assert!(!is_unreachable(&denied));
        let invalid = status_error(
            "n",
            "e",
            "ApplyConfiguration",
            &tonic::Status::invalid_argument(
                "install.extraKernelArgs and install.grubUseUKICmdline can't be used together",
            ),
        );
        assert!(invalid.to_string().contains("can't be used together"));
        let down = status_error("n", "e", "Version", &tonic::Status::unavailable("refused"));
        assert!(is_unreachable(&down));
        let slow = status_error("n", "e", "Version", &tonic::Status::deadline_exceeded("x"));
        assert!(is_unreachable(&slow));
    }
}
