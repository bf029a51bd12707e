//! TCP: connecting with happy eyeballs (RFC 8305's ordering, staggered attempts), listening,
//! and serving each connection in a task of a nursery.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use trellis::{ErrorGroup, TaskStatus};

use crate::socket::SocketStream;
use crate::stream::{Listener, StreamError};

/// A TCP connection (TCP_NODELAY on).
pub type TcpStream = SocketStream<tokio::net::TcpStream>;

/// The default pause between starting connection attempts (RFC 8305 recommends 250 ms).
pub const HAPPY_EYEBALLS_DELAY: Duration = Duration::from_millis(250);

/// Turns a host and port into addresses to try. The default asks the system
/// ([`SystemResolver`]); tests and special set-ups bring their own.
pub trait Resolve: Send + Sync {
    /// The addresses of `host`, in the resolver's order of preference.
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;
}

/// The system's resolver (`getaddrinfo`, on a blocking thread), as tokio does it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// How [`open_tcp_stream_with`] connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The pause before starting the next attempt while earlier ones are still pending.
    pub happy_eyeballs_delay: Duration,
    /// A local address to bind the connecting socket to.
    pub local_address: Option<IpAddr>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            happy_eyeballs_delay: HAPPY_EYEBALLS_DELAY,
            local_address: None,
        }
    }
}

