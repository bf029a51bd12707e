//! The broadcast receiver: many tasks each receive every value of one source (tractor's
//! `broadcast_receiver`, with the interface of `tokio::sync::broadcast`).
//!
//! [`broadcast_receiver(source, capacity)`](broadcast_receiver) wraps any stream — a
//! [`channel::Receiver`](crate::channel::Receiver), later an actor's message stream — and
//! gives the first [`BroadcastReceiver`]; [`subscribe`](BroadcastReceiver::subscribe) gives
//! more, one per task. Every subscriber receives every value that arrives after it subscribed.
//!
//! # No background task
//!
//! The source is pulled by whichever subscriber needs the next value; the others wait for it.
//! If that subscriber is cancelled mid-pull, another takes over, and nothing is lost: a stream
//! such as a channel receiver keeps a value handed to a pending pull for the next one.
//!
//! # Lagging
//!
//! The last `capacity` values are kept. A subscriber that falls further behind gets
//! [`BroadcastError::Lagged(n)`](BroadcastError::Lagged), `n` being exactly how many values it
//! missed, and then continues from the oldest value kept — or, in no-error mode
//! ([`subscribe_without_lag_errors`](BroadcastReceiver::subscribe_without_lag_errors)), skips
//! them silently.
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), trellis::Error> {
//! use trellis::broadcast::broadcast_receiver;
//!
//! let (tx, rx) = trellis::channel::channel::<u32>(8);
//! let first = broadcast_receiver(rx, 16);
//! let second = first.subscribe()?;
//! tx.send(7).await?;
//! assert_eq!(first.recv().await?, 7);
//! assert_eq!(second.recv().await?, 7); // each subscriber sees every value
//! # Ok(()) }
//! ```

use crate::loom::{Arc, Mutex, MutexGuard};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;

use crate::cancel::CancelWait;
use crate::error::IsCancelled;

/// Why [`BroadcastReceiver::recv`] returned no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastError {
    /// This subscriber fell behind and missed this many values; it stays subscribed and its
    /// next `recv` returns the oldest value still kept.
    Lagged(u64),
    /// The source ended and this subscriber has received everything (Trio's `EndOfChannel`).
    EndOfChannel,
    /// This subscriber was closed.
    Closed,
    /// The calling code was cancelled; nothing was received.
    Cancelled,
}

impl std::fmt::Display for BroadcastError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BroadcastError::Lagged(n) => write!(f, "subscriber lagged behind by {n} values"),
            BroadcastError::EndOfChannel => f.write_str("end of the broadcast source"),
            BroadcastError::Closed => f.write_str("receive on a closed subscriber"),
            BroadcastError::Cancelled => f.write_str("receive cancelled"),
        }
    }
}

/// A cancelled receive names [`Cancelled`](crate::Cancelled) as its source.
impl std::error::Error for BroadcastError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BroadcastError::Cancelled => Some(&crate::error::CANCELLED),
            _ => None,
        }
    }
}

impl IsCancelled for BroadcastError {
    fn is_cancelled(&self) -> bool {
        matches!(self, BroadcastError::Cancelled)
    }
}

/// Subscribing through a closed subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subscribe on a closed broadcast receiver")]
pub struct SubscribeClosed;

/// Wraps `source`, keeping its last `capacity` values for subscribers that are behind; returns
/// the first subscriber.
///
/// # Panics
///
/// When `capacity` is 0.
pub fn broadcast_receiver<S>(source: S, capacity: usize) -> BroadcastReceiver<S>
where
    S: Stream + Unpin,
    S::Item: Clone,
{
    new_broadcast(source, capacity, false)
}

/// Like [`broadcast_receiver`], but lossless: the source is not pulled while the buffer is full
/// of values some subscriber has not read yet, so nobody ever lags — the slowest subscriber
/// sets the pace, and a bounded source (a channel) makes its sender wait for room.
///
/// # Panics
///
/// When `capacity` is 0.
pub fn lossless_broadcast_receiver<S>(source: S, capacity: usize) -> BroadcastReceiver<S>
where
    S: Stream + Unpin,
    S::Item: Clone,
{
    new_broadcast(source, capacity, true)
}

fn new_broadcast<S>(source: S, capacity: usize, lossless: bool) -> BroadcastReceiver<S>
where
    S: Stream + Unpin,
    S::Item: Clone,
{
    assert!(
        capacity > 0,
        "a broadcast receiver keeps at least one value"
    );
    let mut state = State {
        queue: VecDeque::with_capacity(capacity.min(1024)),
        capacity,
        first_seq: 0,
        subs: Vec::new(),
        puller: None,
        waiters: Vec::new(),
        ended: false,
        lossless,
    };
    let key = state.add_sub();
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        source: Mutex::new(source),
        first_seq: AtomicU64::new(0),
        lossless,
    });
    BroadcastReceiver {
        shared,
        key,
        raise_on_lag: true,
        local: Mutex::new(VecDeque::new()),
    }
}

