//! Streams in memory, for tests: a pair of connected streams, and a lockstep pair whose sends
//! complete only as the peer receives.

use tokio::io::DuplexStream;

use crate::socket::SocketStream;

/// One end of an in-memory stream.
pub type MemoryStream = SocketStream<DuplexStream>;

/// Two connected in-memory streams with `buffer` bytes of room each way: what one sends, the
/// other receives. Both half-close (`send_eof`) like TCP.
pub fn memory_stream_pair(buffer: usize) -> (MemoryStream, MemoryStream) {
    let (a, b) = tokio::io::duplex(buffer.max(1));
    (SocketStream::new(a), SocketStream::new(b))
}

/// Two connected streams with no buffer to speak of (one byte): a `send_all` completes only as
/// the peer receives, so tests see every interleaving of sends and receives (Trio's
/// `lockstep_stream_pair`).
pub fn lockstep_stream_pair() -> (MemoryStream, MemoryStream) {
    memory_stream_pair(1)
}
