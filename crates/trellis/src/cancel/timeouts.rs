//! Timeouts: `move_on_*` gives up quietly, `fail_*` gives up with [`TooSlow`].

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::CancelScope;
use crate::error::{IsCancelled, TooSlow};

/// Runs `future` with a deadline `timeout` from now; `Ok(None)` when the deadline cancelled it.
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
pub async fn move_on_after<F, T, E>(timeout: Duration, future: F) -> Result<Option<T>, E>
where
    F: Future<Output = Result<T, E>>,
    E: IsCancelled,
{
    move_on_at(Instant::now() + timeout, future).await
}

/// Runs `future` with a deadline; `Ok(None)` when the deadline cancelled it.
pub async fn move_on_at<F, T, E>(deadline: Instant, future: F) -> Result<Option<T>, E>
where
    F: Future<Output = Result<T, E>>,
    E: IsCancelled,
{
    CancelScope::with_deadline(deadline).run(future).await
}

/// Runs `future` with a deadline `timeout` from now; `Err(TooSlow)` when the deadline cancelled
/// it (Trio's `fail_after`).
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
pub async fn fail_after<F, T, E>(timeout: Duration, future: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: IsCancelled + From<TooSlow>,
{
    fail_at(Instant::now() + timeout, future).await
}

/// Runs `future` with a deadline; `Err(TooSlow)` when the deadline cancelled it.
pub async fn fail_at<F, T, E>(deadline: Instant, future: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: IsCancelled + From<TooSlow>,
{
    match CancelScope::with_deadline(deadline).run(future).await? {
        Some(value) => Ok(value),
        None => Err(TooSlow.into()),
    }
}
