//! The cancel scope: where cancellation originates.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::node::Node;
use crate::context::{self, InNode};
use crate::error::IsCancelled;
use crate::time;

/// A region of code that can be cancelled as a unit, by a call or by a deadline.
///
/// `CancelScope` is a cheap, cloneable handle: clone it to cancel the scope from another task or
/// thread, or to move its deadline after it was entered. Run code in it with
/// [`run`](CancelScope::run), once.
///
/// * [`cancel`](CancelScope::cancel) makes every checkpoint inside return `Err(Cancelled)`.
/// * A deadline ([`set_deadline`](CancelScope::set_deadline)) cancels the scope when it passes;
///   it can be set, moved or removed at any time.
/// * A shielded scope ([`set_shield`](CancelScope::set_shield)) hides cancellation from outside,
///   so that cleanup after a cancellation can still await.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use trellis::CancelScope;
///
/// let scope = CancelScope::new();
/// scope.set_deadline(Some(tokio::time::Instant::now() + Duration::from_secs(1)));
/// let outcome = scope
///     .run(async {
///         trellis::sleep(Duration::from_secs(10)).await?;
///         Ok::<_, trellis::Cancelled>("slept")
///     })
///     .await;
/// assert_eq!(outcome, Ok(None)); // the deadline cancelled the sleep and the scope caught it
/// assert!(scope.cancelled_caught());
/// # }
/// ```
#[derive(Clone)]
pub struct CancelScope {
    node: Arc<Node>,
}

impl std::fmt::Debug for CancelScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelScope")
            .field("deadline", &self.deadline())
            .field("shield", &self.shield())
            .field("cancel_called", &self.cancel_called())
            .field("cancelled_caught", &self.cancelled_caught())
            .finish()
    }
}

impl Default for CancelScope {
    fn default() -> Self {
        CancelScope::new()
    }
}

impl CancelScope {
    /// A scope with no deadline and no shield.
    pub fn new() -> Self {
        CancelScope {
            node: Node::new_root(),
        }
    }

    /// A scope cancelled at `deadline`.
    pub fn with_deadline(deadline: Instant) -> Self {
        let scope = CancelScope::new();
        scope.set_deadline(Some(deadline));
        scope
    }

    /// A scope cancelled `timeout` after it is entered (Trio's relative deadline: the clock starts
    /// at [`run`](CancelScope::run), not here). Until then [`deadline`](CancelScope::deadline) is
    /// `None` and [`relative_timeout`](CancelScope::relative_timeout) tells the timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        let scope = CancelScope::new();
        scope.node.set_relative_timeout(timeout);
        scope
    }

    /// The timeout of a scope made by [`with_timeout`](CancelScope::with_timeout) that has not
    /// been entered yet.
    pub fn relative_timeout(&self) -> Option<Duration> {
        self.node.relative_timeout()
    }

    /// A shielded scope: cancellation from outside does not reach the code inside.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::time::Duration;
    /// use trellis::CancelScope;
    ///
    /// let outer = CancelScope::new();
    /// outer.cancel();
    /// let cleaned_up = outer
    ///     .run(async {
    ///         // Cleanup that must await even though we are cancelled.
    ///         CancelScope::shielded().run(trellis::sleep(Duration::from_secs(1))).await?;
    ///         trellis::checkpoint().await // cancelled again once outside the shield
    ///     })
    ///     .await;
    /// assert_eq!(cleaned_up, Ok(None));
    /// # }
    /// ```
    pub fn shielded() -> Self {
        let scope = CancelScope::new();
        scope.set_shield(true);
        scope
    }

    pub(crate) fn from_node(node: Arc<Node>) -> Self {
        CancelScope { node }
    }

    /// Cancels the scope: from now on every checkpoint inside returns `Err(Cancelled)`. Idempotent;
    /// may be called before the scope is entered, from any task or thread.
    pub fn cancel(&self) {
        self.node.cancel();
    }

    /// True once [`cancel`](CancelScope::cancel) was called or the deadline passed.
    pub fn cancel_called(&self) -> bool {
        self.node.cancel_called()
    }

    /// True when the scope caught a `Cancelled` on its way out (its `run` returned `Ok(None)`).
    pub fn cancelled_caught(&self) -> bool {
        self.node.cancelled_caught()
    }

    /// The deadline, if one is set. Setting one replaces a relative timeout.
    pub fn deadline(&self) -> Option<Instant> {
        time::decode_opt(self.node.deadline())
    }

    /// Sets, moves or (with `None`) removes the deadline. Code blocked inside notices at once.
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        self.node.set_deadline(time::encode_opt(deadline));
    }

    /// Whether the scope is shielded.
    pub fn shield(&self) -> bool {
        self.node.shield()
    }

    /// Shields the scope from cancellation outside it, or stops doing so.
    pub fn set_shield(&self, shield: bool) {
        self.node.set_shield(shield);
    }

    /// Runs `future` inside the scope.
    ///
    /// Returns `Ok(Some(output))` when it succeeds, `Ok(None)` when it failed with a
    /// cancellation that this scope caught, and the error otherwise — including a `Cancelled`
    /// that belongs to a scope further out.
    ///
    /// # Panics
    ///
    /// When the scope was entered before: each scope runs code once, as in Trio.
    pub async fn run<F, T, E>(&self, future: F) -> Result<Option<T>, E>
    where
        F: Future<Output = Result<T, E>>,
        E: IsCancelled,
    {
        assert!(
            self.node.mark_entered(),
            "a CancelScope can be entered only once"
        );
        if let Some(parent) = context::current() {
            self.node.attach(&parent);
        }
        let leave = Leave(&self.node);
        let outcome = InNode::new(future, self.node.clone()).await;
        let result = match outcome {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.is_cancelled() && self.node.try_catch() => Ok(None),
            Err(e) => Err(e),
        };
        drop(leave);
        result
    }
}

/// Detaches a scope's node from its parent when the scope is left, also by being dropped.
struct Leave<'a>(&'a Arc<Node>);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.detach();
    }
}
