//! The error type of trellis tasks, and the small errors trellis operations return.
//!
//! [`Error`] is dynamic, like `anyhow::Error`: any `std::error::Error + Send + Sync + 'static`
//! converts into it with `?`, and it knows when it is a [`Cancelled`] or an [`ErrorGroup`].
//! Cancellation is stored without allocating, because it is the error every cancelled task
//! returns.
//!
//! Code with its own error enums does not have to use [`Error`]: cancel scopes only need to ask
//! an error whether it is a cancellation, through the [`IsCancelled`] trait. Implement it for your
//! enum (usually by forwarding to a `Cancelled` variant) and scopes will catch it.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::carried::Carried;
use crate::group::ErrorGroup;

/// The error a checkpoint returns when the calling code is inside an effectively cancelled scope.
///
/// Propagate it with `?`: the cancel scope that was cancelled catches it. Returning it from a task
/// is not a failure of the task; nurseries do not report it as one.
///
/// A `Cancelled` says where the cancellation came from (Trio's `Cancelled.source` and `reason`,
/// Trio 0.31): an explicit [`cancel`](crate::CancelScope::cancel) and its reason, a deadline, a
/// failing task in a nursery, or Ctrl-C. Its `Display` says so:
/// `cancelled due to deadline`, `cancelled due to explicit with reason 'shutting down'`.
/// The reason is for people and logs, not for control flow: every `Cancelled` compares equal to
/// every other, whatever its reason.
///
/// It is one pointer wide: the reason, when there is one, is shared, not copied.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use trellis::{CancelScope, CancelSource};
///
/// let scope = CancelScope::new();
/// let seen = scope
///     .run(async {
///         scope.cancel_with_reason("shutting down");
///         let cancelled = trellis::checkpoint().await.unwrap_err();
///         assert_eq!(cancelled.source(), CancelSource::Explicit);
///         assert_eq!(cancelled.reason(), Some("shutting down"));
///         Err::<(), _>(cancelled)
///     })
///     .await;
/// assert_eq!(seen, Ok(None));
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Cancelled {
    reason: Option<Arc<CancelReason>>,
}

/// Where a cancellation came from (Trio's `Cancelled.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelSource {
    /// Not known: a `Cancelled` made by [`Cancelled::new`], or by code outside trellis.
    Unknown,
    /// [`CancelScope::cancel`](crate::CancelScope::cancel) or
    /// [`cancel_with_reason`](crate::CancelScope::cancel_with_reason).
    Explicit,
    /// The scope's deadline passed.
    Deadline,
    /// A nursery cancelled its tasks because one of them (or its body) failed or panicked, or
    /// because the nursery was dropped unfinished.
    Nursery,
    /// Ctrl-C (SIGINT) reached the entry point (Trio's `KeyboardInterrupt`).
    Interrupt,
}

impl CancelSource {
    /// The source `word` names ([`as_str`](CancelSource::as_str)'s words); another word is
    /// [`Unknown`](CancelSource::Unknown).
    pub fn from_word(word: &str) -> CancelSource {
        match word {
            "explicit" => CancelSource::Explicit,
            "deadline" => CancelSource::Deadline,
            "nursery" => CancelSource::Nursery,
            "interrupt" => CancelSource::Interrupt,
            _ => CancelSource::Unknown,
        }
    }

    /// The word `Display` uses: `explicit`, `deadline`, `nursery`, `interrupt`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelSource::Unknown => "unknown",
            CancelSource::Explicit => "explicit",
            CancelSource::Deadline => "deadline",
            CancelSource::Nursery => "nursery",
            CancelSource::Interrupt => "interrupt",
        }
    }
}

impl fmt::Display for CancelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a scope was cancelled: where from, an optional message, and the task that cancelled it.
/// The first cancellation of a scope sets it; later ones do not overwrite it (as in Trio).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelReason {
    source: CancelSource,
    message: Option<String>,
    task: Option<tokio::task::Id>,
    origin: Option<String>,
}

impl CancelReason {
    /// A reason from `source`, recording the tokio task that is running now (if any).
    pub fn new(source: CancelSource) -> Self {
        CancelReason {
            source,
            message: None,
            task: tokio::task::try_id(),
            origin: None,
        }
    }

