//! A client of `TailPodLog` that never reads its reply: what a stalled or hostile reader does to the agent's memory.

use bytes::Bytes;
use nodectl_proto::nodectl::v1 as pb;
use prost::Message as _;

/// A client that asks for a pod log over its own HTTP/2 connection and never reads the reply:
/// its flow-control window stays at the 64 KiB it started with, so the agent can send no more.
pub struct SlowReader {
    /// Whether the agent answered at once with RESOURCE_EXHAUSTED.
    pub refused: bool,
    _reply: h2::RecvStream,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for SlowReader {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl SlowReader {
    /// Connects to the agent's gRPC port at `addr` (`127.0.0.1:PORT`) and asks for a pod log.
    pub async fn start(addr: &str, request: &pb::TailPodLogRequest) -> anyhow::Result<SlowReader> {
        let encoded = request.encode_to_vec();
        // A gRPC message: uncompressed, its length, its bytes.
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(encoded.len())?.to_be_bytes());
        framed.extend_from_slice(&encoded);
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (client, connection) = h2::client::Builder::new()
            .initial_window_size(65_535)
            .initial_connection_window_size(65_535)
            .handshake::<_, Bytes>(tcp)
            .await?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await?;
        let http_request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "http://{addr}/nodectl.v1.NodeDiagnostics/TailPodLog"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let (response, mut send) = client.send_request(http_request, false)?;
        send.send_data(Bytes::from(framed), true)?;
        let response = response.await?;
        // A refusal comes as a response of headers only, its status among them.
        let refused = response
            .headers()
            .get("grpc-status")
            .is_some_and(|s| s == "8");
        Ok(SlowReader {
            refused,
            _reply: response.into_body(),
            connection,
        })
    }
}
