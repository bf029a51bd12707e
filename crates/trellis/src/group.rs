//! Error groups: every failure of a nursery, as a tree (PEP 654's `ExceptionGroup`, in Rust).

use std::error::Error as StdError;
use std::fmt;

use crate::error::Error;

/// A non-empty tree of errors with a message.
#[doc(alias = "MultiError")]
#[doc(alias = "ExceptionGroup")]
///
/// A group has a message and one or more errors; each is a leaf or a nested group. A nursery
/// whose tasks failed returns a group holding one entry per failed task, and a task that ran a
/// nursery of its own contributes that nursery's group as a nested entry, so the tree mirrors the
/// task tree.
///
/// # Splitting
///
/// [`split`](ErrorGroup::split) and [`subgroup`](ErrorGroup::subgroup) pick errors by type (or by
/// a predicate, [`split_by`](ErrorGroup::split_by)) and keep the tree's shape and messages: a
/// nested group that is left with no entries disappears, so neither side is ever an empty group.
/// As in PEP 654, the predicate sees nested groups too, and a group that matches goes to the
/// matching side whole.
///
/// # Display
///
/// `Display` (and `Debug`) draw the tree:
///
/// ```text
/// nursery failed (2 errors)
/// ├─ [1] connection refused
/// └─ [2] retry loop failed (2 errors)
///    ├─ [2.1] timed out
///    └─ [2.2] bad header
///              second line of the message
/// ```
///
/// # Examples
///
/// ```
/// use trellis::{Error, ErrorGroup};
///
/// let group = ErrorGroup::new(
///     "nursery failed",
///     vec![
///         Error::msg("disk full"),
///         Error::from(ErrorGroup::new("inner", vec![Error::new(std::fmt::Error)])),
///     ],
/// );
/// assert_eq!(group.leaves().count(), 2);
/// let (fmt_errors, rest) = group.split::<std::fmt::Error>();
/// assert_eq!(fmt_errors.unwrap().leaves().count(), 1);
/// assert_eq!(rest.unwrap().to_string(), "nursery failed (1 error)\n└─ [1] disk full");
/// ```
pub struct ErrorGroup {
    message: String,
    errors: Vec<Error>,
}

impl ErrorGroup {
    /// A group of `errors` under `message`.
    ///
    /// # Panics
    ///
    /// When `errors` is empty: a group always holds at least one error (PEP 654).
    pub fn new(message: impl Into<String>, errors: Vec<Error>) -> Self {
        assert!(!errors.is_empty(), "an ErrorGroup needs at least one error");
        ErrorGroup {
            message: message.into(),
            errors,
        }
    }

    /// The message of this group (not of its members).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The direct members, leaves and nested groups, in order.
    pub fn errors(&self) -> &[Error] {
        &self.errors
    }

    /// The direct members, by value.
    pub fn into_errors(self) -> Vec<Error> {
        self.errors
    }

    /// Every leaf (non-group error) of the tree, depth first, in order.
    pub fn leaves(&self) -> impl Iterator<Item = &Error> {
        let mut stack: Vec<std::slice::Iter<'_, Error>> = vec![self.errors.iter()];
        std::iter::from_fn(move || {
            loop {
                let top = stack.last_mut()?;
                match top.next() {
                    None => {
                        stack.pop();
                    }
                    Some(e) => match e.as_group() {
                        Some(g) => stack.push(g.errors.iter()),
                        None => return Some(e),
                    },
                }
            }
        })
    }

    /// The one leaf, when the tree has exactly one; the group back otherwise.
    pub fn into_single(self) -> Result<Error, Self> {
        if self.leaves().count() != 1 {
            return Err(self);
        }
        let mut node = self;
        loop {
            let only = node
                .errors
                .pop()
                .expect("one leaf means one member per level");
            match only.into_group() {
                Ok(group) => node = group,
                Err(leaf) => return Ok(leaf),
            }
        }
    }

