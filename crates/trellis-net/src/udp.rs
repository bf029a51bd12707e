//! UDP with checkpoint semantics: every send and receive is a cancel point, and a receive
//! cancelled while waiting loses no datagram.

use std::io;

use crate::IoError;
use std::net::SocketAddr;

use tokio::net::ToSocketAddrs;

/// A UDP socket whose operations are checkpoints (the DTLS endpoint builds on it).
#[derive(Debug)]
pub struct UdpSocket {
    inner: tokio::net::UdpSocket,
}

impl UdpSocket {
    /// Binds to `addr`; a checkpoint.
    ///
    /// # Errors
    ///
    /// The bind's error, or `Cancelled`.
    pub async fn bind(addr: impl ToSocketAddrs) -> Result<Self, IoError> {
        trellis::checkpoint_if_cancelled()?;
        let inner = trellis::cancellable(tokio::net::UdpSocket::bind(addr)).await??;
        Ok(UdpSocket { inner })
    }

    /// Wraps a tokio socket.
    pub fn from_tokio(inner: tokio::net::UdpSocket) -> Self {
        UdpSocket { inner }
    }

    /// The tokio socket underneath.
    pub fn get_ref(&self) -> &tokio::net::UdpSocket {
        &self.inner
    }

    /// The address it is bound to.
    ///
    /// # Errors
    ///
    /// As the system call's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Sends one datagram to `target`; a checkpoint.
    ///
    /// # Errors
    ///
    /// The send's error, or `Cancelled`.
    pub async fn send_to(&self, data: &[u8], target: SocketAddr) -> Result<usize, IoError> {
        trellis::checkpoint_if_cancelled()?;
        Ok(trellis::cancellable(self.inner.send_to(data, target)).await??)
    }

    /// Receives one datagram into `buf` (truncated to its length, as the system does);
    /// returns its length and sender; a checkpoint.
    ///
    /// # Errors
    ///
    /// The receive's error, or `Cancelled`.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), IoError> {
        trellis::checkpoint_if_cancelled()?;
        Ok(trellis::cancellable(self.inner.recv_from(buf)).await??)
    }

    /// Connects the socket to `peer`: `send` and `recv` then talk to it only.
    ///
    /// # Errors
    ///
    /// The connect's error, or `Cancelled`.
    pub async fn connect(&self, peer: SocketAddr) -> Result<(), IoError> {
        trellis::checkpoint_if_cancelled()?;
        Ok(trellis::cancellable(self.inner.connect(peer)).await??)
    }

    /// Sends one datagram to the connected peer; a checkpoint.
    ///
    /// # Errors
    ///
    /// The send's error, or `Cancelled`.
    pub async fn send(&self, data: &[u8]) -> Result<usize, IoError> {
        trellis::checkpoint_if_cancelled()?;
        Ok(trellis::cancellable(self.inner.send(data)).await??)
    }

    /// Receives one datagram from the connected peer; a checkpoint.
    ///
    /// # Errors
    ///
    /// The receive's error, or `Cancelled`.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize, IoError> {
        trellis::checkpoint_if_cancelled()?;
        Ok(trellis::cancellable(self.inner.recv(buf)).await??)
    }
}