    /// A reason that began elsewhere, in another process: `origin` says where, for people
    /// (the actor runtime writes `actor NAME#UID`). No local task did it.
    pub fn elsewhere(source: CancelSource, origin: impl Into<String>) -> Self {
        CancelReason {
            source,
            message: None,
            task: None,
            origin: Some(origin.into()),
        }
    }

    /// A deadline passing: no task did it.
    pub(crate) fn deadline() -> Self {
        CancelReason {
            source: CancelSource::Deadline,
            message: None,
            task: None,
            origin: None,
        }
    }

    /// The same reason with a message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Where the cancellation came from.
    pub fn source(&self) -> CancelSource {
        self.source
    }

    /// The message given with it, if any.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The tokio task that cancelled, when it happened in one.
    pub fn task(&self) -> Option<tokio::task::Id> {
        self.task
    }

    /// Where the cancellation began, when elsewhere than in this process
    /// ([`elsewhere`](CancelReason::elsewhere)).
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cancelled due to {}", self.source)?;
        if let Some(origin) = &self.origin {
            write!(f, " in {origin}")?;
        }
        if let Some(message) = &self.message {
            write!(f, " with reason '{message}'")?;
        }
        if let Some(task) = self.task {
            write!(f, " from task {task}")?;
        }
        Ok(())
    }
}

impl Cancelled {
    /// A `Cancelled` value with no known reason, for code that implements its own checkpoints.
    pub const fn new() -> Self {
        Cancelled { reason: None }
    }

    /// A `Cancelled` carrying `reason`.
    pub fn with_reason(reason: Arc<CancelReason>) -> Self {
        Cancelled {
            reason: Some(reason),
        }
    }

    /// Where the cancellation came from; [`CancelSource::Unknown`] when nobody said.
    pub fn source(&self) -> CancelSource {
        self.reason
            .as_ref()
            .map_or(CancelSource::Unknown, |r| r.source)
    }

    /// The message given to [`cancel_with_reason`](crate::CancelScope::cancel_with_reason) (or
    /// set by the nursery or the entry point), if any.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_ref().and_then(|r| r.message())
    }

    /// The tokio task that cancelled the scope, when it was cancelled from one.
    pub fn source_task(&self) -> Option<tokio::task::Id> {
        self.reason.as_ref().and_then(|r| r.task)
    }

    /// The whole reason, when one is known.
    pub fn cancel_reason(&self) -> Option<&Arc<CancelReason>> {
        self.reason.as_ref()
    }
}

/// Every `Cancelled` equals every other: the reason is diagnostics, not identity.
impl PartialEq for Cancelled {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Cancelled {}

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            None => f.write_str("cancelled"),
            Some(reason) => fmt::Display::fmt(reason, f),
        }
    }
}

impl fmt::Debug for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            None => f.write_str("Cancelled"),
            Some(reason) => write!(f, "Cancelled({reason})"),
        }
    }
}

impl StdError for Cancelled {}

/// The error of [`fail_after`](crate::fail_after) and [`fail_at`](crate::fail_at): the deadline
/// passed before the operation finished (Trio's `TooSlowError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("operation did not finish before its deadline")]
#[doc(alias = "TooSlowError")]
pub struct TooSlow;

/// Spawning into a nursery that has already finished. Spawn from the nursery body or from one of
/// its running tasks instead; a nursery stays open while any of them runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("the nursery is closed: all its tasks have finished")]
pub struct NurseryClosed;

/// The program was interrupted (Ctrl-C / SIGINT) and unwound through cancellation: the analogue of
/// Python's `KeyboardInterrupt`. [`crate::main`] exits with status 130 on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("interrupted")]
#[doc(alias = "KeyboardInterrupt")]
pub struct Interrupted;

/// A task given to [`Nursery::start`](crate::Nursery::start) returned without calling
/// [`TaskStatus::started`](crate::TaskStatus::started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("the task returned without calling TaskStatus::started")]
pub struct NotStarted;

/// A plain message error, made by [`Error::msg`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

