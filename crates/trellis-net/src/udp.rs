//! UDP with checkpoint semantics: every send and receive is a cancel point, and a receive
//! cancelled while waiting loses no datagram.
//!
//! The socket is registered with the runtime for reading only. Linux tells a socket's
//! waiters that it became writable each time a datagram it sent leaves the send buffer
//! (`sock_wfree`): with writability in the registration, as tokio's own `UdpSocket` has it,
//! every send woke whichever runtime thread was waiting for I/O, for nothing. A send that
//! finds the buffer full (rare for UDP) waits through a second registration, made for that
//! wait and dropped after it.

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::ToSocketAddrs;

use crate::IoError;

/// A UDP socket whose operations are checkpoints (the DTLS endpoint builds on it).
#[derive(Debug)]
pub struct UdpSocket {
    inner: AsyncFd<std::net::UdpSocket>,
}

impl UdpSocket {
    /// Binds to `addr`; a checkpoint.
    ///
    /// # Errors
    ///
    /// The bind's error, or `Cancelled`.
    pub async fn bind(addr: impl ToSocketAddrs) -> Result<Self, IoError> {
        trellis::checkpoint_if_cancelled()?;
        let socket = trellis::cancellable(tokio::net::UdpSocket::bind(addr)).await??;
        Ok(Self::from_tokio(socket)?)
    }

    /// Takes over a tokio socket (registered again, for reading only). Within a runtime.
    ///
    /// # Errors
    ///
    /// The registration's.
    pub fn from_tokio(socket: tokio::net::UdpSocket) -> io::Result<Self> {
        Self::from_std(socket.into_std()?)
    }

    /// Takes over a standard socket (made non-blocking). Within a runtime.
    ///
    /// # Errors
    ///
    /// Making it non-blocking, or registering it.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let inner = register(socket, Interest::READABLE)?;
        Ok(UdpSocket { inner })
    }

    /// The socket underneath (for options; reading or writing it directly bypasses the
    /// runtime's readiness).
    pub fn get_ref(&self) -> &std::net::UdpSocket {
        self.inner.get_ref()
    }

    /// The address it is bound to.
    ///
    /// # Errors
    ///
    /// As the system call's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// Sends one datagram to `target`; a checkpoint.
    ///
    /// # Errors
    ///
    /// The send's error, or `Cancelled`.
    pub async fn send_to(&self, data: &[u8], target: SocketAddr) -> Result<usize, IoError> {
        trellis::checkpoint_if_cancelled()?;
        self.sending(|s| s.send_to(data, target)).await
    }

    /// Receives one datagram into `buf` (truncated to its length, as the system does);
    /// returns its length and sender; a checkpoint.
    ///
    /// # Errors
    ///
    /// The receive's error, or `Cancelled`.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), IoError> {
        trellis::checkpoint_if_cancelled()?;
        self.receiving(|s| s.recv_from(buf)).await
    }

    /// Connects the socket to `peer`: `send` and `recv` then talk to it only.
    ///
    /// # Errors
    ///
    /// The connect's error, or `Cancelled`.
    pub async fn connect(&self, peer: SocketAddr) -> Result<(), IoError> {
        trellis::checkpoint_if_cancelled()?;
        // Connecting a UDP socket to an address is immediate.
        Ok(self.inner.get_ref().connect(peer)?)
    }

    /// Sends one datagram to the connected peer; a checkpoint.
    ///
    /// # Errors
    ///
    /// The send's error, or `Cancelled`.
    pub async fn send(&self, data: &[u8]) -> Result<usize, IoError> {
        trellis::checkpoint_if_cancelled()?;
        self.sending(|s| s.send(data)).await
    }

    /// Receives one datagram from the connected peer; a checkpoint.
    ///
    /// # Errors
    ///
    /// The receive's error, or `Cancelled`.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize, IoError> {
        trellis::checkpoint_if_cancelled()?;
        self.receiving(|s| s.recv(buf)).await
    }

    /// Runs `op` once the socket is readable, until it does not find it empty.
    async fn receiving<T>(
        &self,
        mut op: impl FnMut(&std::net::UdpSocket) -> io::Result<T>,
    ) -> Result<T, IoError> {
        let received = trellis::cancellable(async {
            loop {
                let mut ready = self.inner.readable().await?;
                match ready.try_io(|inner| op(inner.get_ref())) {
                    Ok(received) => return received,
                    // Found empty: the readiness is cleared; wait for the next.
                    Err(_would_block) => continue,
                }
            }
        });
        Ok(received.await??)
    }

    /// Runs `op` at once and, while the send buffer is full, again once it has room.
    async fn sending(
        &self,
        mut op: impl FnMut(&std::net::UdpSocket) -> io::Result<usize>,
    ) -> Result<usize, IoError> {
        loop {
            match op(self.inner.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                sent => return Ok(sent?),
            }
            // Registered now, after the refusal: a buffer that drained meanwhile is
            // reported writable at once.
            let writable = register(self.inner.get_ref().try_clone()?, Interest::WRITABLE)?;
            let _room = trellis::cancellable(writable.writable()).await??;
        }
    }
}

/// Registers `socket` with the runtime for `interest`.
#[allow(unsafe_code)]
fn register(
    socket: std::net::UdpSocket,
    interest: Interest,
) -> io::Result<AsyncFd<std::net::UdpSocket>> {
    // SAFETY: the `AsyncFd` owns the socket, so its descriptor stays open and names the same
    // file description until the `AsyncFd` is dropped; nothing here hands out a way to close
    // or replace it (`get_ref` lends the socket only).
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A send the system refused (a full send buffer) waits for room through a registration
    /// made after the refusal, which reports room that is there already at once, and then
    /// goes out.
    #[test]
    fn a_refused_send_waits_for_room_then_goes_out() {
        trellis::testing::run_test(async {
            let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let to = b.local_addr().unwrap();
            let mut refusals = 0;
            let sent = a
                .sending(|s| {
                    if refusals < 2 {
                        refusals += 1;
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    s.send_to(b"late", to)
                })
                .await
                .unwrap();
            assert_eq!((sent, refusals), (4, 2));
            let mut buf = [0u8; 8];
            let (n, _) = b.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"late");
        });
    }
}
