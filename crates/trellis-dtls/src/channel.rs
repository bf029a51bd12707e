//! A channel: one DTLS association over the endpoint's socket (Trio's `DTLSChannel`): its
//! handshake (flights sent again with backoff, packed to the MTU) and its datagrams.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ssl::{ErrorCode, Ssl, SslStream};
use tokio::sync::Notify;

use crate::endpoint::{Counters, EndpointInner, Statistics, lock};
use crate::error::DtlsError;
use crate::record::{BadPacket, content_type, part_of_handshake};
use crate::retransmit::{Retransmit, best_guess_mtu, worst_case_mtu};
use crate::volley::{FlightMessage, RecordEncoder, decode_flight};

/// OpenSSL's side of a channel: datagrams to read, bytes it wrote.
#[derive(Default)]
pub(crate) struct Datagrams {
    pub(crate) incoming: VecDeque<Vec<u8>>,
    pub(crate) out: Vec<u8>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.incoming.pop_front() {
            Some(datagram) => {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok(n)
            }
            None => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) struct HandshakeState {
    /// The ClientHello (cookie, signed part) that started a server-side association.
    pub(crate) client_hello: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) encoder: RecordEncoder,
    /// The MTU flights are packed to: the user's, lowered to the minimum when flights go
    /// unanswered.
    pub(crate) mtu: usize,
    /// The user's ciphertext MTU (what `cleartext_mtu` is computed from).
    pub(crate) ciphertext_mtu: usize,
    /// Our last flight, sent again if the peer repeats its own after the handshake (our
    /// last flight was lost).
    pub(crate) final_flight: Vec<FlightMessage>,
}

pub(crate) struct ChannelInner {
    pub(crate) endpoint: Arc<EndpointInner>,
    pub(crate) queue_limit: usize,
    pub(crate) peer: SocketAddr,
    pub(crate) ssl: Mutex<SslStream<Datagrams>>,
    pub(crate) inbox: Mutex<VecDeque<Vec<u8>>>,
    pub(crate) inbox_ready: Notify,
    pub(crate) handshake: Mutex<HandshakeState>,
    /// Serialises handshakes (and the receivers that drive it).
    pub(crate) handshaking: tokio::sync::Mutex<()>,
    pub(crate) closed: AtomicBool,
    pub(crate) replaced: AtomicBool,
    /// The handshake deadline passed first.
    pub(crate) expired: AtomicBool,
    /// The handshake is done.
    pub(crate) handshake_done: AtomicBool,
    /// This channel's share of the endpoint's counts.
    pub(crate) counters: Counters,
}

impl ChannelInner {
    pub(crate) fn new(
        endpoint: Arc<EndpointInner>,
        peer: SocketAddr,
        ssl: Ssl,
    ) -> Result<Arc<ChannelInner>, DtlsError> {
        let stream = SslStream::new(ssl, Datagrams::default()).map_err(|e| ssl_error(peer, e))?;
        let mtu = best_guess_mtu(endpoint.ipv6);
        crate::ffi::set_mtu(stream.ssl(), mtu);
        Ok(Arc::new(ChannelInner {
            queue_limit: endpoint.incoming_queue.load(Ordering::Relaxed),
            endpoint,
            peer,
            ssl: Mutex::new(stream),
            inbox: Mutex::new(VecDeque::new()),
            inbox_ready: Notify::new(),
            handshake: Mutex::new(HandshakeState {
                client_hello: None,
                encoder: RecordEncoder::new(),
                mtu,
                ciphertext_mtu: mtu,
                final_flight: Vec::new(),
            }),
            handshaking: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            replaced: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            handshake_done: AtomicBool::new(false),
            counters: Counters::default(),
        }))
    }

    pub(crate) fn deliver(&self, packet: Vec<u8>) {
        {
            let mut inbox = lock(&self.inbox);
            if inbox.len() >= self.queue_limit {
                Counters::count(&self.endpoint.counters.queue_overflows);
                Counters::count(&self.counters.queue_overflows);
                return;
            }
            inbox.push_back(packet);
        }
        self.inbox_ready.notify_one();
    }

    pub(crate) fn replace(&self) {
        Counters::count(&self.endpoint.counters.replaced);
        self.endpoint.ended();
        self.replaced.store(true, Ordering::Release);
        self.inbox_ready.notify_waiters();
    }

