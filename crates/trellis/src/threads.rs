//! Blocking code on threads, under a [`CapacityLimiter`], with Trio's two cancellation choices
//! (`trio.to_thread.run_sync` and `trio.from_thread`).
//!
//! [`run_sync`] runs a closure on tokio's blocking pool once a token of the limiter is free
//! (by default one shared limiter of 40 tokens, as in Trio). A thread cannot be stopped from
//! outside, so on cancellation there are two honest options:
//!
//! * wait for the thread ([`ThreadOptions::default`]): the call is not a cancel point once the
//!   thread runs; the result comes back, and `Cancelled` arrives at the next checkpoint;
//! * abandon it ([`ThreadOptions::abandon_on_cancel`]): the call returns `Err(Cancelled)` at
//!   once and the thread finishes on its own, its result dropped. Its limiter token is held
//!   until it really ends, so abandoned threads still count.
//!
//! On the thread, [`from_thread::run`] runs async code back on the runtime, in the caller's
//! cancel scope, and [`from_thread::check_cancelled`] asks whether the caller was cancelled.
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), trellis::Error> {
//! let sum = trellis::threads::run_sync(|| (1..=100u64).sum::<u64>()).await?;
//! assert_eq!(sum, 5050);
//! # Ok(()) }
//! ```

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::cancel::cancellable;
use crate::cancel::node::Node;
use crate::context::{self, InNode};
use crate::error::{Cancelled, Error};
use crate::sync::{Borrower, CapacityLimiter};

/// The limiter every `run_sync` uses unless told otherwise: 40 threads at once, as in Trio.
pub fn default_limiter() -> &'static Arc<CapacityLimiter> {
    static LIMITER: OnceLock<Arc<CapacityLimiter>> = OnceLock::new();
    LIMITER.get_or_init(|| Arc::new(CapacityLimiter::new(40)))
}

/// How [`run_sync_with`] runs its thread.
#[derive(Debug, Clone, Default)]
pub struct ThreadOptions {
    limiter: Option<Arc<CapacityLimiter>>,
    abandon_on_cancel: bool,
}

impl ThreadOptions {
    /// Uses `limiter` instead of the default one.
    pub fn limiter(mut self, limiter: Arc<CapacityLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// On cancellation, returns `Err(Cancelled)` at once and leaves the thread to finish alone.
    pub fn abandon_on_cancel(mut self) -> Self {
        self.abandon_on_cancel = true;
        self
    }
}

/// Runs `f` on a thread with the default options (wait through cancellation, default limiter).
///
/// # Errors
///
/// `Cancelled` if the caller is cancelled while waiting for a limiter token (before the thread
/// started).
///
/// # Panics
///
/// Resumes a panic of `f` in the caller.
#[doc(alias = "to_thread_run_sync")]
pub async fn run_sync<F, R>(f: F) -> Result<R, Error>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    run_sync_with(ThreadOptions::default(), f).await
}

/// Runs `f` on a thread with `options`. See the [module docs](self).
///
/// # Errors
///
/// `Cancelled` if cancelled while waiting for a token, or, with `abandon_on_cancel`, while the
/// thread runs.
///
/// # Panics
///
/// Resumes a panic of `f` in the caller (when it is still waiting for it).
pub async fn run_sync_with<F, R>(options: ThreadOptions, f: F) -> Result<R, Error>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    static NEXT_BORROWER: AtomicU64 = AtomicU64::new(1 << 63);
    let limiter = options.limiter.unwrap_or_else(|| default_limiter().clone());
    // Each thread is its own borrower, so one task may run several threads at once.
    let borrower = Borrower::Id(NEXT_BORROWER.fetch_add(1, Ordering::Relaxed));
    limiter
        .acquire_on_behalf_of(borrower)
        .await
        .map_err(Error::from)?
        .forget();
    let caller = context::current();
    let handle = tokio::runtime::Handle::current();
    let thread_limiter = limiter.clone();
    let join = tokio::task::spawn_blocking(move || {
        /// When the thread's work ends, also by panicking: forgets the caller (pool threads
        /// are reused) and gives the token back.
        struct Finish(Arc<CapacityLimiter>, Borrower);
        impl Drop for Finish {
            fn drop(&mut self) {
                THREAD.with(|t| *t.borrow_mut() = None);
                let _ = self.0.release_on_behalf_of(self.1);
            }
        }
        let _finish = Finish(thread_limiter, borrower);
        THREAD.with(|t| *t.borrow_mut() = Some(ThreadContext { caller, handle }));
        f()
    });
    let outcome = if options.abandon_on_cancel {
        cancellable(join).await?
    } else {
        // Not a cancel point while the thread runs: nothing could stop it anyway.
        join.await
    };
    match outcome {
        Ok(value) => Ok(value),
        Err(join_error) if join_error.is_panic() => {
            std::panic::resume_unwind(join_error.into_panic())
        }
        Err(_) => Err(Error::cancelled()),
    }
}

