//! The condition variable (Trio's `Condition`).

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};

use super::queue::WaitQueue;
use super::{Lock, LockError, LockGuard, LockStatistics, current_task, lock};
use crate::cancel::{CancelScope, CancelWait};
use crate::error::Cancelled;

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
    state: Mutex<CondState>,
}

#[derive(Debug, Default)]
struct CondState {
    /// Tasks in `wait`, not yet notified.
    queue: WaitQueue,
    /// Notified waiters: their key here → their key in the lock's line.
    moved: HashMap<usize, usize>,
}

/// The statistics of a [`Condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConditionStatistics {
    /// Tasks in [`Condition::wait`] not yet notified.
    pub tasks_waiting: usize,
    /// The lock's statistics: notified waiters wait in its line.
    pub lock_statistics: LockStatistics,
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
        assert!(
            guard.held,
            "the guard no longer holds the lock (a wait on it was dropped or the lock broke)"
        );
    }

    /// Releases the lock, waits until notified, and holds the lock again before returning.
    ///
    /// # Errors
    ///
    /// [`LockError::Cancelled`] when cancelled before the lock was handed back after a
    /// notification; the lock is held again all the same (taken in a shielded scope, as in
    /// Trio). [`LockError::Broken`] when the lock broke meanwhile (a task holding it
    /// panicked); the guard then holds nothing.
    ///
    /// # Cancel safety
    ///
    /// Cancellation is handled as above. If the future is dropped before it finished, the
    /// lock is not held and `guard` holds nothing (dropping it releases nothing).
    ///
    /// # Panics
    ///
    /// When `guard` is not of this condition's lock, or no longer holds it.
    pub async fn wait(&self, guard: &mut LockGuard<'_>) -> Result<(), LockError> {
        self.check(guard);
        let mut op = CondWait {
            cond: self,
            stage: Stage::Start,
            cancel: CancelWait::on("condition"),
        };
        let outcome = poll_fn(|cx| op.poll(cx, guard)).await;
        let cancelled = match outcome {
            Outcome::Holding(result) => {
                // Handed over by a release that broke the lock: nothing is held.
                self.lock.check_broken()?;
                guard.held = true;
                return Ok(result?);
            }
            Outcome::Released(cancelled) => cancelled,
        };
        // Hold the lock again whatever happened; the caller's guard stands for it.
        let relocked = CancelScope::shielded().run(self.lock.acquire()).await;
        match relocked {
            Ok(Some(new_guard)) => std::mem::forget(new_guard),
            Ok(None) => unreachable!("a shielded scope that nobody cancels is not cancelled"),
            Err(broken) => return Err(broken),
        }
        guard.held = true;
        Err(cancelled.into())
    }

    /// Wakes up to `count` waiters, longest waiting first; returns how many. As in Trio, they
    /// move into the lock's line rather than running at once: each runs when the lock is
    /// handed to it, so the notifier cannot release and take the lock back ahead of them.
    ///
    /// # Panics
    ///
    /// When `guard` is not of this condition's lock, or no longer holds it.
    pub fn notify(&self, guard: &LockGuard<'_>, count: usize) -> usize {
        self.check(guard);
        let mut state = lock(&self.state);
        let mut moved = 0;
        while moved < count {
            let Some((key, waker, task)) = state.queue.grant_first_with_task() else {
                break;
            };
            let lock_key = self.lock.enqueue_for(&waker, task);
            state.moved.insert(key, lock_key);
            moved += 1;
        }
        moved
    }

    /// Wakes every waiter (into the lock's line, see [`notify`](Condition::notify)); returns
    /// how many.
    ///
    /// # Panics
    ///
    /// When `guard` is not of this condition's lock, or no longer holds it.
    pub fn notify_all(&self, guard: &LockGuard<'_>) -> usize {
        self.notify(guard, usize::MAX)
    }

    /// Waiters not yet notified, and the lock's statistics.
    pub fn statistics(&self) -> ConditionStatistics {
        ConditionStatistics {
            tasks_waiting: lock(&self.state).queue.len(),
            lock_statistics: self.lock.statistics(),
        }
    }
}

/// Where a `wait` is.
#[derive(Clone, Copy)]
enum Stage {
    Start,
    /// Waiting for a notification, under this key of the condition's queue.
    Waiting(usize),
    /// Notified: in the lock's line under this key.
    InLine(usize),
    Done,
}

/// How a `wait` ended.
enum Outcome {
    /// The lock is held: notified (`Ok`), or cancelled before letting it go.
    Holding(Result<(), Cancelled>),
    /// Cancelled while waiting: the lock is not held.
    Released(Cancelled),
}

struct CondWait<'a> {
    cond: &'a Condition,
    stage: Stage,
    cancel: CancelWait,
}

impl CondWait<'_> {
    fn poll(&mut self, cx: &mut Context<'_>, guard: &mut LockGuard<'_>) -> Poll<Outcome> {
        loop {
            match self.stage {
                Stage::Start => {
                    if self.cancel.is_cancelled() {
                        // Not released yet: the lock is still ours, as the error promises.
                        self.stage = Stage::Done;
                        return Poll::Ready(Outcome::Holding(Err(self.cancel.cancelled())));
                    }
                    // Join the queue before letting go of the lock, so that a notify made
                    // right after the release finds us.
                    let key = lock(&self.cond.state)
                        .queue
                        .push(cx.waker(), current_task());
                    self.stage = Stage::Waiting(key);
                    guard.held = false;
                    self.cond.lock.release();
                }
                Stage::Waiting(key) => {
                    {
                        let mut state = lock(&self.cond.state);
                        if state.queue.poll(key, cx.waker()) {
                            let in_line = state.moved.remove(&key).expect("moved on notify");
                            self.stage = Stage::InLine(in_line);
                            continue;
                        }
                    }
                    ready!(self.cancel.poll_cancelled(cx));
                    let mut state = lock(&self.cond.state);
                    if state.queue.withdraw(key) {
                        // Notified just as we were cancelled: keep the notification.
                        let in_line = state.moved.remove(&key).expect("moved on notify");
                        self.stage = Stage::InLine(in_line);
                        continue;
                    }
                    self.stage = Stage::Done;
                    return Poll::Ready(Outcome::Released(self.cancel.cancelled()));
                }
                Stage::InLine(key) => {
                    if self.cond.lock.poll_moved(key, cx.waker()) {
                        self.stage = Stage::Done;
                        return Poll::Ready(Outcome::Holding(Ok(())));
                    }
                    ready!(self.cancel.poll_cancelled(cx));
                    self.stage = Stage::Done;
                    if self.cond.lock.leave_line(key) {
                        // Handed the lock just as we were cancelled: keep it.
                        return Poll::Ready(Outcome::Holding(Ok(())));
                    }
                    return Poll::Ready(Outcome::Released(self.cancel.cancelled()));
                }
                Stage::Done => unreachable!("polled after it finished"),
            }
        }
    }
}

impl Drop for CondWait<'_> {
    fn drop(&mut self) {
        match self.stage {
            Stage::Waiting(key) => {
                let in_line = {
                    let mut state = lock(&self.cond.state);
                    if state.queue.withdraw(key) {
                        state.moved.remove(&key)
                    } else {
                        None
                    }
                };
                if let Some(in_line) = in_line {
                    self.cond.lock.withdraw_moved(in_line);
                }
            }
            Stage::InLine(key) => self.cond.lock.withdraw_moved(key),
            Stage::Start | Stage::Done => {}
        }
    }
}
