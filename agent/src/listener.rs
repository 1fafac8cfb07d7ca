//! Accepting TCP connections within bounds: a cap on connections at once, a deadline for a peer's first byte, and accept errors (the fd limit) that back off and log instead of spinning.
//!
//! Both the gRPC port and the metrics port accept through [`GuardedListener`].

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::limits::{ACCEPT_BACKOFF, FIRST_BYTE_TIMEOUT, MAX_CONNECTIONS, REFUSAL_LOG_INTERVAL};

/// A TCP listener that hands out at most [`MAX_CONNECTIONS`] connections at once.
#[derive(Debug)]
pub struct GuardedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    /// `grpc` or `metrics`, for the log.
    port: &'static str,
    last_refusal_log: Option<Instant>,
}

impl GuardedListener {
    pub fn new(listener: TcpListener, port: &'static str) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            port,
            last_refusal_log: None,
        }
    }

    /// Logs a refusal at most once per [`REFUSAL_LOG_INTERVAL`]: a flood must not flood the log.
    fn log_refusal(&mut self, what: &str) {
        if self
            .last_refusal_log
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            tracing::warn!("{} port: {what}", self.port);
            self.last_refusal_log = Some(Instant::now());
        }
    }

    /// The next connection within the cap. Connections past the cap are closed at once; accept
    /// errors (out of file descriptors) wait [`ACCEPT_BACKOFF`] before the next try.
    pub async fn accept(&mut self) -> (GuardedStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => match Arc::clone(&self.permits).try_acquire_owned() {
                    Ok(permit) => {
                        // Without TCP_NODELAY a small reply waits for the peer's delayed ACK.
                        if let Err(e) = stream.set_nodelay(true) {
                            tracing::debug!("TCP_NODELAY on {addr}: {e}");
                        }
                        return (GuardedStream::new(stream, permit), addr);
                    }
                    Err(_) => {
                        self.log_refusal(&format!(
                            "{MAX_CONNECTIONS} connections are open; closing new ones (the latest from {addr})"
                        ));
                        drop(stream);
                    }
                },
                Err(e) => {
                    self.log_refusal(&format!(
                        "accepting a connection failed ({e}); retrying in {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    ));
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    /// The accepted connections as a stream, for tonic's `serve_with_incoming`.
    pub fn into_incoming(
        mut self,
    ) -> tokio_stream::wrappers::ReceiverStream<io::Result<GuardedStream>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = self.accept() => accepted,
                    () = tx.closed() => return,
                };
                if tx.send(Ok(stream)).await.is_err() {
                    return;
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// An accepted connection: holds its place under the cap, and is closed when the peer sends
/// nothing within [`FIRST_BYTE_TIMEOUT`] of the accept.
#[derive(Debug)]
pub struct GuardedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// Running until the first byte arrives.
    first_byte: Option<Pin<Box<Sleep>>>,
}

impl GuardedStream {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit) -> Self {
        Self {
            stream,
            _permit: permit,
            first_byte: Some(Box::pin(tokio::time::sleep(FIRST_BYTE_TIMEOUT))),
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Some(deadline) = &mut this.first_byte {
            if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                this.first_byte = None;
            } else if polled.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer sent nothing after connecting",
                )));
            }
        }
        polled
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for GuardedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
