//! TLS over any trellis stream, with rustls: the handshake is a checkpoint, and certificate
//! and server-name failures are typed errors.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use trellis::TaskStatus;

use crate::serve_listeners;
use crate::socket::SocketStream;
use crate::stream::StreamError;
use crate::tcp::{TcpListener, TcpStream, open_tcp_listeners, open_tcp_stream};

/// A TLS stream over `S` (client or server side).
pub type TlsStream<S> = SocketStream<tokio_rustls::TlsStream<S>>;

/// Why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The server name is not one rustls accepts (not a DNS name or IP address).
    #[error("invalid server name {0:?}")]
    InvalidServerName(String),
    /// The peer's certificate is not valid for the name we connected to.
    #[error("the peer's certificate is not valid for {name}")]
    NameMismatch {
        /// The name.
        name: String,
    },
    /// The peer's certificate was refused (unknown issuer, expired, bad signature, …).
    #[error("the peer's certificate was refused: {0}")]
    Certificate(rustls::CertificateError),
    /// The peer refused our handshake with an alert.
    #[error("the peer refused the handshake: {0:?}")]
    Alert(rustls::AlertDescription),
    /// Any other failure of the handshake (the connection broke, the peer is not speaking TLS).
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

fn classify(error: std::io::Error, name: &str) -> TlsError {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return TlsError::Handshake(error);
    };
    match tls {
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
            ..
        }) => TlsError::NameMismatch {
            name: name.to_owned(),
        },
        rustls::Error::InvalidCertificate(other) => TlsError::Certificate(other.clone()),
        rustls::Error::AlertReceived(alert) => TlsError::Alert(*alert),
        _ => TlsError::Handshake(error),
    }
}

/// Runs the client side of a TLS handshake over `stream` for `server_name`; a checkpoint.
///
/// # Errors
///
/// A [`TlsError`], or `Cancelled`.
pub async fn tls_client<S>(
    stream: S,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Result<TlsStream<S>, trellis::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    trellis::checkpoint_if_cancelled()?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| TlsError::InvalidServerName(server_name.to_owned()))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = trellis::cancellable(connector.connect(name, stream))
        .await?
        .map_err(|e| classify(e, server_name))?;
    Ok(SocketStream::new(tokio_rustls::TlsStream::Client(stream)))
}

/// Runs the server side of a TLS handshake over `stream`; a checkpoint.
///
/// # Errors
///
/// A [`TlsError`], or `Cancelled`.
pub async fn tls_server<S>(
    stream: S,
    config: Arc<rustls::ServerConfig>,
) -> Result<TlsStream<S>, trellis::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    trellis::checkpoint_if_cancelled()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let stream = trellis::cancellable(acceptor.accept(stream))
        .await?
        .map_err(|e| classify(e, "client"))?;
    Ok(SocketStream::new(tokio_rustls::TlsStream::Server(stream)))
}

/// The TCP stream under a [`TcpStream`], for layering TLS on it.
fn tcp_inner(stream: TcpStream) -> Result<tokio::net::TcpStream, StreamError> {
    stream.into_inner().ok_or(StreamError::Closed)
}

/// Connects to `host:port` (happy eyeballs) and runs the TLS handshake for `host`.
///
/// # Errors
///
/// The connection's or the handshake's error, or `Cancelled`.
pub async fn open_tls_over_tcp_stream(
    host: &str,
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<tokio::net::TcpStream>, trellis::Error> {
    let tcp = tcp_inner(open_tcp_stream(host, port).await?)?;
    tls_client(tcp, config, host).await
}

/// Serves TLS on `port`: each connection's handshake runs in the connection's own task (a slow
/// client holds up nobody), then `handler` gets the TLS stream. A failed handshake ends that
/// connection only. The bound addresses are reported through `status`.
///
/// # Errors
///
/// When no listener can be bound; a handler's failure; `Cancelled`.
pub async fn serve_tls_over_tcp<H, Fut>(
    handler: H,
    port: u16,
    config: Arc<rustls::ServerConfig>,
    status: TaskStatus<Vec<SocketAddr>>,
) -> Result<(), trellis::Error>
where
    H: Fn(TlsStream<tokio::net::TcpStream>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), trellis::Error>> + Send + 'static,
{
    let listeners = open_tcp_listeners(port, None).await?;
    let addrs = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?;
    status.started(addrs);
    let per_connection = move |tcp: TcpStream| {
        let (handler, config) = (handler.clone(), config.clone());
        async move {
            let tcp = tcp_inner(tcp)?;
            match tls_server(tcp, config).await {
                Ok(tls) => handler(tls).await,
                Err(e) if e.is_cancelled() => Err(e),
                Err(e) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    Ok(())
                }
            }
        }
    };
    serve_listeners(per_connection, listeners, None).await
}
