//! B10: DTLS on 127.0.0.1 — sequential full handshakes (cookie exchange, ECDSA P-256), and
//! 100-byte ping-pong round trips on one channel, against our own TCP ping-pong of the same
//! size (trellis-net, as B9) and, with `--anchors python`, Trio's `DTLSEndpoint`; and
//! handshake throughput with 64 clients at once on the multi-thread runtime, against OpenSSL
//! alone doing as many handshakes on every thread of the machine.

use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{Ssl, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVerifyMode};
use openssl::x509::{X509, X509NameBuilder};
use trellis_dtls::{ClientConfig, DtlsChannel, DtlsError, ServerConfig, open_endpoint};
use trellis_net::UdpSocket;

use crate::{Comparison, anchors, median};

const HANDSHAKES: usize = 200;
/// Clients handshaking at once in the throughput case, and the handshakes each does.
const CONCURRENT_CLIENTS: usize = 64;
const HANDSHAKES_PER_CLIENT: usize = 10;
const ROUND_TRIPS: usize = 5_000;
const MESSAGE: usize = 100;

/// ECDSA P-256: a self-signed certificate, the server's and the client's context builders.
fn builders() -> (SslContextBuilder, SslContextBuilder) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("key");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "example.com")
        .expect("name");
    let name = name.build();
    let mut cert = X509::builder().expect("certificate");
    cert.set_version(2).expect("version");
    cert.set_subject_name(&name).expect("subject");
    cert.set_issuer_name(&name).expect("issuer");
    cert.set_pubkey(&key).expect("key");
    cert.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("time");
    cert.set_not_after(&Asn1Time::days_from_now(1).expect("time"))
        .expect("time");
    cert.sign(&key, MessageDigest::sha256()).expect("sign");
    let cert = cert.build();
    let mut server = SslContextBuilder::new(SslMethod::dtls()).expect("context");
    server.set_certificate(&cert).expect("certificate");
    server.set_private_key(&key).expect("key");
    let mut client = SslContextBuilder::new(SslMethod::dtls()).expect("context");
    client.cert_store_mut().add_cert(cert).expect("trust");
    client.set_verify(SslVerifyMode::PEER);
    (server, client)
}

fn configs() -> (ServerConfig, ClientConfig) {
    let (server, client) = builders();
    (ServerConfig::new(server), ClientConfig::new(client))
}

/// One direction of an in-memory datagram link: each write is one datagram.
#[derive(Default, Clone)]
struct Datagrams(std::rc::Rc<std::cell::RefCell<std::collections::VecDeque<Vec<u8>>>>);

/// One side's view of the link.
struct Wire {
    inbox: Datagrams,
    outbox: Datagrams,
}

impl std::io::Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inbox.0.borrow_mut().pop_front() {
            Some(datagram) => {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok(n)
            }
            None => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl std::io::Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.outbox.0.borrow_mut().push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// OpenSSL alone: the same handshake (same certificate, same defaults, MTU 1400, no cookie
/// exchange, no sockets, no tasks) between two `SSL`s in this thread, seconds each. What no
/// endpoint on OpenSSL can beat.
fn openssl_alone(runs: usize) -> f64 {
    openssl_alone_with(runs, false)
}

/// [`openssl_alone`] with OpenSSL's own cookie exchange (`COOKIE_EXCHANGE`: the server's `SSL`
/// answers the first ClientHello with a HelloVerifyRequest and checks the cookie the second
/// one repeats, a keyed SHA-256 of the peer's name), the same messages as the endpoint's
/// handshake.
fn openssl_alone_with(runs: usize, cookies: bool) -> f64 {
    let (server, client) = openssl_contexts(cookies);
    let mut times = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        openssl_handshakes(&server, &client, HANDSHAKES);
        times.push(t0.elapsed().as_secs_f64() / HANDSHAKES as f64);
    }
    median(&mut times)
}

/// OpenSSL alone on every thread of the machine: as many handshakes as the throughput case
/// does, shared between the threads; seconds each (of wall time).
fn openssl_alone_all_threads(runs: usize) -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let total = CONCURRENT_CLIENTS * HANDSHAKES_PER_CLIENT;
    let (server, client) = openssl_contexts(false);
    let mut times = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            for i in 0..threads {
                let count = total / threads + usize::from(i < total % threads);
                let (server, client) = (&server, &client);
                scope.spawn(move || openssl_handshakes(server, client, count));
            }
        });
        times.push(t0.elapsed().as_secs_f64() / total as f64);
    }
    median(&mut times)
}

