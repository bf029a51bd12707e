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

fn broken(kind: io::ErrorKind, what: &str) -> StreamError {
    StreamError::Broken(io::Error::new(kind, what.to_owned()))
}

impl<S: AsyncWrite + Unpin + Send> SendStream for SocketStream<S> {
    async fn send_all(&mut self, data: &[u8]) -> Result<(), StreamError> {
        if self.eof_sent {
            self.io()?;
            return Err(StreamError::Closed);
        }
        if let Some(kind) = self.broken {
            self.io()?;
            return Err(broken(
                kind,
                "an earlier send was cancelled or failed part way",
            ));
        }
        trellis::checkpoint_if_cancelled()?;
        let mut written = 0;
        while written < data.len() {
            let io = self.io()?;
            match trellis::cancellable(io.write(&data[written..])).await {
                Ok(Ok(0)) => {
                    self.broken = Some(io::ErrorKind::WriteZero);
                    return Err(broken(io::ErrorKind::WriteZero, "the stream took no bytes"));
                }
                Ok(Ok(n)) => written += n,
                Ok(Err(e)) => {
                    self.broken = Some(e.kind());
                    return Err(StreamError::Broken(e));
                }
                Err(cancelled) => {
                    if written > 0 {
                        self.broken = Some(io::ErrorKind::Interrupted);
                    }
                    return Err(cancelled.into());
                }
            }
        }
        Ok(())
    }

    async fn wait_send_all_might_not_block(&mut self) -> Result<(), StreamError> {
        self.io()?;
        trellis::checkpoint().await?;
        Ok(())
    }

    async fn close(&mut self) -> Result<(), StreamError> {
        if let Some(mut io) = self.io.take() {
            // A graceful shutdown when the stream has one (TCP: FIN); bounded, and never more
            // than best effort: the socket is closed when dropped anyway.
            let _ = trellis::move_on_after(std::time::Duration::from_millis(100), async {
                trellis::cancellable(io.shutdown()).await.map(drop)
            })
            .await;
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
