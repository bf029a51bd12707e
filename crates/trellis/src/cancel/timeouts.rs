//! Timeouts: `move_on_*` gives up quietly, `fail_*` gives up with [`TooSlow`].
//!
//! Each returns a future that owns its cancel scope. As in Trio 0.27, a relative timeout
//! (`*_after`) starts when the future is first polled, not when it is made, and the builder
//! method [`shield`](MoveOn::shield) shields the scope from cancellation outside it (its own
//! deadline still applies). A duration too large for the clock (up to `Duration::MAX`) means
//! no deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Instant;

use super::CancelScope;
use super::scope::{ScopeRun, ScopeSpec};
use crate::error::{IsCancelled, TooSlow};

/// Runs `future` with a deadline `timeout` after it starts; `Ok(None)` when the deadline
/// cancelled it (Trio's `move_on_after`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// let r = trellis::move_on_after(Duration::from_secs(1), async {
///     trellis::sleep(Duration::from_secs(5)).await?;
///     Ok::<_, trellis::Cancelled>(1)
/// })
/// .await;
/// assert_eq!(r, Ok(None));
/// # }
/// ```
pub fn move_on_after<F, T, E>(timeout: Duration, future: F) -> MoveOn<F>
where
    F: Future<Output = Result<T, E>>,
    E: IsCancelled,
{
    MoveOn::new(relative(timeout), future)
}

/// Runs `future` with a deadline; `Ok(None)` when the deadline cancelled it (Trio's
/// `move_on_at`).
pub fn move_on_at<F, T, E>(deadline: Instant, future: F) -> MoveOn<F>
where
    F: Future<Output = Result<T, E>>,
    E: IsCancelled,
{
    MoveOn::new(absolute(deadline), future)
}

/// Runs `future` with a deadline `timeout` after it starts; `Err(TooSlow)` when the deadline
/// cancelled it (Trio's `fail_after`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// let r = trellis::fail_after(Duration::from_secs(1), async {
///     trellis::sleep(Duration::from_secs(5)).await?;
///     Ok::<_, trellis::Error>(1)
/// })
/// .await;
/// assert!(r.unwrap_err().is::<trellis::TooSlow>());
/// # }
/// ```
pub fn fail_after<F, T, E>(timeout: Duration, future: F) -> FailAfter<F>
where
    F: Future<Output = Result<T, E>>,
    E: IsCancelled + From<TooSlow>,
{
    FailAfter::new(relative(timeout), future)
}

/// Runs `future` with a deadline; `Err(TooSlow)` when the deadline cancelled it (Trio's
/// `fail_at`).
pub fn fail_at<F, T, E>(deadline: Instant, future: F) -> FailAfter<F>
where
    F: Future<Output = Result<T, E>>,
    E: IsCancelled + From<TooSlow>,
{
    FailAfter::new(absolute(deadline), future)
}

fn relative(timeout: Duration) -> ScopeSpec {
    ScopeSpec::relative(timeout)
}

fn absolute(deadline: Instant) -> ScopeSpec {
    ScopeSpec::absolute(deadline)
}

pin_project_lite::pin_project! {
    /// The future of [`move_on_after`] and [`move_on_at`].
    #[must_use = "futures do nothing unless you .await or poll them"]
    pub struct MoveOn<F> {
        #[pin]
        run: ScopeRun<F>,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`fail_after`] and [`fail_at`].
    #[must_use = "futures do nothing unless you .await or poll them"]
    pub struct FailAfter<F> {
        #[pin]
        run: ScopeRun<F>,
    }
}

macro_rules! timeout_builders {
    ($name:ident) => {
        impl<F> $name<F> {
            fn new<T, E>(spec: ScopeSpec, future: F) -> Self
            where
                F: Future<Output = Result<T, E>>,
                E: IsCancelled,
            {
                $name {
                    run: ScopeRun::with_spec(spec, future),
                }
            }

            /// Shields the timeout's scope from cancellation outside it (Trio's `shield=True`):
            /// the code inside runs until it finishes or the timeout's own deadline passes.
            /// For cleanup that must not wait forever.
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
            /// use std::time::Duration;
            /// let outer = trellis::CancelScope::new();
            /// outer.cancel();
            /// let r = outer
            ///     .run(async {
            ///         // Still runs, for at most a second, although `outer` is cancelled.
            ///         trellis::move_on_after(Duration::from_secs(1), trellis::sleep_forever())
            ///             .shield(true)
            ///             .await?;
            ///         trellis::checkpoint().await
            ///     })
            ///     .await;
            /// assert_eq!(r, Ok(None));
            /// # }
            /// ```
            pub fn shield(mut self, shield: bool) -> Self {
                self.run.set_shield(shield);
                self
            }

            /// A handle to the timeout's scope: cancel it, read or move its deadline.
            pub fn scope(&self) -> CancelScope {
                self.run.scope()
            }
        }

        impl<F> std::fmt::Debug for $name<F> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("scope", &self.run.scope())
                    .finish_non_exhaustive()
            }
        }
    };
}

timeout_builders!(MoveOn);
timeout_builders!(FailAfter);

impl<F, T, E> Future for MoveOn<F>
where
    F: Future<Output = Result<T, E>>,
    E: IsCancelled,
{
    type Output = Result<Option<T>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().run.poll(cx)
    }
}

impl<F, T, E> Future for FailAfter<F>
where
    F: Future<Output = Result<T, E>>,
    E: IsCancelled + From<TooSlow>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().run.poll(cx))? {
            Some(value) => Ok(value),
            None => Err(TooSlow.into()),
        })
    }
}
