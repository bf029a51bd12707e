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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use openssl::ssl::{Ssl, SslContext, SslContextBuilder, SslOptions};
use tokio::sync::Notify;
use tokio::time::Instant;
use trellis_net::{IoError, UdpSocket};

use crate::channel::{ChannelInner, DtlsChannel, ssl_error};
use crate::cookie::CookieKey;
use crate::demux::{Dropped, Incoming, classify};
use crate::error::DtlsError;

/// The largest UDP payload.
const MAX_UDP_PACKET: usize = 65_527;

/// How many datagrams a channel keeps for a reader that is behind, by default; more are
/// dropped and counted ([`DtlsEndpoint::set_incoming_queue`]).
pub const INCOMING_QUEUE: usize = 1000;

/// How long a peer has, by default, from its cookie's acceptance to the end of its
/// handshake: with the retransmission timer's 1, 2, 4, 8 s, time for a flight to be sent
/// five times ([`DtlsEndpoint::set_handshake_timeout`]).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many associations an endpoint holds at most, by default, handshaking or live;
/// ClientHellos beyond it are refused and counted ([`DtlsEndpoint::set_max_associations`]).
pub const MAX_ASSOCIATIONS: usize = 4096;

/// After this many associations ended, the endpoint asks the C allocator to give the memory
/// they freed back to the system...
const RELEASE_AFTER: u64 = 256;
/// ...this long after the count was reached (their handlers have returned)...
const RELEASE_DELAY: Duration = Duration::from_secs(1);
/// ...and at most this often.
const RELEASE_INTERVAL: Duration = Duration::from_secs(10);

/// What an endpoint counted, and what it holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Statistics {
    /// Datagrams dropped: from unknown addresses, ClientHellos while not serving.
    pub packets_dropped: u64,
    /// Datagrams that did not parse, did not decrypt, or repeated records already read: all
    /// dropped.
    pub bad_packets: u64,
    /// Datagrams dropped because a channel's incoming queue was full, and new associations
    /// dropped because the queue of associations waiting for `serve` was full (their peers
    /// are admitted when they send their ClientHello again).
    pub queue_overflows: u64,
    /// HelloVerifyRequests sent.
    pub challenges_sent: u64,
    /// Associations whose handshake did not finish within the handshake timeout, dropped.
    pub dropped_by_deadline: u64,
    /// ClientHellos with a valid cookie refused because the endpoint held its maximum of
    /// associations (their peers are admitted when they try again and there is room).
    pub refused_by_cap: u64,
    /// Handshakes that failed (OpenSSL refused the peer, or the peer refused us): each sent
    /// the alert OpenSSL wrote, and its association was dropped.
    pub handshakes_failed: u64,
    /// Associations ended by a new one from the same address (a peer that started over, or
    /// a new peer on a reused port).
    pub replaced: u64,
    /// Associations held now whose handshake is done (endpoint statistics only).
    pub live: u64,
    /// Associations held now whose handshake is not done (endpoint statistics only).
    pub handshaking: u64,
}

/// One line, `name=value` separated by spaces, for logs and operators.
impl std::fmt::Display for Statistics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "live={} handshaking={} dropped_by_deadline={} refused_by_cap={} \
             handshakes_failed={} replaced={} queue_overflows={} challenges_sent={} \
             bad_packets={} packets_dropped={}",
            self.live,
            self.handshaking,
            self.dropped_by_deadline,
            self.refused_by_cap,
            self.handshakes_failed,
            self.replaced,
            self.queue_overflows,
            self.challenges_sent,
            self.bad_packets,
            self.packets_dropped,
        )
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) packets_dropped: AtomicU64,
    pub(crate) bad_packets: AtomicU64,
    pub(crate) queue_overflows: AtomicU64,
    pub(crate) challenges_sent: AtomicU64,
    pub(crate) dropped_by_deadline: AtomicU64,
    pub(crate) refused_by_cap: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    pub(crate) replaced: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Statistics {
        Statistics {
            packets_dropped: self.packets_dropped.load(Ordering::Relaxed),
            bad_packets: self.bad_packets.load(Ordering::Relaxed),
            queue_overflows: self.queue_overflows.load(Ordering::Relaxed),
            challenges_sent: self.challenges_sent.load(Ordering::Relaxed),
            dropped_by_deadline: self.dropped_by_deadline.load(Ordering::Relaxed),
            refused_by_cap: self.refused_by_cap.load(Ordering::Relaxed),
            handshakes_failed: self.handshakes_failed.load(Ordering::Relaxed),
            replaced: self.replaced.load(Ordering::Relaxed),
            live: 0,
            handshaking: 0,
        }
    }

    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A future as a [`DatagramSocket`] returns it.
pub type SocketFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, IoError>> + Send + 'a>>;

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
    pub(crate) incoming_queue: AtomicUsize,
    max_associations: AtomicUsize,
    /// Nanoseconds.
    handshake_timeout: AtomicU64,
    /// When each served association must have finished its handshake, soonest first.
    deadlines: Mutex<BinaryHeap<Reverse<Expiry>>>,
    /// Associations that ended since memory was last given back.
    ended: AtomicU64,
    /// A deadline was added, or `ended` reached [`RELEASE_AFTER`].
    wake_reaper: Notify,
}

