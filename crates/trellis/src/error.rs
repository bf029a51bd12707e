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

use std::backtrace::{Backtrace, BacktraceStatus};
use std::error::Error as StdError;
use std::fmt;

use crate::group::ErrorGroup;

/// The error a checkpoint returns when the calling code is inside an effectively cancelled scope.
///
/// Propagate it with `?`: the cancel scope that was cancelled catches it. Returning it from a task
/// is not a failure of the task; nurseries do not report it as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

impl Cancelled {
    /// A `Cancelled` value, for code that implements its own checkpoints.
    pub const fn new() -> Self {
        Cancelled
    }
}

impl Default for Cancelled {
    fn default() -> Self {
        Cancelled
    }
}

/// The error of [`fail_after`](crate::fail_after) and [`fail_at`](crate::fail_at): the deadline
/// passed before the operation finished (Trio's `TooSlowError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("operation did not finish before its deadline")]
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
    Cancelled,
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
        // A group's members carry their own backtraces; the group's would be noise.
        let backtrace = if error.is::<ErrorGroup>() {
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

static CANCELLED: Cancelled = Cancelled;

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
        if error.is::<Cancelled>() {
            return Error {
                repr: Repr::Cancelled,
            };
        }
        Error {
            repr: Repr::other(error, "Box<dyn std::error::Error + Send + Sync>"),
        }
    }

    /// The cancellation error.
    pub const fn cancelled() -> Self {
        Error {
            repr: Repr::Cancelled,
        }
    }

    /// True when this is [`Cancelled`], or an error whose source chain contains it.
    pub fn is_cancelled(&self) -> bool {
        match &self.repr {
            Repr::Cancelled => true,
            Repr::Other(e) => {
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
            Repr::Cancelled => {
                let boxed: Box<dyn StdError + Send + Sync + 'static> = Box::new(Cancelled);
                boxed
                    .downcast::<T>()
                    .map(|b| *b)
                    .map_err(|_| Error::cancelled())
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
            Repr::Cancelled => std::any::type_name::<Cancelled>(),
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
        if let Repr::Cancelled = self.repr {
            // The one unboxed error: boxed now, still a cancellation.
            self.repr = Repr::Other(Box::new(Boxed {
                error: Box::new(Cancelled),
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
            Repr::Cancelled => &[],
            Repr::Other(other) => &other.notes,
        }
    }

    /// The error as a trait object.
    pub fn as_dyn(&self) -> &(dyn StdError + Send + Sync + 'static) {
        match &self.repr {
            Repr::Cancelled => &CANCELLED,
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
        // Resolved at compile time: the check folds away for every other `E`.
        if std::any::TypeId::of::<E>() == std::any::TypeId::of::<Cancelled>() {
            return Error {
                repr: Repr::Cancelled,
            };
        }
        Error {
            repr: Repr::other(Box::new(error), std::any::type_name::<E>()),
        }
    }
}

impl From<Error> for Box<dyn StdError + Send + Sync + 'static> {
    fn from(error: Error) -> Self {
        match error.repr {
            Repr::Cancelled => Box::new(Cancelled),
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
            Repr::Cancelled => anyhow::Error::new(Cancelled),
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
            write!(f, "\n\nStack backtrace:\n{backtrace}")?;
        }
        Ok(())
    }
}
