//! Checkpoints: where cancellation is delivered.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::node::Node;
use crate::context;
use crate::error::Cancelled;
use crate::time::{self, NO_DEADLINE};

/// Returns `Err(Cancelled)` if the calling code is in an effectively cancelled scope, without
/// yielding. A cancel point but not a schedule point (Trio's `checkpoint_if_cancelled`), so it
/// does not count as a full checkpoint for [`assert_checkpoints`](crate::testing::assert_checkpoints).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let scope = trellis::CancelScope::new();
/// scope.cancel();
/// let caught = scope.run(async { trellis::checkpoint_if_cancelled() }).await;
/// assert_eq!(caught, Ok(None));
/// # }
/// ```
pub fn checkpoint_if_cancelled() -> Result<(), Cancelled> {
    if context::is_cancelled() {
        Err(context::cancelled())
    } else {
        Ok(())
    }
}

/// Yields to the scheduler once, then returns `Err(Cancelled)` if the calling code is in an
/// effectively cancelled scope (Trio's `checkpoint`). Put it in long computations so they can be
/// cancelled and do not starve other tasks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), trellis::Error> {
/// let mut total = 0u64;
/// for i in 0..10_000u64 {
///     total += i;
///     if i % 1_000 == 0 {
///         trellis::checkpoint().await?;
///     }
/// }
/// # assert_eq!(total, 49_995_000);
/// # Ok(()) }
/// ```
pub fn checkpoint() -> Checkpoint {
    Checkpoint { yielded: false }
}

/// The future of [`checkpoint`]: one byte, so that a task that is only a checkpoint costs no
/// more than tokio's smallest task.
#[derive(Debug)]
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Checkpoint {
    yielded: bool,
}

impl Future for Checkpoint {
    type Output = Result<(), Cancelled>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.yielded {
            // tokio's own yield: the scheduler wakes the task again once it has run the other
            // ready tasks and polled its drivers. Its future only hands the waker over on the
            // first poll, so a fresh one is polled once and dropped, keeping ours one byte.
            self.yielded = true;
            let _ = pin!(tokio::task::yield_now()).poll(cx);
            return Poll::Pending;
        }
        context::count_checkpoint();
        Poll::Ready(checkpoint_if_cancelled())
    }
}

/// The deadline that applies to the calling code: the earliest deadline of the scopes around it
/// up to the nearest shield. `None` when there is none. When the code is already effectively
/// cancelled this is an instant that has passed (Trio returns `-inf`).
pub fn current_effective_deadline() -> Option<Instant> {
    context::with_current(|node| {
        let node = node?;
        if node.is_cancelled() {
            return Some(Instant::now());
        }
        time::decode_opt(node.effective_deadline())
    })
}

/// Makes any future a checkpoint: it resolves to `Ok(output)`, or to `Err(Cancelled)` as soon
/// as the calling code is effectively cancelled, in which case the inner future is dropped when
/// the `Cancellable` is (its `Drop` is its cleanup).
///
/// The cancellation check happens before the inner future is first polled, so a cancelled scope
/// gets `Err(Cancelled)` even when the operation could complete.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
///
/// let outcome = trellis::move_on_after(Duration::from_millis(10), async {
///     // A foreign future that never finishes by itself.
///     trellis::cancellable(std::future::pending::<()>()).await
/// })
/// .await;
/// assert_eq!(outcome, Ok(None));
/// # }
/// ```
pub fn cancellable<F: Future>(future: F) -> Cancellable<F> {
    Cancellable {
        inner: future,
        wait: CancelWait::new(),
    }
}

/// [`cancellable`] for a wait on `what`, which a dump shows while it waits.
pub(crate) fn cancellable_on<F: Future>(what: &'static str, future: F) -> Cancellable<F> {
    Cancellable {
        inner: future,
        wait: CancelWait::on(what),
    }
}