struct Shared<S: Stream> {
    state: Mutex<State<S::Item>>,
    /// Locked only inside a poll, by the subscriber pulling.
    source: Mutex<S>,
    /// `State::first_seq`, readable without the lock: a subscriber checks that the values it
    /// took ahead are still kept before handing one out (lossy mode).
    first_seq: AtomicU64,
    lossless: bool,
}

struct State<T> {
    /// The last values, oldest first; `queue[0]` has sequence number `first_seq`.
    queue: VecDeque<T>,
    capacity: usize,
    first_seq: u64,
    /// Each open subscriber's next sequence number, indexed by its key (`None`: closed; the
    /// slot is reused by a later subscriber).
    subs: Vec<Option<u64>>,
    /// The subscriber pulling the source now, if any.
    puller: Option<u64>,
    /// Subscribers waiting for the puller to bring a value (or, lossless, for the slowest
    /// subscriber to make room).
    waiters: Vec<Waker>,
    ended: bool,
    lossless: bool,
}

impl<T> State<T> {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.queue.len() as u64
    }

    /// A new subscriber starts with the next value to arrive.
    fn add_sub(&mut self) -> u64 {
        let end = self.end_seq();
        let key = match self.subs.iter().position(Option::is_none) {
            Some(free) => {
                self.subs[free] = Some(end);
                free
            }
            None => {
                self.subs.push(Some(end));
                self.subs.len() - 1
            }
        };
        key as u64
    }

    fn sub_mut(&mut self, key: u64) -> Option<&mut u64> {
        self.subs.get_mut(key as usize).and_then(Option::as_mut)
    }

    fn remove_sub(&mut self, key: u64) {
        if let Some(slot) = self.subs.get_mut(key as usize) {
            *slot = None;
        }
    }

    fn open_subs(&self) -> impl Iterator<Item = u64> + '_ {
        self.subs.iter().filter_map(|s| *s)
    }

    /// Lossless mode: the buffer is full and some subscriber has yet to read its oldest value.
    fn must_not_pull(&self) -> bool {
        self.lossless
            && self.queue.len() == self.capacity
            && self.open_subs().any(|next| next <= self.first_seq)
    }

    /// A subscriber read a value: in lossless mode that may have made room for a puller.
    fn after_read(&mut self) -> Vec<Waker> {
        if self.lossless && !self.waiters.is_empty() && !self.must_not_pull() {
            return std::mem::take(&mut self.waiters);
        }
        Vec::new()
    }

    fn push(&mut self, value: T) {
        if self.queue.len() == self.capacity {
            self.queue.pop_front();
            self.first_seq += 1;
        }
        self.queue.push_back(value);
    }

    /// The puller stops pulling (done, cancelled or gone): the waiters try again, one of them
    /// pulling next.
    fn release_puller(&mut self, key: u64) -> Vec<Waker> {
        if self.puller == Some(key) {
            self.puller = None;
            return std::mem::take(&mut self.waiters);
        }
        Vec::new()
    }
}

/// One subscriber of a broadcast source. See the [module docs](self).
pub struct BroadcastReceiver<S: Stream> {
    shared: Arc<Shared<S>>,
    key: u64,
    raise_on_lag: bool,
    /// Values already taken from the shared buffer for this subscriber, with their sequence
    /// numbers, in order: one visit to the shared state takes up to [`PREFETCH`] of them, so
    /// that sixteen subscribers do not queue on its lock for every value. Only this subscriber
    /// touches it. In lossy mode a value taken ahead is handed out only while the shared buffer
    /// still keeps it, so lag is counted exactly as if nothing had been taken ahead.
    local: Mutex<VecDeque<(u64, S::Item)>>,
}

/// How many kept values a subscriber takes per visit to the shared state.
const PREFETCH: usize = 32;

