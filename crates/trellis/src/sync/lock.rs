//! The fair lock (Trio's `Lock` and `StrictFIFOLock`), which breaks when its holder panics.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Waker;

use thiserror::Error;

use super::queue::WaitQueue;
use super::{Wait, Waitable, current_task, lock, wake_all};
use crate::error::Cancelled;
use crate::instrument::TaskId;

/// Trio's `StrictFIFOLock`: [`Lock`] already hands itself over in strict arrival order.
#[doc(alias = "StrictFIFOLock")]
pub type StrictFifoLock = Lock;

/// A fair mutual-exclusion lock (Trio's `Lock`, which is also its `StrictFIFOLock`): waiters
/// get the lock in arrival order, handed over directly at release, so a task that releases and
/// re-acquires at once goes to the back of the line.
///
/// It guards no data; wrap your data in a `std::sync::Mutex` held only between awaits, or use
/// the guard to serialise an async section.
///
/// # Broken locks
///
/// When the task holding the lock panics, the lock breaks (Trio's rule for an owner that exits
/// without releasing, and Rust's mutex poisoning): whatever it guards may be half updated, so
/// every waiter and every later acquisition fails with [`LockError::Broken`], naming the
/// task. A guard dropped in the ordinary way — also by cancellation or by the task being
/// aborted — releases the lock as usual. "Panics" means the guard is dropped while the thread
/// unwinds, which covers guards held in `async` code (also inside `join!` and `select!`); a
/// guard kept in a field of a hand-written future is dropped after the panic was caught, and
/// releases the lock normally.
#[derive(Debug, Default)]
pub struct Lock {
    state: Mutex<LockState>,
    /// Set once broken; the details are in the state.
    broken: AtomicBool,
}

#[derive(Debug)]
pub(super) struct LockState {
    locked: bool,
    /// The task holding the lock (Trio's `owner`): set when it is taken or handed over, so
    /// that a task that already holds it is refused instead of waiting forever for itself.
    owner: Option<TaskId>,
    queue: WaitQueue,
    broken: Option<BrokenLock>,
}

impl Default for LockState {
    fn default() -> Self {
        LockState {
            locked: false,
            owner: None,
            queue: WaitQueue::new(),
            broken: None,
        }
    }
}

/// The statistics of a [`Lock`] (Trio's `LockStatistics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStatistics {
    /// Whether the lock is held.
    pub locked: bool,
    /// The tokio task holding it, when it is held from within one.
    pub owner: Option<TaskId>,
    /// Tasks waiting for it.
    pub tasks_waiting: usize,
}

/// Why a [`Lock`] (or a [`Condition`](super::Condition)) was not acquired.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LockError {
    /// The calling code was cancelled before the lock was handed over.
    #[error("lock acquisition cancelled")]
    Cancelled(#[from] Cancelled),
    /// `try_acquire` only: the lock is held or others wait for it (Trio's `WouldBlock`).
    #[error("the acquisition would block")]
    WouldBlock,
    /// The calling task already holds the lock: waiting would wait forever for itself
    /// (Trio's `RuntimeError("attempt to re-acquire an already held Lock")`).
    #[error("attempt to re-acquire a lock this task already holds")]
    AlreadyHeld,
    /// The task that held the lock panicked while holding it (Trio's `BrokenResourceError`).
    #[error(transparent)]
    Broken(#[from] BrokenLock),
}

impl crate::error::IsCancelled for LockError {
    fn is_cancelled(&self) -> bool {
        matches!(self, LockError::Cancelled(_))
    }
}

/// A lock whose owner panicked while holding it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the owner of this lock ({}) panicked while holding it", match .owner {
    Some(task) => format!("task {task}"),
    None => "code outside any task".to_owned(),
})]
pub struct BrokenLock {
    owner: Option<TaskId>,
}

impl BrokenLock {
    /// The task that held the lock, if the lock was held from within a tokio task.
    pub fn owner(&self) -> Option<TaskId> {
        self.owner
    }
}

impl Waitable for Lock {
    const WHAT: &'static str = "lock";
    type State = LockState;
    type Ticket = ();

    fn holder(state: &LockState) -> Option<TaskId> {
        state.owner
    }

    fn state(&self) -> &Mutex<LockState> {
        &self.state
    }

    fn queue(state: &mut LockState) -> &mut WaitQueue {
        &mut state.queue
    }

    fn try_take(state: &mut LockState, _: &()) -> bool {
        // A broken lock lets everyone through at once, to fail.
        if state.broken.is_some() {
            // Everyone through, to fail: nobody owns a broken lock.
            return true;
        }
        if !state.locked && state.queue.is_empty() {
            state.locked = true;
            state.owner = current_task();
            return true;
        }
        false
    }

    fn abandon(state: &mut LockState, _: &()) -> Vec<Waker> {
        if state.broken.is_some() {
            return Vec::new();
        }
        release_lock(state).into_iter().collect()
    }
}