impl EndpointInner {
    /// An association left the table.
    pub(crate) fn ended(&self) {
        if self.ended.fetch_add(1, Ordering::Relaxed) + 1 == RELEASE_AFTER {
            self.wake_reaper.notify_one();
        }
    }
}

/// A served association's handshake deadline.
struct Expiry {
    at: Instant,
    /// Admission order: ties in `at` are broken by it.
    seq: u64,
    channel: Weak<ChannelInner>,
}

impl PartialEq for Expiry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Expiry {}

impl PartialOrd for Expiry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Expiry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The table of associations. Nothing is dropped while it is locked: a channel's last
/// handle, dropped, locks it to leave it.
#[derive(Default)]
pub(crate) struct EndpointState {
    pub(crate) channels: HashMap<SocketAddr, Arc<ChannelInner>>,
    listening: Option<Listening>,
    pub(crate) closed: bool,
    admitted: u64,
}

impl EndpointState {
    /// Takes `channel`'s entry out of the table if it is still there (not replaced); the
    /// caller drops it after unlocking.
    pub(crate) fn take(&mut self, channel: &ChannelInner) -> Option<Arc<ChannelInner>> {
        let entry = self.channels.get(&channel.peer)?;
        if std::ptr::eq(Arc::as_ptr(entry), channel) {
            self.channels.remove(&channel.peer)
        } else {
            None
        }
    }
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
            incoming_queue: AtomicUsize::new(INCOMING_QUEUE),
            max_associations: AtomicUsize::new(MAX_ASSOCIATIONS),
            handshake_timeout: AtomicU64::new(nanos(HANDSHAKE_TIMEOUT)),
            deadlines: Mutex::new(BinaryHeap::new()),
            ended: AtomicU64::new(0),
            wake_reaper: Notify::new(),
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

    /// How long a served peer has, from its cookie's acceptance, to finish its handshake
    /// (from now on; [`HANDSHAKE_TIMEOUT`] by default). An association still handshaking then
    /// is dropped and counted; its handler's next operation fails with
    /// [`DtlsError::HandshakeTimedOut`].
    pub fn set_handshake_timeout(&self, timeout: Duration) {
        self.inner
            .handshake_timeout
            .store(nanos(timeout), Ordering::Relaxed);
    }

    /// How many associations the endpoint holds at most, handshaking or live
    /// ([`MAX_ASSOCIATIONS`] by default). A peer with a valid cookie beyond it is not
    /// admitted (its ClientHello is dropped and counted); cookie exchanges go on, being
    /// stateless, and a peer that tries again when an association has ended is admitted.
    /// Channels made by `connect` count, but are never refused.
    pub fn set_max_associations(&self, associations: usize) {
        self.inner
            .max_associations
            .store(associations.max(1), Ordering::Relaxed);
    }

    /// What was counted so far, and the associations held now.
    pub fn statistics(&self) -> Statistics {
        let mut statistics = self.inner.counters.snapshot();
        let state = lock(&self.inner.state);
        for channel in state.channels.values() {
            if channel.handshake_done.load(Ordering::Acquire) {
                statistics.live += 1;
            } else {
                statistics.handshaking += 1;
            }
        }
        statistics
    }

    /// Closes the endpoint: every channel is closed; `serve` returns.
    pub fn close(&self) {
        let (channels, listening): (Vec<_>, _) = {
            let mut state = lock(&self.inner.state);
            state.closed = true;
            let listening = state.listening.take();
            (state.channels.drain().map(|(_, c)| c).collect(), listening)
        };
        drop(listening);
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
        Ok(DtlsChannel::new(channel))
    }

