//! The endpoint: one UDP socket, many DTLS associations (Trio's `DTLSEndpoint` and
//! `DTLSChannel`), on the sans-I/O core of this crate.
//!
//! [`open_endpoint`] runs the socket's receive loop in a nursery around a body; inside it,
//! [`DtlsEndpoint::connect`] gives a [`DtlsChannel`] to a server and
//! [`DtlsEndpoint::serve`] runs a handler for every peer that proves its address with a
//! valid cookie. A channel does its handshake on first use (or [`DtlsChannel::do_handshake`]),
//! sending each flight again with backoff when the answer does not come, and packing flights
//! to its MTU; it then sends and receives whole datagrams.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openssl::ssl::{Ssl, SslContext, SslContextBuilder, SslOptions};
use trellis_net::UdpSocket;

use crate::channel::{ChannelInner, DtlsChannel, ssl_error};
use crate::cookie::CookieKey;
use crate::demux::{Dropped, Incoming, classify};

/// The largest UDP payload.
const MAX_UDP_PACKET: usize = 65_527;

/// How many datagrams a channel keeps for a reader that is behind, by default; more are
/// dropped and counted ([`DtlsEndpoint::set_incoming_queue`]).
pub const INCOMING_QUEUE: usize = 1000;

/// The failures of an endpoint and its channels.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DtlsError {
    /// `serve` was called on an endpoint that serves already.
    #[error("this endpoint is already serving")]
    AlreadyServing,
    /// The channel or its endpoint was closed.
    #[error("the DTLS channel is closed")]
    Closed,
    /// The peer started a new association from the same address: this one is over.
    #[error("the peer at {0} reconnected; this association was replaced")]
    PeerReconnected(SocketAddr),
    /// OpenSSL refused the handshake (a certificate, a cipher, a protocol version).
    #[error("DTLS handshake with {peer} failed: {reason}")]
    Handshake {
        /// The peer.
        peer: SocketAddr,
        /// OpenSSL's errors.
        reason: String,
    },
    /// An empty datagram cannot be sent over DTLS.
    #[error("cannot send an empty DTLS datagram")]
    EmptyDatagram,
    /// OpenSSL failed while sending or receiving.
    #[error("DTLS error with {peer}: {reason}")]
    Ssl {
        /// The peer.
        peer: SocketAddr,
        /// OpenSSL's errors.
        reason: String,
    },
    /// The socket failed.
    #[error("DTLS socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// What an endpoint counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Datagrams dropped: from unknown addresses, ClientHellos while not serving.
    pub packets_dropped: u64,
    /// Datagrams that did not parse, did not decrypt, or repeated records already read: all
    /// dropped.
    pub bad_packets: u64,
    /// Datagrams dropped because a channel's incoming queue was full.
    pub queue_overflows: u64,
    /// HelloVerifyRequests sent.
    pub challenges_sent: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) packets_dropped: AtomicU64,
    pub(crate) bad_packets: AtomicU64,
    pub(crate) queue_overflows: AtomicU64,
    pub(crate) challenges_sent: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Statistics {
        Statistics {
            packets_dropped: self.packets_dropped.load(Ordering::Relaxed),
            bad_packets: self.bad_packets.load(Ordering::Relaxed),
            queue_overflows: self.queue_overflows.load(Ordering::Relaxed),
            challenges_sent: self.challenges_sent.load(Ordering::Relaxed),
        }
    }
}

/// A future as a [`DatagramSocket`] returns it.
pub type SocketFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, trellis::Error>> + Send + 'a>>;

/// What an endpoint needs from its socket: whole datagrams to and from addresses. A
/// [`trellis_net::UdpSocket`] is one; a simulated network in tests is another.
pub trait DatagramSocket: Send + Sync + 'static {
    /// The socket's own address.
    ///
    /// # Errors
    ///
    /// The system's.
    fn local_addr(&self) -> std::io::Result<SocketAddr>;

    /// Sends one datagram to `to`; a checkpoint.
    fn send_to<'a>(&'a self, data: &'a [u8], to: SocketAddr) -> SocketFuture<'a, ()>;

    /// Receives one datagram into `buf`: its length and source; a checkpoint.
    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> SocketFuture<'a, (usize, SocketAddr)>;
}