/// Why a connection (TCP, or a Unix socket's) could not be made.
///
/// `?` turns it into a [`trellis::Error`] that is still a cancellation when it was one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The caller's scope was cancelled; no connection is left open.
    #[error("{0}")]
    Cancelled(#[from] trellis::Cancelled),
    /// A deadline set around the operation with [`trellis::fail_after`] (or `fail_at`)
    /// passed.
    #[error("{0}")]
    TooSlow(#[from] trellis::TooSlow),
    /// The Unix socket at `path` could not be connected to.
    #[error("cannot connect to {}: {source}", .path.display())]
    Unix {
        /// The socket's path.
        path: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The connection was made, but its socket could not be set up (`TCP_NODELAY`).
    #[error("cannot set up the connected socket: {0}")]
    Socket(io::Error),
    /// The host did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        source: io::Error,
    },
    /// The host resolved to no address.
    #[error("{host} has no address")]
    NoAddress {
        /// The host.
        host: String,
    },
    /// Every attempt failed: one error per address tried, in order.
    #[error("all connection attempts to {host}:{port} failed: {}", summary(.attempts))]
    AllFailed {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// Each address and why it failed.
        attempts: Vec<(SocketAddr, io::Error)>,
    },
}

impl trellis::IsCancelled for ConnectError {
    fn is_cancelled(&self) -> bool {
        matches!(self, ConnectError::Cancelled(_))
    }
}

fn summary(attempts: &[(SocketAddr, io::Error)]) -> String {
    attempts
        .iter()
        .map(|(addr, e)| format!("{addr}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Moves the first address of a family other than the first address's into second place
/// (RFC 6555 section 5.4 / RFC 8305): the first two attempts use different families.
pub fn reorder_for_rfc_6555(addrs: &mut [SocketAddr]) {
    if let Some(first) = addrs.first().map(SocketAddr::is_ipv4)
        && let Some(i) = addrs.iter().position(|a| a.is_ipv4() != first)
    {
        addrs[1..=i].rotate_right(1);
    }
}

/// Connects to `host:port` over TCP with happy eyeballs and the default options; see
/// [`open_tcp_stream_with`].
///
/// # Errors
///
/// A [`ConnectError`] (its `Cancelled` variant when the caller was cancelled).
pub async fn open_tcp_stream(host: &str, port: u16) -> Result<TcpStream, ConnectError> {
    open_tcp_stream_with(&SystemResolver, host, port, &ConnectOptions::default()).await
}

/// Connects to `host:port` over TCP, Trio's way: resolves the host, orders the addresses so
/// that the first two are of different families, then tries them one after another — the
/// next one starting when the previous one failed or after `happy_eyeballs_delay`, whichever
/// comes first. The first connection made wins; the other attempts are cancelled and their
/// sockets closed.
///
/// # Errors
///
/// [`ConnectError::AllFailed`] with every attempt's error, another [`ConnectError`]
/// (`Cancelled` when the caller was cancelled).
pub async fn open_tcp_stream_with<R: Resolve>(
    resolver: &R,
    host: &str,
    port: u16,
    options: &ConnectOptions,
) -> Result<TcpStream, ConnectError> {
    let mut addrs = trellis::cancellable(resolver.resolve(host, port))
        .await?
        .map_err(|source| ConnectError::Resolve {
            host: host.to_owned(),
            source,
        })?;
    if addrs.is_empty() {
        return Err(ConnectError::NoAddress {
            host: host.to_owned(),
        });
    }
    reorder_for_rfc_6555(&mut addrs);
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(usize, io::Result<tokio::net::TcpStream>)>();
    let options = options.clone();
    let winner = trellis::open_nursery(|n| async move {
        let mut failures: Vec<Option<io::Error>> = addrs.iter().map(|_| None).collect();
        let mut next = 0;
        let mut pending = 0;
        let mut winner = None;
        loop {
            // Start the next attempt now if none is pending (the previous ones failed).
            if pending == 0 && next < addrs.len() {
                spawn_attempt(&n, next, addrs[next], options.local_address, tx.clone())?;
                next += 1;
                pending += 1;
            }
            if pending == 0 {
                break;
            }
            // Wait for an attempt to finish, or for the delay to start the next one.
            let waited = if next < addrs.len() {
                trellis::move_on_after(options.happy_eyeballs_delay, async {
                    trellis::cancellable(rx.recv()).await
                })
                .await?
            } else {
                Some(trellis::cancellable(rx.recv()).await?)
            };
            match waited {
                None => {
                    spawn_attempt(&n, next, addrs[next], options.local_address, tx.clone())?;
                    next += 1;
                    pending += 1;
                }
                Some(Some((_, Ok(stream)))) => {
                    winner = Some(stream);
                    break;
                }
                Some(Some((i, Err(e)))) => {
                    pending -= 1;
                    failures[i] = Some(e);
                }
                Some(None) => unreachable!("the sender is kept here"),
            }
        }
        // The losers are cancelled; their sockets close as their futures are dropped.
        n.cancel();
        let attempts: Vec<_> = addrs
            .iter()
            .zip(failures)
            .filter_map(|(a, e)| e.map(|e| (*a, e)))
            .collect();
        Ok::<_, trellis::Error>(winner.ok_or(attempts))
    })
    .await;
    // The attempts' tasks report through the channel and never fail: what comes out of the
    // nursery is a cancellation.
    let winner = match winner {
        Ok(Some(winner)) => winner,
        Ok(None) => return Err(trellis::Cancelled::new().into()),
        Err(error) if error.is_cancelled() => return Err(error.into_cancelled().into()),
        Err(error) => return Err(ConnectError::Socket(io::Error::other(error.into_std()))),
    };
    match winner {
        Ok(stream) => {
            stream.set_nodelay(true).map_err(ConnectError::Socket)?;
            Ok(SocketStream::new(stream))
        }
        Err(attempts) => Err(ConnectError::AllFailed {
            host: host.to_owned(),
            port,
            attempts,
        }),
    }
}

fn spawn_attempt(
    n: &trellis::Nursery,
    index: usize,
    addr: SocketAddr,
    local: Option<IpAddr>,
    tx: tokio::sync::mpsc::UnboundedSender<(usize, io::Result<tokio::net::TcpStream>)>,
) -> Result<(), trellis::NurseryClosed> {
    n.start_soon(async move {
        let outcome = trellis::cancellable(connect(addr, local)).await?;
        // Sent to a receiver that may have a winner already: then this one is dropped, closed.
        let _ = tx.send((index, outcome));
        Ok::<_, trellis::Error>(())
    })?;
    Ok(())
}

async fn connect(addr: SocketAddr, local: Option<IpAddr>) -> io::Result<tokio::net::TcpStream> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(local) = local {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    socket.connect(addr).await
}

/// A TCP listening socket as a trellis [`Listener`].
#[derive(Debug)]
pub struct TcpListener {
    inner: tokio::net::TcpListener,
}

impl TcpListener {
    /// Wraps a tokio listener.
    pub fn new(inner: tokio::net::TcpListener) -> Self {
        TcpListener { inner }
    }

    /// The address it listens on.
    ///
    /// # Errors
    ///
    /// As the system call's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> Result<TcpStream, StreamError> {
        trellis::checkpoint().await?;
        let (stream, _) = trellis::cancellable(self.inner.accept())
            .await?
            .map_err(StreamError::Broken)?;
        stream.set_nodelay(true).map_err(StreamError::Broken)?;
        Ok(SocketStream::new(stream))
    }
}

/// Listens on `port` on every local address family (Trio's `open_tcp_listeners`): with no
/// host, the IPv4 and IPv6 wildcard addresses (a port of 0 picks a free one, the same for
/// both when it can); with a host, each address it resolves to.
///
/// # Errors
///
/// When no listener could be bound.
pub async fn open_tcp_listeners(
    port: u16,
    host: Option<&str>,
) -> Result<Vec<TcpListener>, trellis::Error> {
    let addrs: Vec<SocketAddr> = match host {
        Some(host) => trellis::cancellable(SystemResolver.resolve(host, port))
            .await?
            .map_err(|source| ConnectError::Resolve {
                host: host.to_owned(),
                source,
            })?,
        None => vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ],
    };
    let mut listeners = Vec::new();
    let mut errors = Vec::new();
    let mut chosen_port = port;
    for mut addr in addrs {
        if port == 0 && chosen_port != 0 {
            addr.set_port(chosen_port);
        }
        match bind(addr) {
            Ok(listener) => {
                chosen_port = listener.local_addr()?.port();
                listeners.push(TcpListener::new(listener));
            }
            Err(e) => errors.push(trellis::Error::msg(format!("{addr}: {e}"))),
        }
    }
    if listeners.is_empty() {
        return Err(ErrorGroup::new("no TCP listener could be bound", errors).into());
    }
    Ok(listeners)
}

fn bind(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        let socket = tokio::net::TcpSocket::new_v6()?;
        // One listener per family, as Trio does; IPv4 connections go to the IPv4 one.
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6V6Only, &true)
            .map_err(io::Error::from)?;
        socket
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves connections from `listeners` (Trio's `serve_listeners`): one task per listener
/// accepting, one task per connection running `handler`, all in one nursery. Reports the
/// listeners' addresses through `status` once listening, then runs until cancelled or a
/// handler fails.
///
/// # Errors
///
/// A handler's failure (as a group), or `Cancelled`.
pub async fn serve_listeners<L, H, Fut>(
    handler: H,
    listeners: Vec<L>,
    status: Option<TaskStatus<()>>,
) -> Result<(), trellis::Error>
where
    L: Listener + 'static,
    H: Fn(L::Stream) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), trellis::Error>> + Send + 'static,
{
    trellis::open_nursery(|n| async move {
        for mut listener in listeners {
            let handler = handler.clone();
            let tasks = n.clone();
            n.start_soon(async move {
                loop {
                    let stream = listener.accept().await?;
                    tasks.start_soon(handler(stream))?;
                }
                #[allow(unreachable_code)]
                Ok::<_, trellis::Error>(())
            })?;
        }
        if let Some(status) = status {
            status.started(());
        }
        Ok::<_, trellis::Error>(())
    })
    .await?;
    Err(trellis::Cancelled::new().into())
}

/// Listens on `port` (all local addresses) and serves each connection with `handler` (Trio's
/// `serve_tcp`). The bound addresses are reported through `status`, so a caller using
/// `nursery.start` learns the port chosen for port 0.
///
/// ```no_run
/// # async fn demo() -> Result<(), trellis::Error> {
/// use trellis_net::{ReceiveStream, SendStream, TcpStream};
///
/// async fn echo(mut stream: TcpStream) -> Result<(), trellis::Error> {
///     loop {
///         let data = stream.receive_some(4096).await?;
///         if data.is_empty() {
///             return Ok(());
///         }
///         stream.send_all(&data).await?;
///     }
/// }
///
/// trellis::open_nursery(|n| async move {
///     let addrs = n.start(|status| trellis_net::serve_tcp(echo, 0, status)).await?;
///     println!("echo server on {addrs:?}");
///     Ok::<_, trellis::Error>(())
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// When no listener can be bound; a handler's failure; `Cancelled`.
pub async fn serve_tcp<H, Fut>(
    handler: H,
    port: u16,
    status: TaskStatus<Vec<SocketAddr>>,
) -> Result<(), trellis::Error>
where
    H: Fn(TcpStream) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), trellis::Error>> + Send + 'static,
{
    let listeners = open_tcp_listeners(port, None).await?;
    let addrs = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<io::Result<Vec<_>>>()?;
    status.started(addrs);
    serve_listeners(handler, listeners, None).await
}
