//! The capacity limiter: a semaphore that knows who holds its tokens (Trio's
//! `CapacityLimiter`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::task::Waker;

use super::queue::WaitQueue;
use super::{Wait, Waitable, lock, wake_all};
use crate::error::{Cancelled, IsCancelled};

/// Who holds a token of a [`CapacityLimiter`]: a task, or any id of yours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Borrower {
    /// A tokio (and so trellis) task.
    Task(tokio::task::Id),
    /// An id chosen by the caller (`acquire_on_behalf_of`).
    Id(u64),
}

impl Borrower {
    /// The calling task, if the caller runs in a tokio task.
    pub fn current_task() -> Option<Borrower> {
        tokio::task::try_id().map(Borrower::Task)
    }
}

impl From<u64> for Borrower {
    fn from(id: u64) -> Self {
        Borrower::Id(id)
    }
}

/// Why a [`CapacityLimiter`] operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityError {
    /// This borrower already holds a token (each holds at most one); release it first.
    AlreadyBorrowing,
    /// This borrower holds no token, so there is nothing to release.
    NotBorrowing,
    /// No token is free now, or others wait (Trio's `WouldBlock`).
    WouldBlock,
    /// `acquire` outside a task: name a borrower with `acquire_on_behalf_of`.
    NoTask,
    /// The calling code was cancelled before a token was granted.
    Cancelled,
}

impl std::fmt::Display for CapacityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CapacityError::AlreadyBorrowing => "this borrower already holds a token of the limiter",
            CapacityError::NotBorrowing => "this borrower holds no token of the limiter",
            CapacityError::WouldBlock => "no token is free",
            CapacityError::NoTask => "no current task to borrow for",
            CapacityError::Cancelled => "acquisition cancelled",
        })
    }
}

/// A cancelled acquisition names [`Cancelled`] as its source, so that
/// [`Error::is_cancelled`](crate::Error::is_cancelled) sees it through a `?`.
impl std::error::Error for CapacityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CapacityError::Cancelled => Some(&crate::error::CANCELLED),
            _ => None,
        }
    }
}

impl IsCancelled for CapacityError {
    fn is_cancelled(&self) -> bool {
        matches!(self, CapacityError::Cancelled)
    }
}

/// Limits how many borrowers proceed at once, and knows them: each borrower (a task, or an id
/// you choose) holds at most one token. The total can change at any time, also to 0 (nobody
/// proceeds); waiters are served in FIFO order. Threads run under one (see the threads issue).
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), trellis::Error> {
/// use trellis::sync::CapacityLimiter;
/// let limiter = CapacityLimiter::new(2);
/// // In a task, `acquire()` borrows for the task; here we name a borrower.
/// let token = limiter.acquire_on_behalf_of(1u64).await?;
/// assert_eq!(limiter.borrowed_tokens(), 1);
/// drop(token);
/// assert_eq!(limiter.available_tokens(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CapacityLimiter {
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
pub(super) struct LimiterState {
    total: usize,
    /// Holders, in the order they got their token.
    borrowers: Vec<Borrower>,
    /// The borrower of each waiter, by its queue key.
    pending: HashMap<usize, Borrower>,
    queue: WaitQueue,
}

impl LimiterState {
    /// Grants waiters while tokens are free; returns their wakers.
    fn grant_free(&mut self) -> Vec<Waker> {
        let mut wakers = Vec::new();
        while self.borrowers.len() < self.total {
            let Some((key, waker)) = self.queue.grant_first_with_key() else {
                break;
            };
            let borrower = self
                .pending
                .remove(&key)
                .expect("every waiter has a borrower");
            self.borrowers.push(borrower);
            wakers.push(waker);
        }
        wakers
    }

    fn release(&mut self, borrower: Borrower) -> Result<Vec<Waker>, CapacityError> {
        let at = self
            .borrowers
            .iter()
            .position(|b| *b == borrower)
            .ok_or(CapacityError::NotBorrowing)?;
        self.borrowers.remove(at);
        Ok(self.grant_free())
    }

    fn holds_or_waits(&self, borrower: Borrower) -> bool {
        self.borrowers.contains(&borrower) || self.pending.values().any(|b| *b == borrower)
    }
}

impl Waitable for CapacityLimiter {
    const WHAT: &'static str = "capacity limiter";
    type State = LimiterState;
    type Ticket = Borrower;

    fn state(&self) -> &Mutex<LimiterState> {
        &self.state
    }

    fn queue(state: &mut LimiterState) -> &mut WaitQueue {
        &mut state.queue
    }

    fn try_take(state: &mut LimiterState, borrower: &Borrower) -> bool {
        if state.borrowers.len() < state.total && state.queue.is_empty() {
            state.borrowers.push(*borrower);
            return true;
        }
        false
    }

    fn abandon(state: &mut LimiterState, borrower: &Borrower) -> Vec<Waker> {
        state.release(*borrower).unwrap_or_default()
    }

    fn on_wait(state: &mut LimiterState, key: usize, borrower: &Borrower) {
        state.pending.insert(key, *borrower);
    }

    fn on_withdraw(state: &mut LimiterState, key: usize) {
        state.pending.remove(&key);
    }
}

/// The statistics of a [`CapacityLimiter`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimiterStatistics {
    /// Tokens held now.
    pub borrowed_tokens: usize,
    /// The total.
    pub total_tokens: usize,
    /// Who holds them, in the order they got them.
    pub borrowers: Vec<Borrower>,
    /// Borrowers waiting for a token.
    pub tasks_waiting: usize,
}