impl DatagramSocket for UdpSocket {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }

    fn send_to<'a>(&'a self, data: &'a [u8], to: SocketAddr) -> SocketFuture<'a, ()> {
        Box::pin(async move { UdpSocket::send_to(self, data, to).await.map(drop) })
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> SocketFuture<'a, (usize, SocketAddr)> {
        Box::pin(UdpSocket::recv_from(self, buf))
    }
}

/// A DTLS client configuration: an OpenSSL context for `SslMethod::dtls()` with what the
/// endpoint needs set. Reusable for any number of connections.
#[derive(Clone)]
pub struct ClientConfig(SslContext);

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientConfig(..)")
    }
}

impl ClientConfig {
    /// From a context builder made with `SslMethod::dtls()` (trust roots, verification,
    /// ciphers set as wanted).
    pub fn new(mut builder: SslContextBuilder) -> Self {
        builder.set_options(SslOptions::NO_QUERY_MTU);
        ClientConfig(builder.build())
    }
}

/// A DTLS server configuration: an OpenSSL context for `SslMethod::dtls()` with certificate
/// and key, and what the endpoint needs set (it checks cookies itself).
#[derive(Clone)]
pub struct ServerConfig(SslContext);

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerConfig(..)")
    }
}

impl ServerConfig {
    /// From a context builder made with `SslMethod::dtls()`, with certificate and key set.
    pub fn new(mut builder: SslContextBuilder) -> Self {
        builder.set_options(SslOptions::NO_QUERY_MTU | SslOptions::COOKIE_EXCHANGE);
        // The endpoint verified the cookie before OpenSSL sees the ClientHello.
        builder.set_cookie_verify_cb(|_, _| true);
        builder.set_cookie_generate_cb(|_, _| Ok(0));
        ServerConfig(builder.build())
    }
}

/// A UDP socket serving DTLS associations; cheap to clone. See [`open_endpoint`].
#[derive(Clone)]
pub struct DtlsEndpoint {
    inner: Arc<EndpointInner>,
}

impl std::fmt::Debug for DtlsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsEndpoint")
            .field("local", &self.inner.socket.local_addr().ok())
            .finish()
    }
}

pub(crate) struct EndpointInner {
    pub(crate) socket: Box<dyn DatagramSocket>,
    pub(crate) state: Mutex<EndpointState>,
    pub(crate) counters: Counters,
    /// The clock cookies are made with.
    pub(crate) origin: tokio::time::Instant,
    pub(crate) ipv6: bool,
    pub(crate) incoming_queue: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
pub(crate) struct EndpointState {
    pub(crate) channels: HashMap<SocketAddr, Arc<ChannelInner>>,
    listening: Option<Listening>,
    pub(crate) closed: bool,
}

struct Listening {
    key: Arc<CookieKey>,
    context: SslContext,
    incoming: trellis::channel::Sender<DtlsChannel>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `body` with a DTLS endpoint on `socket`; the socket's receive loop runs beside it and
/// stops when `body` returns, closing every channel.
///
/// # Errors
///
/// `body`'s error, or the receive loop's (the socket failed).
pub async fn open_endpoint<S, B, Fut, T>(socket: S, body: B) -> Result<T, trellis::Error>
where
    S: DatagramSocket,
    B: FnOnce(DtlsEndpoint) -> Fut,
    Fut: std::future::Future<Output = Result<T, trellis::Error>>,
{
    let ipv6 = socket.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let endpoint = DtlsEndpoint {
        inner: Arc::new(EndpointInner {
            socket: Box::new(socket),
            state: Mutex::new(EndpointState::default()),
            counters: Counters::default(),
            origin: tokio::time::Instant::now(),
            ipv6,
            incoming_queue: std::sync::atomic::AtomicUsize::new(INCOMING_QUEUE),
        }),
    };
    let outcome = trellis::open_nursery(|n| async move {
        let receiver = endpoint.clone();
        n.start_soon(async move { receiver.receive_loop().await })?;
        let value = body(endpoint.clone()).await;
        endpoint.close();
        n.cancel();
        value
    })
    .await?;
    Ok(outcome.expect("the body ran to its end"))
}

impl DtlsEndpoint {
    /// The socket's address.
    ///
    /// # Errors
    ///
    /// The socket's.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.socket.local_addr()
    }

