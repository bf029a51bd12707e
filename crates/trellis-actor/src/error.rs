//! Errors that cross process boundaries, and the runtime's own.

use std::fmt;

use trellis_wire::{ActorId, ErrorKind, ErrorReport};

use crate::functions::{Functions, Rebuilt};

/// A failure in another actor: its name and id, the error's type name, text, source chain and,
/// when captured, the remote backtrace.
///
/// A failure that was itself a group (an actor whose own children failed) arrives as an
/// [`trellis::ErrorGroup`] of `RemoteActorError`s instead, nested as the tree was.
#[derive(Clone)]
pub struct RemoteActorError {
    report: ErrorReport,
    /// `report.chain`, linked for `source()`.
    cause: Option<Box<Cause>>,
    /// The error value itself, when its type is registered on this side.
    rebuilt: Option<Rebuilt>,
}

/// One link of a remote source chain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cause {
    message: String,
    next: Option<Box<Cause>>,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.next.as_deref().map(|c| c as _)
    }
}

impl RemoteActorError {
    /// The error a report describes (a group becomes a [`trellis::ErrorGroup`]); values of
    /// error types registered in `functions` are rebuilt.
    pub(crate) fn into_error(report: ErrorReport, functions: &Functions) -> trellis::Error {
        if report.kind == ErrorKind::Group {
            let message = format!("{} in actor {}", report.message, report.actor);
            let members = report
                .group
                .into_iter()
                .map(|member| RemoteActorError::into_error(member, functions))
                .collect();
            return trellis::ErrorGroup::new(message, members).into();
        }
        let backtrace = report.backtrace.clone();
        let mut error = trellis::Error::new(RemoteActorError::new(report, functions));
        if let Some(backtrace) = backtrace {
            // So that `{:?}` of the error, and a group's tree, show where it came from.
            error.add_note(format!("Remote backtrace:\n{backtrace}"));
        }
        error
    }

    pub(crate) fn new(report: ErrorReport, functions: &Functions) -> Self {
        let cause = report.chain.iter().rev().fold(None, |next, message| {
            Some(Box::new(Cause {
                message: message.clone(),
                next,
            }))
        });
        let rebuilt = report
            .value
            .as_deref()
            .and_then(|value| functions.decode_error(&report.type_name, value));
        RemoteActorError {
            report,
            cause,
            rebuilt,
        }
    }

    /// The remote error as its real type `E`, when `E` was registered with
    /// [`Functions::error_type`] on both sides.
    pub fn rebuilt<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.rebuilt.as_deref()?.downcast_ref::<E>()
    }

    /// The actor the error happened in.
    pub fn actor(&self) -> &ActorId {
        &self.report.actor
    }

    /// What kind of failure it was.
    pub fn kind(&self) -> &ErrorKind {
        &self.report.kind
    }

    /// The remote error's type name (`my_crate::BadInput`).
    pub fn type_name(&self) -> &str {
        &self.report.type_name
    }

    /// The remote error's text.
    pub fn message(&self) -> &str {
        &self.report.message
    }

    /// The texts of its remote causes, outermost first.
    pub fn chain(&self) -> &[String] {
        &self.report.chain
    }

    /// The remote backtrace, when one was captured (`RUST_BACKTRACE=1` in the remote actor).
    pub fn backtrace(&self) -> Option<&str> {
        self.report.backtrace.as_deref()
    }

    /// The report as it came over the wire.
    pub fn report(&self) -> &ErrorReport {
        &self.report
    }

    /// Whether the remote type name ends with `T`'s name: `err.is_type::<BadInput>()`.
    pub fn is_type<T: ?Sized>(&self) -> bool {
        self.report.type_name == std::any::type_name::<T>()
    }
}

/// With a rebuilt value the text is left to it (it is the [`source`](std::error::Error::source)),
/// so that a printed chain says it once.
impl fmt::Display for RemoteActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rebuilt.is_some() {
            return write!(
                f,
                "actor {} failed with {}",
                self.report.actor, self.report.type_name
            );
        }
        write!(
            f,
            "actor {} failed: {}: {}",
            self.report.actor, self.report.type_name, self.report.message
        )
    }
}

