//! The channel's shared state: the buffer and a signal word that senders and receivers use
//! without the lock while nobody waits, and, under the lock, the queues of waiting senders and
//! receivers, the open-handle counts and the values put back by abandoned receives.
//!
//! # The fast path and its one rule
//!
//! While no task waits on either side, a send pushes to the buffer and a receive pops from it
//! without the lock. Whoever has to wait registers under the lock, publishes that in the signal
//! word, and then looks at the buffer once more; whoever pushed or popped without the lock looks
//! at the signal word after its push or pop. A sequentially consistent fence sits between the
//! write and the read on both sides (the classic store-buffer pairing), so at least one of the
//! two sees the other: either the waiter finds the value (or the room) itself, or the other
//! side takes the lock and hands it over ([`State::kick`], [`State::refill`]). No wake-up is
//! lost and no value waits in the buffer while a receiver sleeps.
//!
//! Invariants, under the lock: receivers wait only while the buffer is empty (values pushed
//! meanwhile are handed to them by the pusher), senders only while it is full (for capacity 0:
//! always). A hand-off moves the value straight into the waiter's slot and takes the slot out
//! of the queue; the waiter removes its slot when it next runs. Functions collect the wakers to
//! wake in a [`WakeList`], woken after the lock is released.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::task::Waker;

use super::buffer::Buffer;
use super::{ChannelStatistics, RecvError, SendError};
use crate::loom::{AtomicUsize, fence};
use crate::slab::Slab;

/// Signal bits: some receiver waits.
const RECV_WAITING: usize = 1;
/// Some sender waits.
const SEND_WAITING: usize = 2;
/// Every receiver is gone: sends fail, and a value pushed meanwhile must be discarded.
const BROKEN: usize = 4;
/// Values put back by abandoned receives wait ahead of the buffer.
const FRONT: usize = 8;

/// What senders and receivers touch without the lock.
pub(super) struct Fast<T> {
    pub(super) buffer: Buffer<T>,
    /// The `*_WAITING`, `BROKEN` and `FRONT` bits; written only under the lock.
    pub(super) signal: AtomicUsize,
    peak: AtomicUsize,
    capacity: usize,
}

impl<T> Fast<T> {
    pub(super) fn new(capacity: usize) -> Self {
        Fast {
            buffer: Buffer::new(capacity),
            signal: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            capacity,
        }
    }

    /// Sends without the lock when nobody waits and there is room; hands `value` back otherwise.
    /// `settle` runs (it takes the lock) when, after the push, a receiver turns out to be
    /// waiting or every receiver gone.
    pub(super) fn try_push(&self, value: T, settle: impl FnOnce()) -> Result<(), T> {
        if self.signal.load(Ordering::Relaxed) & (RECV_WAITING | SEND_WAITING | BROKEN) != 0 {
            return Err(value);
        }
        self.buffer.push(value)?;
        self.note_len(0);
        fence(Ordering::SeqCst);
        if self.signal.load(Ordering::Relaxed) & (RECV_WAITING | BROKEN) != 0 {
            settle();
        }
        Ok(())
    }

    /// Receives without the lock when nobody waits and nothing was put back; `refill` runs
    /// (it takes the lock) when, after the pop, a sender turns out to be waiting for room.
    pub(super) fn try_pop(&self, refill: impl FnOnce()) -> Option<T> {
        if self.signal.load(Ordering::Relaxed) & (RECV_WAITING | FRONT) != 0 {
            return None;
        }
        let value = self.buffer.pop()?;
        fence(Ordering::SeqCst);
        if self.signal.load(Ordering::Relaxed) & SEND_WAITING != 0 {
            refill();
        }
        Some(value)
    }

    /// After a push: remembers the buffer's use (plus `extra` put-back values) if it is a new
    /// peak. Free once the buffer has been full.
    fn note_len(&self, extra: usize) {
        if self.peak.load(Ordering::Relaxed) < self.capacity.saturating_add(extra) {
            self.peak
                .fetch_max(self.buffer.len() + extra, Ordering::Relaxed);
        }
    }
}

/// Wakers collected under the lock, woken after it is released; a few inline, more on the heap.
pub(super) struct WakeList {
    inline: [Option<Waker>; 4],
    len: usize,
    more: Vec<Waker>,
}

