//! Unix domain sockets: connecting, listening and serving (Trio has no listener yet).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use trellis::TaskStatus;

use crate::socket::SocketStream;
use crate::stream::{Listener, StreamError};
use crate::tcp::{ConnectError, serve_listeners};

/// A Unix domain socket connection.
pub type UnixStream = SocketStream<tokio::net::UnixStream>;

/// Connects to the socket at `path`; a checkpoint.
///
/// # Errors
///
/// [`ConnectError::Unix`], or [`ConnectError::Cancelled`].
pub async fn open_unix_stream(path: impl AsRef<Path>) -> Result<UnixStream, ConnectError> {
    trellis::checkpoint().await?;
    let path = path.as_ref();
    let stream = trellis::cancellable(tokio::net::UnixStream::connect(path))
        .await?
        .map_err(|source| ConnectError::Unix {
            path: path.to_owned(),
            source,
        })?;
    Ok(SocketStream::new(stream))
}

/// A listening Unix socket as a trellis [`Listener`]; its socket file is removed when it is
/// dropped.
#[derive(Debug)]
pub struct UnixListener {
    inner: tokio::net::UnixListener,
    path: PathBuf,
}

impl UnixListener {
    /// Listens at `path` (which must not exist).
    ///
    /// # Errors
    ///
    /// As the system call's.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_owned();
        Ok(UnixListener {
            inner: tokio::net::UnixListener::bind(&path)?,
            path,
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;

    async fn accept(&mut self) -> Result<UnixStream, StreamError> {
        trellis::checkpoint().await?;
        let (stream, _) = trellis::cancellable(self.inner.accept())
            .await?
            .map_err(StreamError::Broken)?;
        Ok(SocketStream::new(stream))
    }
}

/// Listens at `path` and serves each connection with `handler`, like
/// [`serve_tcp`](crate::serve_tcp); `status` reports once listening.
///
/// # Errors
///
/// When the socket cannot be bound; a handler's failure; `Cancelled`.
pub async fn serve_unix<H, Fut>(
    handler: H,
    path: impl AsRef<Path>,
    status: TaskStatus<PathBuf>,
) -> Result<(), trellis::Error>
where
    H: Fn(UnixStream) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), trellis::Error>> + Send + 'static,
{
    let listener = UnixListener::bind(path).map_err(StreamError::Broken)?;
    status.started(listener.path().to_owned());
    serve_listeners(handler, vec![listener], None).await
}