/// Hands the lock to the next waiter, who owns it from now on (it stays locked), or unlocks
/// it.
fn release_lock(state: &mut LockState) -> Option<Waker> {
    match state.queue.grant_first_with_task() {
        Some((_, waker, task)) => {
            state.owner = task;
            Some(waker)
        }
        None => {
            state.locked = false;
            state.owner = None;
            None
        }
    }
}

impl Lock {
    /// An unlocked lock.
    pub fn new() -> Self {
        Lock::default()
    }

    /// Takes the lock, waiting in line; a checkpoint. The guard releases it.
    ///
    /// # Errors
    ///
    /// [`LockError::Cancelled`] when the calling code is cancelled before the lock was handed
    /// over; [`LockError::Broken`] when its owner panicked while holding it, now or earlier;
    /// [`LockError::AlreadyHeld`] when the calling task holds it already (waiting would be
    /// waiting for itself). Two futures of one task that both take the lock (`join!`,
    /// `select!`) count as that task: take it in separate tasks.
    pub async fn acquire(&self) -> Result<LockGuard<'_>, LockError> {
        // Cancellation first, as in Trio (`checkpoint_if_cancelled` before anything else).
        crate::cancel::checkpoint_if_cancelled()?;
        self.check_not_owner()?;
        let mut wait = Wait::new(self, ());
        std::future::poll_fn(|cx| wait.poll_wait(cx)).await?;
        self.check_broken()?;
        Ok(LockGuard {
            lock: self,
            held: true,
        })
    }

    /// Takes the lock if it is free and nobody waits.
    ///
    /// # Errors
    ///
    /// [`LockError::WouldBlock`] otherwise, [`LockError::Broken`] if it is broken.
    pub fn try_acquire(&self) -> Result<LockGuard<'_>, LockError> {
        self.check_not_owner()?;
        if Self::try_take(&mut lock(&self.state), &()) {
            self.check_broken()?;
            Ok(LockGuard {
                lock: self,
                held: true,
            })
        } else {
            Err(LockError::WouldBlock)
        }
    }

    fn check_not_owner(&self) -> Result<(), LockError> {
        let state = lock(&self.state);
        match current_task() {
            Some(me) if state.locked && state.broken.is_none() && state.owner == Some(me) => {
                Err(LockError::AlreadyHeld)
            }
            _ => Ok(()),
        }
    }

    /// Whether the lock broke because its owner panicked while holding it.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    pub(super) fn check_broken(&self) -> Result<(), BrokenLock> {
        if !self.is_broken() {
            return Ok(());
        }
        Err(lock(&self.state)
            .broken
            .clone()
            .expect("set before the flag"))
    }

    /// Lets go of the lock: to the next waiter, or breaks it when the owner is panicking.
    pub(super) fn release(&self) {
        let wakers = {
            let mut state = lock(&self.state);
            if state.broken.is_some() {
                return;
            }
            if std::thread::panicking() {
                state.broken = Some(BrokenLock {
                    owner: tokio::task::try_id().map(TaskId::from),
                });
                self.broken.store(true, Ordering::Release);
                state.locked = false;
                state.owner = None;
                state.queue.grant_all()
            } else {
                release_lock(&mut state).into_iter().collect()
            }
        };
        wake_all(wakers);
    }

    /// Whether some task holds the lock.
    pub fn is_locked(&self) -> bool {
        lock(&self.state).locked
    }

    /// Whether the lock is held, by which task, and how many tasks wait for it.
    pub fn statistics(&self) -> LockStatistics {
        let state = lock(&self.state);
        LockStatistics {
            locked: state.locked,
            owner: state.owner,
            tasks_waiting: state.queue.len(),
        }
    }

    /// Moves a waiter of a condition into the lock's line (see [`Condition::notify`]): it will
    /// be handed the lock in turn. Returns its key in the lock's queue.
    pub(super) fn enqueue_for(&self, waker: &Waker, task: Option<TaskId>) -> usize {
        lock(&self.state).queue.push(waker, task)
    }

    /// A moved waiter's turn: `true` once it holds the lock.
    pub(super) fn poll_moved(&self, key: usize, waker: &Waker) -> bool {
        lock(&self.state).queue.poll(key, waker)
    }

    /// A moved waiter leaves the line, cancelled: `true` when the lock had just been handed
    /// to it (it then keeps it).
    pub(super) fn leave_line(&self, key: usize) -> bool {
        lock(&self.state).queue.withdraw(key)
    }

    /// A moved waiter leaves the line: a lock already handed to it goes to the next one.
    pub(super) fn withdraw_moved(&self, key: usize) {
        let wakers = {
            let mut state = lock(&self.state);
            if state.queue.withdraw(key) {
                <Lock as Waitable>::abandon(&mut state, &())
            } else {
                Vec::new()
            }
        };
        wake_all(wakers);
    }
}

/// Holds a [`Lock`]; hands it to the next waiter when dropped.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    pub(super) lock: &'a Lock,
    /// False while a [`Condition::wait`] has let the lock go (and for good if that wait was
    /// dropped unfinished).
    pub(super) held: bool,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if self.held {
            self.lock.release();
        }
    }
}
