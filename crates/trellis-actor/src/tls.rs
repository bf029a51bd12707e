//! TLS 1.3 for actors over TCP, with mutual certificate authentication: every actor of a tree
//! holds a certificate issued by the tree's CA for the addresses it listens on, presents it
//! on every connection, and accepts only peers whose certificates that CA issued. The secret's
//! handshake (`docs/wire-protocol.md` §4) still runs inside.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why a tree's TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A PEM file could not be read or holds nothing of the kind expected.
    #[error("{what} in {path}: {reason}")]
    Pem {
        /// What was looked for (the CA's certificate, this host's chain, its key).
        what: &'static str,
        /// Where.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the certificates or the key.
    #[error("the tree's TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The TLS identity of one actor host in a tree: the tree CA's certificate (which peers must
/// be issued by) and this host's certificate chain and key. Give it to
/// [`Config::tls`](crate::Config::tls).
#[derive(Clone)]
pub struct TreeTls {
    pub(crate) server: Arc<rustls::ServerConfig>,
    pub(crate) client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TreeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeTls").finish_non_exhaustive()
    }
}

/// The files of a host's TLS directory ([`TreeTls::from_dir`]): the tree CA's certificate,
/// this host's certificate chain, its private key.
pub const TLS_DIR_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];

impl TreeTls {
    /// From a directory holding the [`TLS_DIR_FILES`] (as
    /// [`HostCert::write_to`](dev::HostCert::write_to) writes them): `ca.pem`, `cert.pem`,
    /// `key.pem`.
    ///
    /// # Errors
    ///
    /// As [`from_pem_files`](TreeTls::from_pem_files).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<TreeTls, TlsSetupError> {
        let [ca, chain, key] = TLS_DIR_FILES.map(|name| dir.as_ref().join(name));
        TreeTls::from_pem_files(ca, chain, key)
    }

    /// From PEM files: the tree CA's certificate, this host's certificate chain (its own
    /// first), and its private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    ///
    /// A file cannot be read or parsed, or rustls refuses what it holds.
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TreeTls, TlsSetupError> {
        let pem = |what, path: &Path, reason: String| TlsSetupError::Pem {
            what,
            path: path.display().to_string(),
            reason,
        };
        let certs = |what, path: &Path| -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| pem(what, path, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem(what, path, e.to_string()))?;
            if certs.is_empty() {
                return Err(pem(what, path, "no certificate".into()));
            }
            Ok(certs)
        };
        let (ca, chain, key) = (ca.as_ref(), chain.as_ref(), key.as_ref());
        let ca = certs("the CA's certificate", ca)?;
        let chain = certs("this host's certificate chain", chain)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| pem("this host's private key", key, e.to_string()))?;
        TreeTls::new(ca, chain, key)
    }

    /// From DER certificates and key, as [`from_pem_files`](TreeTls::from_pem_files).
    ///
    /// # Errors
    ///
    /// rustls refuses the certificates or the key.
    pub fn new(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TreeTls, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in ca {
            roots.add(cert)?;
        }
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(TreeTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

type Stream = tokio_rustls::TlsStream<TcpStream>;

/// Runs the client side of the TLS handshake with the actor at `addr` (its certificate must
/// name that IP address).
pub(crate) async fn connect(
    tls: &TreeTls,
    tcp: TcpStream,
    addr: std::net::SocketAddr,
) -> io::Result<(Reader, Writer)> {
    let name = ServerName::IpAddress(addr.ip().into());
    let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
    let stream = connector.connect(name, tcp).await?;
    Ok(split(tokio_rustls::TlsStream::Client(stream)))
}

/// Runs the server side of the TLS handshake on an accepted connection.
pub(crate) async fn accept(tls: &TreeTls, tcp: TcpStream) -> io::Result<(Reader, Writer)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
    let stream = acceptor.accept(tcp).await?;
    Ok(split(tokio_rustls::TlsStream::Server(stream)))
}

/// The two halves of a TLS stream, sharing it under a lock (each poll holds it briefly).
fn split(stream: Stream) -> (Reader, Writer) {
    let shared = Arc::new(Mutex::new(stream));
    (
        Reader {
            stream: shared.clone(),
        },
        Writer { stream: shared },
    )
}

fn lock(stream: &Mutex<Stream>) -> MutexGuard<'_, Stream> {
    stream.lock().unwrap_or_else(|e| e.into_inner())
}

/// The receiving half of a TLS connection.
pub(crate) struct Reader {
    stream: Arc<Mutex<Stream>>,
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.stream)).poll_read(cx, buf)
    }
}

/// The sending half of a TLS connection, with the transport writer's contract: writes never
/// wait, [`writable`](Writer::writable) waits for room. Dropping it says `close_notify` and
/// shuts the sending direction down.
pub(crate) struct Writer {
    stream: Arc<Mutex<Stream>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tls::Writer")
    }
}

