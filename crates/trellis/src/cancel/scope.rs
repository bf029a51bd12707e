//! The cancel scope: where cancellation originates.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Instant;

use super::node::Node;
use crate::context::{self, Current, Slot};
use crate::error::{CancelReason, CancelSource, CancelSplit, IsCancelled};
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
    /// `None` and [`relative_timeout`](CancelScope::relative_timeout) tells the timeout. A
    /// timeout too large for the clock (up to `Duration::MAX`) means no deadline.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::time::Duration;
    /// use trellis::CancelScope;
    ///
    /// let scope = CancelScope::with_timeout(Duration::from_secs(5));
    /// tokio::time::sleep(Duration::from_secs(60)).await; // not entered yet: nothing runs out
    /// scope.set_relative_timeout(Duration::from_secs(2)); // still changeable
    /// let started = tokio::time::Instant::now();
    /// let r = scope.run(trellis::sleep(Duration::from_secs(10))).await;
    /// assert_eq!(r, Ok(None));
    /// assert_eq!(started.elapsed(), Duration::from_secs(2));
    /// # }
    /// ```
    #[doc(alias = "relative_deadline")]
    pub fn with_timeout(timeout: Duration) -> Self {
        let scope = CancelScope::new();
        scope.node.set_relative_timeout(timeout);
        scope
    }

    /// Before the scope is entered: the timeout that starts when it is, if one was set (by
    /// [`with_timeout`](CancelScope::with_timeout) or
    /// [`set_relative_timeout`](CancelScope::set_relative_timeout)). Once entered: the time
    /// left until the deadline (zero once it passed), if there is one. Trio's
    /// `relative_deadline`.
    #[doc(alias = "relative_deadline")]
    pub fn relative_timeout(&self) -> Option<Duration> {
        self.node.relative_timeout()
    }

    /// Sets a deadline relative to entry: before the scope is entered, the deadline will be
    /// `timeout` after entry (this replaces an absolute deadline); once entered, it is `timeout`
    /// from now. A timeout too large for the clock means no deadline.
    pub fn set_relative_timeout(&self, timeout: Duration) {
        self.node.set_relative_timeout(timeout);
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
    /// may be called before the scope is entered, from any task or thread. The `Cancelled` that
    /// code inside gets says it was an explicit cancel, from which task.
    pub fn cancel(&self) {
        self.node
            .cancel(|| CancelReason::new(CancelSource::Explicit));
    }

    /// [`cancel`](CancelScope::cancel) with a reason that the `Cancelled` inside carries and
    /// prints (Trio 0.31's `cancel(reason=...)`). Only the first cancellation of a scope sets
    /// its reason.
    pub fn cancel_with_reason(&self, reason: impl Into<String>) {
        self.node
            .cancel(|| CancelReason::new(CancelSource::Explicit).with_message(reason));
    }

    /// Cancels the scope with a reason made elsewhere (a nursery, the entry point, an actor
    /// runtime passing on a remote cancellation).
    pub fn cancel_because(&self, reason: CancelReason) {
        self.node.cancel(|| reason);
    }

    /// True once [`cancel`](CancelScope::cancel) was called, or the deadline passed while the
    /// scope was active or before it was entered. It stays true (moving the deadline later does
    /// not undo a cancellation), and a scope left before its deadline never turns true.
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
    /// that belongs to a scope further out. An error holding cancellations *and* failures (a
    /// nursery's group) is split when this scope catches: it reports
    /// [`cancelled_caught`](CancelScope::cancelled_caught) and returns the failures alone.
    ///
    /// The scope is entered when the returned future is first polled (a relative timeout
    /// starts then) and left when it finishes or is dropped.
    ///
    /// # Panics
    ///
    /// When the scope was entered before: each scope runs code once, as in Trio.
    pub fn run<F, T, E>(&self, future: F) -> ScopeRun<F>
    where
        F: Future<Output = Result<T, E>>,
        E: IsCancelled,
    {
        ScopeRun {
            inner: future,
            node: OnceLock::from(self.node.clone()),
            spec: ScopeSpec::absolute_none(),
            state: RunState::NotEntered,
        }
    }
}

/// What a timeout's scope will be, until its node is made: on first poll (on the thread that
/// runs it, so a scope costs one allocation there and nothing where the future was made), or
/// when someone asks for a handle.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ScopeSpec {
    /// An encoded deadline, or (with `relative`) a timeout in nanoseconds; `NO_DEADLINE` for
    /// none. Kept to one word: the spec sits in every timeout's future.
    pub(crate) at: i64,
    pub(crate) relative: bool,
    pub(crate) shield: bool,
}

impl ScopeSpec {
    pub(crate) fn relative(timeout: Duration) -> Self {
        ScopeSpec {
            // Beyond ~292 years is "never", as for every duration.
            at: i64::try_from(timeout.as_nanos()).unwrap_or(time::NO_DEADLINE),
            relative: true,
            shield: false,
        }
    }