    /// True when some error in the tree (leaf or nested group) is a `T`.
    pub fn contains<T: StdError + 'static>(&self) -> bool {
        self.leaves().any(|e| e.is::<T>()) || self.errors.iter().any(|e| e.is::<T>())
    }

    /// Splits into the errors that match `predicate` and the rest, keeping the tree's shape.
    /// As in PEP 654, the predicate is asked about the group itself first (a group it accepts
    /// goes to the matching side whole, this one included), then about nested groups before
    /// their members. Either side is `None` when it would be empty.
    pub fn split_by(
        self,
        predicate: &mut dyn FnMut(&Error) -> bool,
    ) -> (Option<ErrorGroup>, Option<ErrorGroup>) {
        let whole = Error::from(self);
        if predicate(&whole) {
            return (Some(whole.into_group().expect("made from a group")), None);
        }
        whole
            .into_group()
            .expect("made from a group")
            .split_members(predicate)
    }

    fn split_members(
        self,
        predicate: &mut dyn FnMut(&Error) -> bool,
    ) -> (Option<ErrorGroup>, Option<ErrorGroup>) {
        let mut matched = Vec::new();
        let mut rest = Vec::new();
        for error in self.errors {
            if predicate(&error) {
                matched.push(error);
                continue;
            }
            match error.into_group() {
                Ok(group) => {
                    let (m, r) = group.split_members(predicate);
                    matched.extend(m.map(Error::from));
                    rest.extend(r.map(Error::from));
                }
                Err(leaf) => rest.push(leaf),
            }
        }
        let wrap = |errors: Vec<Error>, message: &str| {
            (!errors.is_empty()).then(|| ErrorGroup {
                message: message.to_owned(),
                errors,
            })
        };
        (wrap(matched, &self.message), wrap(rest, &self.message))
    }

    /// Splits by type: errors that are a `T` (leaves or whole nested groups, or this group
    /// itself when `T` is `ErrorGroup`) and the rest.
    ///
    /// ```
    /// use trellis::{Error, ErrorGroup};
    ///
    /// let group = ErrorGroup::new("nursery", vec![Error::msg("a"), Error::msg("b")]);
    /// let (matched, rest) = group.split::<ErrorGroup>();
    /// assert_eq!(matched.unwrap().leaves().count(), 2); // the whole group, as PEP 654 says
    /// assert!(rest.is_none());
    /// ```
    pub fn split<T: StdError + 'static>(self) -> (Option<ErrorGroup>, Option<ErrorGroup>) {
        self.split_by(&mut |e| e.is::<T>())
    }

    /// The errors that are a `T`, in the tree's shape; `None` when there are none.
    pub fn subgroup<T: StdError + 'static>(self) -> Option<ErrorGroup> {
        self.split::<T>().0
    }

    /// The errors that match `predicate`, in the tree's shape; `None` when there are none.
    pub fn subgroup_by(self, predicate: &mut dyn FnMut(&Error) -> bool) -> Option<ErrorGroup> {
        self.split_by(predicate).0
    }

    fn draw(&self, f: &mut fmt::Formatter<'_>, indent: &str, path: &str) -> fmt::Result {
        let count = self.errors.len();
        let noun = if count == 1 { "error" } else { "errors" };
        write!(f, "{} ({count} {noun})", self.message)?;
        for (i, error) in self.errors.iter().enumerate() {
            let last = i + 1 == count;
            let label = if path.is_empty() {
                format!("{}", i + 1)
            } else {
                format!("{path}.{}", i + 1)
            };
            let (branch, continuation) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            write!(f, "\n{indent}{branch}[{label}] ")?;
            let child_indent = format!("{indent}{continuation}");
            match error.as_group() {
                Some(group) => group.draw(f, &child_indent, &label)?,
                None => {
                    // Continuation lines of a multi-line message line up under its first line.
                    let pad = " ".repeat(label.len() + 3);
                    let mut text = format!("{error:#}");
                    for note in error.notes() {
                        text.push('\n');
                        text.push_str(note);
                    }
                    let mut lines = text.lines();
                    f.write_str(lines.next().unwrap_or(""))?;
                    for line in lines {
                        write!(f, "\n{child_indent}{pad}{line}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for ErrorGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.draw(f, "", "")
    }
}

impl fmt::Debug for ErrorGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl StdError for ErrorGroup {}
