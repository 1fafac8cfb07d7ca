//! Where node state comes from: agents at `--endpoint`s over gRPC, or the agent service in this process; both answer as NodeDiagnostics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use nodectl_model::inference::{InferenceProcesses, PodLog};
use nodectl_model::{Class, Snapshot, Source, StreamMessage};
use nodectl_proto::nodectl::v1 as pb;
use pb::node_diagnostics_client::NodeDiagnosticsClient;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::{Channel, Endpoint};

use crate::embedded::{Embedded, EmbeddedOptions};
use crate::exit::Unreachable;

/// How long nodectl waits for an agent to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest reply nodectl decodes: tonic's default of 4 MiB refused the 8.9 MB snapshot of a
/// host with 5001 cards; 64 MiB still bounds what a hostile agent can make it allocate.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// The TLS files for `https://` agents: `--ca`, `--cert`, `--key` (or the config file's).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the agents' certificate carries, when it is not the endpoint's host (agents
    /// reached by pod IP with one certificate for the DaemonSet).
    pub server_name: Option<String>,
}

/// Largest PEM file read for TLS: a certificate chain is a few KiB.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

impl AgentTlsFiles {
    /// Each file given here, else the other's.
    pub fn or(self, other: AgentTlsFiles) -> AgentTlsFiles {
        AgentTlsFiles {
            ca: self.ca.or(other.ca),
            cert: self.cert.or(other.cert),
            key: self.key.or(other.key),
            server_name: self.server_name.or(other.server_name),
        }
    }

    /// The rustls client configuration these files make; errors name the flag and file.
    fn client_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let read = |flag: &str, path: &std::path::Path| -> anyhow::Result<Vec<u8>> {
            use std::io::Read as _;
            let shown = path.display();
            let file = std::fs::File::open(path).with_context(|| format!("{flag} {shown}"))?;
            let mut bytes = Vec::new();
            file.take(MAX_PEM_BYTES)
                .read_to_end(&mut bytes)
                .with_context(|| format!("{flag} {shown}"))?;
            Ok(bytes)
        };
        let Some(ca) = &self.ca else {
            anyhow::bail!(
                "an https:// endpoint needs --ca FILE (or NODECTL_CA, or `ca` in the config file): the CA that signed the agents' certificates"
            );
        };
        let ca_pem = read("--ca", ca)?;
        let client = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((read("--cert", cert)?, read("--key", key)?)),
            (None, None) => None,
            (Some(_), None) => anyhow::bail!("--cert needs --key"),
            (None, Some(_)) => anyhow::bail!("--key needs --cert"),
        };
        crate::talos::tls::agent_client_config(
            &ca_pem,
            client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        )
        .map_err(anyhow::Error::msg)
    }
}

/// An agent to ask: its endpoint, and the TLS it is reached with (`https://`).
#[derive(Debug, Clone)]
pub struct AgentEndpoint {
    pub url: String,
    /// The node's name when it is known (`--discover`); else the node is shown as its URL.
    pub node: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: Option<String>,
}

impl AgentEndpoint {
    /// A plaintext endpoint (`http://`, `unix:`).
    pub fn plain(url: &str) -> Self {
        AgentEndpoint {
            url: url.to_owned(),
            node: None,
            tls: None,
            server_name: None,
        }
    }
}

/// The nodes a command reads.
#[derive(Debug, Clone)]
pub enum Nodes {
    /// The agent service in this process, on a host root (`/` or `--host-root DIR`).
    Embedded(PathBuf),
    /// Agents at endpoints (`http://HOST:PORT`, `https://HOST:PORT` or `unix:/path`), and
    /// discovered nodes whose agent cannot be asked.
    Agents(Vec<Target>),
}

/// One node to read.
#[derive(Debug, Clone)]
pub enum Target {
    Embedded(PathBuf),
    Agent(AgentEndpoint),
    /// A node `--discover` found whose agent cannot be asked (its pod is pending, failing or
    /// has no `grpc` port): listed as failed with the reason.
    Undialable {
        node: String,
        reason: String,
    },
}

/// A node named for the command: an endpoint, or one `--discover` found.
#[derive(Debug, Clone)]
pub struct NodeAddress {
    pub node: Option<String>,
    /// The endpoint, or why there is none.
    pub endpoint: Result<String, String>,
    /// The name its certificate is checked against when `--tls-server-name` gives none.
    pub server_name: Option<String>,
}