/// Whether an error is (or wraps) a cancellation. Cancel scopes use it to decide what to catch.
///
/// Implemented for trellis's own errors and for `std::io::Error` (an I/O adapter reports a
/// cancelled operation as an `io::Error` wrapping [`Cancelled`]). Implement it for your own error
/// enum to use it with [`CancelScope::run`](crate::CancelScope::run) and the timeout helpers:
///
/// ```
/// use trellis::{Cancelled, IsCancelled};
///
/// #[derive(Debug)]
/// enum FetchError {
///     Cancelled,
///     NotFound,
/// }
///
/// impl From<Cancelled> for FetchError {
///     fn from(_: Cancelled) -> Self {
///         FetchError::Cancelled
///     }
/// }
///
/// impl IsCancelled for FetchError {
///     fn is_cancelled(&self) -> bool {
///         matches!(self, FetchError::Cancelled)
///     }
/// }
/// # assert!(FetchError::from(Cancelled::new()).is_cancelled());
/// # assert!(!FetchError::NotFound.is_cancelled());
/// ```
pub trait IsCancelled {
    /// True when this error is a cancellation that a cancel scope may catch.
    fn is_cancelled(&self) -> bool;

    /// For an error that can hold several (an error group): takes the cancellations out, so
    /// that a cancel scope which catches them passes on only the real failures (Trio's scopes
    /// split `Cancelled` out of an `ExceptionGroup`). The default suits errors that are one
    /// thing: a cancellation or not.
    fn split_cancelled(self) -> CancelSplit<Self>
    where
        Self: Sized,
    {
        if self.is_cancelled() {
            CancelSplit::Cancelled
        } else {
            CancelSplit::Failure(self)
        }
    }
}

/// What [`IsCancelled::split_cancelled`] found.
#[derive(Debug)]
pub enum CancelSplit<E> {
    /// Only cancellations.
    Cancelled,
    /// Cancellations and failures: the failures, without the cancellations.
    Mixed(E),
    /// No cancellation: the error unchanged.
    Failure(E),
}

impl IsCancelled for Cancelled {
    fn is_cancelled(&self) -> bool {
        true
    }
}

impl IsCancelled for std::io::Error {
    fn is_cancelled(&self) -> bool {
        self.get_ref().is_some_and(|e| e.is::<Cancelled>())
    }
}

impl IsCancelled for std::convert::Infallible {
    fn is_cancelled(&self) -> bool {
        match *self {}
    }
}

/// The error of trellis tasks: any error, a cancellation, or a group of errors.
///
/// * `?` converts every `std::error::Error + Send + Sync + 'static` into it, keeping the original
///   value for [`downcast_ref`](Error::downcast_ref).
/// * [`is_cancelled`](Error::is_cancelled) tells a cancellation apart from a failure.
/// * [`as_group`](Error::as_group) gives the [`ErrorGroup`] a failed nursery returns.
/// * A typed error whose `source()` is a [`Carried`] converts into the error it carries.
/// * It converts into `Box<dyn std::error::Error + Send + Sync>`, and from there into
///   `anyhow::Error` (`anyhow::Error::from_boxed`) or any other error library.
///
/// Like `anyhow::Error`, it does not implement `std::error::Error` itself (that would forbid the
/// blanket conversion); [`Error::into_std`] gives a value that does.
///
/// ```
/// use trellis::Error;
///
/// fn parse(s: &str) -> Result<u32, Error> {
///     Ok(s.parse::<u32>()?)
/// }
/// let err = parse("x").unwrap_err();
/// assert!(err.is::<std::num::ParseIntError>());
/// assert!(!err.is_cancelled());
/// ```
pub struct Error {
    repr: Repr,
}

enum Repr {
    /// One pointer (the shared reason, if any): no allocation for the error every cancelled
    /// task returns.
    Cancelled(Cancelled),
    /// Boxed twice so that `Error` is one pointer wide: errors are rare, results are not.
    Other(Box<Boxed>),
}

struct Boxed {
    error: Box<dyn StdError + Send + Sync + 'static>,
    /// The error value's type, as `std::any::type_name` spells it.
    type_name: &'static str,
    /// Where the error became an `Error`, when backtraces are enabled (`RUST_BACKTRACE` or
    /// `RUST_LIB_BACKTRACE`, as for std and anyhow); otherwise a disabled one, which costs
    /// nothing to make.
    backtrace: Backtrace,
    /// Notes added after the fact (PEP 678's `add_note`).
    notes: Vec<String>,
}

