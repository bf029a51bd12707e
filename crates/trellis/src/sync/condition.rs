//! The condition variable (Trio's `Condition`).

use std::future::poll_fn;

use super::{Lock, LockError, LockGuard, ParkingLot, Wait, WaitStatistics};
use crate::cancel::CancelScope;

/// Lets tasks wait, holding a [`Lock`], until another task holding it notifies them (Trio's
/// `Condition`).
///
/// [`wait`](Condition::wait) takes the guard by `&mut`: it releases the lock while waiting and
/// holds it again when it returns — also when it returns `Cancelled`, so the guard stays valid
/// either way.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), trellis::Error> {
/// use std::sync::Arc;
/// use trellis::sync::Condition;
///
/// let cond = Arc::new(Condition::new());
/// trellis::open_nursery(|n| {
///     let cond = cond.clone();
///     async move {
///         let waiter = cond.clone();
///         n.start_soon(async move {
///             let mut guard = waiter.acquire().await?;
///             waiter.wait(&mut guard).await?;
///             Ok::<_, trellis::Error>(())
///         })?;
///         while cond.statistics().tasks_waiting == 0 {
///             trellis::checkpoint().await?; // let the waiter get there
///         }
///         let guard = cond.acquire().await?;
///         cond.notify_all(&guard);
///         Ok::<_, trellis::Error>(())
///     }
/// })
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Condition {
    lock: Lock,
    lot: ParkingLot,
}

/// The statistics of a [`Condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConditionStatistics {
    /// Tasks in [`Condition::wait`].
    pub tasks_waiting: usize,
    /// Tasks waiting for the lock.
    pub lock_statistics: WaitStatistics,
}

impl Condition {
    /// A condition with its own lock.
    pub fn new() -> Self {
        Condition::default()
    }

    /// Takes the condition's lock; a checkpoint.
    ///
    /// # Errors
    ///
    /// As [`Lock::acquire`].
    pub async fn acquire(&self) -> Result<LockGuard<'_>, LockError> {
        self.lock.acquire().await
    }

    /// Takes the lock if it is free and nobody waits.
    ///
    /// # Errors
    ///
    /// As [`Lock::try_acquire`].
    pub fn try_acquire(&self) -> Result<LockGuard<'_>, LockError> {
        self.lock.try_acquire()
    }

    /// Whether the lock is held.
    pub fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }

    fn check(&self, guard: &LockGuard<'_>) {
        assert!(
            std::ptr::eq(guard.lock, &self.lock),
            "the guard is not of this condition's lock"
        );
    }

    /// Releases the lock, waits until notified, and holds the lock again before returning.
    ///
    /// # Errors
    ///
    /// [`LockError::Cancelled`] when cancelled before being notified; the lock is held again
    /// all the same. [`LockError::Broken`] when the lock broke meanwhile (a task holding it
    /// panicked); the guard then holds nothing.
    ///
    /// # Panics
    ///
    /// When `guard` is not of this condition's lock.
    pub async fn wait(&self, guard: &mut LockGuard<'_>) -> Result<(), LockError> {
        self.check(guard);
        let mut parking = Wait::new(&self.lot, ());
        let mut released = false;
        let parked = poll_fn(|cx| {
            // The first poll joins the lot before the lock is let go, so that a notify made
            // right after the release finds us.
            let polled = parking.poll_wait(cx);
            if !released {
                released = true;
                self.lock.release();
            }
            polled
        })
        .await;
        // Hold the lock again whatever happened, cancellation included; the caller's guard
        // stands for it.
        let relocked = CancelScope::shielded().run(self.lock.acquire()).await;
        match relocked {
            Ok(Some(new_guard)) => std::mem::forget(new_guard),
            Ok(None) => unreachable!("a shielded scope that nobody cancels is not cancelled"),
            Err(broken) => return Err(broken),
        }
        Ok(parked?)
    }

    /// Wakes up to `count` waiters, longest waiting first; returns how many. They run once
    /// they get the lock back.
    ///
    /// # Panics
    ///
    /// When `guard` is not of this condition's lock.
    pub fn notify(&self, guard: &LockGuard<'_>, count: usize) -> usize {
        self.check(guard);
        self.lot.unpark(count)
    }

    /// Wakes every waiter; returns how many.
    ///
    /// # Panics
    ///
    /// When `guard` is not of this condition's lock.
    pub fn notify_all(&self, guard: &LockGuard<'_>) -> usize {
        self.check(guard);
        self.lot.unpark_all()
    }

    /// Waiters, and tasks waiting for the lock.
    pub fn statistics(&self) -> ConditionStatistics {
        ConditionStatistics {
            tasks_waiting: self.lot.len(),
            lock_statistics: self.lock.statistics(),
        }
    }
}
