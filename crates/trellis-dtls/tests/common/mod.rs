//! A simulated network for the DTLS tests (Trio's `FakeNet`): sockets that exchange datagrams
//! through a router whose policy may drop, duplicate, delay (and so reorder) them, all on the
//! test clock.
#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslContextBuilder, SslMethod, SslVerifyMode};
use openssl::x509::{X509, X509NameBuilder};
use tokio::sync::Notify;

use trellis_dtls::{
    ClientConfig, DatagramSocket, DtlsChannel, DtlsEndpoint, DtlsError, ServerConfig, SocketFuture,
    Statistics, open_endpoint,
};
use trellis_net::UdpSocket;

/// An echo handler; ends quietly when its channel closes or is replaced. `mtu` is set before
/// the handshake when given.
pub async fn echo(channel: DtlsChannel, mtu: Option<usize>) -> Result<(), trellis::Error> {
    if let Some(mtu) = mtu {
        channel.set_ciphertext_mtu(mtu);
    }
    loop {
        match channel.receive().await {
            Ok(data) => channel.send(&data).await?,
            // The typed error: matched as it is, no downcast.
            Err(DtlsError::Closed | DtlsError::PeerReconnected(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A UDP socket on `addr`.
pub async fn bind(addr: &str) -> UdpSocket {
    UdpSocket::bind(addr).await.unwrap()
}

/// Runs `body` with an echo server's endpoint and address; `handlers` counts its handlers.
pub async fn echo_server<F, Fut>(mtu: Option<usize>, handlers: Arc<AtomicUsize>, body: F)
where
    F: FnOnce(DtlsEndpoint, SocketAddr, ClientConfig) -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    echo_server_with(configs(), mtu, handlers, body).await;
}

/// [`echo_server`] with given configurations (two servers one client trusts).
pub async fn echo_server_with<F, Fut>(
    configs: (ServerConfig, ClientConfig),
    mtu: Option<usize>,
    handlers: Arc<AtomicUsize>,
    body: F,
) where
    F: FnOnce(DtlsEndpoint, SocketAddr, ClientConfig) -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    let handler = move |channel| {
        handlers.fetch_add(1, Ordering::SeqCst);
        echo(channel, mtu)
    };
    serve_with(configs, bind("127.0.0.1:0").await, handler, body).await;
}

/// Serves with `handler` on `socket`, and runs `body` with the server's endpoint, its
/// address and a client configuration; serving stops when `body` returns.
pub async fn serve_with<S, H, HFut, F, Fut>(
    (server_config, client_config): (ServerConfig, ClientConfig),
    socket: S,
    handler: H,
    body: F,
) where
    S: DatagramSocket,
    H: Fn(DtlsChannel) -> HFut + Send + Sync + 'static,
    HFut: std::future::Future<Output = Result<(), trellis::Error>> + Send + 'static,
    F: FnOnce(DtlsEndpoint, SocketAddr, ClientConfig) -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    let addr = socket.local_addr().unwrap();
    open_endpoint(socket, |server| async move {
        trellis::open_nursery(|n| async move {
            let serving = server.clone();
            n.start_soon(async move { serving.serve(server_config, handler).await })?;
            body(server, addr, client_config).await?;
            n.cancel();
            Ok::<_, trellis::Error>(())
        })
        .await?;
        Ok(())
    })
    .await
    .unwrap();
}

pub fn real_time(test: impl std::future::Future<Output = ()> + Send + 'static) {
    trellis::testing::run_test_multi_thread(test);
}

/// A self-signed ECDSA P-256 certificate for `localhost` and its key.
pub fn certificate() -> (X509, PKey<Private>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let name = name.build();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    cert.set_subject_name(&name).unwrap();
    cert.set_issuer_name(&name).unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    cert.sign(&key, MessageDigest::sha256()).unwrap();
    (cert.build(), key)
}

/// A server configuration with a fresh certificate, and a client one that trusts it.
pub fn configs() -> (ServerConfig, ClientConfig) {
    let (cert, key) = certificate();
    let mut server = SslContextBuilder::new(SslMethod::dtls()).unwrap();
    server.set_certificate(&cert).unwrap();
    server.set_private_key(&key).unwrap();
    let mut client = SslContextBuilder::new(SslMethod::dtls()).unwrap();
    client.cert_store_mut().add_cert(cert).unwrap();
    client.set_verify(SslVerifyMode::PEER);
    (ServerConfig::new(server), ClientConfig::new(client))
}

/// What the router does with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Deliver,
    Drop,
    /// Deliver, and once more.
    Duplicate,
    /// Deliver after this long.
    Delay(Duration),
}

type Policy = Box<dyn FnMut(&[u8]) -> Fate + Send>;

#[derive(Clone)]
pub struct FakeNet {
    inner: Arc<NetInner>,
}

struct NetInner {
    sockets: Mutex<HashMap<SocketAddr, Arc<Inbox>>>,
    policy: Mutex<Policy>,
    /// Every datagram sent: (from, to, length, when).
    log: Mutex<Vec<(SocketAddr, SocketAddr, usize, tokio::time::Instant)>>,
    next_port: Mutex<u16>,
}

struct Inbox {
    packets: Mutex<VecDeque<(Vec<u8>, SocketAddr)>>,
    ready: Notify,
}

impl FakeNet {
    pub fn new() -> FakeNet {
        FakeNet {
            inner: Arc::new(NetInner {
                sockets: Mutex::new(HashMap::new()),
                policy: Mutex::new(Box::new(|_| Fate::Deliver)),
                log: Mutex::new(Vec::new()),
                next_port: Mutex::new(10_000),
            }),
        }
    }

    /// Sets what happens to each datagram from now on.
    pub fn set_policy(&self, policy: impl FnMut(&[u8]) -> Fate + Send + 'static) {
        *self.inner.policy.lock().unwrap() = Box::new(policy);
    }

    /// A socket with a fresh address on 10.0.0.1.
    pub fn socket(&self) -> FakeSocket {
        self.socket_at("10.0.0.1")
    }

    /// A socket with a fresh address on fd00::1.
    pub fn socket_v6(&self) -> FakeSocket {
        self.socket_at("[fd00::1]")
    }

    fn socket_at(&self, host: &str) -> FakeSocket {
        let port = {
            let mut next = self.inner.next_port.lock().unwrap();
            *next += 1;
            *next
        };
        let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
        let inbox = Arc::new(Inbox {
            packets: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
        });
        self.inner
            .sockets
            .lock()
            .unwrap()
            .insert(addr, inbox.clone());
        FakeSocket {
            net: self.clone(),
            addr,
            inbox,
        }
    }

    /// The sizes of every datagram sent so far.
    pub fn sizes(&self) -> Vec<usize> {
        self.inner.log.lock().unwrap().iter().map(|e| e.2).collect()
    }

    /// When each datagram from `from` was sent.
    pub fn send_times(&self, from: SocketAddr) -> Vec<tokio::time::Instant> {
        let log = self.inner.log.lock().unwrap();
        log.iter().filter(|e| e.0 == from).map(|e| e.3).collect()
    }

    /// Delivers `packet` to `to` as if `from` had sent it (a forged or corrupted datagram).
    pub fn inject(&self, packet: Vec<u8>, from: SocketAddr, to: SocketAddr) {
        self.deliver(packet, from, to);
    }

    fn deliver(&self, packet: Vec<u8>, from: SocketAddr, to: SocketAddr) {
        let inbox = self.inner.sockets.lock().unwrap().get(&to).cloned();
        if let Some(inbox) = inbox {
            inbox.packets.lock().unwrap().push_back((packet, from));
            inbox.ready.notify_one();
        }
    }

    fn route(&self, packet: Vec<u8>, from: SocketAddr, to: SocketAddr) {
        self.inner
            .log
            .lock()
            .unwrap()
            .push((from, to, packet.len(), tokio::time::Instant::now()));
        let fate = (self.inner.policy.lock().unwrap())(&packet);
        match fate {
            Fate::Deliver => self.deliver(packet, from, to),
            Fate::Drop => {}
            Fate::Duplicate => {
                self.deliver(packet.clone(), from, to);
                self.deliver(packet, from, to);
            }
            Fate::Delay(delay) => {
                let net = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    net.deliver(packet, from, to);
                });
            }
        }
    }
}

