//! Where actors listen and how they connect: Unix domain sockets on one host, TCP between
//! hosts, optionally inside TLS (`tls.rs`). All carry the same frames.

use std::fmt;
use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use bytes::Buf;
use tokio::io::AsyncRead;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use trellis_wire::Outgoing;

use crate::tls::TreeTls;

/// How actors of a tree reach each other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Transport {
    /// Unix domain sockets, in a directory only this user can enter (the default).
    #[default]
    Unix,
    /// TCP, listening on `bind` (port chosen by the system).
    Tcp {
        /// The address to listen on.
        bind: IpAddr,
    },
}

impl Transport {
    /// TCP on the loopback interface.
    pub fn tcp_loopback() -> Self {
        Transport::Tcp {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// An actor's listening address, written `unix:/path/to.sock` or `tcp:127.0.0.1:4321`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// A Unix domain socket path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Unix(path) => write!(f, "unix:{}", path.display()),
            Addr::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// An address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an actor address (unix:PATH or tcp:HOST:PORT): {0:?}")]
pub struct BadAddr(String);

impl FromStr for Addr {
    type Err = BadAddr;

    fn from_str(s: &str) -> Result<Self, BadAddr> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            return addr
                .parse()
                .map(Addr::Tcp)
                .map_err(|_| BadAddr(s.to_owned()));
        }
        Err(BadAddr(s.to_owned()))
    }
}

pub(crate) type Reader = Pin<Box<dyn AsyncRead + Send>>;

/// The sending half of a connection. Writes never wait: [`try_write`](Writer::try_write) takes
/// what the socket accepts now, and [`writable`](Writer::writable) waits for room. Dropping it
/// shuts the sending direction down.
#[derive(Debug)]
pub(crate) enum Writer {
    Unix(tokio::net::unix::OwnedWriteHalf),
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Tls(crate::tls::Writer),
}

impl Writer {
    pub(crate) fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Writer::Unix(w) => w.try_write(buf),
            Writer::Tcp(w) => w.try_write(buf),
            Writer::Tls(w) => w.try_write(buf),
        }
    }

    /// Writes as much of `out`'s front as the socket takes now, its chunks with one call
    /// where the socket can (a shared item value goes out from where it is); the caller
    /// advances `out` by the count.
    pub(crate) fn try_write_buf(&self, out: &Outgoing) -> std::io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); 16];
        let n = out.chunks_vectored(&mut slices);
        let slices = &slices[..n];
        match self {
            Writer::Unix(w) if n > 1 => w.try_write_vectored(slices),
            Writer::Tcp(w) if n > 1 => w.try_write_vectored(slices),
            _ => self.try_write(out.chunk()),
        }
    }

    /// Waits for room (and, over TLS, until encrypted records waiting are written).
    pub(crate) async fn writable(&self) -> std::io::Result<()> {
        match self {
            Writer::Unix(w) => w.writable().await,
            Writer::Tcp(w) => w.writable().await,
            Writer::Tls(w) => w.writable().await,
        }
    }

    /// Whether what was written waits below the socket's buffer (encrypted TLS records the
    /// socket has not taken): the writer task must see it out.
    pub(crate) fn has_buffered(&self) -> bool {
        match self {
            Writer::Tls(w) => w.has_buffered(),
            Writer::Unix(_) | Writer::Tcp(_) => false,
        }
    }

    /// Writes all of `out`, waiting for room as needed.
    pub(crate) async fn write_all(&self, out: &mut Outgoing) -> std::io::Result<()> {
        while !out.is_empty() {
            match self.try_write_buf(out) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => out.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Connects to `addr`; the stream comes split in its two halves. A TCP connection gets the
/// `keepalive` (see [`keep_alive`]), and runs over TLS when the tree has `tls`.
pub(crate) async fn connect(
    addr: &Addr,
    keepalive: Option<Duration>,
    tls: Option<&TreeTls>,
) -> std::io::Result<(Reader, Writer)> {
    Ok(match addr {
        Addr::Unix(path) => split_unix(UnixStream::connect(path).await?),
        Addr::Tcp(to) => {
            let stream = TcpStream::connect(to).await?;
            match tls {
                None => split_tcp(stream, keepalive)?,
                Some(tls) => {
                    tcp_options(&stream, keepalive)?;
                    let (r, w) = crate::tls::connect(tls, stream, *to).await?;
                    (Box::pin(r), Writer::Tls(w))
                }
            }
        }
    })
}

/// A connection accepted, before it is opened (over TLS, before its TLS handshake, which
/// runs in the connection's own task).
pub(crate) enum Accepted {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Accepted {
    /// Opens the connection: splits it, after the TLS handshake when the tree has `tls`.
    pub(crate) async fn open(
        self,
        keepalive: Option<Duration>,
        tls: Option<&TreeTls>,
    ) -> std::io::Result<(Reader, Writer)> {
        Ok(match (self, tls) {
            (Accepted::Unix(stream), _) => split_unix(stream),
            (Accepted::Tcp(stream), None) => split_tcp(stream, keepalive)?,
            (Accepted::Tcp(stream), Some(tls)) => {
                tcp_options(&stream, keepalive)?;
                let (r, w) = crate::tls::accept(tls, stream).await?;
                (Box::pin(r), Writer::Tls(w))
            }
        })
    }
}

/// Makes a TCP connection fail once its peer has been unreachable for about `2 × after`: the
/// kernel probes an idle connection after `after` of silence (three probes, `after / 3`
/// apart), and gives up on data unacknowledged for `2 × after`. A cut cable or a vanished
/// host then ends the connection as a crash would, instead of leaving it open for hours.
pub(crate) fn keep_alive(stream: &TcpStream, after: Duration) -> std::io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    let secs = |d: Duration| u32::try_from(d.as_secs().max(1)).unwrap_or(u32::MAX);
    let millis = u32::try_from((after * 2).as_millis()).unwrap_or(u32::MAX);
    setsockopt(stream, sockopt::KeepAlive, &true)?;
    setsockopt(stream, sockopt::TcpKeepIdle, &secs(after))?;
    setsockopt(stream, sockopt::TcpKeepInterval, &secs(after / 3))?;
    setsockopt(stream, sockopt::TcpKeepCount, &3)?;
    setsockopt(stream, sockopt::TcpUserTimeout, &millis)?;
    Ok(())
}

fn split_unix(stream: UnixStream) -> (Reader, Writer) {
    let (r, w) = stream.into_split();
    (Box::pin(r), Writer::Unix(w))
}

fn tcp_options(stream: &TcpStream, keepalive: Option<Duration>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    if let Some(after) = keepalive {
        keep_alive(stream, after)?;
    }
    Ok(())
}

fn split_tcp(stream: TcpStream, keepalive: Option<Duration>) -> std::io::Result<(Reader, Writer)> {
    tcp_options(&stream, keepalive)?;
    let (r, w) = stream.into_split();
    Ok((Box::pin(r), Writer::Tcp(w)))
}

/// A listening socket; a Unix socket's file is removed when it is dropped.
#[derive(Debug)]
pub(crate) enum Listener {
    Unix {
        listener: UnixListener,
        file: SocketFile,
    },
    Tcp(TcpListener),
}

/// Removes the socket file (and its private directory) when dropped.
#[derive(Debug)]
pub(crate) struct SocketFile {
    dir: PathBuf,
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.dir.join(crate::secret::SECRET_FILE_NAME));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl Listener {
    /// Listens for an actor identified by `uid`.
    pub(crate) fn bind(transport: &Transport, uid: &str) -> std::io::Result<(Listener, Addr)> {
        match transport {
            Transport::Unix => {
                let base = socket_base();
                sweep_stale(&base);
                // A directory of our own, mode 0700, so no other user can reach the socket.
                let dir = socket_dir(&base, std::process::id(), uid);
                std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
                let path = dir.join("actor.sock");
                let file = SocketFile {
                    dir,
                    path: path.clone(),
                };
                let listener = UnixListener::bind(&path)?;
                Ok((Listener::Unix { listener, file }, Addr::Unix(path)))
            }
            Transport::Tcp { bind } => {
                let std = std::net::TcpListener::bind((*bind, 0))?;
                std.set_nonblocking(true)?;
                let addr = std.local_addr()?;
                Ok((Listener::Tcp(TcpListener::from_std(std)?), Addr::Tcp(addr)))
            }
        }
    }

    /// The listener's private directory (mode 0700), for a Unix socket.
    pub(crate) fn private_dir(&self) -> Option<&std::path::Path> {
        match self {
            Listener::Unix { file, .. } => Some(&file.dir),
            Listener::Tcp(_) => None,
        }
    }

    /// Accepts a connection; says who connected (for the log): the remote address over
    /// TCP, the process and user over a Unix socket.
    pub(crate) async fn accept(&self) -> std::io::Result<(Accepted, String)> {
        match self {
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                let who = match stream.peer_cred() {
                    Ok(cred) => format!(
                        "unix (pid {}, uid {})",
                        cred.pid().map_or("?".into(), |p| p.to_string()),
                        cred.uid()
                    ),
                    Err(_) => "unix".to_owned(),
                };
                Ok((Accepted::Unix(stream), who))
            }
            Listener::Tcp(l) => {
                let (stream, from) = l.accept().await?;
                Ok((Accepted::Tcp(stream), format!("tcp:{from}")))
            }
        }
    }
}

/// Where actors' socket directories go: `$XDG_RUNTIME_DIR`, else the temporary directory.
pub(crate) fn socket_base() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// The socket directory of the actor `uid` in process `pid`: `trellis-PID-UID8`.
fn socket_dir(base: &std::path::Path, pid: u32, uid: &str) -> PathBuf {
    base.join(format!("trellis-{pid}-{}", &uid[..uid.len().min(8)]))
}

/// Removes the socket directory of an actor whose process is gone without cleaning up (it was
/// killed).
pub(crate) fn remove_socket_dir(pid: u32, uid: &str) {
    let _ = std::fs::remove_dir_all(socket_dir(&socket_base(), pid, uid));
}

/// Removes socket directories left by processes that no longer run (killed before they could
/// clean up): a tree killed outright is cleaned up by the next actor started on the host.
fn sweep_stale(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("trellis-"))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !process_runs(pid) {
            tracing::debug!(?name, "removing a stale actor socket directory");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether `pid` names a process that runs (a zombie does not).
pub(crate) fn process_runs(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}
