//! An [`Error`] held inside a typed error, handed back whole by `?`.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::error::Error;

/// A trellis [`Error`] held by a typed error as the whole of one variant's meaning, so that
/// converting the typed error into an [`Error`] gives back the held error itself.
///
/// A library's error enum often has a variant for a failure that is already an [`Error`]: the
/// failure of a function in another process, which may be an [`ErrorGroup`](crate::ErrorGroup)
/// of failures from further down. Boxing that variant into a new `Error` would hide the group
/// from [`as_group`](Error::as_group), from splitting and from the printed tree. Make a
/// `Carried` the variant's [`source`](std::error::Error::source), and `?`, [`Error::from`],
/// [`Error::new`] and [`Error::from_boxed`] unwrap it: the typed error is dropped and the
/// carried error, with its group, notes and backtrace, is the result. A bare `Carried`
/// (`Err(carried)?`) converts the same way.
///
/// The typed error around it is dropped, its text included: a variant that carries an error
/// should say nothing the carried error does not (any error whose direct source is a
/// `Carried` is read as such a variant).
///
/// ```
/// use trellis::{Carried, Error, ErrorGroup};
///
/// #[derive(Debug, thiserror::Error)]
/// enum FetchError {
///     #[error("the mirror failed")]
///     Mirror(#[source] Carried),
///     #[error("no mirror answered")]
///     NoMirror,
/// }
///
/// let failures = ErrorGroup::new("mirrors", vec![Error::msg("a"), Error::msg("b")]);
/// let typed = FetchError::Mirror(Carried::new(failures.into()));
/// let error = Error::from(typed);
/// assert_eq!(error.as_group().unwrap().errors().len(), 2);
/// assert!(Error::from(FetchError::NoMirror).is::<FetchError>());
/// ```
pub struct Carried(Arc<Error>);

impl Carried {
    /// Holds `error`.
    pub fn new(error: Error) -> Self {
        Carried(Arc::new(error))
    }

    /// The held error.
    pub fn get(&self) -> &Error {
        &self.0
    }

    /// The held error, by value.
    pub fn into_inner(self) -> Error {
        Carried::unwrap(self.0)
    }

    /// The error `typed` carries, when its direct source (seen through `view`) is a
    /// `Carried`; `typed` back otherwise.
    ///
    /// The carrier is reached only through `source()`, a shared borrow: a second handle on
    /// the error is taken, `typed` dropped, and the handle, then the only one,
    /// [`unwrap`](Carried::unwrap)ped.
    pub(crate) fn take<T>(
        typed: T,
        view: impl Fn(&T) -> &(dyn StdError + 'static),
    ) -> Result<Error, T> {
        let handle = view(&typed)
            .source()
            .and_then(|source| source.downcast_ref::<Carried>())
            .map(|carried| Arc::clone(&carried.0));
        match handle {
            Some(held) => {
                drop(typed);
                Ok(Carried::unwrap(held))
            }
            None => Err(typed),
        }
    }

    /// A `Carried` itself (`Err(carried)?`) converts into what it holds, as a typed error
    /// around it does.
    pub(crate) fn unwrap_bare(
        error: Box<dyn StdError + Send + Sync + 'static>,
    ) -> Result<Error, Box<dyn StdError + Send + Sync + 'static>> {
        error
            .downcast::<Carried>()
            .map(|carried| carried.into_inner())
    }

    /// The error by value. A carrier that outlived its typed error (one behind an `Arc` of its
    /// own, shared elsewhere) keeps a handle: the error is then shared rather than moved, and
    /// reads the same, though a group in it is no longer seen as one.
    fn unwrap(held: Arc<Error>) -> Error {
        Arc::try_unwrap(held).unwrap_or_else(|shared| Error::new(Shared(shared)))
    }
}

impl fmt::Display for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The held error's own causes follow it.
impl StdError for Carried {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.as_dyn().source()
    }
}

/// A carried error that could not be moved out of its carrier.
struct Shared(Arc<Error>);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The held error is the source: a cancellation in it is still found in the chain.
impl StdError for Shared {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.0.as_dyn())
    }
}
