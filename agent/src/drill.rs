//! `nodectl-agent inject`: asks the agent running on this node, over its Unix socket, to feed a rule's example kernel message into its pipeline as a drill.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nodectl_proto::nodectl::v1 as pb;
use pb::node_diagnostics_client::NodeDiagnosticsClient;
use tonic::transport::{Channel, Endpoint};

/// Where the DaemonSet's agent listens (`--unix`).
pub const DEFAULT_SOCKET: &str = "/run/nodectl/agent.sock";

/// How long the running agent may take to answer: it only queues the message.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("the agent's socket {path}: {reason}")]
    Connect { path: PathBuf, reason: String },
    #[error("the agent refused the drill: {0}")]
    Refused(String),
    #[error("the agent did not answer within {}s", ANSWER_TIMEOUT.as_secs())]
    Timeout,
}

/// A gRPC channel to an agent's Unix socket (`nodectl --endpoint unix:PATH` dials it too).
pub async fn unix_channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
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
}

/// Injects the example message of `rule_id` through the agent at `socket`; returns the message.
pub async fn inject(socket: &Path, rule_id: &str) -> Result<String, DrillError> {
    let channel = unix_channel(socket)
        .await
        .map_err(|e| DrillError::Connect {
            path: socket.to_path_buf(),
            reason: std::error::Error::source(&e)
                .map_or_else(|| e.to_string(), ToString::to_string),
        })?;
    let mut client = NodeDiagnosticsClient::new(channel);
    let call = client.inject_kernel_message(pb::InjectKernelMessageRequest {
        rule_id: rule_id.to_owned(),
    });
    match tokio::time::timeout(ANSWER_TIMEOUT, call).await {
        Err(_) => Err(DrillError::Timeout),
        Ok(Err(status)) => Err(DrillError::Refused(status.message().to_owned())),
        Ok(Ok(reply)) => Ok(reply.into_inner().message),
    }
}
