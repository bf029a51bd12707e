//! Errors that cross process boundaries, and the runtime's own (`ActorError`, in
//! `actor_error.rs`).

use std::fmt;

use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use trellis_wire::{ActorId, ErrorKind, ErrorReport, Payload};

/// An error value rebuilt on this side.
pub(crate) type Rebuilt = Arc<dyn std::error::Error + Send + Sync>;

/// The error types whose values cross actors (see `Functions::error_type`), by wire name.
#[derive(Clone, Default)]
pub(crate) struct ErrorTypes {
    /// Rust type name → (wire name, encoder).
    by_type: HashMap<&'static str, (String, Encode)>,
    /// Wire name → decoder.
    by_name: HashMap<String, Decode>,
}

type Encode = fn(&trellis::Error) -> Option<Vec<u8>>;
type Decode = fn(&[u8]) -> Option<Rebuilt>;

fn encode_as<E: Serialize + std::error::Error + 'static>(
    error: &trellis::Error,
) -> Option<Vec<u8>> {
    let value = error.downcast_ref::<E>()?;
    Payload::encode(value).ok().map(|p| p.as_bytes().to_vec())
}

fn decode_as<E>(bytes: &[u8]) -> Option<Rebuilt>
where
    E: DeserializeOwned + std::error::Error + Send + Sync + 'static,
{
    let payload = Payload::from_bytes(bytes.to_vec().into()).ok()?;
    let value: E = payload.decode().ok()?;
    Some(Arc::new(value))
}

/// A type's bare name: `my_crate::errors::BadInput<T>` → `BadInput`.
pub(crate) fn bare_name(path: &str) -> &str {
    let path = path.split('<').next().unwrap_or(path);
    path.rsplit("::").next().unwrap_or(path)
}

impl ErrorTypes {
    /// Registers `E` under `name`; `false` when the name or the type is taken already.
    pub(crate) fn insert<E>(&mut self, name: &str) -> bool
    where
        E: std::error::Error + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let rust = std::any::type_name::<E>();
        if self.by_name.contains_key(name) || self.by_type.contains_key(rust) {
            return false;
        }
        self.by_type
            .insert(rust, (name.to_owned(), encode_as::<E> as Encode));
        self.by_name
            .insert(name.to_owned(), decode_as::<E> as Decode);
        true
    }

    /// The wire name and value of `error`, if its type is registered.
    fn encode(&self, error: &trellis::Error) -> Option<(String, Vec<u8>)> {
        let (name, encode) = self.by_type.get(error.type_name())?;
        Some((name.clone(), encode(error)?))
    }

    /// The error registered as `name`, rebuilt from its value.
    fn decode(&self, name: &str, value: &[u8]) -> Option<Rebuilt> {
        (self.by_name.get(name)?)(value)
    }
}

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
    pub(crate) fn into_error(report: ErrorReport, types: &ErrorTypes) -> trellis::Error {
        if report.kind == ErrorKind::Group {
            let message = format!("{} in actor {}", report.message, report.actor);
            let members = report
                .group
                .into_iter()
                .map(|member| RemoteActorError::into_error(member, types))
                .collect();
            return trellis::ErrorGroup::new(message, members).into();
        }
        let backtrace = report.backtrace.clone();
        let mut error = trellis::Error::new(RemoteActorError::new(report, types));
        if let Some(backtrace) = backtrace {
            // So that `{:?}` of the error, and a group's tree, show where it came from.
            // Runtime and std frames folded (unless RUST_BACKTRACE=full here), so that the
            // application's frames stand out in the tree.
            error.add_note(format!(
                "Remote backtrace:\n{}",
                trellis::backtrace::fold(&backtrace)
            ));
        }
        error
    }

    /// The failure `report` describes, no value rebuilt (for tests, and relays of reports).
    pub fn from_report(report: ErrorReport) -> Self {
        RemoteActorError::new(report, &ErrorTypes::default())
    }

    pub(crate) fn new(report: ErrorReport, types: &ErrorTypes) -> Self {
        let cause = report.chain.iter().rev().fold(None, |next, message| {
            Some(Box::new(Cause {
                message: message.clone(),
                next,
            }))
        });
        let rebuilt = report
            .value
            .as_deref()
            .and_then(|value| types.decode(&report.type_name, value));
        RemoteActorError {
            report,
            cause,
            rebuilt,
        }
    }

    /// The remote error as its real type `E`, when `E` was registered with
    /// [`Functions::error_type`](crate::Functions::error_type) on both sides.
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

    /// Whether the remote error is a `T`: its type name is `T`'s path or, for a registered
    /// error type, `T`'s bare name (`err.is_type::<BadInput>()`).
    pub fn is_type<T: ?Sized>(&self) -> bool {
        let rust = std::any::type_name::<T>();
        self.report.type_name == rust || self.report.type_name == bare_name(rust)
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
            write!(f, "\n\nRemote backtrace:\n{}", trellis::backtrace::fold(bt))?;
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
    types: &ErrorTypes,
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
                .map(|e| report(actor, kind.clone(), e, types))
                .collect(),
        };
    }
    // A failure relayed from further down keeps its own origin.
    if let Some(remote) = error.downcast_ref::<RemoteActorError>() {
        return remote.report.clone();
    }
    // A registered type travels under its registered name, with its value.
    let (type_name, value) = match types.encode(error) {
        Some((name, value)) => (name, Some(value)),
        None => (error.type_name().to_owned(), None),
    };
    ErrorReport {
        actor: actor.clone(),
        kind,
        type_name,
        message: error.to_string(),
        chain: error.chain().skip(1).map(|e| e.to_string()).collect(),
        backtrace: error.backtrace().map(ToString::to_string),
        value,
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
            ErrorKind::Unauthorized => std::any::type_name::<Unauthorized>(),
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

/// The remote actor does not let this peer call the function (it is not a member of the
/// tree, and the function is not exposed to its credential). Arrives as a
/// [`RemoteActorError`] whose kind is [`ErrorKind::Unauthorized`].
#[derive(Debug)]
pub struct Unauthorized;

/// A stream's receiving end in [`Flow::Overrun`](crate::Flow::Overrun) mode had more unread
/// items than its capacity, or its sender ignored its credit. Fails the call on the receiving
/// side; a callee's overrun reaches the caller as a [`RemoteActorError`] whose
/// [`rebuilt`](RemoteActorError::rebuilt) value is this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "stream overrun: actor {receiver} had more than {capacity} unread items from actor {sender}"
)]
pub struct StreamOverrun {
    /// The receiving actor.
    pub receiver: String,
    /// The sending actor.
    pub sender: String,
    /// The receiving end's capacity.
    pub capacity: usize,
}

/// Why a served function did not produce a value.
pub(crate) enum CallFailure {
    /// The function failed.
    Failed(trellis::Error),
    /// The result did not encode.
    BadResult(String),
    /// The function panicked.
    Panicked(crate::panic::Panic),
}
