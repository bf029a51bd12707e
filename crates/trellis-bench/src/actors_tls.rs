//! B6 over TLS: round trips to a child actor over TCP inside TLS 1.3 with mutual
//! certificates, side by side with a raw tokio-rustls ping-pong of the same frame sizes
//! between the same two kinds of process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use trellis_actor::dev::DevCa;
use trellis_actor::{Config, Transport, TreeTls, open_nursery};

use crate::Comparison;

/// Where the benchmark's certificates are, for its children.
const TLS_DIR: &str = "TRELLIS_BENCH_TLS_DIR";
/// The raw TLS child's role: `ADDR:REQUEST:RESPONSE`.
const RAW_TLS_ROLE: &str = "TRELLIS_BENCH_RAW_TLS_CHILD";

fn tree_tls(dir: &Path) -> TreeTls {
    TreeTls::from_dir(dir).expect("the benchmark's certificates")
}

fn config(dir: &Path) -> Config {
    super::actors::config()
        .transport(Transport::tcp_loopback())
        .tls(tree_tls(dir))
        .child_env(TLS_DIR, dir)
}

/// Runs this process as a child of the TLS benchmark when it was started as one.
pub(crate) fn serve_roles() {
    let Some(dir) = std::env::var_os(TLS_DIR).map(PathBuf::from) else {
        return;
    };
    trellis_actor::serve_if_child(config(&dir));
    if let Ok(role) = std::env::var(RAW_TLS_ROLE) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(raw_child(&role, &dir));
        std::process::exit(0);
    }
}

/// The raw child: connects over TLS (presenting its certificate) and answers each request
/// of REQUEST bytes with RESPONSE bytes.
async fn raw_child(role: &str, dir: &Path) {
    let mut parts = role.rsplitn(3, ':');
    let response: usize = parts.next().unwrap().parse().unwrap();
    let request: usize = parts.next().unwrap().parse().unwrap();
    let addr: std::net::SocketAddr = parts.next().unwrap().parse().unwrap();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let connector = tokio_rustls::TlsConnector::from(client_config(dir));
    let mut stream = connector.connect(name, tcp).await.expect("TLS");
    let answer = vec![7u8; response];
    let mut buf = vec![0u8; request];
    while stream.read_exact(&mut buf).await.is_ok() {
        if stream.write_all(&answer).await.is_err() || stream.flush().await.is_err() {
            break;
        }
    }
}

/// rustls configurations as the actors make them: TLS 1.3 only, mutual, ring.
fn certs(dir: &Path) -> (rustls::RootCertStore, Vec<CertDer>, KeyDer) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = CertDer::pem_file_iter(dir.join("cert.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = KeyDer::from_pem_file(dir.join("key.pem")).unwrap();
    (roots, chain, key)
}

type CertDer = rustls::pki_types::CertificateDer<'static>;
type KeyDer = rustls::pki_types::PrivateKeyDer<'static>;

fn client_config(dir: &Path) -> Arc<rustls::ClientConfig> {
    let (roots, chain, key) = certs(dir);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

fn server_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    let (roots, chain, key) = certs(dir);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

/// A directory holding a fresh tree CA's certificate and one for 127.0.0.1, removed when
/// dropped.
struct CertDir(PathBuf);

impl CertDir {
    fn new() -> CertDir {
        let dir = std::env::temp_dir().join(format!("trellis-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        DevCa::new("trellis bench")
            .issue(&["127.0.0.1"])
            .write_to(&dir)
            .unwrap();
        CertDir(dir)
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// B6 over TLS: 10,000 sequential round trips per round, p50 and p99.
pub(crate) fn b6(runs: usize) -> Result<Vec<Comparison>, String> {
    const CALLS: usize = 10_000;
    let rounds = (runs / 5).max(1);
    let certs = CertDir::new();
    let dir = certs.0.clone();
    let trellis_lat = super::actors::root_runtime()
        .run(trellis_actor::run_root(
            "bench",
            config(&dir),
            || async move {
                open_nursery(|an| async move {
                    let portal = an.start_actor("rpc").await?;
                    for i in 0..200u64 {
                        portal.run(super::actors::echo, (i,)).await?;
                    }
                    let mut lat = Vec::with_capacity(CALLS * rounds);
                    for i in 0..(CALLS * rounds) as u64 {
                        let t0 = Instant::now();
                        let got = portal.run(super::actors::echo, (i,)).await?;
                        lat.push(t0.elapsed().as_secs_f64());
                        assert_eq!(got, i);
                    }
                    Ok(lat)
                })
                .await
            },
        ))
        .map_err(|e| format!("{e:?}"))?;
    let (request, response) = super::actors::call_sizes();
    let dir = certs.0.clone();
    let raw_lat = super::actors::root_runtime()
        .run(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut process = tokio::process::Command::new(std::env::current_exe().unwrap())
                .env(TLS_DIR, &dir)
                .env(RAW_TLS_ROLE, format!("{addr}:{request}:{response}"))
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn the raw child");
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&dir));
            let mut stream = acceptor.accept(tcp).await.unwrap();
            let out = vec![1u8; request];
            let mut back = vec![0u8; response];
            let mut lat = Vec::with_capacity(CALLS * rounds);
            for i in 0..(200 + CALLS * rounds) {
                let t0 = Instant::now();
                stream.write_all(&out).await.unwrap();
                stream.flush().await.unwrap();
                stream.read_exact(&mut back).await.unwrap();
                if i >= 200 {
                    lat.push(t0.elapsed().as_secs_f64());
                }
            }
            drop(stream);
            process.wait().await.unwrap();
            Ok::<_, trellis::Error>(lat)
        })
        .map_err(|e| format!("{e:?}"))?;
    let pct = crate::percentile;
    Ok([("p50 over TLS 1.3", 0.5), ("p99 over TLS 1.3", 0.99)]
        .into_iter()
        .map(|(case, p)| Comparison {
            id: "B6",
            case: case.into(),
            trellis: pct(&trellis_lat, p),
            anchor: format!(
                "raw tokio-rustls TCP ping-pong, TLS 1.3 mutual ({request} B / {response} B)"
            ),
            anchor_value: pct(&raw_lat, p),
        })
        .collect())
}
