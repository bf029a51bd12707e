//! Streams in Trio's shape: send all, receive some, half-close, close; a listener that
//! accepts. Every operation is a checkpoint: in a cancelled scope it fails with `Cancelled`.

use std::future::Future;

use bytes::Bytes;
use trellis::{Cancelled, IsCancelled};

/// Why a stream operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// This side closed the stream (Trio's `ClosedResourceError`); or, for sending, it sent
    /// its end of file.
    #[error("the stream was closed")]
    Closed,
    /// The stream cannot be used any more (Trio's `BrokenResourceError`): the peer reset it,
    /// a write failed, or a cancelled send left part of its data written.
    #[error("the stream is broken: {0}")]
    Broken(#[source] std::io::Error),
    /// The calling code was cancelled.
    #[error("stream operation cancelled")]
    Cancelled(#[from] Cancelled),
}

impl IsCancelled for StreamError {
    fn is_cancelled(&self) -> bool {
        matches!(self, StreamError::Cancelled(_))
    }
}

/// The sending side of a stream (Trio's `SendStream`).
///
/// # Cancellation
///
/// A `send_all` cancelled before it wrote anything leaves the stream as it was. One cancelled
/// after it wrote part of `data` *breaks* the stream: every later `send_all` fails with
/// [`StreamError::Broken`]. So a caller can never believe a frame unsent that is half on the
/// wire, and then send the next frame after its first half.
pub trait SendStream: Send {
    /// Sends all of `data`; a checkpoint.
    fn send_all(&mut self, data: &[u8]) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Waits until a `send_all` would probably not block; a checkpoint.
    fn wait_send_all_might_not_block(
        &mut self,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Closes the stream (both directions, for a two-way stream); a checkpoint. Closing twice
    /// is fine; every other operation afterwards fails with [`StreamError::Closed`].
    fn close(&mut self) -> impl Future<Output = Result<(), StreamError>> + Send;
}

/// The receiving side of a stream (Trio's `ReceiveStream`).
pub trait ReceiveStream: Send {
    /// Receives between 1 and `max_bytes` bytes, or none at the end of the stream; a
    /// checkpoint. A cancelled receive loses nothing: bytes not returned stay in the stream.
    fn receive_some(
        &mut self,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Bytes, StreamError>> + Send;
}

/// A stream both ways (Trio's `Stream`).
pub trait Stream: SendStream + ReceiveStream {}

impl<T: SendStream + ReceiveStream> Stream for T {}

/// A stream whose sending direction can be closed alone (Trio's `HalfCloseableStream`): the
/// peer then receives the end of the stream, and can still send.
pub trait HalfCloseableStream: Stream {
    /// Closes the sending direction; a checkpoint. Sending afterwards fails with
    /// [`StreamError::Closed`]; sending end of file twice is fine.
    fn send_eof(&mut self) -> impl Future<Output = Result<(), StreamError>> + Send;
}

/// Something that accepts connections (Trio's `Listener`).
pub trait Listener: Send {
    /// What a connection is.
    type Stream: Stream + 'static;

    /// Waits for the next connection; a checkpoint.
    fn accept(&mut self) -> impl Future<Output = Result<Self::Stream, StreamError>> + Send;
}