impl CapacityLimiter {
    /// A limiter with `total` tokens (0 lets nobody through until the total is raised).
    pub fn new(total: usize) -> Self {
        CapacityLimiter {
            state: Mutex::new(LimiterState {
                total,
                borrowers: Vec::new(),
                pending: HashMap::new(),
                queue: WaitQueue::new(),
            }),
        }
    }

    /// Takes a token for the calling task; a checkpoint.
    ///
    /// # Errors
    ///
    /// [`CapacityError::AlreadyBorrowing`] if the task holds or awaits one,
    /// [`CapacityError::NoTask`] outside a task, [`CapacityError::Cancelled`].
    pub async fn acquire(&self) -> Result<CapacityToken<'_>, CapacityError> {
        let borrower = Borrower::current_task().ok_or(CapacityError::NoTask)?;
        self.acquire_on_behalf_of(borrower).await
    }

    /// Takes a token for `borrower`, waiting in line; a checkpoint.
    ///
    /// # Errors
    ///
    /// [`CapacityError::AlreadyBorrowing`] if `borrower` holds or awaits one,
    /// [`CapacityError::Cancelled`] if cancelled before a token was granted.
    pub async fn acquire_on_behalf_of(
        &self,
        borrower: impl Into<Borrower>,
    ) -> Result<CapacityToken<'_>, CapacityError> {
        let borrower = borrower.into();
        if lock(&self.state).holds_or_waits(borrower) {
            return Err(CapacityError::AlreadyBorrowing);
        }
        let mut wait = Wait::new(self, borrower);
        std::future::poll_fn(|cx| wait.poll_wait(cx))
            .await
            .map_err(|_: Cancelled| CapacityError::Cancelled)?;
        Ok(CapacityToken {
            limiter: self,
            borrower,
        })
    }

    /// Takes a token for `borrower` if one is free and nobody waits.
    ///
    /// # Errors
    ///
    /// [`CapacityError::WouldBlock`], or [`CapacityError::AlreadyBorrowing`].
    pub fn try_acquire_on_behalf_of(
        &self,
        borrower: impl Into<Borrower>,
    ) -> Result<CapacityToken<'_>, CapacityError> {
        let borrower = borrower.into();
        let mut state = lock(&self.state);
        if state.holds_or_waits(borrower) {
            return Err(CapacityError::AlreadyBorrowing);
        }
        if Self::try_take(&mut state, &borrower) {
            Ok(CapacityToken {
                limiter: self,
                borrower,
            })
        } else {
            Err(CapacityError::WouldBlock)
        }
    }

    /// Gives back `borrower`'s token (one kept with [`CapacityToken::forget`]).
    ///
    /// # Errors
    ///
    /// [`CapacityError::NotBorrowing`] when it holds none.
    pub fn release_on_behalf_of(&self, borrower: impl Into<Borrower>) -> Result<(), CapacityError> {
        let wakers = lock(&self.state).release(borrower.into())?;
        wake_all(wakers);
        Ok(())
    }

    /// The total number of tokens.
    pub fn total_tokens(&self) -> usize {
        lock(&self.state).total
    }

    /// Changes the total. Raising it lets waiters through at once; lowering it below the
    /// tokens held takes none back, but grants none until enough are released.
    pub fn set_total_tokens(&self, total: usize) {
        let wakers = {
            let mut state = lock(&self.state);
            state.total = total;
            state.grant_free()
        };
        wake_all(wakers);
    }

    /// Tokens held now.
    pub fn borrowed_tokens(&self) -> usize {
        lock(&self.state).borrowers.len()
    }

    /// Tokens free now (0 when the total was lowered below what is held).
    pub fn available_tokens(&self) -> usize {
        let state = lock(&self.state);
        state.total.saturating_sub(state.borrowers.len())
    }

    /// Holders, total and waiters.
    pub fn statistics(&self) -> LimiterStatistics {
        let state = lock(&self.state);
        LimiterStatistics {
            borrowed_tokens: state.borrowers.len(),
            total_tokens: state.total,
            borrowers: state.borrowers.clone(),
            tasks_waiting: state.queue.len(),
        }
    }
}

/// A token of a [`CapacityLimiter`]; released when dropped.
#[derive(Debug)]
#[must_use = "the token is released when dropped"]
pub struct CapacityToken<'a> {
    limiter: &'a CapacityLimiter,
    borrower: Borrower,
}

impl CapacityToken<'_> {
    /// Who holds it.
    pub fn borrower(&self) -> Borrower {
        self.borrower
    }

    /// Keeps the token held without a guard; give it back with
    /// [`CapacityLimiter::release_on_behalf_of`].
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for CapacityToken<'_> {
    fn drop(&mut self) {
        let _ = self.limiter.release_on_behalf_of(self.borrower);
    }
}