    /// How many datagrams each channel made from now on keeps for a reader that is behind.
    pub fn set_incoming_queue(&self, datagrams: usize) {
        self.inner
            .incoming_queue
            .store(datagrams.max(1), Ordering::Relaxed);
    }

    /// What was counted so far.
    pub fn statistics(&self) -> Statistics {
        self.inner.counters.snapshot()
    }

    /// Closes the endpoint: every channel is closed; `serve` returns.
    pub fn close(&self) {
        let channels: Vec<_> = {
            let mut state = lock(&self.inner.state);
            state.closed = true;
            state.listening = None;
            state.channels.drain().map(|(_, c)| c).collect()
        };
        for channel in channels {
            channel.closed.store(true, Ordering::Release);
            channel.inbox_ready.notify_waiters();
        }
    }

    /// A channel to the DTLS server at `peer`, with `config` (reusable for any number of
    /// connections). The handshake happens on first use.
    ///
    /// # Errors
    ///
    /// [`DtlsError::Closed`] after `close`; OpenSSL failing to make the connection object.
    pub fn connect(
        &self,
        peer: SocketAddr,
        config: &ClientConfig,
    ) -> Result<DtlsChannel, DtlsError> {
        let mut ssl = Ssl::new(&config.0).map_err(|e| ssl_error(peer, e))?;
        ssl.set_connect_state();
        let channel = ChannelInner::new(self.inner.clone(), peer, ssl)?;
        let old = {
            let mut state = lock(&self.inner.state);
            if state.closed {
                return Err(DtlsError::Closed);
            }
            state.channels.insert(peer, channel.clone())
        };
        if let Some(old) = old {
            old.replace();
        }
        Ok(DtlsChannel { inner: channel })
    }

    /// Serves: for every peer that completes the cookie exchange, runs `handler` with its
    /// channel, in a nursery of its own, until the endpoint closes or this is cancelled.
    /// `config` holds the certificate and key.
    ///
    /// # Errors
    ///
    /// [`DtlsError::AlreadyServing`] when another `serve` runs on this endpoint; a
    /// handler's failure (which cancels the others).
    pub async fn serve<H, Fut>(
        &self,
        config: ServerConfig,
        handler: H,
    ) -> Result<(), trellis::Error>
    where
        H: Fn(DtlsChannel) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), trellis::Error>> + Send + 'static,
    {
        let (tx, rx) = trellis::channel::channel::<DtlsChannel>(64);
        {
            let mut state = lock(&self.inner.state);
            if state.closed {
                return Err(DtlsError::Closed.into());
            }
            if state.listening.is_some() {
                return Err(DtlsError::AlreadyServing.into());
            }
            state.listening = Some(Listening {
                key: Arc::new(CookieKey::random()),
                context: config.0,
                incoming: tx,
            });
        }
        let inner = self.inner.clone();
        let served = trellis::open_nursery(|n| async move {
            loop {
                // The endpoint closing drops the sender: the end of serving.
                let channel = match rx.recv().await {
                    Ok(channel) => channel,
                    Err(e) if trellis::IsCancelled::is_cancelled(&e) => {
                        return Err(trellis::Error::new(e));
                    }
                    Err(_) => break,
                };
                n.start_soon(handler(channel))?;
            }
            Ok::<_, trellis::Error>(())
        })
        .await;
        lock(&inner.state).listening = None;
        served.map(drop)
    }

