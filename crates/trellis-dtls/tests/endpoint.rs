//! The endpoint over real UDP sockets on the loopback interface, ported from Trio's
//! `test_dtls.py` (each test names the original).

use std::net::SocketAddr;
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslContextBuilder, SslMethod, SslVerifyMode};
use openssl::x509::{X509, X509NameBuilder};
use trellis_dtls::{ClientConfig, DtlsError, ServerConfig, open_endpoint};
use trellis_net::UdpSocket;

/// A self-signed certificate for `localhost` and its key.
fn certificate() -> (X509, PKey<Private>) {
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

fn configs() -> (ServerConfig, ClientConfig) {
    let (cert, key) = certificate();
    let mut server = SslContextBuilder::new(SslMethod::dtls()).unwrap();
    server.set_certificate(&cert).unwrap();
    server.set_private_key(&key).unwrap();
    let mut client = SslContextBuilder::new(SslMethod::dtls()).unwrap();
    client.cert_store_mut().add_cert(cert).unwrap();
    client.set_verify(SslVerifyMode::PEER);
    (ServerConfig::new(server), ClientConfig::new(client))
}

async fn bind(addr: &str) -> UdpSocket {
    UdpSocket::bind(addr).await.unwrap()
}

/// Runs an echo server on `server_addr` and `client` against it.
async fn with_echo_server<F, Fut>(server_addr: &str, client: F)
where
    F: FnOnce(SocketAddr, ClientConfig) -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    let (server_config, client_config) = configs();
    let server_socket = bind(server_addr).await;
    let addr = server_socket.local_addr().unwrap();
    open_endpoint(server_socket, |server| async move {
        trellis::open_nursery(|n| async move {
            let serving = server.clone();
            n.start_soon(async move {
                serving
                    .serve(server_config, |channel| async move {
                        loop {
                            let data = match channel.receive().await {
                                Ok(data) => data,
                                Err(e) => match e.downcast_ref::<DtlsError>() {
                                    Some(DtlsError::Closed) => return Ok(()),
                                    _ => return Err(e),
                                },
                            };
                            channel.send(&data).await?;
                        }
                    })
                    .await
            })?;
            client(addr, client_config).await?;
            n.cancel();
            Ok::<_, trellis::Error>(())
        })
        .await?;
        Ok(())
    })
    .await
    .unwrap();
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
                assert!(
                    matches!(err.downcast_ref(), Some(DtlsError::Handshake { .. })),
                    "{err:?}"
                );
                Ok(())
            })
            .await
        })
        .await;
    });
}
