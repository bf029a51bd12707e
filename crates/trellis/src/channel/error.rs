//! The errors of channel operations; each says what the caller can do next.

use std::fmt;

use crate::error::IsCancelled;

/// Why [`Sender::send`](super::Sender::send) failed. The value comes back in every case.
#[derive(PartialEq, Eq)]
#[doc(alias = "BrokenResourceError")]
#[doc(alias = "ClosedResourceError")]
pub enum SendError<T> {
    /// This sender was closed (Trio's `ClosedResourceError`): use another handle.
    Closed(T),
    /// Every receiver is gone (Trio's `BrokenResourceError`): nobody will ever receive.
    Broken(T),
    /// The calling code was cancelled before the value was delivered: it was not sent.
    Cancelled(T),
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Closed(v) | SendError::Broken(v) | SendError::Cancelled(v) => v,
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed(_) => "Closed(..)",
            SendError::Broken(_) => "Broken(..)",
            SendError::Cancelled(_) => "Cancelled(..)",
        })
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed(_) => "send on a closed sender",
            SendError::Broken(_) => "send on a channel whose receivers are all closed",
            SendError::Cancelled(_) => "send cancelled",
        })
    }
}

/// A cancelled send names [`Cancelled`](crate::Cancelled) as its source, so that
/// [`Error::is_cancelled`](crate::Error::is_cancelled) sees it through a `?`.
impl<T> std::error::Error for SendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Cancelled(_) => Some(&crate::error::CANCELLED),
            _ => None,
        }
    }
}

impl<T> IsCancelled for SendError<T> {
    fn is_cancelled(&self) -> bool {
        matches!(self, SendError::Cancelled(_))
    }
}

/// Why [`Sender::try_send`](super::Sender::try_send) failed. The value comes back in every case.
#[derive(PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The buffer is full and no receiver waits (Trio's `WouldBlock`): retry, or `send`.
    Full(T),
    /// This sender was closed.
    Closed(T),
    /// Every receiver is gone.
    Broken(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Closed(v) | TrySendError::Broken(v) => v,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "Full(..)",
            TrySendError::Closed(_) => "Closed(..)",
            TrySendError::Broken(_) => "Broken(..)",
        })
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "the channel is full",
            TrySendError::Closed(_) => "send on a closed sender",
            TrySendError::Broken(_) => "send on a channel whose receivers are all closed",
        })
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// Why [`Receiver::recv`](super::Receiver::recv) returned no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[doc(alias = "EndOfChannel")]
pub enum RecvError {
    /// Every sender is closed and the buffer is drained (Trio's `EndOfChannel`): the stream of
    /// values is complete.
    EndOfChannel,
    /// This receiver was closed (Trio's `ClosedResourceError`).
    Closed,
    /// The calling code was cancelled; nothing was received.
    Cancelled,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecvError::EndOfChannel => "end of channel: every sender is closed",
            RecvError::Closed => "receive on a closed receiver",
            RecvError::Cancelled => "receive cancelled",
        })
    }
}

/// A cancelled receive names [`Cancelled`](crate::Cancelled) as its source (see [`SendError`]).
impl std::error::Error for RecvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecvError::Cancelled => Some(&crate::error::CANCELLED),
            _ => None,
        }
    }
}

impl IsCancelled for RecvError {
    fn is_cancelled(&self) -> bool {
        matches!(self, RecvError::Cancelled)
    }
}

/// Why [`Receiver::try_recv`](super::Receiver::try_recv) returned no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing to receive now (Trio's `WouldBlock`): retry, or `recv`.
    #[error("the channel is empty")]
    Empty,
    /// Every sender is closed and the buffer is drained.
    #[error("end of channel: every sender is closed")]
    EndOfChannel,
    /// This receiver was closed.
    #[error("receive on a closed receiver")]
    Closed,
}
