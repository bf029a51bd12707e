//! A tree over TCP inside TLS 1.3 with mutual certificates: calls and streams flow as over
//! plain TCP; a peer that does not speak TLS, or whose certificate another CA issued, gets
//! nowhere, and the refusal is logged.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

mod common;

use trellis_actor::dev::DevCa;
use trellis_actor::{Addr, Config, Functions, MsgStream, Secret, Transport, TreeTls, open_nursery};

const SECRET: &[u8] = b"the TLS tests' tree secret";
/// Where the test writes the tree's certificates for its children to read.
const TLS_DIR: &str = "TRELLIS_TEST_TLS_DIR";

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

async fn count_to(stream: MsgStream<Infallible, u64>, n: u64) -> Result<(), trellis::Error> {
    for i in 1..=n {
        stream.send(i).await?;
    }
    Ok(())
}

/// `n` byte strings of `size` bytes each, the `i`th filled with `i`.
async fn blobs(
    stream: MsgStream<Infallible, bytes::Bytes>,
    n: u8,
    size: usize,
) -> Result<(), trellis::Error> {
    for i in 0..n {
        stream.send(bytes::Bytes::from(vec![i; size])).await?;
    }
    Ok(())
}

/// The tree's certificates, made once per test process and written where its children find
/// them; a child reads them back.
fn tls_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os(TLS_DIR) {
            return dir.into();
        }
        let dir = std::env::temp_dir().join(format!("trellis-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        DevCa::new("trellis test tree")
            .issue(&["127.0.0.1"])
            .write_to(&dir)
            .unwrap();
        dir
    })
    .clone()
}

fn tree_tls() -> TreeTls {
    let dir = tls_dir();
    TreeTls::from_dir(&dir).unwrap()
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(add)
            .register(count_to)
            .register(blobs),
    )
    .child_args(["serve_children", "--exact", "--nocapture", "-q"])
    .secret(Secret::new(SECRET).unwrap())
    .transport(Transport::tcp_loopback())
    .tls(tree_tls())
    .child_env(TLS_DIR, tls_dir())
}

#[test]
fn serve_children() {
    if std::env::var_os(TLS_DIR).is_some() {
        trellis_actor::serve_if_child(config());
    }
}

/// Runs `body` with a child `target`'s TCP address.
fn with_target<F, Fut>(body: F)
where
    F: FnOnce(trellis_actor::Portal, std::net::SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), trellis::Error>> + Send,
{
    captured();
    common::root_with(config(), Transport::tcp_loopback(), || async move {
        open_nursery(|an| async move {
            let target = an.start_actor("target").await?;
            let addr = match target.info().await?.addr.parse() {
                Ok(Addr::Tcp(addr)) => addr,
                other => panic!("a TCP address, not {other:?}"),
            };
            body(target, addr).await?;
            an.cancel();
            Ok(())
        })
        .await
    })
    .unwrap_or_else(|e| panic!("{e:?}"));
}

/// Calls and a stream of 10,000 items (more than one TLS record's worth, with credit going
/// back) flow between actors over mutual TLS.
#[test]
fn a_tree_runs_over_mutual_tls() {
    with_target(|target, _| async move {
        assert_eq!(target.run(add, (40, 2)).await?, 42);
        let items = target
            .open_stream_from(count_to, (10_000,), |stream| async move {
                let mut last = 0;
                while let Some(i) = stream.recv().await? {
                    assert_eq!(i, last + 1);
                    last = i;
                }
                Ok(last)
            })
            .await?;
        assert_eq!(items, 10_000);
        Ok(())
    });
}

/// Long byte strings (queued as they are on the sending side, read into frames of their own
/// on the receiving side) cross TLS whole and in order.
#[test]
fn long_byte_strings_cross_tls_whole() {
    with_target(|target, _| async move {
        let sizes = target
            .open_stream_from(blobs, (20u8, 300_000usize), |stream| async move {
                let mut seen = 0u8;
                while let Some(item) = stream.recv().await? {
                    assert_eq!(item.len(), 300_000);
                    assert!(item.iter().all(|&b| b == seen), "item {seen} differs");
                    seen += 1;
                }
                Ok(seen)
            })
            .await?;
        assert_eq!(sizes, 20);
        Ok(())
    });
}

/// A peer that speaks the actor protocol without TLS gets no answer in it: the actor's first
/// bytes are not a frame, and the connection ends.
#[test]
fn a_peer_without_tls_gets_nowhere() {
    with_target(|target, addr| async move {
        let answer = trellis::threads::run_sync(move || {
            let mut raw = std::net::TcpStream::connect(addr).unwrap();
            raw.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            // A frame announcing a Hello: not a TLS ClientHello.
            let _ = raw.write_all(&[0, 0, 0, 4, 0x94, 0, 0x92, 2]);
            let mut answer = Vec::new();
            let _ = raw.read_to_end(&mut answer);
            answer
        })
        .await?;
        // Nothing, or a TLS alert record (content type 21): never a frame of the protocol.
        assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
        assert_eq!(target.run(add, (1, 2)).await?, 3);
        assert!(logged("TLS handshake failed"));
        Ok(())
    });
}

/// A client whose certificate another CA issued is refused in the TLS handshake, before any
/// byte of the actor protocol; the refusal is logged.
#[test]
fn a_certificate_from_another_ca_is_refused() {
    with_target(|target, addr| async move {
        let dir = tls_dir();
        let other = DevCa::new("somebody else").issue(&["127.0.0.1"]);
        let refused = trellis::threads::run_sync(move || {
            use tokio_rustls::rustls;
            use tokio_rustls::rustls::pki_types::pem::PemObject;
            use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
            // Trusts the tree's CA (so the actor's certificate passes), presents the other.
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let chain = vec![CertificateDer::from_pem_slice(other.cert_pem.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(other.key_pem.as_bytes()).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .unwrap();
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
            // TLS 1.3: the client's certificate is judged after the client thinks the
            // handshake is done; the refusal arrives as an alert on the first read.
            let _ = tls.write_all(&[0, 0, 0, 1, 0x90]);
            let mut buf = [0; 64];
            tls.read(&mut buf)
                .map_or_else(|e| e.to_string(), |n| format!("read {n} bytes"))
        })
        .await?;
        assert!(refused.contains("UnknownCA"), "{refused}");
        assert_eq!(target.run(add, (2, 2)).await?, 4);
        assert!(logged("TLS handshake failed"));
        Ok(())
    });
}

/// Whether a warning containing `text` reaches the root (a child's come forwarded); the limit
/// only keeps a broken build from hanging.
fn logged(text: &str) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < until {
        if captured().lock().unwrap().iter().any(|t| t.contains(text)) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Every event's text, as the root's subscriber saw it.
fn captured() -> Arc<Mutex<Vec<String>>> {
    static SEEN: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    SEEN.get_or_init(|| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let subscriber = common::TextCapture::new(move |_, text| sink.lock().unwrap().push(text));
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        seen
    })
    .clone()
}
