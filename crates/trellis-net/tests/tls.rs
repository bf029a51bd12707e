//! TLS over trellis streams, ported from Trio's `test_ssl.py` (the original named on each
//! test): the handshake and the stream conformance checks, typed certificate and name errors,
//! cancellation of a stalled handshake, and a TLS server.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use trellis_net::rustls::{self, pki_types};
use trellis_net::testing::{check_two_way_stream, echo};
use trellis_net::{
    ReceiveStream, SendStream, TlsError, TlsStream, open_tcp_stream, open_tls_over_tcp_stream,
    serve_tls_over_tcp, tls_client, tls_server,
};

/// A self-signed certificate for `localhost` and the configs that use it.
struct Pki {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn pki() -> Pki {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Pki {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

type Tls = TlsStream<tokio::net::TcpStream>;

async fn tls_pair(pki: &Pki, name: &str) -> Result<(Tls, Tls), trellis::Error> {
    let (c, s) = tcp_pair().await;
    let (client, server) = tokio::join!(
        tls_client(c, pki.client.clone(), name),
        tls_server(s, pki.server.clone())
    );
    Ok((client?, server?))
}

/// Trio: test_SSLStream_generic — TLS streams pass the two-way stream checks.
#[test]
fn tls_streams_conform() {
    trellis::testing::run_test(async {
        let pki = pki();
        check_two_way_stream(|| tls_pair(&pki, "localhost"))
            .await
            .unwrap();
    });
}

/// Trio: test_ssl_client_basics (wrong hostname) — a certificate for another name is a typed
/// error.
#[test]
fn wrong_server_name_is_a_typed_error() {
    trellis::testing::run_test(async {
        let pki = pki();
        let (c, s) = tcp_pair().await;
        let (client, _server) = tokio::join!(
            tls_client(c, pki.client.clone(), "not-localhost.example"),
            tls_server(s, pki.server.clone())
        );
        let err = client.map(drop).unwrap_err();
        assert!(
            matches!(err.downcast_ref::<TlsError>(), Some(TlsError::NameMismatch { name }) if name == "not-localhost.example"),
            "{err:?}"
        );
    });
}

/// Trio: test_ssl_client_basics (untrusted CA) — an unknown issuer is a typed error.
#[test]
fn untrusted_certificate_is_a_typed_error() {
    trellis::testing::run_test(async {
        let pki = pki();
        let empty = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        );
        let (c, s) = tcp_pair().await;
        let (client, _server) = tokio::join!(
            tls_client(c, empty, "localhost"),
            tls_server(s, pki.server.clone())
        );
        let err = client.map(drop).unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<TlsError>(),
                Some(TlsError::Certificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            ),
            "{err:?}"
        );
    });
}

/// Trio: test_ssl_handshake_failure_during_aclose-style stall: a handshake with a peer that
/// never answers is cancellable.
#[test]
fn stalled_handshake_is_cancellable() {
    trellis::testing::run_test(async {
        let pki = pki();
        let (c, _silent) = tcp_pair().await;
        let outcome = trellis::move_on_after(Duration::from_millis(100), async {
            tls_client(c, pki.client.clone(), "localhost")
                .await
                .map(drop)
        })
        .await
        .unwrap();
        assert!(outcome.is_none());
    });
}

/// Trio: test_serve_ssl_over_tcp — a TLS echo server; a client that fails its handshake does
/// not take the server down.
#[test]
fn serve_tls_over_tcp_echoes() {
    trellis::testing::run_test(async {
        let pki = pki();
        let (server_config, client_config) = (pki.server.clone(), pki.client.clone());
        trellis::open_nursery(|n| async move {
            let addrs = n
                .start(|status| serve_tls_over_tcp(echo::<Tls>, 0, server_config, status))
                .await?;
            let port = addrs[0].port();
            // Garbage instead of a ClientHello: that connection fails, the server goes on.
            let mut garbage = open_tcp_stream("127.0.0.1", port).await?;
            garbage.send_all(b"GET / HTTP/1.0\r\n\r\n").await?;
            let mut client = open_tls_over_tcp_stream("localhost", port, client_config).await?;
            client.send_all(b"over tls").await?;
            let mut got = Vec::new();
            while got.len() < 8 {
                got.extend_from_slice(&client.receive_some(64).await?);
            }
            assert_eq!(got, b"over tls");
            n.cancel();
            Ok::<_, trellis::Error>(())
        })
        .await
        .unwrap();
    });
}
