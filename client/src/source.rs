//! Where node state comes from: agents over gRPC (`--endpoint`, repeatable) or the collectors in-process.

use std::path::PathBuf;

use anyhow::Context as _;
use nodectl_agent::snapshot::SampleOptions;
use nodectl_agent::{HostRoot, model};
use nodectl_proto::nodectl::v1 as pb;
use pb::node_diagnostics_client::NodeDiagnosticsClient;
use tonic::transport::{Channel, Endpoint};

use crate::exit::Unreachable;

/// The nodes a command reads.
#[derive(Debug, Clone)]
pub enum Source {
    /// The agent library in this process, on a host root (`/` or `--host-root DIR`).
    Embedded(HostRoot),
    /// Agents at these endpoints (`http://HOST:PORT` or `unix:/path`).
    Agents(Vec<String>),
}

impl Source {
    pub fn new(endpoints: &[String], host_root: Option<PathBuf>) -> anyhow::Result<Self> {
        match (endpoints.is_empty(), host_root) {
            (true, root) => Ok(Source::Embedded(HostRoot::new(
                root.unwrap_or_else(|| PathBuf::from("/")),
            ))),
            (false, None) => Ok(Source::Agents(endpoints.to_vec())),
            (false, Some(_)) => anyhow::bail!("--endpoint and --host-root exclude each other"),
        }
    }
}

/// One node's snapshot with the label it is shown under (endpoint, or `local`/the tree).
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    pub source: String,
    pub snapshot: model::Snapshot,
}

/// Opens a gRPC channel to an agent; a failure is `Unreachable` (exit 3).
pub async fn connect(endpoint: &str) -> anyhow::Result<NodeDiagnosticsClient<Channel>> {
    let channel = if let Some(path) = endpoint.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        // The URI is required by tonic but unused: the connector dials the socket.
        Endpoint::from_static("http://[::]:50051")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
    } else {
        Endpoint::from_shared(endpoint.to_owned())
            .with_context(|| format!("--endpoint {endpoint}: not a URL like http://HOST:PORT"))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
    };
    let channel = channel
        .map_err(|e| Unreachable(format!("agent at {endpoint} could not be reached: {e}")))?;
    Ok(NodeDiagnosticsClient::new(channel))
}

/// Takes a snapshot of every node of `source`. Stops at the first node that fails.
pub async fn snapshots(
    source: &Source,
    options: SampleOptions,
) -> anyhow::Result<Vec<NodeSnapshot>> {
    match source {
        Source::Embedded(root) => {
            let root = root.clone();
            let label = if root.is_live_host() {
                "local".to_owned()
            } else {
                root.root().display().to_string()
            };
            if !root.root().is_dir() {
                anyhow::bail!("--host-root {label}: not a directory");
            }
            let snapshot =
                tokio::task::spawn_blocking(move || nodectl_agent::snapshot::take(&root, &options))
                    .await
                    .context("snapshot task")?;
            Ok(vec![NodeSnapshot {
                source: label,
                snapshot,
            }])
        }
        Source::Agents(endpoints) => {
            let mut out = Vec::with_capacity(endpoints.len());
            for endpoint in endpoints {
                let mut client = connect(endpoint).await?;
                let request = pb::GetSnapshotRequest {
                    sample_count: options.count,
                    sample_interval_ms: u32::try_from(options.interval.as_millis())
                        .unwrap_or(u32::MAX),
                };
                let reply = client.get_snapshot(request).await.map_err(|status| {
                    if status.code() == tonic::Code::Unavailable {
                        anyhow::Error::new(Unreachable(format!(
                            "agent at {endpoint}: {}",
                            status.message()
                        )))
                    } else {
                        anyhow::anyhow!("agent at {endpoint}: {}", status.message())
                    }
                })?;
                let snapshot = model::Snapshot::try_from(reply.into_inner())
                    .with_context(|| format!("agent at {endpoint} sent a malformed snapshot"))?;
                out.push(NodeSnapshot {
                    source: endpoint.clone(),
                    snapshot,
                });
            }
            Ok(out)
        }
    }
}