    /// Takes the association out of the endpoint's table (if a newer one did not replace
    /// it); returns whether it was there.
    pub(crate) fn leave_table(&self) -> bool {
        // The entry is dropped after the lock is released.
        let entry = lock(&self.endpoint.state).take(self);
        let left = entry.is_some();
        drop(entry);
        if left {
            self.endpoint.ended();
        }
        left
    }

    /// The handshake deadline passed: unless the handshake finished, the association is
    /// dropped and counted, and whoever drives the channel learns it.
    pub(crate) fn expire(&self) {
        if self.handshake_done.load(Ordering::Acquire) || !self.leave_table() {
            return;
        }
        self.expired.store(true, Ordering::Release);
        Counters::count(&self.endpoint.counters.dropped_by_deadline);
        self.inbox_ready.notify_waiters();
    }

    /// Whether `error` is this channel's own handshake failing or running out of time.
    pub(crate) fn failed_its_handshake(&self, error: &trellis::Error) -> bool {
        !self.handshake_done.load(Ordering::Acquire)
            && error.downcast_ref::<DtlsError>().is_some_and(|e| match e {
                DtlsError::Handshake { peer, .. } => *peer == self.peer,
                DtlsError::HandshakeTimedOut(peer) => *peer == self.peer,
                _ => false,
            })
    }

    fn check_open(&self) -> Result<(), DtlsError> {
        if self.replaced.load(Ordering::Acquire) {
            return Err(DtlsError::PeerReconnected(self.peer));
        }
        if self.expired.load(Ordering::Acquire) {
            return Err(DtlsError::HandshakeTimedOut(self.peer));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(DtlsError::Closed);
        }
        Ok(())
    }

    /// The next datagram from the peer; a checkpoint, cancel-safe.
    async fn next_packet(&self) -> Result<Vec<u8>, DtlsError> {
        loop {
            self.check_open()?;
            let notified = self.inbox_ready.notified();
            if let Some(packet) = lock(&self.inbox).pop_front() {
                trellis::checkpoint_if_cancelled()?;
                return Ok(packet);
            }
            trellis::cancellable(notified).await?;
        }
    }

    /// Sends the datagrams of `flight` packed to the handshake MTU.
    async fn send_flight(&self, flight: &[FlightMessage]) -> Result<(), DtlsError> {
        let packets = {
            let mut handshake = lock(&self.handshake);
            let mtu = handshake.mtu;
            handshake.encoder.encode_flight(flight, mtu)
        };
        for packet in packets {
            self.endpoint.socket.send_to(&packet, self.peer).await?;
        }
        Ok(())
    }

    /// Steps OpenSSL's handshake; returns whether it finished, and the flight it wrote. A
    /// failure sends the alert OpenSSL wrote, if any, and ends the association.
    async fn step(&self) -> Result<(bool, Vec<FlightMessage>), DtlsError> {
        let (outcome, out) = {
            let mut stream = lock(&self.ssl);
            let outcome = stream.do_handshake();
            (outcome, std::mem::take(&mut stream.get_mut().out))
        };
        let done = match outcome {
            Ok(()) => true,
            Err(e) if e.code() == ErrorCode::WANT_READ => false,
            Err(e) => {
                let error = DtlsError::Handshake {
                    peer: self.peer,
                    reason: e.to_string(),
                };
                return Err(self.fail(error, &out).await);
            }
        };
        match decode_flight(&out) {
            Ok(flight) => Ok((done, flight)),
            Err(BadPacket(why)) => {
                let error = DtlsError::Handshake {
                    peer: self.peer,
                    reason: format!("OpenSSL wrote a flight we cannot read: {why}"),
                };
                Err(self.fail(error, &[]).await)
            }
        }
    }