pin_project_lite::pin_project! {
    /// The future returned by [`cancellable`].
    #[must_use = "futures do nothing unless you .await or poll them"]
    pub struct Cancellable<F> {
        #[pin]
        inner: F,
        wait: CancelWait,
    }
}

impl<F> std::fmt::Debug for Cancellable<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancellable").finish_non_exhaustive()
    }
}

impl<F: Future> Future for Cancellable<F> {
    type Output = Result<F::Output, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.wait.is_cancelled() {
            return Poll::Ready(Err(this.wait.cancelled()));
        }
        if let Poll::Ready(output) = this.inner.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match this.wait.poll_cancelled(cx) {
            Poll::Ready(()) => Poll::Ready(Err(this.wait.cancelled())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// How a blocked operation hears about cancellation: the node it waits in, its slot in that
/// node's waiter list, and a timer for the effective deadline — all allocated only once the
/// operation has to wait, so that one that completes at once stays small and cheap. Leaves the
/// waiter list on drop.
///
/// Use: call [`is_cancelled`](CancelWait::is_cancelled) before trying the operation, and
/// [`poll_cancelled`](CancelWait::poll_cancelled) once it has to wait.
pub(crate) struct CancelWait {
    started: bool,
    /// False for operations that are not cancel points (a `Stream` poll): they still take the
    /// budgeted schedule point but never report cancellation.
    cancellable: bool,
    /// What the operation waits on, for a dump (recorded once it has to wait).
    what: Option<&'static str>,
    /// When the operation ends by itself (a sleep's deadline), for a dump; or `NO_DEADLINE`.
    until: i64,
    waiting: Option<Box<Waiting>>,
}

struct Waiting {
    node: Arc<Node>,
    key: Option<usize>,
    last_waker: Option<Waker>,
    timer: Option<(i64, Pin<Box<Sleep>>)>,
    /// The wait as the task's dump slot shows it; cleared when the operation ends.
    _recorded: Option<crate::dump::Recorded>,
}

impl CancelWait {
    pub(crate) const fn new() -> Self {
        CancelWait {
            started: false,
            cancellable: true,
            what: None,
            until: NO_DEADLINE,
            waiting: None,
        }
    }

    /// For an operation that waits on `what` (a dump shows it while it waits).
    pub(crate) const fn on(what: &'static str) -> Self {
        CancelWait {
            started: false,
            cancellable: true,
            what: Some(what),
            until: NO_DEADLINE,
            waiting: None,
        }
    }

    /// For an operation that waits on `what` until `until` at most (a sleep).
    const fn on_until(what: &'static str, until: i64) -> Self {
        CancelWait {
            started: false,
            cancellable: true,
            what: Some(what),
            until,
            waiting: None,
        }
    }

    /// For an operation that is not a cancel point.
    pub(crate) const fn uncancellable() -> Self {
        CancelWait {
            started: false,
            cancellable: false,
            what: None,
            until: NO_DEADLINE,
            waiting: None,
        }
    }

    /// Whether the operation must fail with `Cancelled` now. The first call counts a
    /// checkpoint.
    #[inline]
    pub(crate) fn is_cancelled(&mut self) -> bool {
        if !self.cancellable {
            return false;
        }
        if let Some(waiting) = &self.waiting {
            return waiting.node.is_cancelled();
        }
        if !self.started {
            self.started = true;
            return context::checkpoint_is_cancelled();
        }
        context::is_cancelled()
    }

    /// The start of an operation that can complete at once (a channel send, say): ready with
    /// whether it is cancelled, or pending once in a while to yield to other tasks first
    /// (Trio's schedule point, taken every 128 operations on a thread rather
    /// than every time, as tokio's budget does). Call it until it is ready, then try the
    /// operation.
    #[inline]
    pub(crate) fn poll_start(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.started {
            return Poll::Ready(self.is_cancelled());
        }
        self.started = true;
        let (cancelled, yield_now) = context::start_operation();
        let cancelled = cancelled && self.cancellable;
        if yield_now && !cancelled {
            let _ = pin!(tokio::task::yield_now()).poll(cx);
            return Poll::Pending;
        }
        Poll::Ready(cancelled)
    }

    /// The `Cancelled` to return, with the reason of the scope that cancelled this operation.
    #[cold]
    pub(crate) fn cancelled(&self) -> Cancelled {
        match &self.waiting {
            Some(waiting) => waiting.node.cancelled(),
            None => context::cancelled(),
        }
    }

    /// Registers `cx`'s waker for cancellation and arms the deadline timer; ready when the
    /// operation is cancelled. Outside any scope it is never ready.
    pub(crate) fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.cancellable {
            return Poll::Pending;
        }
        if !self.started {
            self.started = true;
            context::count_checkpoint();
        }
        if self.waiting.is_none() {
            // From now on this operation belongs to the node it started waiting in.
            let Some(node) = context::current() else {
                return Poll::Pending;
            };
            self.waiting = Some(Box::new(Waiting {
                node,
                key: None,
                last_waker: None,
                timer: None,
                _recorded: self
                    .what
                    .and_then(|what| crate::dump::Recorded::until(what.into(), self.until)),
            }));
        }
        let waiting = self.waiting.as_mut().expect("set above");
        let node = &waiting.node;
        if !waiting
            .last_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            node.register(&mut waiting.key, cx.waker());
            waiting.last_waker = Some(cx.waker().clone());
        }
        // Checked after registering: a cancel that raced with us either saw our waker or is
        // visible now.
        if node.is_cancelled() {
            return Poll::Ready(());
        }
        loop {
            let deadline = node.effective_deadline();
            if deadline == NO_DEADLINE {
                waiting.timer = None;
                return Poll::Pending;
            }
            match &mut waiting.timer {
                Some((armed, sleep)) if *armed == deadline => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if node.is_cancelled() {
                        return Poll::Ready(());
                    }
                    // The timer fired a hair early for our clock; arm it again.
                    waiting.timer = None;
                }
                _ => {
                    let sleep = Box::pin(tokio::time::sleep_until(time::decode(deadline)));
                    waiting.timer = Some((deadline, sleep));
                }
            }
        }
    }
}