/// Whether rustls holds records it has not written to the socket yet.
fn buffered(stream: &Stream) -> bool {
    match stream {
        tokio_rustls::TlsStream::Client(s) => s.get_ref().1.wants_write(),
        tokio_rustls::TlsStream::Server(s) => s.get_ref().1.wants_write(),
    }
}

fn socket(stream: &Stream) -> &TcpStream {
    match stream {
        tokio_rustls::TlsStream::Client(s) => s.get_ref().0,
        tokio_rustls::TlsStream::Server(s) => s.get_ref().0,
    }
}

impl Writer {
    /// Encrypts as much of `buf` as rustls takes now and writes what the socket takes.
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut stream = lock(&self.stream);
        match Pin::new(&mut *stream).poll_write(&mut cx, buf) {
            Poll::Ready(Ok(n)) => {
                // Records the socket did not take wait for `writable`.
                let _ = Pin::new(&mut *stream).poll_flush(&mut cx);
                Ok(n)
            }
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Whether encrypted records wait to be written.
    pub(crate) fn has_buffered(&self) -> bool {
        buffered(&lock(&self.stream))
    }

    /// Waits until the records rustls holds are written and the socket has room.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut stream = lock(&self.stream);
            if buffered(&stream) {
                match Pin::new(&mut *stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                }
            }
            socket(&stream).poll_write_ready(cx)
        })
        .await
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let mut stream = lock(&self.stream);
        match &mut *stream {
            tokio_rustls::TlsStream::Client(s) => s.get_mut().1.send_close_notify(),
            tokio_rustls::TlsStream::Server(s) => s.get_mut().1.send_close_notify(),
        }
        let mut cx = Context::from_waker(Waker::noop());
        let _ = Pin::new(&mut *stream).poll_flush(&mut cx);
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(socket(&stream)),
            nix::sys::socket::Shutdown::Write,
        );
    }
}

/// Development certificates: a tree CA, and certificates it issues for hosts. Not for
/// production (the CA's key lives in memory and in whatever files you write it to).
#[cfg(feature = "dev-certs")]
pub mod dev {
    use super::{TlsSetupError, TreeTls};
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    /// A tree CA made on the spot.
    pub struct DevCa {
        cert: rcgen::Certificate,
        key: rcgen::KeyPair,
    }

    impl std::fmt::Debug for DevCa {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("DevCa").finish_non_exhaustive()
        }
    }

    /// One host's certificate and key, issued by a [`DevCa`], in PEM.
    #[derive(Debug, Clone)]
    pub struct HostCert {
        /// The CA's certificate.
        pub ca_pem: String,
        /// The host's certificate.
        pub cert_pem: String,
        /// The host's private key (PKCS#8).
        pub key_pem: String,
    }

    impl DevCa {
        /// A new CA named `name`.
        ///
        /// # Panics
        ///
        /// If the key cannot be generated (the system has no randomness).
        pub fn new(name: &str) -> DevCa {
            let key = rcgen::KeyPair::generate().expect("a key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.self_signed(&key).expect("a CA certificate");
            DevCa { cert, key }
        }

        /// A certificate for a host known by `names` (IP addresses or DNS names; actors are
        /// reached by IP address, so list the addresses they listen on).
        ///
        /// # Panics
        ///
        /// If a name is neither an IP address nor a valid DNS name.
        pub fn issue(&self, names: &[&str]) -> HostCert {
            let key = rcgen::KeyPair::generate().expect("a key");
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let params = rcgen::CertificateParams::new(names).expect("valid names");
            let cert = params
                .signed_by(&key, &self.cert, &self.key)
                .expect("a host certificate");
            HostCert {
                ca_pem: self.cert.pem(),
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        }
    }

    impl HostCert {
        /// The [`TreeTls`] this certificate makes.
        ///
        /// # Errors
        ///
        /// rustls refuses it (it does not: the CA made it for rustls).
        pub fn tree_tls(&self) -> Result<TreeTls, TlsSetupError> {
            use tokio_rustls::rustls::pki_types::pem::PemObject;
            let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes());
            let bad = |e: tokio_rustls::rustls::pki_types::pem::Error| TlsSetupError::Pem {
                what: "a development certificate",
                path: "memory".into(),
                reason: e.to_string(),
            };
            let key = PrivatePkcs8KeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(bad)?;
            TreeTls::new(
                vec![der(&self.ca_pem).map_err(bad)?],
                vec![der(&self.cert_pem).map_err(bad)?],
                PrivateKeyDer::Pkcs8(key),
            )
        }

        /// Writes `ca.pem`, `cert.pem` and `key.pem` (mode 0600) into `dir`, for
        /// [`TreeTls::from_dir`].
        ///
        /// # Errors
        ///
        /// A file cannot be written.
        pub fn write_to(&self, dir: &std::path::Path) -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let pems = [&self.ca_pem, &self.cert_pem, &self.key_pem];
            for (name, pem) in super::TLS_DIR_FILES.into_iter().zip(pems) {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(dir.join(name))?;
                file.write_all(pem.as_bytes())?;
            }
            Ok(())
        }
    }
}