impl<S: Stream> std::fmt::Debug for BroadcastReceiver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastReceiver")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S> BroadcastReceiver<S>
where
    S: Stream + Unpin,
    S::Item: Clone,
{
    /// A new subscriber, for another task: it receives every value that arrives from now on.
    ///
    /// # Errors
    ///
    /// [`SubscribeClosed`] when this subscriber was closed.
    pub fn subscribe(&self) -> Result<Self, SubscribeClosed> {
        self.subscribe_with(true)
    }

    /// A new subscriber that skips values it fell behind on instead of reporting
    /// [`BroadcastError::Lagged`].
    ///
    /// # Errors
    ///
    /// [`SubscribeClosed`] when this subscriber was closed.
    pub fn subscribe_without_lag_errors(&self) -> Result<Self, SubscribeClosed> {
        self.subscribe_with(false)
    }

    fn subscribe_with(&self, raise_on_lag: bool) -> Result<Self, SubscribeClosed> {
        let mut state = lock(&self.shared.state);
        if state.sub_mut(self.key).is_none() {
            return Err(SubscribeClosed);
        }
        Ok(add_subscriber(&self.shared, &mut state, raise_on_lag))
    }

    /// A handle that subscribes new receivers without being one itself: in lossless mode a
    /// subscriber that does not read holds everyone back, a handle does not.
    pub fn handle(&self) -> BroadcastHandle<S> {
        BroadcastHandle {
            shared: self.shared.clone(),
        }
    }

    /// Receives the next value for this subscriber; a cancel point.
    ///
    /// # Errors
    ///
    /// See [`BroadcastError`]; after `Lagged` the subscriber carries on from the oldest value
    /// kept.
    pub async fn recv(&self) -> Result<S::Item, BroadcastError> {
        let mut op = RecvOp {
            receiver: self,
            pulling: false,
            cancel: CancelWait::on("broadcast receive"),
        };
        std::future::poll_fn(|cx| op.poll(cx)).await
    }

    /// Closes this subscriber; the others go on. Idempotent; dropping does the same.
    pub fn close(&self) {
        self.leave();
    }

    /// How many subscribers are open.
    pub fn subscribers(&self) -> usize {
        lock(&self.shared.state).open_subs().count()
    }
}

