//! Synchronisation between tasks: [`Event`], [`ParkingLot`], [`Semaphore`], a fair [`Lock`]
//! a [`CapacityLimiter`] and a [`Condition`], with Trio's semantics.
//!
//! Every wait is a checkpoint, as in Trio: in a cancelled scope it fails with `Cancelled` at
//! once, a blocked wait is woken by cancellation, and a wait that succeeds at once still yields
//! once (so a task that releases and re-acquires a lock in a loop lets the others line up). Waiters are served in arrival order (FIFO), and what a
//! waiter is granted (a permit, the lock) is recorded before it is woken: a waiter cancelled
//! or dropped just after being granted keeps the grant or passes it on, so nothing is lost and
//! nobody is left waiting for a release that already happened.

mod condition;
mod limiter;
mod lock;
mod queue;

pub use condition::{Condition, ConditionStatistics};

pub use limiter::{Borrower, CapacityError, CapacityLimiter, CapacityToken, LimiterStatistics};
pub use lock::{BrokenLock, Lock, LockError, LockGuard, LockStatistics, StrictFifoLock};

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use queue::WaitQueue;
use thiserror::Error;

use crate::cancel::CancelWait;
use crate::dump::Recorded;
use crate::error::Cancelled;
use crate::instrument::TaskId;

/// Locks a std mutex, taking it over if a panic poisoned it (the crate's one lock helper for
/// std mutexes; `broadcast` has its own for loom's).
pub(crate) fn lock<S>(mutex: &Mutex<S>) -> MutexGuard<'_, S> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tokio task running now, if any.
fn current_task() -> Option<TaskId> {
    tokio::task::try_id().map(TaskId::from)
}

fn wake_all(wakers: impl IntoIterator<Item = Waker>) {
    wakers.into_iter().for_each(Waker::wake);
}

/// How a primitive takes part in [`Wait`]: its state behind one mutex, how to take a grant
/// without waiting, and what to do with a grant whose waiter went away.
trait Waitable {
    /// What a task blocked on it waits on, as a dump says.
    const WHAT: &'static str;
    type State;
    /// What a waiter brings (the borrower, for a capacity limiter).
    type Ticket;

    fn state(&self) -> &Mutex<Self::State>;
    fn queue(state: &mut Self::State) -> &mut WaitQueue;
    /// Takes the grant at once if nobody waits and it is available.
    fn try_take(state: &mut Self::State, ticket: &Self::Ticket) -> bool;
    /// A granted waiter went away before using its grant: hand it on (returns the wakers to
    /// wake) or give it back.
    fn abandon(state: &mut Self::State, ticket: &Self::Ticket) -> Vec<Waker>;
    /// A waiter joined the queue under `key`.
    fn on_wait(_state: &mut Self::State, _key: usize, _ticket: &Self::Ticket) {}
    /// A waiter left the queue ungranted.
    fn on_withdraw(_state: &mut Self::State, _key: usize) {}
    /// The task holding what waiters wait for, when one does (a lock's owner): a dump's
    /// wait-for graph follows it.
    fn holder(_state: &Self::State) -> Option<TaskId> {
        None
    }
}

/// The future of a wait on a [`Waitable`]: ready with `Ok(())` once granted.
struct Wait<'a, W: Waitable> {
    owner: &'a W,
    ticket: W::Ticket,
    key: Option<usize>,
    /// Taken at once, and now yielding once before returning (Trio's schedule point, which is
    /// what lets other tasks line up behind a lock that is released and re-taken in a loop).
    holding: bool,
    cancel: CancelWait,
    /// The wait as a dump shows it once it knows who holds what it waits for.
    held_by: Option<Recorded>,
}