    /// The handshake failed: OpenSSL's alert (in `out`) goes to the peer, then the peer is
    /// forgotten.
    async fn fail(&self, error: DtlsError, out: &[u8]) -> DtlsError {
        tracing::debug!(peer = %self.peer, %error, "DTLS handshake failed");
        Counters::count(&self.endpoint.counters.handshakes_failed);
        self.closed.store(true, Ordering::Release);
        match decode_flight(out) {
            Ok(alert) if !alert.is_empty() => {
                // Numbered by our encoder, as the rest of our flights: a peer that saw them
                // does not take it for a replay.
                let _ = self.send_flight(&alert).await;
            }
            Ok(_) => {}
            Err(_) => {
                let _ = self.endpoint.socket.send_to(out, self.peer).await;
            }
        }
        self.leave_table();
        self.inbox_ready.notify_waiters();
        error
    }

    async fn do_handshake(&self, initial_timeout: Duration) -> Result<(), DtlsError> {
        let _serial = trellis::cancellable(self.handshaking.lock()).await?;
        if self.handshake_done.load(Ordering::Acquire) {
            return Ok(());
        }
        self.check_open()?;
        let mut timer = Retransmit::new(initial_timeout);
        let (mut done, mut flight) = self.step().await?;
        loop {
            if done {
                self.send_flight(&flight).await?;
                lock(&self.handshake).final_flight = flight;
                self.handshake_done.store(true, Ordering::Release);
                return Ok(());
            }
            self.send_flight(&flight).await?;
            let answered = trellis::move_on_after(timer.wait(), async {
                loop {
                    let packet = self.next_packet().await?;
                    lock(&self.ssl).get_mut().incoming.push_back(packet);
                    let (now_done, next) = self.step().await?;
                    if now_done {
                        return Ok::<_, DtlsError>((true, next));
                    }
                    let alert = matches!(
                        next.first(),
                        Some(FlightMessage::Pseudo { content_type: ct, .. }) if *ct == content_type::ALERT
                    );
                    if alert {
                        self.send_flight(&next).await?;
                        continue;
                    }
                    // OpenSSL resending its last flight on its own timer: ours decides.
                    let resend = !next.is_empty()
                        && next.first().and_then(FlightMessage::msg_seq)
                            == flight.first().and_then(FlightMessage::msg_seq);
                    if !next.is_empty() && !resend {
                        return Ok((false, next));
                    }
                }
            })
            .await?;
            match answered {
                Some((now_done, next)) => {
                    timer.answered();
                    done = now_done;
                    flight = next;
                }
                None => {
                    let timeout = timer.timed_out();
                    if timeout.use_min_mtu {
                        let mut handshake = lock(&self.handshake);
                        handshake.mtu = handshake.mtu.min(worst_case_mtu(self.endpoint.ipv6));
                    }
                }
            }
        }
    }
}

/// One DTLS association: whole datagrams to and from one peer. Cheap to clone; when the
/// last clone is dropped, the association leaves its endpoint (without a close_notify: see
/// [`close`](Self::close)).
#[derive(Clone)]
pub struct DtlsChannel {
    pub(crate) inner: Arc<ChannelInner>,
    _handle: Arc<Handle>,
}

/// What the clones of a channel share: the last one dropped ends the association.
struct Handle(Arc<ChannelInner>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.leave_table();
    }
}

impl std::fmt::Debug for DtlsChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsChannel")
            .field("peer", &self.inner.peer)
            .finish()
    }
}

impl DtlsChannel {
    pub(crate) fn new(inner: Arc<ChannelInner>) -> DtlsChannel {
        DtlsChannel {
            _handle: Arc::new(Handle(inner.clone())),
            inner,
        }
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.inner.peer
    }

    /// Completes the handshake (once; later calls return at once), sending each flight again
    /// after `initial_timeout`, then doubling (up to 60 s), and dropping to the minimum MTU
    /// after two unanswered sends. Wrap it in a deadline to bound it.
    ///
    /// # Errors
    ///
    /// [`DtlsError::Handshake`], [`DtlsError::PeerReconnected`], [`DtlsError::Closed`],
    /// [`DtlsError::HandshakeTimedOut`], the socket's errors, [`DtlsError::Cancelled`] (a later
    /// call starts over from where OpenSSL is).
    pub async fn do_handshake(&self, initial_timeout: Duration) -> Result<(), DtlsError> {
        if self.inner.handshake_done.load(Ordering::Acquire) {
            return Ok(());
        }
        self.inner.do_handshake(initial_timeout).await
    }