impl<S: Stream> BroadcastReceiver<S> {
    /// Leaves the broadcast: stops pulling if this subscriber was, and wakes whoever that lets
    /// go on.
    fn leave(&self) {
        // Values taken ahead for this subscriber go with it.
        let taken = std::mem::take(&mut *lock(&self.local));
        drop(taken);
        let wakers = {
            let mut state = lock(&self.shared.state);
            state.remove_sub(self.key);
            let mut wakers = state.release_puller(self.key);
            // Lossless: the one that held the pullers back may be this one.
            wakers.extend(state.after_read());
            wakers
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl<S: Stream> Drop for BroadcastReceiver<S> {
    fn drop(&mut self) {
        self.leave();
    }
}

fn add_subscriber<S: Stream>(
    shared: &Arc<Shared<S>>,
    state: &mut State<S::Item>,
    raise_on_lag: bool,
) -> BroadcastReceiver<S> {
    BroadcastReceiver {
        shared: shared.clone(),
        key: state.add_sub(),
        raise_on_lag,
        local: Mutex::new(VecDeque::new()),
    }
}

/// Subscribes receivers to a broadcast without receiving itself (see
/// [`BroadcastReceiver::handle`]). Cheap to clone.
pub struct BroadcastHandle<S: Stream> {
    shared: Arc<Shared<S>>,
}

impl<S: Stream> Clone for BroadcastHandle<S> {
    fn clone(&self) -> Self {
        BroadcastHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S: Stream> std::fmt::Debug for BroadcastHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastHandle").finish_non_exhaustive()
    }
}

impl<S> BroadcastHandle<S>
where
    S: Stream + Unpin,
    S::Item: Clone,
{
    /// A new subscriber: it receives every value that arrives from now on (after the end of
    /// the source, it ends at once).
    pub fn subscribe(&self) -> BroadcastReceiver<S> {
        add_subscriber(&self.shared, &mut lock(&self.shared.state), true)
    }

    /// A new subscriber that skips values it fell behind on instead of reporting
    /// [`BroadcastError::Lagged`].
    pub fn subscribe_without_lag_errors(&self) -> BroadcastReceiver<S> {
        add_subscriber(&self.shared, &mut lock(&self.shared.state), false)
    }
}

/// One `recv` in progress.
struct RecvOp<'a, S: Stream> {
    receiver: &'a BroadcastReceiver<S>,
    pulling: bool,
    cancel: CancelWait,
}

impl<S> RecvOp<'_, S>
where
    S: Stream + Unpin,
    S::Item: Clone,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<S::Item, BroadcastError>> {
        let shared = &self.receiver.shared;
        let key = self.receiver.key;
        if !self.pulling {
            match self.cancel.poll_start(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(true) => return Poll::Ready(Err(BroadcastError::Cancelled)),
                Poll::Ready(false) => {}
            }
            let mut local = lock(&self.receiver.local);
            if let Some(&(seq, _)) = local.front() {
                if shared.lossless || seq >= shared.first_seq.load(Ordering::Acquire) {
                    let (_, value) = local.pop_front().expect("looked at above");
                    return Poll::Ready(Ok(value));
                }
                // Fallen behind: what was taken ahead is no longer kept. Count the lag from
                // the first value not read, as if nothing had been taken ahead.
                local.clear();
                drop(local);
                if let Some(next) = lock(&shared.state).sub_mut(key) {
                    *next = seq;
                }
            }
        }
        {
            let mut state = lock(&shared.state);
            let (first, end) = (state.first_seq, state.end_seq());
            let Some(next) = state.sub_mut(key) else {
                return Poll::Ready(Err(BroadcastError::Closed));
            };
            if *next < first {
                let missed = first - *next;
                *next = first;
                if self.receiver.raise_on_lag {
                    self.stop_pulling(&mut state);
                    return Poll::Ready(Err(BroadcastError::Lagged(missed)));
                }
            }
            let next_seq = *state.sub_mut(key).expect("checked above");
            if next_seq < end {
                let at = (next_seq - first) as usize;
                let value = state.queue[at].clone();
                let more = (end - next_seq - 1).min(PREFETCH as u64 - 1) as usize;
                if more > 0 {
                    let mut local = lock(&self.receiver.local);
                    let seqs = next_seq + 1..;
                    local.extend(seqs.zip(state.queue.range(at + 1..=at + more).cloned()));
                }
                *state.sub_mut(key).expect("checked above") += 1 + more as u64;
                self.stop_pulling(&mut state);
                let wakers = state.after_read();
                drop(state);
                wakers.into_iter().for_each(Waker::wake);
                return Poll::Ready(Ok(value));
            }
            if state.ended {
                self.stop_pulling(&mut state);
                return Poll::Ready(Err(BroadcastError::EndOfChannel));
            }
            if state.must_not_pull() {
                // Lossless: wait for the slowest subscriber to read the oldest value.
                self.stop_pulling(&mut state);
                state.waiters.push(cx.waker().clone());
                drop(state);
                return self.poll_cancel(cx);
            }
            match state.puller {
                Some(puller) if puller != key => {
                    state.waiters.push(cx.waker().clone());
                    drop(state);
                    return self.poll_cancel(cx);
                }
                _ => {
                    state.puller = Some(key);
                    self.pulling = true;
                }
            }
        }
        // We pull. The source's lock is only ever held inside a poll, so this never blocks.
        let polled = Pin::new(&mut *lock(&shared.source)).poll_next(cx);
        match polled {
            Poll::Ready(Some(value)) => {
                let wakers = {
                    let mut state = lock(&shared.state);
                    state.push(value.clone());
                    shared.first_seq.store(state.first_seq, Ordering::Release);
                    let end = state.end_seq();
                    if let Some(next) = state.sub_mut(key) {
                        *next = end;
                    }
                    self.pulling = false;
                    state.release_puller(key)
                };
                wakers.into_iter().for_each(Waker::wake);
                Poll::Ready(Ok(value))
            }
            Poll::Ready(None) => {
                let wakers = {
                    let mut state = lock(&shared.state);
                    state.ended = true;
                    self.pulling = false;
                    state.release_puller(key)
                };
                wakers.into_iter().for_each(Waker::wake);
                Poll::Ready(Err(BroadcastError::EndOfChannel))
            }
            Poll::Pending => self.poll_cancel(cx),
        }
    }

    fn stop_pulling(&mut self, state: &mut State<S::Item>) {
        if self.pulling {
            self.pulling = false;
            let wakers = state.release_puller(self.receiver.key);
            // Under the state lock, but waking only schedules tasks.
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    fn poll_cancel(&mut self, cx: &mut Context<'_>) -> Poll<Result<S::Item, BroadcastError>> {
        match self.cancel.poll_cancelled(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let wakers = {
                    let mut state = lock(&self.receiver.shared.state);
                    self.pulling = false;
                    state.release_puller(self.receiver.key)
                };
                wakers.into_iter().for_each(Waker::wake);
                Poll::Ready(Err(BroadcastError::Cancelled))
            }
        }
    }
}

impl<S: Stream> Drop for RecvOp<'_, S> {
    fn drop(&mut self) {
        if self.pulling {
            // Stopped mid-pull (cancelled by drop): let another subscriber pull.
            let wakers = lock(&self.receiver.shared.state).release_puller(self.receiver.key);
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}
