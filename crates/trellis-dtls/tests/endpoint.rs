//! The endpoint over real UDP sockets on the loopback interface, ported from Trio's
//! `test_dtls.py` (each test names the original).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{bind, configs, echo_server, echo_server_with, real_time, serve_with};
use trellis_dtls::{ClientConfig, DtlsChannel, DtlsError, open_endpoint};

/// Runs an echo server on `server_addr` and `client` against it; a handler's error other
/// than its channel closing fails the test.
async fn with_echo_server<F, Fut>(server_addr: &str, client: F)
where
    F: FnOnce(SocketAddr, ClientConfig) -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    let handler = |channel: DtlsChannel| async move {
        loop {
            let data = match channel.receive().await {
                Ok(data) => data,
                Err(DtlsError::Closed) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            channel.send(&data).await?;
        }
    };
    let socket = bind(server_addr).await;
    serve_with(configs(), socket, handler, |_, addr, config| {
        client(addr, config)
    })
    .await;
}

/// Trio: test_dtls.py::test_smoke (IPv4 and IPv6) — a handshake, and datagrams both ways.
fn smoke(server: &'static str, client: &'static str) {
    trellis::testing::run_test_multi_thread(async move {
        with_echo_server(server, |addr, config| async move {
            open_endpoint(bind(client).await, |endpoint| async move {
                let channel = endpoint.connect(addr, &config)?;
                trellis::fail_after(
                    Duration::from_secs(10),
                    channel.do_handshake(Duration::from_secs(1)),
                )
                .await?;
                for message in [&b"hello"[..], b"goodbye", &[7u8; 1000]] {
                    channel.send(message).await?;
                    assert_eq!(channel.receive().await?, message);
                }
                channel.close().await;
                Ok(())
            })
            .await
        })
        .await;
    });
}

#[test]
fn smoke_ipv4() {
    smoke("127.0.0.1:0", "127.0.0.1:0");
}

#[test]
fn smoke_ipv6() {
    smoke("[::1]:0", "[::1]:0");
}

/// A server whose certificate the client does not trust: the handshake fails with a typed
/// error, nothing hangs.
#[test]
fn untrusted_certificate_fails_the_handshake() {
    trellis::testing::run_test_multi_thread(async move {
        with_echo_server("127.0.0.1:0", |addr, _config| async move {
            let (_, other_client) = configs();
            open_endpoint(bind("127.0.0.1:0").await, |endpoint| async move {
                let channel = endpoint.connect(addr, &other_client)?;
                let err = trellis::fail_after(
                    Duration::from_secs(10),
                    channel.do_handshake(Duration::from_secs(1)),
                )
                .await
                .unwrap_err();
                assert!(matches!(err, DtlsError::Handshake { .. }), "{err:?}");
                Ok(())
            })
            .await
        })
        .await;
    });
}

/// A channel's own error, or one that `serve` or the endpoint returns inside a
/// `trellis::Error` (it also carries its handlers' failures).
trait AsDtls {
    fn as_dtls(&self) -> Option<&DtlsError>;
}

impl AsDtls for DtlsError {
    fn as_dtls(&self) -> Option<&DtlsError> {
        Some(self)
    }
}

impl AsDtls for trellis::Error {
    fn as_dtls(&self) -> Option<&DtlsError> {
        self.downcast_ref()
    }
}

fn is(err: &impl AsDtls, want: impl Fn(&DtlsError) -> bool) -> bool {
    err.as_dtls().is_some_and(want)
}