    /// Serves: for every peer that completes the cookie exchange, runs `handler` with its
    /// channel, in a nursery of its own, until the endpoint closes or this is cancelled.
    /// `config` holds the certificate and key.
    ///
    /// The handler's first operation on the channel does the handshake (so it may set the
    /// channel's MTU before). A handshake that fails, or does not finish within the handshake
    /// timeout, is the peer's failure, not the server's: when the handler returns that
    /// error ([`DtlsError::Handshake`] or [`DtlsError::HandshakeTimedOut`] for its own
    /// channel), it ends alone, counted in [`Statistics`].
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
        let reaper = self.clone();
        // Served associations' deadlines: the reaper runs while this serves.
        let served = trellis::open_nursery(|reaping| async move {
            reaping.start_soon(async move { reaper.reap_loop().await })?;
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
                    let peer = channel.inner.clone();
                    let served = handler(channel);
                    n.start_soon(async move {
                        match served.await {
                            // Counted and logged where it happened; a peer's failure is its own.
                            Err(e) if peer.failed_its_handshake(&e) => Ok(()),
                            outcome => outcome,
                        }
                    })?;
                }
                Ok::<_, trellis::Error>(())
            })
            .await;
            reaping.cancel();
            served
        })
        .await;
        // Taken out and dropped unlocked: the queue may hold channels, whose dropping locks.
        let listening = lock(&inner.state).listening.take();
        drop(listening);
        served.map(drop)
    }

    /// Drops every served association whose handshake deadline passed before it finished;
    /// has the memory given back after many associations ended.
    async fn reap_loop(&self) -> Result<(), trellis::Error> {
        let mut release_at: Option<Instant> = None;
        let mut released: Option<Instant> = None;
        loop {
            let woken = self.inner.wake_reaper.notified();
            let now = Instant::now();
            let mut expired = Vec::new();
            let next_deadline = {
                let mut deadlines = lock(&self.inner.deadlines);
                while let Some(Reverse(first)) = deadlines.peek() {
                    if first.at > now {
                        break;
                    }
                    let Some(Reverse(first)) = deadlines.pop() else {
                        break;
                    };
                    expired.push(first.channel);
                }
                if deadlines.is_empty() {
                    // What a flood of admissions grew.
                    deadlines.shrink_to_fit();
                }
                deadlines.peek().map(|Reverse(first)| first.at)
            };
            for channel in expired {
                if let Some(channel) = channel.upgrade() {
                    channel.expire();
                }
            }
            if release_at.is_none() && self.inner.ended.load(Ordering::Relaxed) >= RELEASE_AFTER {
                let soonest = released.map_or(now, |at| at + RELEASE_INTERVAL);
                release_at = Some(soonest.max(now + RELEASE_DELAY));
            }
            if release_at.is_some_and(|at| at <= now) {
                release_at = None;
                released = Some(now);
                self.inner.ended.store(0, Ordering::Relaxed);
                self.release_memory().await?;
                continue;
            }
            let wake_at = match (next_deadline, release_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match wake_at {
                Some(at) => {
                    // Woken by the time or by news: the loop looks at both.
                    let _woken = trellis::cancellable(tokio::time::timeout_at(at, woken)).await?;
                }
                None => trellis::cancellable(woken).await?,
            }
        }
    }

    /// Shrinks the table when it is mostly empty, and asks the C allocator, where OpenSSL
    /// keeps an association's state, to give free memory back (off the runtime's threads).
    /// Under load glibc keeps what a flood of handshakes freed, in per-thread arenas.
    async fn release_memory(&self) -> Result<(), trellis::Error> {
        {
            let mut state = lock(&self.inner.state);
            if state.channels.len() * 4 < state.channels.capacity() {
                state.channels.shrink_to_fit();
            }
        }
        trellis::threads::run_sync(crate::ffi::release_free_memory).await
    }

    async fn receive_loop(&self) -> Result<(), trellis::Error> {
        let mut buf = vec![0u8; MAX_UDP_PACKET];
        loop {
            let (n, from) = match self.inner.socket.recv_from(&mut buf).await {
                Ok(received) => received,
                // The endpoint closing: the cancellation itself, not an error wrapping it
                // (which would capture a backtrace at each endpoint's end).
                Err(IoError::Cancelled(cancelled)) => return Err(cancelled.into()),
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
                Counters::count(&counters.challenges_sent);
                let _ = self.inner.socket.send_to(&reply, from).await;
            }
            Decision::Hello(cookie, signed) => self.accept(packet, from, cookie, signed).await,
            Decision::Bad => {
                Counters::count(&counters.bad_packets);
            }
            Decision::Drop => {
                Counters::count(&counters.packets_dropped);
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
        if old.is_none() && self.full() {
            Counters::count(&self.inner.counters.refused_by_cap);
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
                Counters::count(&self.inner.counters.bad_packets);
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
        let timeout = Duration::from_nanos(self.inner.handshake_timeout.load(Ordering::Relaxed));
        let seq = {
            let mut state = lock(&self.inner.state);
            if state.closed {
                return;
            }
            state.channels.insert(from, channel.clone());
            state.admitted += 1;
            state.admitted
        };
        if let Some(old) = old {
            old.replace();
        }
        if let Some(at) = Instant::now().checked_add(timeout) {
            lock(&self.inner.deadlines).push(Reverse(Expiry {
                at,
                seq,
                channel: Arc::downgrade(&channel),
            }));
            self.inner.wake_reaper.notify_one();
        }
        // When nobody will serve it, dropping its only handle takes it out of the table. After
        // an overflow the client sends its ClientHello again and is admitted when there is room.
        if let Err(trellis::channel::TrySendError::Full(refused)) =
            incoming.try_send(DtlsChannel::new(channel))
        {
            drop(refused);
            Counters::count(&self.inner.counters.queue_overflows);
        }
    }

    /// Whether the table holds the maximum of associations.
    fn full(&self) -> bool {
        lock(&self.inner.state).channels.len()
            >= self.inner.max_associations.load(Ordering::Relaxed)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

enum Decision {
    ToPeer,
    Challenge(Vec<u8>),
    Hello(Vec<u8>, Vec<u8>),
    Bad,
    Drop,
}
