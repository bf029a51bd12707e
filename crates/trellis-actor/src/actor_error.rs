//! `ActorError`: the typed error of the actor runtime's operations.

use std::sync::Arc;

use trellis_wire::ActorId;

use crate::error::RemoteActorError;

/// Why an actor operation failed: a call, a stream, a context, finding or starting an actor.
///
/// Match on it where the failure decides what happens next (a lost connection retried, a
/// remote failure reported, a cancellation passed on). `?` turns it into a [`trellis::Error`]:
/// a cancellation is still one, and a [`Remote`](ActorError::Remote) failure becomes the
/// remote failure itself (a [`RemoteActorError`], or the [`trellis::ErrorGroup`] of them that a
/// failed remote nursery gave), so that nurseries, `split` and the actor tree's error reports
/// see it as they would have without the typed error around it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActorError {
    /// The called function failed in the remote actor. The [`Carried`](trellis::Carried)
    /// error is a [`RemoteActorError`] or, when the remote function's own nursery failed, an
    /// [`trellis::ErrorGroup`] of them, nested as the remote tree was.
    #[error("the remote function failed")]
    Remote(#[source] trellis::Carried),
    /// The caller's scope was cancelled (the remote call, when there was one, was cancelled
    /// too).
    #[error("{0}")]
    Cancelled(#[from] trellis::Cancelled),
    /// The connection to the actor ended before the call did (the process died or was killed).
    #[error("lost the connection to actor {actor} during the call")]
    ConnectionLost {
        /// The actor.
        actor: ActorId,
    },
    /// A child actor's process ended without being asked to.
    #[error("actor {actor} (pid {pid}) died unexpectedly: {status}")]
    Died {
        /// The actor.
        actor: ActorId,
        /// Its process id.
        pid: u32,
        /// How it ended.
        status: String,
    },
    /// A supervised actor is down (it died and its replacement has not started yet), and
    /// the caller asked not to wait ([`SupervisedPortal::try_portal`](crate::SupervisedPortal::try_portal)).
    #[error("actor `{name}` is down: {cause}")]
    Down {
        /// The supervised child's name.
        name: String,
        /// Why its last incarnation ended.
        cause: String,
    },
    /// A supervised actor will not run again: its supervisor stopped it or ended, or it was
    /// temporary and ended.
    #[error("actor `{name}` is no longer supervised: {reason}")]
    Unsupervised {
        /// The supervised child's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A child actor could not be started.
    #[error("could not start actor {name}: {reason}")]
    SpawnFailed {
        /// The name it was to have.
        name: String,
        /// Why.
        reason: String,
    },
    /// The remote call was cancelled by another actor than this one (tractor's
    /// `ContextCancelled`); says who asked, and why when the callee said.
    #[error(
        "the call into actor {actor} was cancelled by actor {requested_by}{}",
        reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
    )]
    ContextCancelled {
        /// The actor that ran the call.
        actor: ActorId,
        /// The actor that asked for the cancellation.
        requested_by: ActorId,
        /// Why, and where the cancellation began ("cancelled due to deadline in actor
        /// root#1a2b3c4d"), when the callee said (protocol 2.1).
        reason: Option<Arc<trellis::CancelReason>>,
    },
    /// An argument or a result did not convert to or from the wire.
    #[error("{0}")]
    Payload(#[from] trellis_wire::PayloadError),
    /// The peer broke the protocol.
    #[error("protocol error with actor {actor}: {error}")]
    Protocol {
        /// The peer.
        actor: ActorId,
        /// What it did.
        error: String,
    },
    /// A stream item did not decode as the receiving end's item type.
    #[error("{0}")]
    BadItem(String),
    /// The stream was closed: this end sent `Stop` (sending) or was dropped (receiving), or,
    /// in the remote function, its call is over.
    #[error("the stream is closed")]
    StreamClosed,
    /// A subscriber fell behind its stream and missed this many items; it goes on from the
    /// oldest item kept.
    #[error("the subscriber lagged behind its stream by {0} items")]
    Lagged(u64),
    /// `Context::started` called twice.
    #[error("`started` called twice in one context")]
    StartedTwice,
    /// `Context::open_stream` called before `started`.
    #[error("a context's stream opened before `started`")]
    StreamBeforeStarted,
    /// `open_stream` called twice on one side of a context.
    #[error("a context's stream opened twice")]
    StreamOpenedTwice,
    /// The remote context function returned without calling `started`.
    #[error("the context function in actor {actor} returned without calling `started`")]
    NotStarted {
        /// The actor that ran it.
        actor: ActorId,
    },
    /// The receiving end of this one-way stream stopped (its caller sent `Stop`): send
    /// nothing more. A stream function that returns this error ends its call normally.
    #[error("the receiver of the stream stopped")]
    ReceiverStopped,
    /// A message exceeds the connection's maximum frame size.
    #[error("{0}")]
    TooLarge(#[from] trellis_wire::EncodeError),
    /// A connection's handshake failed on authentication: the peer did not prove the tree's
    /// secret to us, or we did not prove it to the peer (it holds another secret, or is not
    /// an actor of this tree).
    #[error("{0}: not authorized (the two sides do not share the tree's secret)")]
    NotAuthorized(String),
    /// A TLS handshake failed: the peer's certificate was not issued by the tree's CA (or
    /// not for the address connected to), or the peer does not speak TLS.
    #[error("TLS {0}")]
    Tls(String),
    /// The tree's secret could not be read.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// An I/O error of the actor's own sockets or processes.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// A pool has no worker to route the call to (every one was stopped for good, and no
    /// resize replaced them).
    #[error("the pool `{pool}` has no worker")]
    NoWorker {
        /// The pool's name.
        pool: String,
    },
    /// The registry could not be asked (etcd unreachable or refusing, see
    /// [`Config::etcd`](crate::Config::etcd)); existing connections are not affected, and
    /// lookups work again when it returns.
    #[error("the registry is unavailable: {reason}")]
    Registry {
        /// Why.
        reason: String,
    },
    /// The supervisor did not take the child: its name is taken, or the supervisor ended.
    #[error("{0}")]
    Start(#[from] trellis::supervisor::StartError),
    /// The nursery or supervisor asked to start an actor is closing, or closed.
    #[error("{0}")]
    Closed(#[from] trellis::NurseryClosed),
    /// A failure of another kind, from a layer underneath the actor runtime; `?` gives back
    /// the carried error.
    #[error("the actor runtime failed")]
    Other(#[source] trellis::Carried),
}

impl trellis::IsCancelled for ActorError {
    fn is_cancelled(&self) -> bool {
        match self {
            ActorError::Cancelled(_) => true,
            ActorError::Remote(failure) | ActorError::Other(failure) => {
                failure.get().is_cancelled()
            }
            _ => false,
        }
    }

    /// A carried group that mixes cancellations and failures gives up its cancellations, as
    /// `trellis::Error`'s does; the failures left are read again as an `ActorError`.
    fn split_cancelled(self) -> trellis::CancelSplit<Self> {
        use trellis::CancelSplit;
        match self {
            ActorError::Remote(failure) | ActorError::Other(failure) => {
                match failure.into_inner().split_cancelled() {
                    CancelSplit::Cancelled => CancelSplit::Cancelled,
                    CancelSplit::Mixed(rest) => CancelSplit::Mixed(ActorError::from(rest)),
                    CancelSplit::Failure(error) => CancelSplit::Failure(ActorError::from(error)),
                }
            }
            ActorError::Cancelled(_) => CancelSplit::Cancelled,
            other => CancelSplit::Failure(other),
        }
    }
}

impl ActorError {
    /// A call into `actor` cancelled at `requested_by`'s request, for the reason the callee
    /// gave.
    pub(crate) fn context_cancelled(
        actor: ActorId,
        requested_by: ActorId,
        reason: Option<&trellis_wire::CancelReason>,
    ) -> Self {
        let reason =
            reason.map(|r| Arc::new(crate::cancel_reason::from_wire(Some(r), &requested_by)));
        ActorError::ContextCancelled {
            actor,
            requested_by,
            reason,
        }
    }

    /// Whether this is a cancellation of the caller (see [`trellis::IsCancelled`]).
    pub fn is_cancelled(&self) -> bool {
        trellis::IsCancelled::is_cancelled(self)
    }

    /// The remote failure, when this is one: a [`RemoteActorError`] or a group of them.
    pub fn remote(&self) -> Option<&trellis::Error> {
        match self {
            ActorError::Remote(failure) => Some(failure.get()),
            _ => None,
        }
    }

    /// The remote failure as one [`RemoteActorError`], when it is a single one (not a group).
    pub fn as_remote(&self) -> Option<&RemoteActorError> {
        self.remote()?.downcast_ref()
    }
}

/// Reads an error of the actor runtime as the typed error it is: a cancellation, an
/// `ActorError` already, a remote failure (a [`RemoteActorError`] or a group), a payload that
/// did not convert; anything else is [`ActorError::Other`].
impl From<trellis::Error> for ActorError {
    fn from(error: trellis::Error) -> Self {
        if error.is_cancelled() {
            return ActorError::Cancelled(error.into_cancelled());
        }
        let error = match error.downcast::<ActorError>() {
            Ok(typed) => return typed,
            Err(error) => error,
        };
        // A remote failure: one, or a group of nothing else (a local nursery's group is not).
        let remote = match error.as_group() {
            Some(group) => group.leaves().all(|e| e.is::<RemoteActorError>()),
            None => error.is::<RemoteActorError>(),
        };
        if remote {
            return ActorError::Remote(trellis::Carried::new(error));
        }
        let error = match error.downcast::<trellis_wire::PayloadError>() {
            Ok(payload) => return ActorError::Payload(payload),
            Err(error) => error,
        };
        match error.downcast::<trellis_wire::EncodeError>() {
            Ok(too_large) => ActorError::TooLarge(too_large),
            Err(error) => ActorError::Other(trellis::Carried::new(error)),
        }
    }
}