impl<'a, W: Waitable> Wait<'a, W> {
    fn new(owner: &'a W, ticket: W::Ticket) -> Self {
        Wait {
            owner,
            ticket,
            key: None,
            holding: false,
            cancel: CancelWait::on(W::WHAT),
            held_by: None,
        }
    }

    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Cancelled>> {
        if self.holding {
            self.holding = false;
            return Poll::Ready(Ok(()));
        }
        match self.key {
            None => {
                if self.cancel.is_cancelled() {
                    return Poll::Ready(Err(self.cancel.cancelled()));
                }
                let mut state = lock(self.owner.state());
                if W::try_take(&mut state, &self.ticket) {
                    drop(state);
                    self.holding = true;
                    let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
                    return Poll::Pending;
                }
                let key = W::queue(&mut state).push(cx.waker(), current_task());
                W::on_wait(&mut state, key, &self.ticket);
                self.key = Some(key);
            }
            Some(key) => {
                let mut state = lock(self.owner.state());
                if W::queue(&mut state).poll(key, cx.waker()) {
                    self.key = None;
                    return Poll::Ready(Ok(()));
                }
            }
        }
        if self.cancel.poll_cancelled(cx).is_pending() {
            if self.held_by.is_none()
                && let Some(holder) = W::holder(&lock(self.owner.state()))
            {
                let what = format!("{} held by task {holder}", W::WHAT);
                self.held_by = Recorded::keyed(what.into(), Some(format!("task:{holder}")));
            }
            return Poll::Pending;
        }
        let key = self.key.take().expect("waiting");
        let mut state = lock(self.owner.state());
        let granted = W::queue(&mut state).withdraw(key);
        if !granted {
            W::on_withdraw(&mut state, key);
        }
        // Granted just as we were cancelled: the wait completed; keep it.
        Poll::Ready(if granted {
            Ok(())
        } else {
            Err(self.cancel.cancelled())
        })
    }
}

impl<W: Waitable> Drop for Wait<'_, W> {
    fn drop(&mut self) {
        if self.holding {
            let wakers = W::abandon(&mut lock(self.owner.state()), &self.ticket);
            wake_all(wakers);
        }
        if let Some(key) = self.key.take() {
            let wakers = {
                let mut state = lock(self.owner.state());
                if W::queue(&mut state).withdraw(key) {
                    W::abandon(&mut state, &self.ticket)
                } else {
                    W::on_withdraw(&mut state, key);
                    Vec::new()
                }
            };
            wake_all(wakers);
        }
    }
}

/// A flag that tasks wait for: once [`set`](Event::set), every waiter wakes and every later
/// [`wait`](Event::wait) returns at once. It cannot be cleared (Trio's `Event`).
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), trellis::Error> {
/// use std::sync::Arc;
/// let ready = Arc::new(trellis::sync::Event::new());
/// trellis::open_nursery(|n| {
///     let ready = ready.clone();
///     async move {
///         let waiter = ready.clone();
///         n.start_soon(async move { Ok::<_, trellis::Error>(waiter.wait().await?) })?;
///         ready.set();
///         Ok::<_, trellis::Error>(())
///     }
/// })
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Event {
    set: AtomicBool,
    waiters: Mutex<EventState>,
}

#[derive(Debug)]
struct EventState {
    set: bool,
    queue: WaitQueue,
}

impl Default for EventState {
    fn default() -> Self {
        EventState {
            set: false,
            queue: WaitQueue::new(),
        }
    }
}

impl std::fmt::Debug for WaitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitQueue")
            .field("waiting", &self.len())
            .finish()
    }
}

/// How many tasks wait on a primitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitStatistics {
    /// Tasks blocked waiting.
    pub tasks_waiting: usize,
}

impl Waitable for Event {
    const WHAT: &'static str = "event";
    type State = EventState;
    type Ticket = ();

    fn state(&self) -> &Mutex<EventState> {
        &self.waiters
    }

    fn queue(state: &mut EventState) -> &mut WaitQueue {
        &mut state.queue
    }

    fn try_take(state: &mut EventState, _: &()) -> bool {
        state.set
    }

    fn abandon(_: &mut EventState, _: &()) -> Vec<Waker> {
        Vec::new()
    }
}

impl Event {
    /// An event that is not set.
    pub fn new() -> Self {
        Event::default()
    }