pub struct FakeSocket {
    net: FakeNet,
    addr: SocketAddr,
    inbox: Arc<Inbox>,
}

impl Drop for FakeSocket {
    fn drop(&mut self) {
        self.net.inner.sockets.lock().unwrap().remove(&self.addr);
    }
}

impl DatagramSocket for FakeSocket {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn send_to<'a>(&'a self, data: &'a [u8], to: SocketAddr) -> SocketFuture<'a, ()> {
        Box::pin(async move {
            trellis::checkpoint().await?;
            self.net.route(data.to_vec(), self.addr, to);
            Ok(())
        })
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> SocketFuture<'a, (usize, SocketAddr)> {
        Box::pin(async move {
            loop {
                let notified = self.inbox.ready.notified();
                if let Some((packet, from)) = self.inbox.packets.lock().unwrap().pop_front() {
                    trellis::checkpoint_if_cancelled()?;
                    let n = packet.len().min(buf.len());
                    buf[..n].copy_from_slice(&packet[..n]);
                    return Ok((n, from));
                }
                trellis::cancellable(notified).await?;
            }
        })
    }
}

/// A small seeded generator (xorshift64*), so that a failing run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Polls `endpoint`'s statistics until `done` holds; fails with the last ones after 60 s.
pub async fn until(
    endpoint: &DtlsEndpoint,
    done: impl Fn(&Statistics) -> bool,
) -> Result<Statistics, trellis::Error> {
    for _ in 0..12_000 {
        let stats = endpoint.statistics();
        if done(&stats) {
            return Ok(stats);
        }
        trellis::sleep(Duration::from_millis(5)).await?;
    }
    panic!("still {:?}", endpoint.statistics());
}

