//! The error of an I/O operation that is a checkpoint.

use std::io;

use trellis::{Cancelled, IsCancelled};

/// Why an I/O operation (a UDP send or receive, a file operation) failed: the system's error,
/// as tokio reports it, or a cancellation, since every such operation is a checkpoint.
///
/// `?` turns it into a [`trellis::Error`] that is still a cancellation when it was one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// The system refused or failed the operation.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The caller's scope was cancelled; what the operation did is said on it.
    #[error("{0}")]
    Cancelled(#[from] Cancelled),
    /// A deadline set around the operation with [`trellis::fail_after`] (or `fail_at`)
    /// passed.
    #[error("{0}")]
    TooSlow(#[from] trellis::TooSlow),
}

impl IsCancelled for IoError {
    fn is_cancelled(&self) -> bool {
        matches!(self, IoError::Cancelled(_))
    }
}

impl IoError {
    /// As an `io::Error` (a cancellation becomes one wrapping [`Cancelled`], which
    /// `IsCancelled for io::Error` recognises), for code that speaks `io::Result`.
    pub fn into_io(self) -> io::Error {
        match self {
            IoError::Io(error) => error,
            IoError::Cancelled(cancelled) => io::Error::new(io::ErrorKind::Interrupted, cancelled),
            IoError::TooSlow(too_slow) => io::Error::new(io::ErrorKind::TimedOut, too_slow),
        }
    }
}