    /// Sends one datagram (after the handshake, doing it first if needed).
    ///
    /// # Errors
    ///
    /// [`DtlsError::EmptyDatagram`], the handshake's errors, the socket's
    /// ([`DtlsError::Io`], [`DtlsError::Cancelled`]).
    pub async fn send(&self, data: &[u8]) -> Result<(), DtlsError> {
        if data.is_empty() {
            return Err(DtlsError::EmptyDatagram);
        }
        self.inner.check_open()?;
        self.do_handshake(Duration::from_secs(1)).await?;
        let out = {
            let mut stream = lock(&self.inner.ssl);
            stream
                .ssl_write(data)
                .map_err(|e| ssl_error(self.inner.peer, e))?;
            std::mem::take(&mut stream.get_mut().out)
        };
        self.inner
            .endpoint
            .socket
            .send_to(&out, self.inner.peer)
            .await?;
        Ok(())
    }

    /// Receives one datagram (after the handshake, doing it first if needed); a checkpoint,
    /// cancel-safe. Datagrams that do not decrypt are dropped and counted.
    ///
    /// # Errors
    ///
    /// [`DtlsError::Closed`] when the peer closed the association or the channel was closed;
    /// [`DtlsError::PeerReconnected`]; the handshake's errors; [`DtlsError::Cancelled`].
    pub async fn receive(&self) -> Result<Vec<u8>, DtlsError> {
        self.do_handshake(Duration::from_secs(1)).await?;
        loop {
            let packet = self.inner.next_packet().await?;
            // The cleartext is never longer than the datagram that carried it.
            let mut buf = vec![0u8; packet.len()];
            if part_of_handshake(&packet) {
                // The peer repeats its last flight: ours was lost. Send it again.
                let flight = lock(&self.inner.handshake).final_flight.clone();
                if !flight.is_empty() {
                    self.inner.send_flight(&flight).await?;
                }
                continue;
            }
            let mut stream = lock(&self.inner.ssl);
            stream.get_mut().incoming.push_back(packet);
            match stream.ssl_read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    return Err(DtlsError::Closed);
                }
                // OpenSSL discards a record that does not decrypt, or repeats one already
                // read, without an error (RFC 6347 §4.1.2.7): counted as bad all the same.
                Err(_) => {
                    Counters::count(&self.inner.endpoint.counters.bad_packets);
                    Counters::count(&self.inner.counters.bad_packets);
                }
            }
        }
    }

    /// Closes the channel: a close_notify goes to the peer when the handshake was done; later
    /// operations fail with [`DtlsError::Closed`]. Idempotent.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let out = {
            let mut stream = lock(&self.inner.ssl);
            if self.inner.handshake_done.load(Ordering::Acquire) {
                let _ = stream.shutdown();
            }
            std::mem::take(&mut stream.get_mut().out)
        };
        if !out.is_empty() {
            let _ = self
                .inner
                .endpoint
                .socket
                .send_to(&out, self.inner.peer)
                .await;
        }
        self.inner.leave_table();
        self.inner.inbox_ready.notify_waiters();
    }

    /// Sets the largest datagram to send, in bytes of ciphertext (handshake flights and
    /// records).
    pub fn set_ciphertext_mtu(&self, mtu: usize) {
        {
            let mut handshake = lock(&self.inner.handshake);
            handshake.mtu = mtu;
            handshake.ciphertext_mtu = mtu;
        }
        crate::ffi::set_mtu(lock(&self.inner.ssl).ssl(), mtu);
    }

    /// What this channel counted: datagrams its full queue dropped, datagrams that did not
    /// decrypt. (The endpoint's [`statistics`](crate::DtlsEndpoint::statistics) also has what
    /// reached no channel.)
    pub fn statistics(&self) -> Statistics {
        self.inner.counters.snapshot()
    }

    /// The largest datagram `send` can take at the current MTU.
    pub fn cleartext_mtu(&self) -> usize {
        // A DTLS 1.2 AEAD record: 13 bytes of header, 8 of explicit nonce, 16 of tag.
        lock(&self.inner.handshake)
            .ciphertext_mtu
            .saturating_sub(13 + 8 + 16)
    }
}

pub(crate) fn ssl_error(peer: SocketAddr, e: impl std::fmt::Display) -> DtlsError {
    DtlsError::Ssl {
        peer,
        reason: e.to_string(),
    }
}