impl Repr {
    fn other(error: Box<dyn StdError + Send + Sync + 'static>, type_name: &'static str) -> Self {
        // A group's members carry their own backtraces; the group's would be noise. So would
        // a cancellation's that a typed error wraps (`IoError::Cancelled`, say): control flow
        // rather than a fault, and frequent enough that capturing would cost.
        let wraps_cancelled = error
            .source()
            .is_some_and(|source| source.is::<Cancelled>());
        let backtrace = if error.is::<ErrorGroup>() || wraps_cancelled {
            Backtrace::disabled()
        } else {
            Backtrace::capture()
        };
        Repr::Other(Box::new(Boxed {
            error,
            type_name,
            backtrace,
            notes: Vec::new(),
        }))
    }
}

/// A `Cancelled` with no reason, for errors that report one as their `source()`.
pub(crate) static CANCELLED: Cancelled = Cancelled::new();

impl Error {
    /// Wraps any error.
    pub fn new<E: StdError + Send + Sync + 'static>(error: E) -> Self {
        Error::from(error)
    }

    /// An error made of a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::from(Message(message.to_string()))
    }

    /// Wraps an already boxed error (as `anyhow::Error` and `Box<dyn Error>` give).
    pub fn from_boxed(error: Box<dyn StdError + Send + Sync + 'static>) -> Self {
        let error = match error.downcast::<Cancelled>() {
            Ok(cancelled) => {
                return Error {
                    repr: Repr::Cancelled(*cancelled),
                };
            }
            Err(other) => other,
        };
        let error = match Carried::unwrap_bare(error) {
            Ok(held) => return held,
            Err(other) => other,
        };
        let error = match Carried::take(error, |e| &**e) {
            Ok(held) => return held,
            Err(other) => other,
        };
        Error {
            repr: Repr::other(error, "Box<dyn std::error::Error + Send + Sync>"),
        }
    }

    /// The cancellation error.
    pub const fn cancelled() -> Self {
        Error {
            repr: Repr::Cancelled(Cancelled::new()),
        }
    }

    /// The cancellation inside, when this error is one: the [`Cancelled`] itself, one in its
    /// source chain, or the first leaf of a group made only of cancellations.
    pub fn as_cancelled(&self) -> Option<&Cancelled> {
        match &self.repr {
            Repr::Cancelled(cancelled) => Some(cancelled),
            Repr::Other(_) if !self.is_cancelled() => None,
            Repr::Other(e) => match e.error.downcast_ref::<ErrorGroup>() {
                Some(group) => group.leaves().find_map(Error::as_cancelled),
                None => self.chain().find_map(|e| e.downcast_ref::<Cancelled>()),
            },
        }
    }

    /// The cancellation inside (see [`as_cancelled`](Error::as_cancelled)), or a `Cancelled`
    /// without a reason when this error is not one.
    pub fn into_cancelled(self) -> Cancelled {
        match self.repr {
            Repr::Cancelled(cancelled) => cancelled,
            _ => self.as_cancelled().cloned().unwrap_or_default(),
        }
    }

    /// True when this is [`Cancelled`], an error whose source chain contains it, or a group
    /// made only of such errors (PEP 654: a group of cancellations is a cancellation).
    pub fn is_cancelled(&self) -> bool {
        match &self.repr {
            Repr::Cancelled(_) => true,
            Repr::Other(e) => {
                if let Some(group) = e.error.downcast_ref::<ErrorGroup>() {
                    return group.leaves().all(Error::is_cancelled);
                }
                let mut next: Option<&(dyn StdError + 'static)> = Some(e.error.as_ref());
                while let Some(e) = next {
                    if e.is::<Cancelled>() {
                        return true;
                    }
                    next = e.source();
                }
                false
            }
        }
    }

    /// True when this is the [`Interrupted`] error, or a group with it among its leaves.
    pub fn is_interrupted(&self) -> bool {
        match self.as_group() {
            Some(group) => group.leaves().any(|e| e.is::<Interrupted>()),
            None => self.is::<Interrupted>(),
        }
    }

    /// The group, when this error is an [`ErrorGroup`].
    pub fn as_group(&self) -> Option<&ErrorGroup> {
        self.downcast_ref()
    }

    /// The group, when this error is an [`ErrorGroup`]; the error itself otherwise.
    pub fn into_group(self) -> Result<ErrorGroup, Self> {
        self.downcast()
    }

    /// The single failure inside: a group with exactly one leaf gives that leaf (however deeply
    /// nested); any other error gives itself back unchanged.
    ///
    /// ```
    /// use trellis::{Error, ErrorGroup};
    ///
    /// let group = ErrorGroup::new("nursery", vec![Error::msg("boom")]);
    /// let single = Error::from(group).into_single().unwrap();
    /// assert_eq!(single.to_string(), "boom");
    /// ```
    pub fn into_single(self) -> Result<Self, Self> {
        match self.into_group() {
            Ok(group) => group.into_single().map_err(Error::from),
            Err(other) => Ok(other),
        }
    }

    /// True when the error is a `T`.
    pub fn is<T: StdError + 'static>(&self) -> bool {
        self.downcast_ref::<T>().is_some()
    }

    /// The error as a `T`, when it is one.
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        self.as_dyn().downcast_ref()
    }

    /// The error as a `T` by value, or itself back.
    pub fn downcast<T: StdError + 'static>(self) -> Result<T, Self> {
        match self.repr {
            Repr::Cancelled(cancelled) => {
                let boxed: Box<dyn StdError + Send + Sync + 'static> = Box::new(cancelled);
                boxed.downcast::<T>().map(|b| *b).map_err(|boxed| Error {
                    repr: Repr::Cancelled(*boxed.downcast::<Cancelled>().expect("put in above")),
                })
            }
            Repr::Other(other) => {
                let Boxed {
                    error,
                    type_name,
                    backtrace,
                    notes,
                } = *other;
                error.downcast::<T>().map(|b| *b).map_err(|error| Error {
                    repr: Repr::Other(Box::new(Boxed {
                        error,
                        type_name,
                        backtrace,
                        notes,
                    })),
                })
            }
        }
    }

    /// The type of the error value, as [`std::any::type_name`] spells it (for example
    /// `std::num::ParseIntError`). An error made from an already boxed one names the box.
    ///
    /// ```
    /// let err = trellis::Error::from("x".parse::<u8>().unwrap_err());
    /// assert_eq!(err.type_name(), "core::num::error::ParseIntError");
    /// ```
    pub fn type_name(&self) -> &'static str {
        match &self.repr {
            Repr::Cancelled(_) => std::any::type_name::<Cancelled>(),
            Repr::Other(other) => other.type_name,
        }
    }

    /// Where this error became an [`Error`], when backtraces are enabled (`RUST_BACKTRACE=1` or
    /// `RUST_LIB_BACKTRACE=1`); `None` otherwise, for [`Cancelled`] and for groups (their
    /// members carry their own). `{:?}` prints it after the causes.
    pub fn backtrace(&self) -> Option<&Backtrace> {
        match &self.repr {
            Repr::Other(other) if other.backtrace.status() == BacktraceStatus::Captured => {
                Some(&other.backtrace)
            }
            _ => None,
        }
    }

    /// Adds a note (Python's `add_note`, PEP 678): context found after the error was made.
    /// Notes print after the message in `{:?}` and in an error group's tree.
    ///
    /// ```
    /// let mut err = trellis::Error::msg("upload failed");
    /// err.add_note("while syncing /data (attempt 3 of 3)");
    /// assert_eq!(err.notes(), ["while syncing /data (attempt 3 of 3)"]);
    /// assert!(format!("{err:?}").starts_with("upload failed\nwhile syncing /data (attempt 3 of 3)"));
    /// ```
    pub fn add_note(&mut self, note: impl Into<String>) {
        if let Repr::Cancelled(cancelled) = &self.repr {
            // The one unboxed error: boxed now, still a cancellation.
            self.repr = Repr::Other(Box::new(Boxed {
                error: Box::new(cancelled.clone()),
                type_name: std::any::type_name::<Cancelled>(),
                backtrace: Backtrace::disabled(),
                notes: Vec::new(),
            }));
        }
        if let Repr::Other(other) = &mut self.repr {
            other.notes.push(note.into());
        }
    }

    /// The notes added to this error, oldest first.
    pub fn notes(&self) -> &[String] {
        match &self.repr {
            Repr::Cancelled(_) => &[],
            Repr::Other(other) => &other.notes,
        }
    }

    /// The error as a trait object.
    pub fn as_dyn(&self) -> &(dyn StdError + Send + Sync + 'static) {
        match &self.repr {
            Repr::Cancelled(cancelled) => cancelled,
            Repr::Other(e) => e.error.as_ref(),
        }
    }

    /// The chain of errors: this one, then each `source()`.
    pub fn chain(&self) -> impl Iterator<Item = &(dyn StdError + 'static)> {
        let first: &(dyn StdError + 'static) = self.as_dyn();
        std::iter::successors(Some(first), |e: &&(dyn StdError + 'static)| (*e).source())
    }

    /// A value that implements `std::error::Error`, for APIs that need one.
    pub fn into_std(self) -> Box<dyn StdError + Send + Sync + 'static> {
        self.into()
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        // Resolved at compile time for every `E` but `Cancelled`; no allocation either way.
        let mut slot = Some(error);
        if let Some(cancelled) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Cancelled>>() {
            return Error {
                repr: Repr::Cancelled(cancelled.take().expect("filled above")),
            };
        }
        if let Some(carried) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Carried>>() {
            return carried.take().expect("filled above").into_inner();
        }
        let error = match Carried::take(slot.expect("filled above"), |e| e as _) {
            Ok(held) => return held,
            Err(other) => other,
        };
        Error {
            repr: Repr::other(Box::new(error), std::any::type_name::<E>()),
        }
    }
}

impl From<Error> for Box<dyn StdError + Send + Sync + 'static> {
    fn from(error: Error) -> Self {
        match error.repr {
            Repr::Cancelled(cancelled) => Box::new(cancelled),
            Repr::Other(e) => e.error,
        }
    }
}