    pub(crate) fn absolute(deadline: Instant) -> Self {
        ScopeSpec {
            at: time::encode(deadline),
            relative: false,
            shield: false,
        }
    }

    /// The encoded deadline of a scope entered now.
    fn absolute_none() -> Self {
        ScopeSpec {
            at: time::NO_DEADLINE,
            relative: false,
            shield: false,
        }
    }

    pub(crate) fn deadline_from_now(&self) -> i64 {
        if !self.relative || self.at == time::NO_DEADLINE {
            return self.at;
        }
        time::deadline_after(Duration::from_nanos(self.at as u64))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    NotEntered,
    Entered,
    Left,
}

pin_project_lite::pin_project! {
    /// The future of [`CancelScope::run`] (and of the timeouts): runs the inner future inside
    /// the scope and catches the scope's own cancellation.
    #[must_use = "futures do nothing unless you .await or poll them"]
    pub struct ScopeRun<F> {
        #[pin]
        inner: F,
        node: OnceLock<Arc<Node>>,
        spec: ScopeSpec,
        state: RunState,
    }

    impl<F> PinnedDrop for ScopeRun<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.state == RunState::Entered
                && let Some(node) = this.node.get()
            {
                node.leave();
            }
            // Nobody else holds the node: keep its allocation for the next scope.
            if let Some(node) = this.node.take() {
                Node::recycle(node);
            }
        }
    }
}

impl<F> std::fmt::Debug for ScopeRun<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeRun")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<F> ScopeRun<F> {
    /// A future that runs `inner` in a scope made (later) from `spec`.
    pub(crate) fn with_spec(spec: ScopeSpec, inner: F) -> Self {
        ScopeRun {
            inner,
            node: OnceLock::new(),
            spec,
            state: RunState::NotEntered,
        }
    }

    fn node(&self) -> &Arc<Node> {
        self.node.get_or_init(|| Node::new_scope(&self.spec))
    }

    /// The scope this future runs in.
    pub(crate) fn scope(&self) -> CancelScope {
        CancelScope::from_node(self.node().clone())
    }

    /// Shields the scope (or not), before or after it is made.
    pub(crate) fn set_shield(&mut self, shield: bool) {
        match self.node.get() {
            Some(node) => node.set_shield(shield),
            None => self.spec.shield = shield,
        }
    }
}

impl<F, T, E> Future for ScopeRun<F>
where
    F: Future<Output = Result<T, E>>,
    E: IsCancelled,
{
    type Output = Result<Option<T>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.state == RunState::NotEntered {
            let node = self.as_mut().enter_node();
            context::with_current(|parent| match parent {
                Some(parent) => node.attach(parent),
                None => node.update(),
            });
            *self.as_mut().project().state = RunState::Entered;
        }
        let this = self.project();
        assert!(
            *this.state == RunState::Entered,
            "ScopeRun polled after it finished"
        );
        let outcome = {
            // The node moves into the thread-local for the poll, and back.
            let _entered = context::enter(&mut *this.node);
            ready!(this.inner.poll(cx))
        };
        let node = this.node.get().expect("made on entry");
        let result = match outcome {
            Ok(value) => Ok(Some(value)),
            Err(error) => catch(node, error),
        };
        *this.state = RunState::Left;
        node.leave();
        Poll::Ready(result)
    }
}

impl<F> ScopeRun<F> {
    /// The node, entered: made entered now (a timeout nobody asked a handle for), or marked.
    fn enter_node(self: Pin<&mut Self>) -> Arc<Node> {
        let this = self.project();
        if let Some(node) = this.node.get() {
            assert!(
                node.mark_entered(),
                "a CancelScope can be entered only once"
            );
            return node.clone();
        }
        let node = Node::new_entered_scope(this.spec);
        let _ = this.node.set(node.clone());
        node
    }
}

/// Trio's rule at a scope's exit: the cancellations in `error` are caught when the scope was
/// cancelled itself and no cancellation from outside is visible; the failures go on.
fn catch<T, E: IsCancelled>(node: &Arc<Node>, error: E) -> Result<Option<T>, E> {
    if !node.can_catch() {
        return Err(error);
    }
    if error.is_cancelled() {
        node.caught();
        return Ok(None);
    }
    match error.split_cancelled() {
        CancelSplit::Cancelled => {
            node.caught();
            Ok(None)
        }
        CancelSplit::Mixed(failures) => {
            node.caught();
            Err(failures)
        }
        CancelSplit::Failure(error) => Err(error),
    }
}

/// A scope's node lends itself to the thread-local while its code is polled.
impl Slot for OnceLock<Arc<Node>> {
    fn take(&mut self) -> Current {
        Current::Node(OnceLock::take(self).expect("entered once at a time"))
    }

    fn restore(&mut self, current: Current) {
        if let Current::Node(node) = current {
            let _ = self.set(node);
        }
    }
}
