//! Bridges between trellis cancellation and tokio-util's [`CancellationToken`], for libraries
//! that take a token (or hand one out) and code that runs under trellis scopes.
//!
//! * [`cancel_on_token`]: a token cancelled cancels a scope — the body sees `Cancelled` at its
//!   next checkpoint, runs its cleanup, and the call returns `Ok(None)`.
//! * [`with_token`]: the enclosing scopes cancelled (explicitly, by a deadline, by a failing
//!   sibling task, by Ctrl-C) cancel a token handed to the body — a library future that
//!   watches the token ends on its own terms, and `with_token` waits for it.
//!
//! Neither spawns a task: each is one future that polls the body and the other side together.

use std::future::Future;
use std::pin::pin;

use tokio_util::sync::CancellationToken;

use crate::cancel::CancelScope;
use crate::error::{Error, IsCancelled};

/// Runs `body` in a new cancel scope that `token` cancels: when the token is cancelled, the
/// scope is (with the reason "cancellation token"), `body` sees `Cancelled` at its next
/// checkpoint and finishes its cleanup. Returns like [`CancelScope::run`]: `Ok(Some(value))`,
/// `Ok(None)` when the scope caught its cancellation, the error otherwise.
///
/// ```
/// use tokio_util::sync::CancellationToken;
///
/// trellis::Runner::current_thread().run(async {
///     let token = CancellationToken::new();
///     token.cancel();
///     let got = trellis::token::cancel_on_token(token, async {
///         trellis::sleep_forever().await?;
///         Ok::<_, trellis::Error>(())
///     })
///     .await?;
///     assert_eq!(got, None);
///     Ok::<_, trellis::Error>(())
/// })
/// .unwrap();
/// ```
///
/// # Errors
///
/// `body`'s error; a cancellation from a scope further out.
pub async fn cancel_on_token<F, T, E>(token: CancellationToken, body: F) -> Result<Option<T>, Error>
where
    F: Future<Output = Result<T, E>>,
    E: Into<Error> + IsCancelled,
{
    let scope = CancelScope::new();
    let mut run = pin!(scope.run(async { body.await.map_err(Into::into) }));
    let mut cancelled = pin!(token.cancelled());
    let mut watching = true;
    std::future::poll_fn(|cx| {
        if watching && cancelled.as_mut().poll(cx).is_ready() {
            watching = false;
            scope.cancel_with_reason("cancellation token");
        }
        run.as_mut().poll(cx)
    })
    .await
}

/// Runs the future `body` makes from a fresh [`CancellationToken`], cancelling the token when
/// the code around is cancelled (any enclosing scope: explicitly, by its deadline, by a
/// nursery whose other task failed, by Ctrl-C). `body` is then left to finish on its own
/// terms — it is the library's job to watch its token — and its output is returned either way.
/// The token is also cancelled when `body` finishes, so that what it left running stops.
///
/// ```
/// use std::time::Duration;
///
/// trellis::Runner::current_thread().run(async {
///     // A library call that runs until its token is cancelled.
///     let stopped = trellis::move_on_after(Duration::from_millis(10), async {
///         Ok::<_, trellis::Error>(
///             trellis::token::with_token(|token| async move {
///                 token.cancelled().await;
///                 "stopped by the deadline"
///             })
///             .await,
///         )
///     })
///     .await?;
///     assert_eq!(stopped, Some("stopped by the deadline"));
///     Ok::<_, trellis::Error>(())
/// })
/// .unwrap();
/// ```
pub async fn with_token<F, Fut>(body: F) -> Fut::Output
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future,
{
    let token = CancellationToken::new();
    let _cancel_when_done = token.clone().drop_guard();
    let mut body = pin!(body(token.clone()));
    // A checkpoint that blocks until the code around is cancelled (deadlines included).
    let mut around = pin!(crate::sleep_forever());
    let mut watching = true;
    std::future::poll_fn(|cx| {
        if watching && around.as_mut().poll(cx).is_ready() {
            watching = false;
            token.cancel();
        }
        body.as_mut().poll(cx)
    })
    .await
}