/// With the `anyhow` feature: `?` turns a trellis [`Error`] into an `anyhow::Error`. A group
/// stays downcastable to [`ErrorGroup`] and a cancellation to [`Cancelled`]; other errors keep
/// their message and source chain.
#[cfg(feature = "anyhow")]
impl From<Error> for anyhow::Error {
    fn from(error: Error) -> Self {
        match error.repr {
            Repr::Cancelled(cancelled) => anyhow::Error::new(cancelled),
            Repr::Other(boxed) => match boxed.error.downcast::<ErrorGroup>() {
                Ok(group) => anyhow::Error::new(*group),
                Err(other) => anyhow::Error::from_boxed(other),
            },
        }
    }
}

impl IsCancelled for Error {
    fn is_cancelled(&self) -> bool {
        Error::is_cancelled(self)
    }

    fn split_cancelled(self) -> CancelSplit<Self> {
        if self.is_cancelled() {
            return CancelSplit::Cancelled;
        }
        let has_cancelled = self
            .as_group()
            .is_some_and(|g| g.leaves().any(Error::is_cancelled));
        if !has_cancelled {
            return CancelSplit::Failure(self);
        }
        let group = self.into_group().expect("checked above");
        match group.split_by(&mut |e| e.as_group().is_none() && e.is_cancelled()) {
            (_, Some(rest)) => CancelSplit::Mixed(rest.into()),
            (_, None) => CancelSplit::Cancelled,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_dyn(), f)?;
        if f.alternate() {
            for cause in self.chain().skip(1) {
                write!(f, ": {cause}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    /// Groups draw as a tree; other errors print their message and their chain of causes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(group) = self.as_group() {
            return fmt::Display::fmt(group, f);
        }
        fmt::Display::fmt(self.as_dyn(), f)?;
        for note in self.notes() {
            write!(f, "\n{note}")?;
        }
        let mut causes = self.chain().skip(1).peekable();
        if causes.peek().is_some() {
            f.write_str("\n\nCaused by:")?;
            for (i, cause) in causes.enumerate() {
                write!(f, "\n    {i}: {cause}")?;
            }
        }
        if let Some(backtrace) = self.backtrace() {
            let text = backtrace.to_string();
            write!(f, "\n\nStack backtrace:\n{}", crate::backtrace::fold(&text))?;
        }
        Ok(())
    }
}
