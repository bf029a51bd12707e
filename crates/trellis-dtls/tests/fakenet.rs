//! The endpoint over a simulated network on the autojump clock (Trio's `FakeNet` tests from
//! `test_dtls.py`): loss, duplication, delay and small MTUs, deterministic and without real
//! waiting.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{FakeNet, FakeSocket, Fate, Rng, configs, echo, serve_with};
use trellis_dtls::{ClientConfig, DtlsError, open_endpoint};

/// Runs an echo server on `server` and `client` against its address.
async fn with_echo_server<F, Fut>(server: FakeSocket, mtu: Option<usize>, client: F)
where
    F: FnOnce(SocketAddr, ClientConfig) -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    let handler = move |channel| echo(channel, mtu);
    serve_with(configs(), server, handler, |_, addr, config| {
        client(addr, config)
    })
    .await;
}

/// Trio: test_dtls.py::test_handshake_over_terrible_network — 100 handshakes (and an echo
/// each) over a network that drops, duplicates and delays (so reorders) datagrams, from a
/// fixed seed.
#[test]
fn handshake_over_terrible_network() {
    trellis::testing::run_test(async {
        let net = FakeNet::new();
        let mut rng = Rng::new(0x5eed);
        net.set_policy(move |_| match rng.below(10) {
            0 => Fate::Drop,
            1 => Fate::Duplicate,
            2 => Fate::Delay(Duration::from_millis(rng.below(3000))),
            _ => Fate::Deliver,
        });
        let server = net.socket();
        let clients = net.clone();
        let log = net.clone();
        with_echo_server(server, None, |addr, config| async move {
            for i in 0..100u32 {
                let config = &config;
                open_endpoint(clients.socket(), |endpoint| async move {
                    let channel = endpoint.connect(addr, config)?;
                    channel.do_handshake(Duration::from_secs(1)).await?;
                    let message = i.to_string().into_bytes();
                    // The network may lose the datagram or its echo: try again.
                    loop {
                        let echoed = trellis::move_on_after(Duration::from_secs(10), async {
                            channel.send(&message).await?;
                            channel.receive().await
                        })
                        .await?;
                        if let Some(echoed) = echoed {
                            assert_eq!(echoed, message);
                            break;
                        }
                    }
                    Ok(())
                })
                .await?;
            }
            Ok(())
        })
        .await;
        // Ten datagrams or more per handshake and echo, some of them sent again.
        let sent = log.sizes().len();
        assert!(sent > 1000, "{sent} datagrams");
    });
}

/// Trio: test_dtls.py::test_explicit_tiny_mtu_is_respected — with a 300-byte MTU set on both
/// sides, no datagram of the handshake or after is larger.
#[test]
fn tiny_mtu_is_respected() {
    const MTU: usize = 300;
    trellis::testing::run_test(async {
        let net = FakeNet::new();
        let server = net.socket();
        let client = net.socket();
        with_echo_server(server, Some(MTU), |addr, config| async move {
            open_endpoint(client, |endpoint| async move {
                let channel = endpoint.connect(addr, &config)?;
                channel.set_ciphertext_mtu(MTU);
                channel.do_handshake(Duration::from_secs(1)).await?;
                channel.send(b"hi").await?;
                assert_eq!(channel.receive().await?, b"hi");
                Ok(())
            })
            .await
        })
        .await;
        let sizes = net.sizes();
        assert!(sizes.iter().all(|&size| size <= MTU), "{sizes:?}");
        assert!(sizes.len() > 6, "the flights were fragmented: {sizes:?}");
    });
}