impl WakeList {
    pub(super) fn new() -> Self {
        WakeList {
            inline: [None, None, None, None],
            len: 0,
            more: Vec::new(),
        }
    }

    fn push(&mut self, waker: Waker) {
        if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = Some(waker);
            self.len += 1;
        } else {
            self.more.push(waker);
        }
    }

    /// Wakes them all. Call with the lock released.
    pub(super) fn wake(self) {
        self.inline.into_iter().flatten().for_each(Waker::wake);
        self.more.into_iter().for_each(Waker::wake);
    }
}

pub(super) struct State<T> {
    /// Values put back by receives that went away: received before the buffer's.
    front: VecDeque<T>,
    pub(super) senders: usize,
    pub(super) receivers: usize,
    send_waiters: Waiters<SendSlot<T>>,
    recv_waiters: Waiters<RecvSlot<T>>,
    next_handle: u64,
    /// The signal word as last published.
    published: usize,
}

/// A blocked sender: its value stays here until a receiver takes it.
struct SendSlot<T> {
    handle: u64,
    waker: Waker,
    /// `Some` while queued; taken by the receiver it is handed to.
    value: Option<T>,
}

/// A blocked receiver: a sender puts the value here.
struct RecvSlot<T> {
    handle: u64,
    waker: Waker,
    /// `None` while queued; the value handed over otherwise.
    value: Option<T>,
}

/// What the queue needs from a waiting sender's or receiver's slot.
trait Slot {
    fn handle(&self) -> u64;
    fn waker(&mut self) -> &mut Waker;
    /// Whether the slot may still be in the arrival queue (not handed over yet).
    fn maybe_queued(&self) -> bool;
}

impl<T> Slot for SendSlot<T> {
    fn handle(&self) -> u64 {
        self.handle
    }

    fn waker(&mut self) -> &mut Waker {
        &mut self.waker
    }

    fn maybe_queued(&self) -> bool {
        self.value.is_some()
    }
}

impl<T> Slot for RecvSlot<T> {
    fn handle(&self) -> u64 {
        self.handle
    }

    fn waker(&mut self) -> &mut Waker {
        &mut self.waker
    }

    fn maybe_queued(&self) -> bool {
        self.value.is_none()
    }
}

/// Waiting tasks in arrival order.
struct Waiters<S> {
    slots: Slab<S>,
    order: VecDeque<usize>,
}

impl<S> Waiters<S> {
    fn new() -> Self {
        Waiters {
            slots: Slab::default(),
            order: VecDeque::new(),
        }
    }

    fn push(&mut self, slot: S) -> usize {
        let key = self.slots.insert(slot);
        self.order.push_back(key);
        key
    }

