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

/// A warning logged at most once per [`REFUSAL_LOG_INTERVAL`]: a flood must not flood the log.
#[derive(Debug, Clone, Default)]
pub struct RareWarning {
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl RareWarning {
    pub fn warn(&self, port: &str, what: &str) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
            tracing::warn!("{port} port: {what}");
            *last = Some(Instant::now());
        }
    }
}

/// A TCP listener that hands out at most [`MAX_CONNECTIONS`] connections at once.
#[derive(Debug)]
pub struct GuardedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    /// `grpc` or `metrics`, for the log.
    port: &'static str,
    refusals: RareWarning,
}

impl GuardedListener {
    pub fn new(listener: TcpListener, port: &'static str) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            port,
            refusals: RareWarning::default(),
        }
    }

    fn log_refusal(&mut self, what: &str) {
        self.refusals.warn(self.port, what);
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

impl GuardedListener {
    /// The accepted connections after their TLS handshake, for tonic's `serve_with_incoming`.
    /// Each handshake runs on its own task, so a slow one holds up no other; one that fails is
    /// logged (rarely) with the peer and rustls's reason, and the connection closed.
    pub fn into_tls_incoming(
        mut self,
        tls: crate::tls::ReloadingConfig,
    ) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConnection>> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let failures = RareWarning::default();
        tokio::spawn(async move {
            loop {
                let (stream, addr) = tokio::select! {
                    accepted = self.accept() => accepted,
                    () = tx.closed() => return,
                };
                let (tls, tx, failures, port) =
                    (tls.clone(), tx.clone(), failures.clone(), self.port);
                tokio::spawn(async move {
                    match tls.accept(stream).await {
                        Ok(stream) => {
                            let _ = tx.send(Ok(TlsConnection(stream))).await;
                        }
                        Err(e) => {
                            failures.warn(port, &format!("TLS handshake from {addr} failed: {e}"))
                        }
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// A connection after its TLS handshake.
#[derive(Debug)]
pub struct TlsConnection(tokio_rustls::server::TlsStream<GuardedStream>);

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
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
