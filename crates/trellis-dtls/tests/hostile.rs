//! The endpoint under hostile and bursty load, over real UDP sockets on the loopback
//! interface: refused handshakes answered with an alert, the association cap, handshakes that
//! run out of time, dropped channels, and junk. Each association the server held is accounted
//! for in its statistics.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use openssl::ssl::{SslContextBuilder, SslMethod, SslVersion};
use trellis_dtls::{ClientConfig, DtlsChannel, DtlsError, open_endpoint};

use common::{
    Rng, bind, certificate, echo_once, echo_server, real_time, serve_with, until, vanish,
};

/// A client that offers DTLS 1.0 only, which the server (OpenSSL's defaults) refuses.
fn dtls10_client() -> ClientConfig {
    let (cert, _) = certificate();
    let mut builder = SslContextBuilder::new(SslMethod::dtls()).unwrap();
    builder.set_security_level(0);
    builder
        .set_max_proto_version(Some(SslVersion::DTLS1))
        .unwrap();
    builder.cert_store_mut().add_cert(cert).unwrap();
    ClientConfig::new(builder)
}

/// 300 clients the server refuses (they offer DTLS 1.0): each receives the server's
/// protocol_version alert, so its handshake fails at once instead of retransmitting to its own
/// timeout, and the server holds nothing for any of them; serving goes on.
#[test]
fn refused_clients_get_an_alert_and_leave_no_state() {
    real_time(async {
        echo_server(None, Arc::default(), |server, addr, config| async move {
            let refused = Arc::new(AtomicUsize::new(0));
            let counted = refused.clone();
            trellis::fail_after(Duration::from_secs(120), async {
                trellis::open_nursery(|n| async move {
                    let old = dtls10_client();
                    for _ in 0..300 {
                        let (old, refused) = (old.clone(), counted.clone());
                        n.start_soon(async move {
                            open_endpoint(bind("127.0.0.1:0").await, |client| async move {
                                let channel = client.connect(addr, &old)?;
                                // Without the alert this retransmits until the test's deadline.
                                let err = channel
                                    .do_handshake(Duration::from_secs(1))
                                    .await
                                    .unwrap_err();
                                match &err {
                                    DtlsError::Handshake { reason, .. }
                                        if reason.contains("alert protocol version") =>
                                    {
                                        refused.fetch_add(1, Ordering::SeqCst);
                                    }
                                    _ => panic!("not the server's alert: {err:?}"),
                                }
                                Ok(())
                            })
                            .await
                        })?;
                    }
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                assert_eq!(refused.load(Ordering::SeqCst), 300);
                // A ClientHello sent again before the alert arrived starts an association that
                // fails in turn (and sends its alert): at least 300 failures, then nothing held.
                until(&server, |s| {
                    s.handshakes_failed >= 300 && s.live == 0 && s.handshaking == 0
                })
                .await?;
                // The server still serves.
                echo_once(addr, config, b"still here").await
            })
            .await
        })
        .await;
    });
}

/// With room for two associations, a third client is refused (counted) while two are held,
/// and admitted by its next ClientHello once one of them has ended.
#[test]
fn the_cap_refuses_then_admits() {
    real_time(async {
        echo_server(None, Arc::default(), |server, addr, config| async move {
            server.set_max_associations(2);
            trellis::fail_after(Duration::from_secs(60), async {
                open_endpoint(bind("127.0.0.1:0").await, |a| async move {
                    open_endpoint(bind("127.0.0.1:0").await, |b| async move {
                        let first = a.connect(addr, &config)?;
                        let second = b.connect(addr, &config)?;
                        first.send(b"1").await?;
                        second.send(b"2").await?;
                        assert_eq!(first.receive().await?, b"1");
                        assert_eq!(second.receive().await?, b"2");
                        let watched = server.clone();
                        let third = trellis::open_nursery(|n| async move {
                            let config = config.clone();
                            let third =
                                n.start_soon(async move { echo_once(addr, config, b"3").await })?;
                            let stats = until(&watched, |s| s.refused_by_cap >= 2).await?;
                            assert_eq!(stats.live, 2, "{stats:?}");
                            assert_eq!(stats.handshaking, 0, "{stats:?}");
                            assert!(!third.is_finished());
                            first.close().await;
                            Ok::<_, trellis::Error>(third)
                        })
                        .await?
                        .expect("the nursery ran to its end");
                        assert!(third.is_finished());
                        let stats = until(&server, |s| s.live == 1).await?;
                        assert!(stats.refused_by_cap >= 2, "{stats:?}");
                        Ok(())
                    })
                    .await
                })
                .await
            })
            .await
        })
        .await;
    });
}

/// A channel whose every clone is dropped, without `close`, leaves its endpoint's table: on
/// the client, and on the server when a handler drops its channel.
#[test]
fn a_dropped_channel_leaves_the_table() {
    real_time(async {
        let handler = |channel: DtlsChannel| async move {
            let data = channel.receive().await?;
            channel.send(&data).await?;
            // Returns without closing: the channel is dropped.
            Ok(())
        };
        let (configs, socket) = (common::configs(), bind("127.0.0.1:0").await);
        serve_with(
            configs,
            socket,
            handler,
            |server, addr, config| async move {
                trellis::fail_after(Duration::from_secs(30), async {
                    open_endpoint(bind("127.0.0.1:0").await, |client| async move {
                        let channel = client.connect(addr, &config)?;
                        channel.send(b"once").await?;
                        assert_eq!(channel.receive().await?, b"once");
                        let held = client.statistics();
                        assert_eq!((held.live, held.handshaking), (1, 0));
                        drop(channel);
                        let left = client.statistics();
                        assert_eq!((left.live, left.handshaking), (0, 0));
                        until(&server, |s| s.live == 0 && s.handshaking == 0).await?;
                        Ok(())
                    })
                    .await
                })
                .await
            },
        )
        .await;
    });
}

/// 200 clients admitted that vanish mid-handshake: once the handshake timeout has passed,
/// every association is gone and counted, the server's handlers have ended, and it still
/// serves.
#[test]
fn vanished_handshakes_are_dropped_at_the_deadline() {
    real_time(async {
        let handlers = Arc::new(AtomicUsize::new(0));
        echo_server(None, handlers.clone(), |server, addr, config| async move {
            server.set_handshake_timeout(Duration::from_secs(2));
            trellis::fail_after(Duration::from_secs(120), async {
                let clients = config.clone();
                trellis::open_nursery(|n| async move {
                    for _ in 0..200 {
                        n.start_soon(vanish(addr, clients.clone()))?;
                    }
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                let stats = until(&server, |s| s.dropped_by_deadline == 200).await?;
                assert_eq!((stats.live, stats.handshaking), (0, 0), "{stats:?}");
                assert_eq!(handlers.load(Ordering::SeqCst), 200);
                echo_once(addr, config, b"after").await
            })
            .await
        })
        .await;
    });
}

/// 50,000 junk datagrams (random bytes, and ClientHello-shaped ones with random cookies or
/// cut short) from four sockets, while 20 real clients handshake and echo: every real client
/// is served, the junk is dropped or challenged, and none of it is admitted.
#[test]
fn junk_interleaved_with_real_clients() {
    real_time(async {
        echo_server(None, Arc::default(), |server, addr, config| async move {
            trellis::fail_after(Duration::from_secs(120), async {
                let clients = config.clone();
                trellis::open_nursery(|n| async move {
                    for sender in 0..4u64 {
                        n.start_soon(async move {
                            let socket = bind("127.0.0.1:0").await;
                            let mut rng = Rng::new(sender + 1);
                            for i in 0..12_500u32 {
                                let junk = junk(&mut rng);
                                socket.send_to(&junk, addr).await?;
                                if i % 64 == 0 {
                                    // Let the receive loop keep up: loopback drops what
                                    // overflows the socket buffer, and these must arrive.
                                    trellis::sleep(Duration::from_millis(1)).await?;
                                }
                            }
                            Ok::<_, trellis::Error>(())
                        })?;
                    }
                    for i in 0..20u32 {
                        let config = clients.clone();
                        n.start_soon(
                            async move { echo_once(addr, config, &i.to_be_bytes()).await },
                        )?;
                    }
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                // Every real client was served (the nursery ended). No junk was admitted: at
                // most the 20 real associations remain (a close_notify lost among the junk
                // leaves its association to its handler), none failed.
                let stats = server.statistics();
                assert!(stats.live + stats.handshaking <= 20, "{stats:?}");
                assert_eq!(stats.handshakes_failed, 0, "{stats:?}");
                // The junk reached the server and was each dropped or challenged (loopback
                // may lose some when the receive loop falls behind; most arrive).
                let seen = stats.bad_packets + stats.packets_dropped + stats.challenges_sent;
                assert!(seen >= 25_000, "{stats:?}");
                Ok(())
            })
            .await
        })
        .await;
    });
}

/// Junk: random bytes, a ClientHello-shaped datagram with a random cookie, or one cut short.
fn junk(rng: &mut Rng) -> Vec<u8> {
    let len = 1 + rng.below(300) as usize;
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
    match rng.below(3) {
        0 => bytes,
        kind => {
            // A record header for a handshake, then a ClientHello's header.
            let mut hello = vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0];
            hello.extend_from_slice(&u16::try_from(len + 12).unwrap().to_be_bytes());
            hello.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            hello.append(&mut bytes);
            if kind == 2 {
                hello.truncate(hello.len() / 2);
            }
            hello
        }
    }
}