    /// Removes a slot; `maybe_queued` says whether it may still be in the arrival queue (rare:
    /// a cancelled waiter), which costs a scan.
    fn remove(&mut self, key: usize, maybe_queued: bool) -> Option<S> {
        if maybe_queued && let Some(at) = self.order.iter().position(|k| *k == key) {
            self.order.remove(at);
        }
        self.slots.remove(key)
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

impl<S: Slot> Waiters<S> {
    /// A waiter gives up: its slot, taken out of the queue if it was still there.
    fn withdraw(&mut self, key: usize) -> Option<S> {
        let maybe_queued = self.slots.get_mut(key).is_some_and(|s| s.maybe_queued());
        self.remove(key, maybe_queued)
    }

    /// A waiter keeps waiting: remember its current waker.
    fn refresh_waker(slot: &mut S, waker: &Waker) {
        if !slot.waker().will_wake(waker) {
            slot.waker().clone_from(waker);
        }
    }

    /// Takes the waiters of one handle out of the queue (they fail with `Closed` when they
    /// run); appends their wakers to `wake`.
    fn dequeue_handle(&mut self, handle: u64, wake: &mut WakeList) {
        let slots = &mut self.slots;
        self.order.retain(|key| {
            let slot = slots.get_mut(*key).expect("queued slots exist");
            let own = slot.handle() == handle;
            if own {
                wake.push(take_waker(slot.waker()));
            }
            !own
        });
    }

    /// Takes every waiter out of the queue (the channel ended or broke); appends their wakers.
    fn dequeue_all(&mut self, wake: &mut WakeList) {
        for key in self.order.drain(..) {
            let slot = self.slots.get_mut(key).expect("queued slots exist");
            wake.push(take_waker(slot.waker()));
        }
    }
}

impl<T> Waiters<RecvSlot<T>> {
    /// Hands `value` to the first waiting receiver, or back when none waits.
    fn hand_over(&mut self, value: T, wake: &mut WakeList) -> Result<(), T> {
        let Some(key) = self.order.pop_front() else {
            return Err(value);
        };
        let slot = self.slots.get_mut(key).expect("queued slots exist");
        slot.value = Some(value);
        wake.push(take_waker(&mut slot.waker));
        Ok(())
    }
}

impl<T> Waiters<SendSlot<T>> {
    /// Takes the value of the first waiting sender, which is then done.
    fn take_first(&mut self, wake: &mut WakeList) -> Option<T> {
        let key = self.order.pop_front()?;
        let slot = self.slots.get_mut(key).expect("queued slots exist");
        wake.push(take_waker(&mut slot.waker));
        Some(slot.value.take().expect("a queued sender holds its value"))
    }
}

/// Takes the waker out of a slot, leaving a no-op one: the waiter sets its own again when it
/// next runs.
fn take_waker(waker: &mut Waker) -> Waker {
    std::mem::replace(waker, Waker::noop().clone())
}

pub(super) enum TrySend<T> {
    Full(T),
    Broken(T),
}

pub(super) enum TryRecv {
    Empty,
    End,
}

impl<T> State<T> {
    pub(super) fn new() -> Self {
        State {
            front: VecDeque::new(),
            senders: 1,
            receivers: 1,
            send_waiters: Waiters::new(),
            recv_waiters: Waiters::new(),
            next_handle: 0,
            published: 0,
        }
    }

    pub(super) fn new_handle(&mut self) -> u64 {
        self.next_handle += 1;
        self.next_handle
    }

    /// Writes the signal word if what it reflects changed. Runs before the lock is released
    /// (the channel's lock guard calls it), and explicitly before a waiter's second look.
    pub(super) fn publish(&mut self, fast: &Fast<T>) {
        let mut signal = 0;
        if self.recv_waiters.len() > 0 {
            signal |= RECV_WAITING;
        }
        if self.send_waiters.len() > 0 {
            signal |= SEND_WAITING;
        }
        if self.receivers == 0 {
            signal |= BROKEN;
        }
        if !self.front.is_empty() {
            signal |= FRONT;
        }
        if signal != self.published {
            fast.signal.store(signal, Ordering::SeqCst);
            self.published = signal;
        }
    }

    /// Brings waiters and buffer into line after pushes and pops made without the lock: buffered
    /// values go to waiting receivers, waiting senders' values into the room in the buffer, each
    /// in arrival order.
    pub(super) fn settle(&mut self, fast: &Fast<T>, wake: &mut WakeList) {
        while self.kick(fast, wake) + self.refill(fast, wake) > 0 {}
    }

    /// Hands buffered values (put-back ones first) to waiting receivers. Returns how many.
    fn kick(&mut self, fast: &Fast<T>, wake: &mut WakeList) -> usize {
        let mut moved = 0;
        while self.recv_waiters.len() > 0 {
            let Some(value) = self.front.pop_front().or_else(|| fast.buffer.pop()) else {
                break;
            };
            if let Err(value) = self.recv_waiters.hand_over(value, wake) {
                self.front.push_front(value);
                break;
            }
            moved += 1;
        }
        moved
    }

    /// Moves waiting senders' values into the buffer while it has room. Returns how many.
    fn refill(&mut self, fast: &Fast<T>, wake: &mut WakeList) -> usize {
        let mut moved = 0;
        while let Some(&key) = self.send_waiters.order.front() {
            let slot = self
                .send_waiters
                .slots
                .get_mut(key)
                .expect("queued slots exist");
            let value = slot.value.take().expect("a queued sender holds its value");
            if let Err(value) = fast.buffer.push(value) {
                slot.value = Some(value);
                break;
            }
            self.send_waiters.order.pop_front();
            wake.push(take_waker(&mut slot.waker));
            moved += 1;
        }
        if moved > 0 {
            fast.note_len(self.front.len());
        }
        moved
    }

    /// A push made without the lock found a receiver waiting or every receiver gone: hand the
    /// buffer over, or empty it (returned, to be dropped outside the lock).
    pub(super) fn after_push(&mut self, fast: &Fast<T>, wake: &mut WakeList) -> VecDeque<T> {
        if self.receivers == 0 {
            return self.drain(fast);
        }
        self.settle(fast, wake);
        VecDeque::new()
    }

    fn drain(&mut self, fast: &Fast<T>) -> VecDeque<T> {
        let mut discarded = std::mem::take(&mut self.front);
        discarded.extend(std::iter::from_fn(|| fast.buffer.pop()));
        discarded
    }

    /// Sends without waiting: to the first waiting receiver, else into the buffer unless
    /// senders wait ahead of this one.
    pub(super) fn try_send(
        &mut self,
        fast: &Fast<T>,
        value: T,
        wake: &mut WakeList,
    ) -> Result<(), TrySend<T>> {
        if self.receivers == 0 {
            return Err(TrySend::Broken(value));
        }
        self.settle(fast, wake);
        let Err(value) = self.recv_waiters.hand_over(value, wake) else {
            return Ok(());
        };
        if self.send_waiters.len() > 0 {
            return Err(TrySend::Full(value));
        }
        fast.buffer.push(value).map_err(TrySend::Full)?;
        fast.note_len(self.front.len());
        Ok(())
    }

    /// After `try_send` found no room: queues the sender, publishes that, and looks again (a
    /// receive made without the lock may have made room meanwhile). `None` when the value went
    /// after all; otherwise the waiter's key.
    pub(super) fn wait_send(
        &mut self,
        fast: &Fast<T>,
        handle: u64,
        value: T,
        waker: &Waker,
        wake: &mut WakeList,
    ) -> Option<usize> {
        // A no-op waker until the second look is done: it may hand the value over, and the
        // task is running anyway.
        let key = self.send_waiters.push(SendSlot {
            handle,
            waker: Waker::noop().clone(),
            value: Some(value),
        });
        self.publish(fast);
        fence(Ordering::SeqCst);
        self.settle(fast, wake);
        let slot = self.send_waiters.slots.get_mut(key).expect("exists");
        if slot.value.is_none() {
            self.send_waiters.remove(key, false);
            return None;
        }
        slot.waker = waker.clone();
        Some(key)
    }

    /// Receives without waiting: a put-back value, else the buffer (refilling it from waiting
    /// senders), else straight from the first waiting sender (rendezvous).
    pub(super) fn try_recv(&mut self, fast: &Fast<T>, wake: &mut WakeList) -> Result<T, TryRecv> {
        if let Some(value) = self.front.pop_front() {
            return Ok(value);
        }
        // Receivers already waiting come first.
        self.settle(fast, wake);
        if let Some(value) = fast.buffer.pop() {
            self.settle(fast, wake);
            return Ok(value);
        }
        if let Some(value) = self.send_waiters.take_first(wake) {
            return Ok(value);
        }
        if self.senders == 0 {
            Err(TryRecv::End)
        } else {
            Err(TryRecv::Empty)
        }
    }

    /// After `try_recv` found nothing: queues the receiver, publishes that, and looks again (a
    /// send made without the lock may have pushed meanwhile). `Ok` with the value found;
    /// otherwise the waiter's key.
    pub(super) fn wait_recv(
        &mut self,
        fast: &Fast<T>,
        handle: u64,
        waker: &Waker,
        wake: &mut WakeList,
    ) -> Result<T, usize> {
        let key = self.recv_waiters.push(RecvSlot {
            handle,
            waker: Waker::noop().clone(),
            value: None,
        });
        self.publish(fast);
        fence(Ordering::SeqCst);
        self.settle(fast, wake);
        let slot = self.recv_waiters.slots.get_mut(key).expect("exists");
        if let Some(value) = slot.value.take() {
            self.recv_waiters.remove(key, false);
            return Ok(value);
        }
        slot.waker = waker.clone();
        Err(key)
    }

    /// A waiting sender runs again: done if its value was taken, failed if the channel broke or
    /// its handle closed meanwhile; otherwise it keeps waiting with `waker`.
    pub(super) fn poll_send_waiter(
        &mut self,
        key: usize,
        handle_closed: bool,
        waker: &Waker,
    ) -> Option<Result<(), SendError<T>>> {
        let slot = self
            .send_waiters
            .slots
            .get_mut(key)
            .expect("a waiter's slot exists");
        if slot.value.is_none() {
            self.send_waiters.remove(key, false);
            return Some(Ok(()));
        }
        if self.receivers == 0 || handle_closed {
            let slot = self.send_waiters.remove(key, true).expect("exists");
            let value = slot.value.expect("undelivered");
            return Some(Err(if handle_closed {
                SendError::Closed(value)
            } else {
                SendError::Broken(value)
            }));
        }
        Waiters::refresh_waker(slot, waker);
        None
    }

    /// A waiting sender gives up: its value back if no receiver took it yet.
    pub(super) fn withdraw_send(&mut self, key: usize) -> Option<T> {
        self.send_waiters.withdraw(key).and_then(|slot| slot.value)
    }

    /// A waiting receiver runs again: done if a value was handed to it, failed if its handle
    /// closed or the channel ended meanwhile; otherwise it keeps waiting with `waker`.
    pub(super) fn poll_recv_waiter(
        &mut self,
        fast: &Fast<T>,
        key: usize,
        handle_closed: bool,
        waker: &Waker,
    ) -> Option<Result<T, RecvError>> {
        let slot = self
            .recv_waiters
            .slots
            .get_mut(key)
            .expect("a waiter's slot exists");
        if let Some(value) = slot.value.take() {
            self.recv_waiters.remove(key, false);
            return Some(Ok(value));
        }
        if handle_closed {
            self.recv_waiters.remove(key, true);
            return Some(Err(RecvError::Closed));
        }
        if self.senders == 0 {
            self.recv_waiters.remove(key, true);
            // A send that raced its own handle's close may have left a value behind.
            let left = self.front.pop_front().or_else(|| fast.buffer.pop());
            return Some(left.ok_or(RecvError::EndOfChannel));
        }
        Waiters::refresh_waker(slot, waker);
        None
    }

    /// A waiting receiver gives up: the value handed to it meanwhile, if any.
    pub(super) fn withdraw_recv(&mut self, key: usize) -> Option<T> {
        self.recv_waiters.withdraw(key).and_then(|slot| slot.value)
    }

    /// Puts back a value whose receiver went away: to the next waiting receiver, else ahead of
    /// the buffer (which may then hold one more than its capacity).
    pub(super) fn unreceive(&mut self, fast: &Fast<T>, value: T, wake: &mut WakeList) {
        let Err(value) = self.recv_waiters.hand_over(value, wake) else {
            return;
        };
        self.front.push_front(value);
        fast.note_len(self.front.len());
    }

    /// A sender handle closed: its own waiting sends leave the queue (they fail with `Closed`
    /// when they run); the last one ends the channel for the waiting receivers.
    pub(super) fn close_sender(&mut self, handle: u64, wake: &mut WakeList) {
        self.senders -= 1;
        self.send_waiters.dequeue_handle(handle, wake);
        if self.senders == 0 {
            self.recv_waiters.dequeue_all(wake);
        }
    }

    /// A receiver handle closed: its own waiting receives leave the queue (they fail with
    /// `Closed` when they run); the last one breaks the channel for the waiting senders and
    /// discards the buffer, which is returned to be dropped outside the lock.
    pub(super) fn close_receiver(
        &mut self,
        fast: &Fast<T>,
        handle: u64,
        wake: &mut WakeList,
    ) -> VecDeque<T> {
        self.receivers -= 1;
        self.recv_waiters.dequeue_handle(handle, wake);
        if self.receivers > 0 {
            return VecDeque::new();
        }
        self.send_waiters.dequeue_all(wake);
        // Published before the buffer is emptied: a send without the lock that pushes after
        // this sees `BROKEN` and empties it again.
        self.publish(fast);
        fence(Ordering::SeqCst);
        self.drain(fast)
    }

    pub(super) fn statistics(&self, fast: &Fast<T>) -> ChannelStatistics {
        ChannelStatistics {
            current_buffer_used: fast.buffer.len() + self.front.len(),
            peak_buffer_used: fast.peak.load(Ordering::Relaxed),
            max_buffer_size: fast.capacity,
            open_send_channels: self.senders,
            open_receive_channels: self.receivers,
            tasks_waiting_send: self.send_waiters.len(),
            tasks_waiting_receive: self.recv_waiters.len(),
        }
    }
}