    /// Sets the event and wakes every waiter. Idempotent.
    pub fn set(&self) {
        if self.set.swap(true, Ordering::AcqRel) {
            return;
        }
        let wakers = {
            let mut state = lock(&self.waiters);
            state.set = true;
            state.queue.grant_all()
        };
        wake_all(wakers);
    }

    /// Whether the event is set.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Waits until the event is set; a checkpoint.
    ///
    /// # Errors
    ///
    /// `Cancelled` when the calling code is cancelled first.
    pub async fn wait(&self) -> Result<(), Cancelled> {
        let mut wait = Wait::new(self, ());
        std::future::poll_fn(|cx| wait.poll_wait(cx)).await
    }

    /// How many tasks wait.
    pub fn statistics(&self) -> WaitStatistics {
        WaitStatistics {
            tasks_waiting: lock(&self.waiters).queue.len(),
        }
    }
}

/// A FIFO queue of parked tasks, woken explicitly (Trio's `ParkingLot`): the building block for
/// custom synchronisation.
#[derive(Debug, Default)]
pub struct ParkingLot {
    state: Mutex<LotState>,
}

#[derive(Debug)]
struct LotState {
    queue: WaitQueue,
}

impl Default for LotState {
    fn default() -> Self {
        LotState {
            queue: WaitQueue::new(),
        }
    }
}

impl Waitable for ParkingLot {
    const WHAT: &'static str = "parking lot";
    type State = LotState;
    type Ticket = ();

    fn state(&self) -> &Mutex<LotState> {
        &self.state
    }

    fn queue(state: &mut LotState) -> &mut WaitQueue {
        &mut state.queue
    }

    fn try_take(_: &mut LotState, _: &()) -> bool {
        false
    }

    fn abandon(_: &mut LotState, _: &()) -> Vec<Waker> {
        Vec::new()
    }
}

impl ParkingLot {
    /// An empty lot.
    pub fn new() -> Self {
        ParkingLot::default()
    }

    /// Parks the calling task until [`unpark`](ParkingLot::unpark)ed; a checkpoint.
    ///
    /// # Errors
    ///
    /// `Cancelled` when the calling code is cancelled before it was unparked; it then leaves
    /// the lot.
    pub async fn park(&self) -> Result<(), Cancelled> {
        let mut wait = Wait::new(self, ());
        std::future::poll_fn(|cx| wait.poll_wait(cx)).await
    }

    /// Unparks up to `count` tasks, longest-parked first; returns how many.
    pub fn unpark(&self, count: usize) -> usize {
        let wakers: Vec<Waker> = {
            let mut state = lock(&self.state);
            (0..count)
                .map_while(|_| state.queue.grant_first())
                .collect()
        };
        let woken = wakers.len();
        wake_all(wakers);
        woken
    }

    /// Unparks every parked task; returns how many.
    pub fn unpark_all(&self) -> usize {
        let wakers = lock(&self.state).queue.grant_all();
        let woken = wakers.len();
        wake_all(wakers);
        woken
    }

    /// The number of parked tasks.
    pub fn len(&self) -> usize {
        lock(&self.state).queue.len()
    }

    /// True when no task is parked.
    pub fn is_empty(&self) -> bool {
        lock(&self.state).queue.is_empty()
    }

    /// How many tasks are parked.
    pub fn statistics(&self) -> WaitStatistics {
        WaitStatistics {
            tasks_waiting: self.len(),
        }
    }
}

/// The error of releasing a bounded [`Semaphore`] above its maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("semaphore released above its maximum value")]
pub struct ReleasedTooMany;

/// The error of a `try_*` acquisition that would have to wait (Trio's `WouldBlock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the acquisition would block")]
pub struct WouldBlock;

/// A counting semaphore with FIFO waiters and an optional maximum (Trio's `Semaphore`).
///
/// [`acquire`](Semaphore::acquire) gives a permit that is released when dropped (or kept with
/// [`SemaphorePermit::forget`] and released later with [`release`](Semaphore::release)).
#[derive(Debug)]
pub struct Semaphore {
    state: Mutex<SemaphoreState>,
}