impl NodeAddress {
    /// An endpoint given on the command line or in `--endpoints-file`.
    pub fn given(endpoint: String) -> Self {
        NodeAddress {
            node: None,
            endpoint: Ok(endpoint),
            server_name: None,
        }
    }
}

impl Nodes {
    pub fn new(
        addresses: Vec<NodeAddress>,
        host_root: Option<PathBuf>,
        tls: &AgentTlsFiles,
    ) -> anyhow::Result<Self> {
        for endpoint in addresses.iter().filter_map(|a| a.endpoint.as_ref().ok()) {
            check_endpoint(endpoint)?;
        }
        if !addresses.is_empty() && host_root.is_some() {
            anyhow::bail!("--endpoint and --host-root exclude each other");
        }
        if addresses.is_empty() {
            return Ok(Nodes::Embedded(
                host_root.unwrap_or_else(|| PathBuf::from("/")),
            ));
        }
        let https = |a: &NodeAddress| a.endpoint.as_ref().is_ok_and(|e| e.starts_with("https://"));
        let config = if addresses.iter().any(https) {
            crate::talos::tls::install_crypto_provider();
            Some(Arc::new(tls.client_config()?))
        } else {
            None
        };
        Ok(Nodes::Agents(
            addresses
                .into_iter()
                .map(|address| match address.endpoint {
                    Ok(url) => Target::Agent(AgentEndpoint {
                        tls: config.clone().filter(|_| url.starts_with("https://")),
                        url,
                        node: address.node,
                        server_name: tls.server_name.clone().or(address.server_name),
                    }),
                    Err(reason) => Target::Undialable {
                        node: address.node.unwrap_or_default(),
                        reason,
                    },
                })
                .collect(),
        ))
    }

    /// Every node, in the order given.
    pub fn targets(&self) -> Vec<Target> {
        match self {
            Nodes::Embedded(root) => vec![Target::Embedded(root.clone())],
            Nodes::Agents(targets) => targets.clone(),
        }
    }
}

impl Target {
    /// What the node is shown as: its name when discovered, else its endpoint; `local`, or the
    /// tree.
    pub fn label(&self) -> String {
        match self {
            Target::Agent(agent) => agent.node.clone().unwrap_or_else(|| agent.url.clone()),
            Target::Undialable { node, .. } => node.clone(),
            Target::Embedded(root) if root == std::path::Path::new("/") => "local".to_owned(),
            Target::Embedded(root) => root.display().to_string(),
        }
    }

    /// The command-line flags that select this node, each with a leading space.
    pub fn selection(&self) -> String {
        match self {
            Target::Agent(agent) => format!(" --endpoint {}", agent.url),
            Target::Undialable { .. } => " --discover".to_owned(),
            Target::Embedded(root) if root == std::path::Path::new("/") => String::new(),
            Target::Embedded(root) => format!(" --host-root {}", root.display()),
        }
    }

    /// Connects to the node's agent (starting it in this process for an embedded target).
    pub async fn connect(&self, options: &EmbeddedOptions) -> anyhow::Result<NodeClient> {
        match self {
            Target::Undialable { reason, .. } => Err(Unreachable(reason.clone()).into()),
            Target::Agent(agent) => Ok(NodeClient {
                label: agent.url.clone(),
                remote: true,
                client: NodeDiagnosticsClient::new(connect_channel(agent).await?)
                    .max_decoding_message_size(MAX_REPLY_BYTES),
                _embedded: None,
            }),
            Target::Embedded(root) => {
                let embedded = Embedded::start(root, options).await?;
                Ok(NodeClient {
                    label: self.label(),
                    remote: false,
                    client: NodeDiagnosticsClient::new(embedded.channel())
                        .max_decoding_message_size(MAX_REPLY_BYTES),
                    _embedded: Some(embedded),
                })
            }
        }
    }
}

/// Largest `--endpoints-file` read: a line per node, so a megabyte is thousands of nodes; more
/// is not a list of endpoints.
const MAX_ENDPOINTS_FILE_BYTES: u64 = 1024 * 1024;