    async fn receive_loop(&self) -> Result<(), trellis::Error> {
        let mut buf = vec![0u8; MAX_UDP_PACKET];
        loop {
            let (n, from) = match self.inner.socket.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(e) if e.is_cancelled() => return Err(e),
                // ICMP errors from earlier sends (connection refused) come back here on some
                // systems: they are about a datagram, not the socket.
                Err(e) => {
                    tracing::debug!(error = %e, "DTLS socket receive error");
                    continue;
                }
            };
            self.dispatch(&buf[..n], from).await;
        }
    }

    async fn dispatch(&self, packet: &[u8], from: SocketAddr) {
        let counters = &self.inner.counters;
        let now = self.inner.origin.elapsed();
        // The cookie's HMACs are computed outside the endpoint's lock.
        let (channel, key) = {
            let state = lock(&self.inner.state);
            (
                state.channels.get(&from).cloned(),
                state.listening.as_ref().map(|l| l.key.clone()),
            )
        };
        let decision = match classify(packet, &from, key.as_deref(), channel.is_some(), now) {
            Incoming::ToPeer => Decision::ToPeer,
            Incoming::Challenge(reply) => Decision::Challenge(reply),
            Incoming::Hello(hello) => Decision::Hello(hello.cookie.to_vec(), hello.signed),
            Incoming::Drop(Dropped::Bad(_)) => Decision::Bad,
            Incoming::Drop(_) => Decision::Drop,
        };
        match decision {
            Decision::ToPeer => {
                if let Some(channel) = channel {
                    channel.deliver(packet.to_vec());
                }
            }
            Decision::Challenge(reply) => {
                counters.challenges_sent.fetch_add(1, Ordering::Relaxed);
                let _ = self.inner.socket.send_to(&reply, from).await;
            }
            Decision::Hello(cookie, signed) => self.accept(packet, from, cookie, signed).await,
            Decision::Bad => {
                counters.bad_packets.fetch_add(1, Ordering::Relaxed);
            }
            Decision::Drop => {
                counters.packets_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A ClientHello with a valid cookie: a new association, unless it repeats the one that
    /// started the current association from that address.
    async fn accept(&self, packet: &[u8], from: SocketAddr, cookie: Vec<u8>, signed: Vec<u8>) {
        let (context, incoming, old) = {
            let state = lock(&self.inner.state);
            let Some(listening) = &state.listening else {
                return;
            };
            (
                listening.context.clone(),
                listening.incoming.clone(),
                state.channels.get(&from).cloned(),
            )
        };
        let hello = (cookie, signed);
        if let Some(old) = &old
            && lock(&old.handshake).client_hello.as_ref() == Some(&hello)
        {
            // A copy of the ClientHello that started the current association.
            old.deliver(packet.to_vec());
            return;
        }
        let Ok(mut ssl) = Ssl::new(&context) else {
            return;
        };
        ssl.set_accept_state();
        let Ok(channel) = ChannelInner::new(self.inner.clone(), from, ssl) else {
            return;
        };
        {
            let mut stream = lock(&channel.ssl);
            stream.get_mut().incoming.push_back(packet.to_vec());
            if !crate::ffi::listen(stream.ssl()) {
                self.inner
                    .counters
                    .bad_packets
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        {
            let mut handshake = lock(&channel.handshake);
            handshake.client_hello = Some(hello);
            // Our records must be newer than the HelloVerifyRequest, which copied the first
            // ClientHello's record number; this ClientHello's is higher still.
            if let Some(Ok(record)) = crate::record::records(packet).next() {
                handshake
                    .encoder
                    .set_next_seq(record.epoch_seq & ((1 << 48) - 1));
            }
        }
        {
            let mut state = lock(&self.inner.state);
            if state.closed {
                return;
            }
            state.channels.insert(from, channel.clone());
        }
        if let Some(old) = old {
            old.replace();
        }
        if incoming
            .try_send(DtlsChannel {
                inner: channel.clone(),
            })
            .is_err()
        {
            // Nobody will serve it: it must not keep the address. The client sends its
            // ClientHello again and is admitted when there is room.
            let mut state = lock(&self.inner.state);
            if state
                .channels
                .get(&from)
                .is_some_and(|c| Arc::ptr_eq(c, &channel))
            {
                state.channels.remove(&from);
            }
            drop(state);
            self.inner
                .counters
                .queue_overflows
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

enum Decision {
    ToPeer,
    Challenge(Vec<u8>),
    Hello(Vec<u8>, Vec<u8>),
    Bad,
    Drop,
}