fn openssl_contexts(cookies: bool) -> (openssl::ssl::SslContext, openssl::ssl::SslContext) {
    let (mut server, mut client) = builders();
    server.set_options(SslOptions::NO_QUERY_MTU);
    client.set_options(SslOptions::NO_QUERY_MTU);
    if cookies {
        server.set_options(SslOptions::COOKIE_EXCHANGE);
        let cookie = || openssl::sha::sha256(b"a per-endpoint secret, then 127.0.0.1:4433");
        server.set_cookie_generate_cb(move |_, out| {
            out[..32].copy_from_slice(&cookie());
            Ok(32)
        });
        server.set_cookie_verify_cb(move |_, got| got == cookie());
    }
    (server.build(), client.build())
}

/// `count` handshakes between two `SSL`s in this thread, datagrams handed over in memory.
fn openssl_handshakes(
    server: &openssl::ssl::SslContext,
    client: &openssl::ssl::SslContext,
    count: usize,
) {
    for _ in 0..count {
        handshaken_pair(server, client);
    }
}

/// A client and a server `SSL` in this thread, linked in memory (each write one datagram),
/// after their handshake.
fn handshaken_pair(
    server: &openssl::ssl::SslContext,
    client: &openssl::ssl::SslContext,
) -> (SslStream<Wire>, SslStream<Wire>) {
    let (up, down) = (Datagrams::default(), Datagrams::default());
    let end = |context, inbox: &Datagrams, outbox: &Datagrams, connect: bool| {
        let mut ssl = Ssl::new(context).expect("ssl");
        ssl.set_mtu(1400).expect("mtu");
        if connect {
            ssl.set_connect_state();
        } else {
            ssl.set_accept_state();
        }
        let wire = Wire {
            inbox: inbox.clone(),
            outbox: outbox.clone(),
        };
        SslStream::new(ssl, wire).expect("stream")
    };
    let mut c = end(client, &down, &up, true);
    let mut s = end(server, &up, &down, false);
    let (mut client_done, mut server_done) = (false, false);
    while !(client_done && server_done) {
        client_done = client_done || c.do_handshake().is_ok();
        server_done = server_done || s.do_handshake().is_ok();
    }
    (c, s)
}

/// OpenSSL alone moving the ping-pong's records: after one handshake between two `SSL`s in
/// this thread, `ROUND_TRIPS` times a `MESSAGE`-byte record each way (written by one, read
/// by the other, datagrams handed over in memory); seconds per round trip (median of the
/// runs). What encrypting and decrypting the four records of a round trip costs by itself.
fn openssl_records(runs: usize) -> f64 {
    let (server, client) = openssl_contexts(false);
    let (mut c, mut s) = handshaken_pair(&server, &client);
    let message = [7u8; MESSAGE];
    let mut buf = [0u8; 2048];
    let mut times = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        for _ in 0..ROUND_TRIPS {
            c.ssl_write(&message).expect("write");
            let n = s.ssl_read(&mut buf).expect("read");
            s.ssl_write(&buf[..n]).expect("write");
            assert_eq!(c.ssl_read(&mut buf).expect("read"), MESSAGE);
        }
        times.push(t0.elapsed().as_secs_f64() / ROUND_TRIPS as f64);
    }
    median(&mut times)
}