/// Trio: test_dtls.py::test_full_duplex — sends and receives at once on both sides, each
/// starting the handshake implicitly.
#[test]
fn full_duplex() {
    real_time(async {
        let (server_config, client_config) = configs();
        let server_socket = bind("127.0.0.1:0").await;
        let addr = server_socket.local_addr().unwrap();
        open_endpoint(server_socket, |server| async move {
            trellis::open_nursery(|n| async move {
                let serving = server.clone();
                n.start_soon(async move {
                    serving
                        .serve(server_config, |channel| async move {
                            trellis::open_nursery(|n| async move {
                                let c = channel.clone();
                                n.start_soon(async move { c.send(b"from server").await })?;
                                assert_eq!(channel.receive().await?, b"from client");
                                Ok::<_, trellis::Error>(())
                            })
                            .await?;
                            Ok(())
                        })
                        .await
                })?;
                open_endpoint(bind("127.0.0.1:0").await, |client| async move {
                    let channel = client.connect(addr, &client_config)?;
                    trellis::open_nursery(|n| async move {
                        let c = channel.clone();
                        n.start_soon(async move { c.send(b"from client").await })?;
                        assert_eq!(channel.receive().await?, b"from server");
                        Ok::<_, trellis::Error>(())
                    })
                    .await?;
                    Ok(())
                })
                .await?;
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

/// Trio: test_dtls.py::test_channel_closing — a closed channel refuses to send and receive;
/// closing is idempotent.
#[test]
fn channel_closing() {
    real_time(async {
        echo_server(None, Arc::default(), |_, addr, config| async move {
            open_endpoint(bind("127.0.0.1:0").await, |client| async move {
                let channel = client.connect(addr, &config)?;
                channel.do_handshake(Duration::from_secs(1)).await?;
                channel.close().await;
                let sent = channel.send(b"abc").await.unwrap_err();
                assert!(is(&sent, |e| matches!(e, DtlsError::Closed)), "{sent:?}");
                let received = channel.receive().await.unwrap_err();
                assert!(
                    is(&received, |e| matches!(e, DtlsError::Closed)),
                    "{received:?}"
                );
                channel.close().await;
                Ok(())
            })
            .await
        })
        .await;
    });
}

/// Trio: test_dtls.py::test_client_multiplex — one client endpoint, two servers; closing
/// the endpoint closes its channels and refuses new ones and `serve`.
#[test]
fn client_multiplex() {
    real_time(async {
        let pair = configs();
        echo_server_with(
            pair.clone(),
            None,
            Arc::default(),
            |_, addr1, config| async move {
                echo_server_with(pair, None, Arc::default(), |_, addr2, _| async move {
                    open_endpoint(bind("127.0.0.1:0").await, |client| async move {
                        let (one, two) = (
                            client.connect(addr1, &config)?,
                            client.connect(addr2, &config)?,
                        );
                        one.send(b"abc").await?;
                        two.send(b"xyz").await?;
                        assert_eq!(two.receive().await?, b"xyz");
                        assert_eq!(one.receive().await?, b"abc");
                        client.close();
                        assert!(is(&one.send(b"x").await.unwrap_err(), |e| matches!(
                            e,
                            DtlsError::Closed
                        )));
                        assert!(is(&two.receive().await.unwrap_err(), |e| matches!(
                            e,
                            DtlsError::Closed
                        )));
                        assert!(matches!(
                            client.connect(addr1, &config),
                            Err(DtlsError::Closed)
                        ));
                        let (server_config, _) = configs();
                        let serve = client
                            .serve(server_config, |_| async { Ok(()) })
                            .await
                            .unwrap_err();
                        assert!(is(&serve, |e| matches!(e, DtlsError::Closed)));
                        Ok(())
                    })
                    .await
                })
                .await;
                Ok(())
            },
        )
        .await;
    });
}

/// Trio: test_dtls.py::test_double_serve — a second `serve` is a typed busy error; after the
/// first ends, serving works again.
#[test]
fn double_serve() {
    real_time(async {
        open_endpoint(bind("127.0.0.1:0").await, |server| async move {
            let scope = trellis::CancelScope::new();
            let later = server.clone();
            let err = trellis::open_nursery(|n| async move {
                let (first, cancel) = (server.clone(), scope.clone());
                n.start_soon(async move {
                    cancel
                        .run(first.serve(configs().0, |_| async { Ok(()) }))
                        .await
                        .map(drop)
                })?;
                // The first now waits for peers: it serves.
                trellis::testing::wait_all_tasks_blocked().await?;
                let err = server
                    .serve(configs().0, |_| async { Ok(()) })
                    .await
                    .unwrap_err();
                scope.cancel();
                Ok::<_, trellis::Error>(err)
            })
            .await?
            .expect("not cancelled");
            assert!(
                is(&err, |e| matches!(e, DtlsError::AlreadyServing)),
                "{err:?}"
            );
            // The first has ended (its nursery closed): serving works again, until cancelled.
            let again = trellis::move_on_after(
                Duration::from_millis(20),
                later.serve(configs().0, |_| async { Ok(()) }),
            )
            .await?;
            assert!(again.is_none(), "served until the deadline");
            Ok(())
        })
        .await
        .unwrap();
    });
}

/// Trio: test_dtls.py::test_connect_to_non_server — a handshake with a socket that never
/// answers resends until a deadline stops it (on the autojump clock: no real waiting).
#[test]
fn connect_to_non_server() {
    trellis::testing::run_test(async {
        let (_, config) = configs();
        let silent = bind("127.0.0.1:0").await;
        let addr = silent.local_addr().unwrap();
        open_endpoint(bind("127.0.0.1:0").await, |client| async move {
            let channel = client.connect(addr, &config)?;
            let outcome = trellis::move_on_after(
                Duration::from_secs(100),
                channel.do_handshake(Duration::from_secs(1)),
            )
            .await?;
            assert!(outcome.is_none(), "the handshake cannot finish");
            Ok(())
        })
        .await
        .unwrap();
        drop(silent);
    });
}

/// Trio: test_dtls.py::test_incoming_buffer_overflow — a channel whose reader is behind
/// keeps its queue's worth and counts the rest; it works normally afterwards.
#[test]
fn incoming_buffer_overflow() {
    real_time(async {
        echo_server(None, Arc::default(), |_, addr, config| async move {
            open_endpoint(bind("127.0.0.1:0").await, |client| async move {
                client.set_incoming_queue(10);
                let channel = client.connect(addr, &config)?;
                for i in 0..25 {
                    channel.send(format!("{i}").as_bytes()).await?;
                }
                trellis::fail_after(Duration::from_secs(10), async {
                    while client.statistics().queue_overflows < 15 {
                        trellis::sleep(Duration::from_millis(1)).await?;
                    }
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                assert_eq!(client.statistics().queue_overflows, 15);
                assert_eq!(channel.statistics().queue_overflows, 15);
                for i in 0..10 {
                    assert_eq!(channel.receive().await?, format!("{i}").as_bytes());
                }
                channel.send(b"buffer clear now").await?;
                assert_eq!(channel.receive().await?, b"buffer clear now");
                Ok(())
            })
            .await
        })
        .await;
    });
}

/// Trio: test_dtls.py::test_server_socket_doesnt_crash_on_garbage — garbage, truncated and
/// malformed ClientHellos are counted and dropped; the server goes on serving.
#[test]
fn server_survives_garbage() {
    real_time(async {
        echo_server(None, Arc::default(), |server, addr, config| async move {
            let raw = bind("127.0.0.1:0").await;
            let mut hello = vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 22, 1];
            hello.extend_from_slice(&[0, 0, 10, 0, 0, 0, 0, 0, 0, 10]);
            hello.extend_from_slice(&[0u8; 10]);
            for garbage in [
                &b"\x00"[..],
                b"hello world, this is not DTLS",
                &hello,
                &hello[..20],
                &[22u8; 200],
            ] {
                raw.send_to(garbage, addr).await?;
            }
            // The server is fine: a real client gets its echo.
            open_endpoint(bind("127.0.0.1:0").await, |client| async move {
                let channel = client.connect(addr, &config)?;
                channel.send(b"still there?").await?;
                assert_eq!(channel.receive().await?, b"still there?");
                Ok(())
            })
            .await?;
            let stats = server.statistics();
            assert!(stats.bad_packets + stats.packets_dropped >= 5, "{stats:?}");
            Ok(())
        })
        .await;
    });
}

/// Trio: test_dtls.py::test_association_replaced_before_handshake_starts /
/// test_association_replaced_while_handshake_running — a new connection from the same
/// address replaces the old association on both sides; the old channels get a typed error.
#[test]
fn association_replaced() {
    real_time(async {
        let handlers = Arc::new(AtomicUsize::new(0));
        let count = handlers.clone();
        echo_server(None, handlers, |_, addr, config| async move {
            open_endpoint(bind("127.0.0.1:0").await, |client| async move {
                let old = client.connect(addr, &config)?;
                old.send(b"first").await?;
                assert_eq!(old.receive().await?, b"first");
                let new = client.connect(addr, &config)?;
                let err = old.send(b"again").await.unwrap_err();
                assert!(
                    is(
                        &err,
                        |e| matches!(e, DtlsError::PeerReconnected(a) if *a == addr)
                    ),
                    "{err:?}"
                );
                new.send(b"second").await?;
                assert_eq!(new.receive().await?, b"second");
                Ok(())
            })
            .await
        })
        .await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "the server saw two associations"
        );
    });
}

/// Trio: test_dtls.py::test_client_cancels_handshake_and_starts_new_one — a handshake
/// cancelled part-way, then a new connection from the same endpoint works.
#[test]
fn cancelled_handshake_then_a_new_one() {
    real_time(async {
        echo_server(None, Arc::default(), |_, addr, config| async move {
            open_endpoint(bind("127.0.0.1:0").await, |client| async move {
                let first = client.connect(addr, &config)?;
                let cut = trellis::move_on_after(
                    Duration::from_micros(50),
                    first.do_handshake(Duration::from_secs(1)),
                )
                .await?;
                let _ = cut;
                let second = client.connect(addr, &config)?;
                second.send(b"after the cancel").await?;
                assert_eq!(second.receive().await?, b"after the cancel");
                Ok(())
            })
            .await
        })
        .await;
    });
}

/// The stateless cookie exchange over a real socket: a ClientHello without a cookie gets
/// exactly one datagram back, a HelloVerifyRequest no larger than the ClientHello, and the
/// server keeps nothing for it (no handler runs, however many come).
#[test]
fn cookie_exchange_is_stateless_and_does_not_amplify() {
    real_time(async {
        let handlers = Arc::new(AtomicUsize::new(0));
        let count = handlers.clone();
        echo_server(None, handlers, |server, addr, _| async move {
            // Until `serve` waits for peers, a ClientHello is dropped (nobody serves), and
            // this raw client does not resend as a real one would.
            trellis::testing::wait_all_tasks_blocked().await?;
            let raw = bind("127.0.0.1:0").await;
            // A ClientHello as OpenSSL's client sends it, without a cookie, written out: a
            // record header (handshake, DTLS 1.0, epoch and sequence 0, length), a handshake
            // header (ClientHello, length, message 0, one whole fragment), then the body.
            let mut body = vec![254, 253];
            body.extend_from_slice(&[9u8; 32]);
            body.extend_from_slice(&[0, 0, 0, 4, 0xc0, 0x2b, 0xc0, 0x2f, 1, 0]);
            let len = u32::try_from(body.len()).unwrap().to_be_bytes();
            let mut hello = vec![22, 254, 255, 0, 0, 0, 0, 0, 0, 0, 0];
            hello.extend_from_slice(&u16::try_from(12 + body.len()).unwrap().to_be_bytes());
            hello.push(1);
            hello.extend_from_slice(&len[1..]);
            hello.extend_from_slice(&[0, 0, 0, 0, 0]);
            hello.extend_from_slice(&len[1..]);
            hello.extend_from_slice(&body);
            let mut reply = vec![0u8; 2048];
            for _ in 0..50 {
                raw.send_to(&hello, addr).await?;
                let (n, from) =
                    trellis::fail_after(Duration::from_secs(10), raw.recv_from(&mut reply)).await?;
                assert_eq!(from, addr);
                assert!(n <= hello.len(), "{n} > {}", hello.len());
                // A handshake record carrying a HelloVerifyRequest.
                assert!(n > 13, "{n} bytes");
                assert_eq!((reply[0], reply[13]), (22, 3), "a HelloVerifyRequest");
            }
            assert_eq!(server.statistics().challenges_sent, 50);
            Ok(())
        })
        .await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "no association without a cookie"
        );
    });
}

/// 200 clients in one burst: every handshake completes and echoes, also those that found the
/// server's queue of new associations full (they are not left half-admitted: their next
/// ClientHello is served).
#[test]
fn a_burst_of_clients_all_complete() {
    real_time(async {
        echo_server(None, Arc::default(), |server, addr, config| async move {
            let done = Arc::new(AtomicUsize::new(0));
            let counted = done.clone();
            let outcome = trellis::fail_after(Duration::from_secs(120), async {
                trellis::open_nursery(|n| async move {
                    for i in 0..200u32 {
                        let (config, done) = (config.clone(), counted.clone());
                        n.start_soon(async move {
                            open_endpoint(bind("127.0.0.1:0").await, |client| async move {
                                let channel = client.connect(addr, &config)?;
                                let hello = i.to_be_bytes();
                                channel.send(&hello).await?;
                                assert_eq!(channel.receive().await?, hello);
                                done.fetch_add(1, Ordering::SeqCst);
                                Ok::<_, trellis::Error>(())
                            })
                            .await
                        })?;
                    }
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                Ok::<_, trellis::Error>(done.load(Ordering::SeqCst))
            })
            .await;
            let stats = server.statistics();
            assert_eq!(outcome.ok(), Some(200), "{stats:?}");
            Ok(())
        })
        .await;
    });
}

/// A channel's operations are checkpoints: in a cancelled scope they fail with
/// `DtlsError::Cancelled` (matched as it is), which the scope catches, and which stays a
/// cancellation as a `trellis::Error`; `fail_after` around one gives `DtlsError::TooSlow`.
#[test]
fn typed_errors_cancelled_and_too_slow() {
    trellis::testing::run_test_multi_thread(async {
        open_endpoint(bind("127.0.0.1:0").await, |endpoint| async move {
            let (_, client) = configs();
            // Nobody answers there: the handshake waits.
            let silent = bind("127.0.0.1:0").await;
            let channel = endpoint.connect(silent.local_addr()?, &client)?;
            let scope = trellis::CancelScope::new();
            scope.cancel();
            let caught = scope
                .run(async {
                    let err = channel.receive().await.unwrap_err();
                    assert!(matches!(err, DtlsError::Cancelled(_)), "{err:?}");
                    assert!(trellis::Error::from(err).is_cancelled());
                    channel.receive().await?;
                    Ok::<_, DtlsError>(())
                })
                .await;
            assert!(matches!(caught, Ok(None)), "{caught:?}");
            let err = trellis::fail_after(
                Duration::from_millis(200),
                channel.do_handshake(Duration::from_secs(1)),
            )
            .await
            .unwrap_err();
            assert!(matches!(err, DtlsError::TooSlow(_)), "{err:?}");
            Ok(())
        })
        .await
        .unwrap();
    });
}