struct ThreadContext {
    caller: Option<Arc<Node>>,
    handle: tokio::runtime::Handle,
}

thread_local! {
    static THREAD: RefCell<Option<ThreadContext>> = const { RefCell::new(None) };
}

pub use from_thread::check_cancelled;

/// From a thread started by [`run_sync`]: back to the runtime (Trio's `trio.from_thread`).
pub mod from_thread {
    use super::*;

    /// The error of calling into the runtime from a thread that [`run_sync`] did not start.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    #[error("not on a thread started by trellis::threads::run_sync")]
    pub struct NotATrellisThread;

    /// Runs `future` on the runtime, inside the cancel scope of the task that started this
    /// thread, and blocks the thread until it finishes.
    ///
    /// # Errors
    ///
    /// [`NotATrellisThread`] on other threads; otherwise the future's own result.
    pub fn run<F, T>(future: F) -> Result<T, NotATrellisThread>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (caller, handle) = THREAD
            .with(|t| {
                t.borrow()
                    .as_ref()
                    .map(|c| (c.caller.clone(), c.handle.clone()))
            })
            .ok_or(NotATrellisThread)?;
        let task = match caller {
            Some(node) => handle.spawn(InNode::new(future, node)),
            None => handle.spawn(future),
        };
        match handle.block_on(task) {
            Ok(value) => Ok(value),
            Err(join_error) if join_error.is_panic() => {
                std::panic::resume_unwind(join_error.into_panic())
            }
            Err(_) => panic!("the runtime shut down while a thread was calling into it"),
        }
    }

    /// Runs the synchronous `f` on the runtime, inside the cancel scope of the task that
    /// started this thread, and blocks the thread until it returns (Trio's
    /// `from_thread.run_sync`): for code that must run on the runtime, such as calls that
    /// need a runtime context or a trellis local.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), trellis::Error> {
    /// use trellis::threads::{from_thread, run_sync};
    ///
    /// let on_runtime = run_sync(|| {
    ///     from_thread::run_sync(|| tokio::runtime::Handle::try_current().is_ok())
    /// })
    /// .await?;
    /// assert_eq!(on_runtime, Ok(true));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`NotATrellisThread`] on other threads.
    ///
    /// # Panics
    ///
    /// Resumes a panic of `f` on this thread.
    pub fn run_sync<F, T>(f: F) -> Result<T, NotATrellisThread>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        run(async move { f() })
    }

    /// Whether the task that started this thread has been cancelled (`Err(Cancelled)`), so
    /// that long work on the thread can stop early.
    ///
    /// # Errors
    ///
    /// `Cancelled` when the caller's scope is cancelled. On other threads nothing can cancel
    /// the caller, so it is always `Ok`.
    pub fn check_cancelled() -> Result<(), Cancelled> {
        let cancelled = THREAD.with(|t| {
            t.borrow()
                .as_ref()
                .and_then(|c| c.caller.clone())
                .filter(|n| n.is_cancelled())
        });
        match cancelled {
            Some(node) => Err(node.cancelled()),
            None => Ok(()),
        }
    }
}