#[derive(Debug)]
struct SemaphoreState {
    value: usize,
    max: Option<usize>,
    queue: WaitQueue,
}

impl Waitable for Semaphore {
    const WHAT: &'static str = "semaphore";
    type State = SemaphoreState;
    type Ticket = ();

    fn state(&self) -> &Mutex<SemaphoreState> {
        &self.state
    }

    fn queue(state: &mut SemaphoreState) -> &mut WaitQueue {
        &mut state.queue
    }

    fn try_take(state: &mut SemaphoreState, _: &()) -> bool {
        // Newcomers never overtake waiters: FIFO.
        if state.value > 0 && state.queue.is_empty() {
            state.value -= 1;
            return true;
        }
        false
    }

    fn abandon(state: &mut SemaphoreState, _: &()) -> Vec<Waker> {
        let waker = state.queue.grant_first();
        if waker.is_none() {
            state.value += 1;
        }
        waker.into_iter().collect()
    }
}

impl Semaphore {
    /// A semaphore holding `value` permits, without a maximum.
    pub fn new(value: usize) -> Self {
        Semaphore {
            state: Mutex::new(SemaphoreState {
                value,
                max: None,
                queue: WaitQueue::new(),
            }),
        }
    }

    /// A semaphore holding `value` permits that may never hold more than `max`.
    ///
    /// # Panics
    ///
    /// When `value > max`.
    pub fn bounded(value: usize, max: usize) -> Self {
        assert!(
            value <= max,
            "a semaphore's initial value cannot exceed its maximum"
        );
        Semaphore {
            state: Mutex::new(SemaphoreState {
                value,
                max: Some(max),
                queue: WaitQueue::new(),
            }),
        }
    }

    /// Takes a permit, waiting in line while there is none; a checkpoint.
    ///
    /// # Errors
    ///
    /// `Cancelled` when the calling code is cancelled before a permit was granted.
    pub async fn acquire(&self) -> Result<SemaphorePermit<'_>, Cancelled> {
        let mut wait = Wait::new(self, ());
        std::future::poll_fn(|cx| wait.poll_wait(cx)).await?;
        Ok(SemaphorePermit { semaphore: self })
    }

    /// Takes a permit if one is free and nobody waits.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`] otherwise.
    pub fn try_acquire(&self) -> Result<SemaphorePermit<'_>, WouldBlock> {
        if Self::try_take(&mut lock(&self.state), &()) {
            Ok(SemaphorePermit { semaphore: self })
        } else {
            Err(WouldBlock)
        }
    }

    /// Adds a permit: to the longest waiter if any, else to the count.
    ///
    /// # Errors
    ///
    /// [`ReleasedTooMany`] when that would exceed the maximum of a bounded semaphore.
    pub fn release(&self) -> Result<(), ReleasedTooMany> {
        let waker = {
            let mut state = lock(&self.state);
            match state.queue.grant_first() {
                Some(waker) => Some(waker),
                None => {
                    if state.max.is_some_and(|max| state.value >= max) {
                        return Err(ReleasedTooMany);
                    }
                    state.value += 1;
                    None
                }
            }
        };
        wake_all(waker);
        Ok(())
    }

    /// The permits free now.
    pub fn value(&self) -> usize {
        lock(&self.state).value
    }

    /// The maximum of a bounded semaphore.
    pub fn max_value(&self) -> Option<usize> {
        lock(&self.state).max
    }

    /// How many tasks wait for a permit.
    pub fn statistics(&self) -> WaitStatistics {
        WaitStatistics {
            tasks_waiting: lock(&self.state).queue.len(),
        }
    }
}

/// A permit of a [`Semaphore`]; released when dropped.
#[derive(Debug)]
#[must_use = "the permit is released when dropped"]
pub struct SemaphorePermit<'a> {
    semaphore: &'a Semaphore,
}

impl SemaphorePermit<'_> {
    /// Keeps the permit taken without a guard; give it back with [`Semaphore::release`].
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        // A permit taken from this semaphore can always be given back.
        let _ = self.semaphore.release();
    }
}