/// The endpoints of an `--endpoints-file`: one per line, blank lines and `#` comments skipped;
/// a line that is not an endpoint is an input error naming the file and line.
pub fn read_endpoints_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use std::io::Read as _;
    let shown = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("--endpoints-file {shown}"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("--endpoints-file {shown}"))?;
    if !meta.is_file() {
        anyhow::bail!("--endpoints-file {shown}: not a regular file");
    }
    let mut bytes = Vec::new();
    file.take(MAX_ENDPOINTS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("--endpoints-file {shown}"))?;
    if bytes.len() as u64 > MAX_ENDPOINTS_FILE_BYTES {
        anyhow::bail!(
            "--endpoints-file {shown}: larger than {} KiB; not a list of endpoints",
            MAX_ENDPOINTS_FILE_BYTES / 1024
        );
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("--endpoints-file {shown}: not UTF-8 text ({e})"))?;
    let mut endpoints = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        check_endpoint(line)
            .map_err(|e| anyhow::anyhow!("--endpoints-file {shown}, line {}: {e:#}", number + 1))?;
        endpoints.push(line.to_owned());
    }
    if endpoints.is_empty() {
        anyhow::bail!("--endpoints-file {shown}: no endpoint in it");
    }
    Ok(endpoints)
}

/// An endpoint of the form nodectl can dial, or an input error (exit 2) saying what is expected.
fn check_endpoint(endpoint: &str) -> anyhow::Result<()> {
    const EXPECTED: &str = "expected http://HOST:PORT, https://HOST:PORT or unix:/path/to.sock";
    if let Some(path) = endpoint.strip_prefix("unix:") {
        if path.is_empty() {
            anyhow::bail!("--endpoint {endpoint}: no socket path; {EXPECTED}");
        }
        return Ok(());
    }
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        anyhow::bail!(
            "--endpoint {endpoint}: no scheme; {EXPECTED}{}",
            if endpoint.contains(':') {
                " (add http://)"
            } else {
                ""
            }
        );
    };
    if scheme != "http" && scheme != "https" {
        anyhow::bail!(
            "--endpoint {endpoint}: scheme {scheme} is not served by the agent; {EXPECTED}"
        );
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        anyhow::bail!("--endpoint {endpoint}: no HOST:PORT; {EXPECTED}");
    }
    Ok(())
}

