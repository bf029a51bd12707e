//! The failures of a DTLS endpoint and its channels.

use std::net::SocketAddr;

use trellis_net::IoError;

/// The failures of an endpoint and its channels.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DtlsError {
    /// `serve` was called on an endpoint that serves already.
    #[error("this endpoint is already serving")]
    AlreadyServing,
    /// The channel or its endpoint was closed.
    #[error("the DTLS channel is closed")]
    Closed,
    /// The peer started a new association from the same address: this one is over.
    #[error("the peer at {0} reconnected; this association was replaced")]
    PeerReconnected(SocketAddr),
    /// A peer that was served did not finish its handshake within the endpoint's handshake
    /// timeout: the association was dropped.
    #[error("the DTLS handshake with {0} did not finish in time; the association was dropped")]
    HandshakeTimedOut(SocketAddr),
    /// OpenSSL refused the handshake (a certificate, a cipher, a protocol version).
    #[error("DTLS handshake with {peer} failed: {reason}")]
    Handshake {
        /// The peer.
        peer: SocketAddr,
        /// OpenSSL's errors.
        reason: String,
    },
    /// An empty datagram cannot be sent over DTLS.
    #[error("cannot send an empty DTLS datagram")]
    EmptyDatagram,
    /// OpenSSL failed while sending or receiving.
    #[error("DTLS error with {peer}: {reason}")]
    Ssl {
        /// The peer.
        peer: SocketAddr,
        /// OpenSSL's errors.
        reason: String,
    },
    /// The socket failed.
    #[error("DTLS socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The caller's scope was cancelled. A handshake cancelled half-way goes on from where
    /// OpenSSL is at the next call; a receive loses no datagram.
    #[error("{0}")]
    Cancelled(#[from] trellis::Cancelled),
    /// A deadline set around the operation with [`trellis::fail_after`] (or `fail_at`)
    /// passed.
    #[error("{0}")]
    TooSlow(#[from] trellis::TooSlow),
}

impl trellis::IsCancelled for DtlsError {
    fn is_cancelled(&self) -> bool {
        matches!(self, DtlsError::Cancelled(_))
    }
}

impl From<IoError> for DtlsError {
    fn from(error: IoError) -> Self {
        match error {
            IoError::Cancelled(cancelled) => DtlsError::Cancelled(cancelled),
            IoError::TooSlow(too_slow) => DtlsError::TooSlow(too_slow),
            other => DtlsError::Io(other.into_io()),
        }
    }
}