/// Trio: test_dtls.py::test_handshake_handles_minimum_network_mtu — on a path that carries
/// only the minimum MTU of the address family, flights too big are lost until the
/// retransmission falls back to the minimum; the user's ciphertext MTU is not changed by it.
fn minimum_network_mtu(ipv6: bool) {
    let mtu = if ipv6 { 1280 - 48 } else { 576 - 28 };
    trellis::testing::run_test(async move {
        let net = FakeNet::new();
        net.set_policy(move |packet| {
            if packet.len() > mtu {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        });
        let (server, client) = if ipv6 {
            (net.socket_v6(), net.socket_v6())
        } else {
            (net.socket(), net.socket())
        };
        with_echo_server(server, None, |addr, config| async move {
            open_endpoint(client, |endpoint| async move {
                let channel = endpoint.connect(addr, &config)?;
                channel.set_ciphertext_mtu(9999);
                channel.send(b"xyz").await?;
                assert_eq!(channel.receive().await?, b"xyz");
                assert!(channel.cleartext_mtu() > 9000);
                Ok(())
            })
            .await
        })
        .await;
    });
}

#[test]
fn minimum_network_mtu_ipv4() {
    minimum_network_mtu(false);
}

#[test]
fn minimum_network_mtu_ipv6() {
    minimum_network_mtu(true);
}

/// Trio: test_dtls.py::test_send_to_closed_local_port — sending to an address where nothing
/// listens loses the datagrams and breaks nothing: the endpoint serves another peer after.
#[test]
fn send_to_closed_port() {
    trellis::testing::run_test(async {
        let net = FakeNet::new();
        let server = net.socket();
        let client = net.socket();
        let gone = trellis_dtls::DatagramSocket::local_addr(&net.socket()).unwrap();
        with_echo_server(server, None, |addr, config| async move {
            open_endpoint(client, |endpoint| async move {
                let lost = endpoint.connect(gone, &config)?;
                let outcome = trellis::move_on_after(
                    Duration::from_secs(30),
                    lost.do_handshake(Duration::from_secs(1)),
                )
                .await?;
                assert!(outcome.is_none());
                let channel = endpoint.connect(addr, &config)?;
                channel.send(b"still fine").await?;
                assert_eq!(channel.receive().await?, b"still fine");
                Ok(())
            })
            .await
        })
        .await;
    });
}

/// Trio: test_dtls.py::test_initial_retransmit_timeout_configuration — with every datagram
/// lost, the first flight goes out again after the initial timeout, then after twice that,
/// four times, and so on.
#[test]
fn retransmissions_back_off_from_the_initial_timeout() {
    trellis::testing::run_test(async {
        let net = FakeNet::new();
        net.set_policy(|_| Fate::Drop);
        let server = net.socket();
        let client = net.socket();
        let (client_addr, server_addr) = (
            trellis_dtls::DatagramSocket::local_addr(&client).unwrap(),
            trellis_dtls::DatagramSocket::local_addr(&server).unwrap(),
        );
        let (_, config) = configs();
        open_endpoint(client, |endpoint| async move {
            let channel = endpoint.connect(server_addr, &config)?;
            let outcome = trellis::move_on_after(
                Duration::from_secs(40),
                channel.do_handshake(Duration::from_secs(3)),
            )
            .await?;
            assert!(outcome.is_none());
            Ok(())
        })
        .await
        .unwrap();
        let times = net.send_times(client_addr);
        let gaps: Vec<u64> = times.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        // Sent at 0, 3, 9, 21 s (then the deadline at 40 s).
        assert_eq!(gaps, vec![3, 6, 12], "{times:?}");
        drop(server);
    });
}

/// Trio: test_dtls.py::test_swap_client_server — one endpoint can serve and connect; there
/// is one association per pair of addresses, so when the server side connects back as a
/// client, the first association is replaced (its client learns it with a typed error).
#[test]
fn swap_client_server() {
    trellis::testing::run_test(async {
        let net = FakeNet::new();
        let (a, b) = (net.socket(), net.socket());
        let (a_addr, b_addr) = (
            trellis_dtls::DatagramSocket::local_addr(&a).unwrap(),
            trellis_dtls::DatagramSocket::local_addr(&b).unwrap(),
        );
        let (server_config, client_config) = configs();
        open_endpoint(a, |a| async move {
            open_endpoint(b, |b| async move {
                trellis::open_nursery(|n| async move {
                    for endpoint in [a.clone(), b.clone()] {
                        let config = server_config.clone();
                        n.start_soon(async move {
                            endpoint.serve(config, |channel| echo(channel, None)).await
                        })?;
                    }
                    let b_to_a = b.connect(a_addr, &client_config)?;
                    b_to_a.send(b"b as client").await?;
                    assert_eq!(b_to_a.receive().await?, b"b as client");
                    let a_to_b = a.connect(b_addr, &client_config)?;
                    a_to_b.do_handshake(Duration::from_secs(1)).await?;
                    let broken = b_to_a.send(b"association broken").await.unwrap_err();
                    assert!(
                        matches!(broken, DtlsError::PeerReconnected(p) if p == a_addr),
                        "{broken:?}"
                    );
                    a_to_b.send(b"a as client").await?;
                    assert_eq!(a_to_b.receive().await?, b"a as client");
                    n.cancel();
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                Ok(())
            })
            .await
        })
        .await
        .unwrap();
    });
}

/// Trio: test_dtls.py::test_serve_exits_cleanly_on_close — closing the endpoint ends `serve`
/// without an error; closing again does nothing.
#[test]
fn serve_ends_cleanly_on_close() {
    trellis::testing::run_test(async {
        let net = FakeNet::new();
        let (server_config, _) = configs();
        open_endpoint(net.socket(), |endpoint| async move {
            trellis::open_nursery(|n| async move {
                let serving = endpoint.clone();
                let served = n.start_soon(async move {
                    serving.serve(server_config, |_| async { Ok(()) }).await
                })?;
                trellis::testing::wait_all_tasks_blocked().await?;
                endpoint.close();
                endpoint.close();
                Ok::<_, trellis::Error>(served)
            })
            .await?;
            Ok(())
        })
        .await
        .unwrap();
    });
}

/// Trio: test_dtls.py::test_association_replaced_while_handshake_running — a handshake that
/// cannot finish (everything is lost) fails with `PeerReconnected` once a new connection to
/// the same address replaces it.
#[test]
fn association_replaced_while_handshake_running() {
    trellis::testing::run_test(async {
        let net = FakeNet::new();
        net.set_policy(|_| Fate::Drop);
        let server = net.socket();
        let server_addr = trellis_dtls::DatagramSocket::local_addr(&server).unwrap();
        let (_, config) = configs();
        open_endpoint(net.socket(), |endpoint| async move {
            let doomed = endpoint.connect(server_addr, &config)?;
            let failed = trellis::open_nursery(|n| async move {
                let handshake = doomed.clone();
                let failed = n.start_soon(async move {
                    Ok::<_, trellis::Error>(handshake.do_handshake(Duration::from_secs(1)).await)
                })?;
                trellis::sleep(Duration::from_secs(10)).await?;
                endpoint.connect(server_addr, &config)?;
                Ok::<_, trellis::Error>(failed)
            })
            .await?
            .expect("not cancelled");
            let err = failed.into_value().expect("finished").unwrap_err();
            assert!(matches!(err, DtlsError::PeerReconnected(_)), "{err:?}");
            Ok(())
        })
        .await
        .unwrap();
        drop(server);
    });
}

/// Trio: test_dtls.py::test_association_replaced_before_handshake_starts — a channel
/// replaced before its handshake fails without sending anything.
#[test]
fn association_replaced_before_handshake_starts() {
    trellis::testing::run_test(async {
        let net = FakeNet::new();
        net.set_policy(|packet| panic!("nothing should be sent, got {} bytes", packet.len()));
        let server = net.socket();
        let server_addr = trellis_dtls::DatagramSocket::local_addr(&server).unwrap();
        let (_, config) = configs();
        open_endpoint(net.socket(), |endpoint| async move {
            let first = endpoint.connect(server_addr, &config)?;
            let _second = endpoint.connect(server_addr, &config)?;
            let err = first
                .do_handshake(Duration::from_secs(1))
                .await
                .unwrap_err();
            assert!(matches!(err, DtlsError::PeerReconnected(_)), "{err:?}");
            Ok(())
        })
        .await
        .unwrap();
        drop(server);
    });
}

/// Trio: test_dtls.py::test_openssl_retransmit_doesnt_break_stuff — OpenSSL's own
/// retransmission timer (wall clock, 1 s) fires while the network is down; its resend is
/// ignored (ours decides) and the handshake completes once the network is back. Runs on the
/// real clock: OpenSSL's timer cannot be mocked.
#[test]
fn openssl_retransmit_does_not_break_stuff() {
    trellis::testing::run_test_multi_thread(async {
        let net = FakeNet::new();
        let blackholed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let hole = blackholed.clone();
        net.set_policy(move |_| {
            if hole.load(std::sync::atomic::Ordering::SeqCst) {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        });
        let server = net.socket();
        let client = net.socket();
        let client_addr = trellis_dtls::DatagramSocket::local_addr(&client).unwrap();
        let poker = net.socket();
        with_echo_server(server, None, |addr, config| async move {
            open_endpoint(client, |endpoint| async move {
                trellis::open_nursery(|n| async move {
                    n.start_soon(async move {
                        let channel = endpoint.connect(addr, &config)?;
                        channel.do_handshake(Duration::from_millis(1500)).await?;
                        channel.send(b"hi").await?;
                        assert_eq!(channel.receive().await?, b"hi");
                        Ok::<_, trellis::Error>(())
                    })?;
                    // Past OpenSSL's 1 s timer; then wake the client with a stray datagram.
                    trellis::sleep(Duration::from_millis(1100)).await?;
                    blackholed.store(false, std::sync::atomic::Ordering::SeqCst);
                    trellis_dtls::DatagramSocket::send_to(&poker, b"xxx", client_addr).await?;
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                Ok(())
            })
            .await
        })
        .await;
    });
}

/// Datagrams from a peer's address that do not decrypt (forged, or corrupted on the way) are
/// dropped and counted by its channel; the association goes on. (RFC 6347 §4.1.2.7: invalid
/// records are silently discarded.)
#[test]
fn undecryptable_datagrams_are_counted_and_dropped() {
    trellis::testing::run_test(async {
        let net = FakeNet::new();
        let (server, client) = (net.socket(), net.socket());
        let (addr, client_addr) = (
            trellis_dtls::DatagramSocket::local_addr(&server).unwrap(),
            trellis_dtls::DatagramSocket::local_addr(&client).unwrap(),
        );
        let (server_config, config) = configs();
        open_endpoint(server, |server| async move {
            trellis::open_nursery(|n| async move {
                let serving = server.clone();
                n.start_soon(async move {
                    serving
                        .serve(server_config, |channel| echo(channel, None))
                        .await
                })?;
                open_endpoint(client, |endpoint| async move {
                    let channel = endpoint.connect(addr, &config)?;
                    channel.send(b"before").await?;
                    assert_eq!(channel.receive().await?, b"before");
                    // Application data records of epoch 1 that are not what they claim.
                    for byte in 0..5u8 {
                        let mut forged = vec![23, 254, 253, 0, 1, 0, 0, 0, 0, 0, 99, 0, 40];
                        forged.extend_from_slice(&[byte; 40]);
                        net.inject(forged, client_addr, addr);
                    }
                    channel.send(b"after").await?;
                    assert_eq!(channel.receive().await?, b"after");
                    Ok(())
                })
                .await?;
                assert_eq!(server.statistics().bad_packets, 5);
                n.cancel();
                Ok::<_, trellis::Error>(())
            })
            .await?;
            Ok(())
        })
        .await
        .unwrap();
    });
}