/// One client on a socket of its own: handshake, one echo (sent again until it comes back:
/// a datagram may be lost), close.
pub async fn echo_once(
    addr: SocketAddr,
    config: ClientConfig,
    data: &[u8],
) -> Result<(), trellis::Error> {
    open_endpoint(bind("127.0.0.1:0").await, |client| async move {
        let channel = client.connect(addr, &config)?;
        channel.do_handshake(Duration::from_millis(200)).await?;
        loop {
            channel.send(data).await?;
            if let Some(echo) =
                trellis::move_on_after(Duration::from_millis(500), channel.receive()).await?
            {
                assert_eq!(echo, data);
                break;
            }
        }
        channel.close().await;
        Ok(())
    })
    .await
}

/// A socket that sends only ClientHellos, and says when a ServerHello arrived: a client that
/// vanishes in the middle of its handshake, once the server has admitted it.
pub struct Vanishing {
    socket: UdpSocket,
    admitted: Arc<Notify>,
    said: AtomicBool,
}

pub fn handshake_type(datagram: &[u8]) -> Option<u8> {
    // Content type 22 (handshake), 13 bytes of record header, then the message type.
    (datagram.first() == Some(&22)).then(|| datagram.get(13).copied())?
}

impl DatagramSocket for Vanishing {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn send_to<'a>(&'a self, data: &'a [u8], to: SocketAddr) -> SocketFuture<'a, ()> {
        Box::pin(async move {
            if handshake_type(data) == Some(1) {
                self.socket.send_to(data, to).await?;
            }
            Ok(())
        })
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> SocketFuture<'a, (usize, SocketAddr)> {
        Box::pin(async move {
            let (n, from) = self.socket.recv_from(buf).await?;
            if handshake_type(&buf[..n]) == Some(2) && !self.said.swap(true, Ordering::SeqCst) {
                self.admitted.notify_one();
            }
            Ok((n, from))
        })
    }
}

/// Runs one client that the server admits and that then vanishes.
pub async fn vanish(addr: SocketAddr, config: ClientConfig) -> Result<(), trellis::Error> {
    let admitted = Arc::new(Notify::new());
    let socket = Vanishing {
        socket: bind("127.0.0.1:0").await,
        admitted: admitted.clone(),
        said: AtomicBool::new(false),
    };
    open_endpoint(socket, |client| async move {
        let channel = client.connect(addr, &config)?;
        trellis::open_nursery(|n| async move {
            n.start_soon(async move {
                // Its second flight never leaves: this waits until cancelled.
                let _ = channel.do_handshake(Duration::from_millis(200)).await;
                Ok::<_, trellis::Error>(())
            })?;
            trellis::cancellable(admitted.notified()).await?;
            n.cancel();
            Ok::<_, trellis::Error>(())
        })
        .await?;
        Ok(())
    })
    .await
}

/// An example binary, built by cargo for the tests (or built here when run alone).
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = profile.join("examples").join(name);
    if !path.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "trellis-dtls", "--example", name])
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}