impl fmt::Debug for RemoteActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        for (i, cause) in self.report.chain.iter().enumerate() {
            if i == 0 {
                f.write_str("\n\nCaused by:")?;
            }
            write!(f, "\n    {i}: {cause}")?;
        }
        if let Some(bt) = &self.report.backtrace {
            write!(f, "\n\nRemote backtrace:\n{bt}")?;
        }
        Ok(())
    }
}

impl PartialEq for RemoteActorError {
    fn eq(&self, other: &Self) -> bool {
        self.report == other.report
    }
}

/// The source is the rebuilt error when there is one (its own sources follow), otherwise the
/// remote causes as text.
impl std::error::Error for RemoteActorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.rebuilt {
            Some(rebuilt) => Some(rebuilt.as_ref()),
            None => self.cause.as_deref().map(|c| c as _),
        }
    }
}

/// Builds the report of an error raised in this actor.
pub(crate) fn report(
    actor: &ActorId,
    kind: ErrorKind,
    error: &trellis::Error,
    functions: &Functions,
) -> ErrorReport {
    if let Some(group) = error.as_group() {
        return ErrorReport {
            actor: actor.clone(),
            kind: ErrorKind::Group,
            type_name: std::any::type_name::<trellis::ErrorGroup>().to_owned(),
            message: group.message().to_owned(),
            chain: Vec::new(),
            backtrace: None,
            value: None,
            group: group
                .errors()
                .iter()
                .map(|e| report(actor, kind.clone(), e, functions))
                .collect(),
        };
    }
    // A failure relayed from further down keeps its own origin.
    if let Some(remote) = error.downcast_ref::<RemoteActorError>() {
        return remote.report.clone();
    }
    ErrorReport {
        actor: actor.clone(),
        kind,
        type_name: error.type_name().to_owned(),
        message: error.to_string(),
        chain: error.chain().skip(1).map(|e| e.to_string()).collect(),
        backtrace: error.backtrace().map(ToString::to_string),
        value: functions.encode_error(error),
        group: Vec::new(),
    }
}

/// A report of the runtime's own making (an unknown function, bad arguments).
pub(crate) fn runtime_report(actor: &ActorId, kind: ErrorKind, message: String) -> ErrorReport {
    ErrorReport {
        actor: actor.clone(),
        type_name: match kind {
            ErrorKind::UnknownFunction => std::any::type_name::<UnknownFunction>(),
            ErrorKind::BadArguments => std::any::type_name::<BadArguments>(),
            _ => "trellis_actor::RuntimeError",
        }
        .to_owned(),
        kind,
        message,
        chain: Vec::new(),
        backtrace: None,
        value: None,
        group: Vec::new(),
    }
}

/// The remote actor has no function of the name called. Arrives as a [`RemoteActorError`] whose
/// [`kind`](RemoteActorError::kind) is [`ErrorKind::UnknownFunction`].
#[derive(Debug)]
pub struct UnknownFunction;

/// The arguments did not decode as the remote function's parameters. Arrives as a
/// [`RemoteActorError`] whose kind is [`ErrorKind::BadArguments`].
#[derive(Debug)]
pub struct BadArguments;

/// The runtime's own failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActorError {
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
    /// A child actor could not be started.
    #[error("could not start actor {name}: {reason}")]
    SpawnFailed {
        /// The name it was to have.
        name: String,
        /// Why.
        reason: String,
    },
    /// The remote call was cancelled by another actor than this one (tractor's
    /// `ContextCancelled`); says who asked.
    #[error("the call into actor {actor} was cancelled by actor {requested_by}")]
    ContextCancelled {
        /// The actor that ran the call.
        actor: ActorId,
        /// The actor that asked for the cancellation.
        requested_by: ActorId,
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
    /// An I/O error of the actor's own sockets or processes.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}