impl Drop for CancelWait {
    /// Inline, so that an operation that never waited pays only this test.
    #[inline]
    fn drop(&mut self) {
        if let Some(waiting) = self.waiting.take() {
            drop_waiting(waiting);
        }
    }
}

#[inline(never)]
fn drop_waiting(waiting: Box<Waiting>) {
    drop(waiting);
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.node.deregister(key);
        }
    }
}

/// Sleeps for `duration`; a checkpoint (Trio's `sleep`). A duration too large for the clock
/// (up to `Duration::MAX`) sleeps until cancelled, as tokio's `sleep` does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// trellis::sleep(std::time::Duration::from_secs(1)).await.unwrap();
/// # }
/// ```
pub async fn sleep(duration: Duration) -> Result<(), Cancelled> {
    match time::instant_after(duration) {
        Some(deadline) => sleep_until(deadline).await,
        None => sleep_forever().await.map(|never| match never {}),
    }
}

/// Sleeps until `deadline`; a checkpoint, also when the deadline has passed.
pub async fn sleep_until(deadline: Instant) -> Result<(), Cancelled> {
    if deadline <= Instant::now() {
        return checkpoint().await;
    }
    Cancellable {
        inner: tokio::time::sleep_until(deadline),
        wait: CancelWait::on_until("sleep", time::encode(deadline)),
    }
    .await
}

/// Sleeps until cancelled: it only ever returns `Err(Cancelled)`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let slept = trellis::move_on_after(std::time::Duration::from_secs(5), trellis::sleep_forever())
///     .await;
/// assert_eq!(slept, Ok(None));
/// # }
/// ```
pub async fn sleep_forever() -> Result<Infallible, Cancelled> {
    cancellable_on("sleep_forever", std::future::pending::<Infallible>()).await
}
