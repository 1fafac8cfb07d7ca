//! The fake node's TLS connections: the client's roles from its certificate, and a connection a reboot cuts.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::transport::server::Connected;

/// What the TLS handshake learned about the client: the Organizations (roles) of its certificate.
#[derive(Debug, Clone, Default)]
pub struct PeerRoles {
    pub organizations: Vec<String>,
}

/// A mutual-TLS connection to the node that a reboot can cut.
pub struct NodeConnection {
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    roles: PeerRoles,
}

impl NodeConnection {
    pub fn new(
        tls: tokio_rustls::server::TlsStream<TcpStream>,
        killed: WaitForCancellationFutureOwned,
        roles: PeerRoles,
    ) -> NodeConnection {
        NodeConnection {
            tls,
            killed: Box::pin(killed),
            roles,
        }
    }

    fn cut(&mut self, cx: &mut Context<'_>) -> bool {
        self.killed.as_mut().poll(cx).is_ready()
    }
}

fn rebooted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "node rebooted")
}

impl Connected for NodeConnection {
    type ConnectInfo = PeerRoles;
    fn connect_info(&self) -> PeerRoles {
        self.roles.clone()
    }
}

impl AsyncRead for NodeConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut(cx) {
            return Poll::Ready(Err(rebooted()));
        }
        Pin::new(&mut this.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for NodeConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.cut(cx) {
            return Poll::Ready(Err(rebooted()));
        }
        Pin::new(&mut this.tls).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut(cx) {
            return Poll::Ready(Err(rebooted()));
        }
        Pin::new(&mut this.tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}
