//! Any tokio byte stream as a trellis stream: checkpoints, Trio's close and break rules, and
//! still `AsyncRead`/`AsyncWrite` for tokio-util codecs, hyper and the rest.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::stream::{HalfCloseableStream, ReceiveStream, SendStream, StreamError};

/// A tokio stream wrapped as a trellis [`Stream`](crate::Stream): TCP and Unix sockets,
/// in-memory pipes, TLS — anything `AsyncRead + AsyncWrite`.
///
/// It also implements `AsyncRead` and `AsyncWrite` itself (those are not checkpoints: they are
/// tokio's contract).
///
/// Checkpoints: `send_all` and `receive_some` fail with `Cancelled` in a cancelled scope and
/// are cancelled while they wait; as schedule points they rely on tokio's cooperative budget
/// (the socket yields after a run of operations that completed at once), as trellis's channels
/// do, rather than yielding on every call.
#[derive(Debug)]
pub struct SocketStream<S> {
    /// `None` once closed.
    io: Option<S>,
    /// Why the sending side is broken, if it is.
    broken: Option<io::ErrorKind>,
    eof_sent: bool,
    /// Where received bytes land; chunks handed out share its allocation until dropped.
    received: BytesMut,
}

impl<S> SocketStream<S> {
    /// Wraps `io`.
    pub fn new(io: S) -> Self {
        SocketStream {
            io: Some(io),
            broken: None,
            eof_sent: false,
            received: BytesMut::new(),
        }
    }

    /// The wrapped stream, unless closed.
    pub fn get_ref(&self) -> Option<&S> {
        self.io.as_ref()
    }

    /// The wrapped stream, unless closed.
    pub fn get_mut(&mut self) -> Option<&mut S> {
        self.io.as_mut()
    }

    /// The wrapped stream, unless closed.
    pub fn into_inner(self) -> Option<S> {
        self.io
    }

    fn io(&mut self) -> Result<&mut S, StreamError> {
        self.io.as_mut().ok_or(StreamError::Closed)
    }
}

fn broken_error(kind: io::ErrorKind, what: &str) -> StreamError {
    StreamError::Broken(io::Error::new(kind, what.to_owned()))
}

/// `send_all` on a writer, with Trio's rule: a send cancelled after writing part of its data
/// marks the writer broken.
pub(crate) async fn send_all_on<W: AsyncWrite + Unpin>(
    io: &mut W,
    broken: &mut Option<io::ErrorKind>,
    data: &[u8],
) -> Result<(), StreamError> {
    if let Some(kind) = *broken {
        return Err(broken_error(
            kind,
            "an earlier send was cancelled or failed part way",
        ));
    }
    trellis::checkpoint_if_cancelled()?;
    let mut written = 0;
    while written < data.len() {
        match trellis::cancellable(io.write(&data[written..])).await {
            Ok(Ok(0)) => {
                *broken = Some(io::ErrorKind::WriteZero);
                return Err(broken_error(
                    io::ErrorKind::WriteZero,
                    "the stream took no bytes",
                ));
            }
            Ok(Ok(n)) => written += n,
            Ok(Err(e)) => {
                *broken = Some(e.kind());
                return Err(StreamError::Broken(e));
            }
            Err(cancelled) => {
                if written > 0 {
                    *broken = Some(io::ErrorKind::Interrupted);
                }
                return Err(cancelled.into());
            }
        }
    }
    Ok(())
}

/// Shuts the writer down gracefully when it has a way to (TCP: FIN; TLS: close_notify),
/// bounded in time: a closed stream is closed even if the peer does not cooperate.
pub(crate) async fn shutdown_briefly<W: AsyncWrite + Unpin>(io: &mut W) {
    let _ = trellis::move_on_after(std::time::Duration::from_millis(100), async {
        trellis::cancellable(io.shutdown()).await.map(drop)
    })
    .await;
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> SendStream for SocketStream<S> {
    async fn send_all(&mut self, data: &[u8]) -> Result<(), StreamError> {
        let eof_sent = self.eof_sent;
        let Some(io) = self.io.as_mut() else {
            return Err(StreamError::Closed);
        };
        if eof_sent {
            return Err(StreamError::Closed);
        }
        send_all_on(io, &mut self.broken, data).await
    }

    async fn wait_send_all_might_not_block(&mut self) -> Result<(), StreamError> {
        self.io()?;
        trellis::checkpoint().await?;
        Ok(())
    }

    /// Shuts the sending side down, discards what the peer already sent and nobody will read
    /// (were it left unread, closing would reset the connection — with TLS, the session
    /// tickets a server sends after the handshake — and the peer could lose data it has not
    /// read yet), and closes.
    async fn close(&mut self) -> Result<(), StreamError> {
        if let Some(mut io) = self.io.take() {
            shutdown_briefly(&mut io).await;
            let mut scratch = [0u8; 4096];
            while std::future::poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut scratch);
                Poll::Ready(matches!(
                    Pin::new(&mut io).poll_read(cx, &mut buf),
                    Poll::Ready(Ok(())) if !buf.filled().is_empty()
                ))
            })
            .await
            {}
        }
        trellis::checkpoint().await?;
        Ok(())
    }
}

impl<S: AsyncRead + Unpin + Send> ReceiveStream for SocketStream<S> {
    async fn receive_some(&mut self, max_bytes: usize) -> Result<Bytes, StreamError> {
        assert!(
            max_bytes > 0,
            "receive_some needs room for at least one byte"
        );
        self.io()?;
        trellis::checkpoint_if_cancelled()?;
        self.received.reserve(max_bytes.min(1 << 20));
        let Some(io) = self.io.as_mut() else {
            return Err(StreamError::Closed);
        };
        let mut room = (&mut self.received).limit(max_bytes);
        match trellis::cancellable(io.read_buf(&mut room)).await? {
            Ok(_) => Ok(self.received.split().freeze()),
            Err(e) => Err(StreamError::Broken(e)),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> HalfCloseableStream for SocketStream<S> {
    async fn send_eof(&mut self) -> Result<(), StreamError> {
        let already = self.eof_sent;
        let io = self.io()?;
        if !already {
            trellis::cancellable(io.shutdown())
                .await?
                .map_err(StreamError::Broken)?;
            self.eof_sent = true;
        }
        trellis::checkpoint().await?;
        Ok(())
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the stream was closed")
}

impl<S: AsyncRead + Unpin> AsyncRead for SocketStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_read(cx, buf),
            None => Poll::Ready(Err(closed())),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SocketStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write(cx, buf),
            None => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Err(closed())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Err(closed())),
        }
    }
}