/// Handshake throughput: `CONCURRENT_CLIENTS` clients at once, each doing
/// `HANDSHAKES_PER_CLIENT` handshakes one after the other (a fresh socket and endpoint each),
/// against one server endpoint; seconds of wall time per handshake (median of the runs).
async fn concurrent_handshakes(runs: usize) -> Result<f64, trellis::Error> {
    let (server_config, client_config) = configs();
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    open_endpoint(socket, |server| async move {
        let outcome = trellis::open_nursery(|n| async move {
            let serving = server.clone();
            n.start_soon(async move { serving.serve(server_config, echo).await })?;
            let mut times = Vec::new();
            for _ in 0..runs {
                let t0 = Instant::now();
                let client_config = &client_config;
                trellis::open_nursery(|clients| async move {
                    for _ in 0..CONCURRENT_CLIENTS {
                        let config = client_config.clone();
                        clients.start_soon(async move {
                            for _ in 0..HANDSHAKES_PER_CLIENT {
                                handshake_once(addr, &config).await?;
                            }
                            Ok::<_, trellis::Error>(())
                        })?;
                    }
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                let total = CONCURRENT_CLIENTS * HANDSHAKES_PER_CLIENT;
                times.push(t0.elapsed().as_secs_f64() / total as f64);
            }
            let stats = server.statistics();
            if stats.queue_overflows + stats.handshakes_failed > 0 {
                eprintln!("B10 concurrent handshakes: {stats}");
            }
            n.cancel();
            Ok::<_, trellis::Error>(median(&mut times))
        })
        .await?;
        Ok(outcome.expect("the body finished"))
    })
    .await
}

/// One handshake from a fresh client socket and endpoint, as a new peer would make it.
async fn handshake_once(
    addr: std::net::SocketAddr,
    config: &ClientConfig,
) -> Result<(), trellis::Error> {
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    open_endpoint(client, |endpoint| async move {
        let channel = endpoint.connect(addr, config)?;
        channel.do_handshake(Duration::from_secs(1)).await?;
        channel.close().await;
        Ok(())
    })
    .await
}

async fn echo(channel: DtlsChannel) -> Result<(), trellis::Error> {
    loop {
        match channel.receive().await {
            Ok(data) => channel.send(&data).await?,
            Err(DtlsError::Cancelled(c)) => return Err(c.into()),
            Err(_) => return Ok(()),
        }
    }
}

/// Seconds per handshake (median of the runs), and seconds per round trip.
async fn trellis_dtls(runs: usize) -> Result<(f64, f64), trellis::Error> {
    let (server_config, client_config) = configs();
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    open_endpoint(socket, |server| async move {
        let outcome = trellis::open_nursery(|n| async move {
            n.start_soon(async move { server.serve(server_config, echo).await })?;
            let mut per_handshake = Vec::new();
            for _ in 0..runs * usize::from(crate::part_selected("handshake")) {
                let t0 = Instant::now();
                for _ in 0..HANDSHAKES {
                    handshake_once(addr, &client_config).await?;
                }
                per_handshake.push(t0.elapsed().as_secs_f64() / HANDSHAKES as f64);
            }
            let client = UdpSocket::bind("127.0.0.1:0").await?;
            let config = &client_config;
            let per_round_trip = open_endpoint(client, |endpoint| async move {
                let channel = endpoint.connect(addr, config)?;
                channel.do_handshake(Duration::from_secs(1)).await?;
                let message = [7u8; MESSAGE];
                let mut times = Vec::new();
                for _ in 0..runs * usize::from(crate::part_selected("pingpong")) {
                    let t0 = Instant::now();
                    for _ in 0..ROUND_TRIPS {
                        channel.send(&message).await?;
                        let echoed = channel.receive().await?;
                        assert_eq!(echoed.len(), MESSAGE);
                    }
                    times.push(t0.elapsed().as_secs_f64() / ROUND_TRIPS as f64);
                }
                Ok(median_or_skipped(&mut times))
            })
            .await?;
            n.cancel();
            Ok::<_, trellis::Error>((median_or_skipped(&mut per_handshake), per_round_trip))
        })
        .await?;
        Ok(outcome.expect("the body finished"))
    })
    .await
}

/// The median, or 1 s for a part skipped by `TRELLIS_BENCH_PART`.
fn median_or_skipped(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        1.0
    } else {
        median(values)
    }
}

/// Seconds per 100-byte TCP round trip through trellis-net streams (median of `runs`).
async fn tcp_pingpong(runs: usize) -> Result<f64, trellis::Error> {
    let mut times = Vec::new();
    for _ in 0..runs * usize::from(crate::part_selected("pingpong")) {
        let total = crate::net::pingpong_through_trellis(MESSAGE, ROUND_TRIPS).await;
        times.push(total / ROUND_TRIPS as f64);
    }
    Ok(median_or_skipped(&mut times))
}

pub(crate) fn b10(runs: usize, python: bool) -> Result<Vec<Comparison>, String> {
    let runs = runs.clamp(3, 5);
    let mut out = Vec::new();
    let mut multi = None;
    for (flavor, runner) in [
        (
            "current_thread",
            trellis::Runner::current_thread as fn() -> trellis::Runner,
        ),
        ("multi_thread", trellis::Runner::multi_thread),
    ] {
        if !crate::case_selected(flavor) {
            continue;
        }
        let (handshake, round_trip) = if crate::side_selected("trellis") {
            runner()
                .handle_ctrl_c(false)
                .run(trellis_dtls(runs))
                .map_err(|e| format!("{e:?}"))?
        } else {
            (1.0, 1.0)
        };
        let tcp = if crate::side_selected("anchor") {
            runner()
                .handle_ctrl_c(false)
                .run(tcp_pingpong(runs))
                .map_err(|e| format!("{e:?}"))?
        } else {
            1.0 // a side not run, as `alternate` reports it
        };
        out.push(Comparison {
            id: "B10",
            case: format!("{flavor} ping-pong {MESSAGE} B, s per round trip"),
            trellis: round_trip,
            anchor: format!("trellis-net TCP ping-pong {MESSAGE} B"),
            anchor_value: tcp,
        });
        // The same TCP round trip plus what OpenSSL alone takes to encrypt and decrypt its
        // four records: the floor for any DTLS ping-pong on OpenSSL.
        if crate::part_selected("pingpong") {
            out.push(Comparison {
                id: "B10",
                case: format!("{flavor} ping-pong {MESSAGE} B, s per round trip"),
                trellis: round_trip,
                anchor: format!(
                    "TCP ping-pong {MESSAGE} B + OpenSSL alone sealing and opening its records"
                ),
                anchor_value: crate::if_side_selected("anchor", || tcp + openssl_records(runs)),
            });
        }
        // No anchor for the handshake alone but the goal: 2,000 per second.
        out.push(Comparison {
            id: "B10",
            case: format!("{flavor} handshake (cookie exchange, ECDSA P-256), s each"),
            trellis: handshake,
            anchor: "goal: 2,000 handshakes/s".into(),
            anchor_value: 1.0 / 2000.0,
        });
        if crate::part_selected("handshake") {
            // What OpenSSL itself costs for the same handshake, with no network at all.
            out.push(Comparison {
                id: "B10",
                case: format!("{flavor} handshake (cookie exchange, ECDSA P-256), s each"),
                trellis: handshake,
                anchor: "OpenSSL alone: both ends in memory, one thread".into(),
                anchor_value: crate::if_side_selected("anchor", || openssl_alone(runs)),
            });
            // The same with the cookie exchange the endpoint always makes.
            out.push(Comparison {
                id: "B10",
                case: format!("{flavor} handshake (cookie exchange, ECDSA P-256), s each"),
                trellis: handshake,
                anchor: "OpenSSL alone with its cookie exchange: both ends in memory, one thread"
                    .into(),
                anchor_value: crate::if_side_selected("anchor", || openssl_alone_with(runs, true)),
            });
        }
        multi = Some((handshake, round_trip));
    }
    if crate::case_selected("concurrent") && crate::part_selected("handshake") {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let concurrent = if crate::side_selected("trellis") {
            trellis::Runner::multi_thread()
                .handle_ctrl_c(false)
                .run(concurrent_handshakes(runs))
                .map_err(|e| format!("{e:?}"))?
        } else {
            1.0
        };
        out.push(Comparison {
            id: "B10",
            case: format!(
                "multi_thread handshakes, {CONCURRENT_CLIENTS} clients at once, s each (throughput)"
            ),
            trellis: concurrent,
            anchor: format!("OpenSSL alone: both ends in memory, {threads} threads"),
            anchor_value: crate::if_side_selected("anchor", || openssl_alone_all_threads(runs)),
        });
    }
    if python && let Some((handshake, round_trip)) = multi {
        let ms = anchors::trio(
            "b5_dtls.py",
            &["handshake", "ECDSA", &HANDSHAKES.to_string()],
            "ms_per_hs",
        )?;
        out.push(Comparison {
            id: "B10",
            case: "handshake (cookie exchange, ECDSA P-256), s each".into(),
            trellis: handshake,
            anchor: "trio 0.35 DTLSEndpoint (python)".into(),
            anchor_value: ms / 1e3,
        });
        let us = anchors::trio(
            "b5_dtls.py",
            &["pingpong", "ECDSA", "1", &ROUND_TRIPS.to_string()],
            "us_per_rt",
        )?;
        out.push(Comparison {
            id: "B10",
            case: format!("ping-pong {MESSAGE} B, s per round trip"),
            trellis: round_trip,
            anchor: "trio 0.35 DTLSEndpoint (python)".into(),
            anchor_value: us / 1e6,
        });
    }
    Ok(out)
}