/// Opens a gRPC channel to an agent; a failure is `Unreachable` (exit 3).
async fn connect_channel(agent: &AgentEndpoint) -> anyhow::Result<Channel> {
    let endpoint = agent.url.as_str();
    if let Some(config) = &agent.tls {
        let authority = endpoint
            .strip_prefix("https://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        return crate::talos::tls::connect(
            Arc::clone(config),
            authority,
            CONNECT_TIMEOUT,
            crate::talos::tls::AGENT,
            agent.server_name.as_deref(),
        )
        .await
        .map_err(|e| match e {
            crate::talos::tls::ConnectError::Setup(reason) => anyhow::anyhow!(reason),
            crate::talos::tls::ConnectError::Unreachable(reason) => Unreachable(format!(
                "agent at {endpoint} could not be reached: {reason}"
            ))
            .into(),
        });
    }
    let channel = if let Some(path) = endpoint.strip_prefix("unix:") {
        nodectl_agent::drill::unix_channel(std::path::Path::new(path)).await
    } else {
        Endpoint::from_shared(endpoint.to_owned())
            .with_context(|| format!("--endpoint {endpoint}: not a URL like http://HOST:PORT"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
    };
    channel.map_err(|e| {
        Unreachable(format!(
            "agent at {endpoint} could not be reached: {}",
            crate::exit::error_chain(&e)
        ))
        .into()
    })
}

/// What `StreamKernelEvents` is asked for.
#[derive(Debug, Clone, Default)]
pub struct KernelEventsRequest {
    /// Events of each source with a cursor after this one (a kernel record's cursor is its
    /// seq); a source not named: the whole history the agent holds.
    pub since_cursor: std::collections::BTreeMap<Source, u64>,
    /// Keep the stream open for new records.
    pub follow: bool,
    /// Only events of these classes; empty: every class.
    pub classes: Vec<Class>,
    /// Also records no rule classified.
    pub include_unclassified: bool,
}

/// Which pod log to read: by namespace and name, or by UID; the container may be left empty
/// when the pod has one.
#[derive(Debug, Clone, Default)]
pub struct PodLogRequest {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
}

/// What `GetReport` is asked for.
#[derive(Debug, Clone, Default)]
pub struct ReportRequest {
    pub safe_mode: bool,
    pub no_redact: bool,
    pub redact_ips: bool,
    pub pods: Vec<PodLogRequest>,
}

/// A connection to one node's agent, remote or in this process.
#[derive(Debug)]
pub struct NodeClient {
    /// Endpoint, `local`, or the tree.
    pub label: String,
    remote: bool,
    client: NodeDiagnosticsClient<Channel>,
    /// Keeps the in-process agent running while the client is used.
    _embedded: Option<Embedded>,
}

/// One node's snapshot with the label it is shown under.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    pub source: String,
    /// The flags that select this node again (` --endpoint URL`, ` --host-root DIR`, or none).
    pub selection: String,
    pub snapshot: Snapshot,
}

/// An agent's error status as nodectl reports it: `Unavailable` means unreachable (exit 3).
fn status_error(label: &str, remote: bool, status: &tonic::Status) -> anyhow::Error {
    if let Some(mut reason) = transport_failure(status) {
        // The alert that says why may not be read at all: the request written after the
        // handshake meets the closed socket first (a broken pipe or a reset).
        let closed = ["connection closed", "broken pipe", "connection reset"];
        if label.starts_with("https://") && closed.iter().any(|c| reason.contains(c)) {
            reason.push_str(
                " (the agent closed the connection after the TLS handshake: an agent with --client-ca does so when the client certificate, --cert, is missing or not signed by that CA)",
            );
        }
        return Unreachable(format!("agent at {label} could not be reached: {reason}")).into();
    }
    let text = if remote {
        format!("agent at {label}: {}", status.message())
    } else {
        status.message().to_owned()
    };
    if status.code() == tonic::Code::Unavailable {
        Unreachable(text).into()
    } else {
        anyhow::Error::msg(text)
    }
}

/// The connection under a failed call, in words, when the failure was the connection's (a
/// status with a transport error as its source), not the agent's answer. With TLS 1.3 a
/// refused client certificate only shows here, on the first call after the handshake, as the
/// alert the agent sent (hyper keeps only its text).
fn transport_failure(status: &tonic::Status) -> Option<String> {
    let source = std::error::Error::source(status)?;
    let chain = crate::exit::error_chain(source);
    let alert = chain
        .split("received fatal alert: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_alphanumeric()).next());
    let refused = "the agent refused the client certificate (--cert): it is not signed by the agent's --client-ca";
    Some(match alert {
        Some("CertificateRequired") => {
            "the agent requires a client certificate: give --cert and --key (signed by its --client-ca)".to_owned()
        }
        // A signature by another CA fails as a bad signature, which TLS reports as DecryptError.
        Some(
            "BadCertificate" | "UnknownCA" | "UnsupportedCertificate" | "CertificateUnknown"
            | "DecryptError",
        ) => format!("{refused} (TLS alert {})", alert.unwrap_or_default()),
        Some("CertificateExpired") => {
            "the agent says the client certificate (--cert) has expired".to_owned()
        }
        _ => chain,
    })
}

impl NodeClient {
    /// One snapshot, with `count` clock readings `interval` apart.
    pub async fn snapshot(&mut self, count: u32, interval: Duration) -> anyhow::Result<Snapshot> {
        let request = pb::GetSnapshotRequest {
            sample_count: count,
            sample_interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
        };
        let reply = self
            .client
            .get_snapshot(request)
            .await
            .map_err(|status| status_error(&self.label, self.remote, &status))?;
        Snapshot::try_from(reply.into_inner())
            .with_context(|| format!("agent at {} sent a malformed snapshot", self.label))
    }

    /// The inference processes, watched over `window` (zero: one reading).
    pub async fn inference_processes(
        &mut self,
        window: Duration,
    ) -> anyhow::Result<InferenceProcesses> {
        let request = pb::GetInferenceProcessesRequest {
            sample_ms: u32::try_from(window.as_millis()).unwrap_or(u32::MAX),
        };
        let reply = self
            .client
            .get_inference_processes(request)
            .await
            .map_err(|status| status_error(&self.label, self.remote, &status))?;
        InferenceProcesses::try_from(reply.into_inner())
            .with_context(|| format!("agent at {} sent malformed inference processes", self.label))
    }

    /// The end of a pod container's log, which the agent finds under `/var/log/pods`.
    pub async fn pod_log(&mut self, request: PodLogRequest) -> anyhow::Result<PodLog> {
        let request = pb::TailPodLogRequest {
            namespace: request.namespace,
            pod: request.pod,
            pod_uid: request.pod_uid,
            container: request.container,
        };
        let reply = self
            .client
            .tail_pod_log(request)
            .await
            .map_err(|status| status_error(&self.label, self.remote, &status))?;
        PodLog::try_from(reply.into_inner())
            .with_context(|| format!("agent at {} sent a malformed pod log", self.label))
    }

    /// The node's part of a bug-report bundle: pieces of a gzip-compressed tar.
    pub async fn report(
        &mut self,
        request: ReportRequest,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<Vec<u8>>> + use<>> {
        let request = pb::GetReportRequest {
            safe_mode: request.safe_mode,
            no_redact: request.no_redact,
            redact_ips: request.redact_ips,
            pods: request
                .pods
                .into_iter()
                .map(|p| pb::TailPodLogRequest {
                    namespace: p.namespace,
                    pod: p.pod,
                    pod_uid: p.pod_uid,
                    container: p.container,
                })
                .collect(),
        };
        let stream = self
            .client
            .get_report(request)
            .await
            .map_err(|status| status_error(&self.label, self.remote, &status))?
            .into_inner();
        let label = self.label.clone();
        let remote = self.remote;
        Ok(stream.map(move |chunk| {
            chunk
                .map(|c| c.data)
                .map_err(|status| status_error(&label, remote, &status))
        }))
    }

    /// The agent's kernel event stream for `request`, as model messages.
    pub async fn kernel_events(
        &mut self,
        request: KernelEventsRequest,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<StreamMessage>> + use<>> {
        let since_seq = request
            .since_cursor
            .get(&Source::Kmsg)
            .copied()
            .unwrap_or_default();
        let request = pb::StreamKernelEventsRequest {
            // What an agent before sources reads.
            since_seq,
            follow: request.follow,
            classes: request
                .classes
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            include_unclassified: request.include_unclassified,
            since_cursor: request
                .since_cursor
                .iter()
                .filter(|(_, cursor)| **cursor > 0)
                .map(|(source, cursor)| (source.as_str().to_owned(), *cursor))
                .collect(),
            // Every source this client knows; an agent before sources sends the kernel log.
            sources: Source::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
        };
        let stream = self
            .client
            .stream_kernel_events(request)
            .await
            .map_err(|status| status_error(&self.label, self.remote, &status))?
            .into_inner();
        let label = self.label.clone();
        let remote = self.remote;
        Ok(stream.map(move |message| {
            let message = message.map_err(|status| status_error(&label, remote, &status))?;
            StreamMessage::try_from(message)
                .with_context(|| format!("agent at {label} sent a malformed stream message"))
        }))
    }
}

/// One node's snapshot, shown under its endpoint (or `local`, or its tree).
pub async fn snapshot_of(
    target: &Target,
    count: u32,
    interval: Duration,
) -> anyhow::Result<NodeSnapshot> {
    let mut client = target.connect(&EmbeddedOptions::default()).await?;
    let snapshot = client.snapshot(count, interval).await?;
    Ok(NodeSnapshot {
        source: target.label(),
        selection: target.selection(),
        snapshot,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn malformed_endpoints_are_input_errors_that_say_the_form() {
        for ok in [
            "http://127.0.0.1:50151",
            "http://node1:50151/",
            "unix:/run/a.sock",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("notaurl", "no scheme"),
            ("127.0.0.1:50151", "add http://"),
            ("ftp://x", "scheme ftp"),
            ("http://node1", "no HOST:PORT"),
            ("unix:", "no socket path"),
        ] {
            let e = check_endpoint(bad).unwrap_err().to_string();
            assert!(
                e.contains(says) && e.contains("http://HOST:PORT"),
                "{bad}: {e}"
            );
        }
    }
}
