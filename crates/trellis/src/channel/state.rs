//! The channel's state machine, under its one lock: the buffer, the queues of waiting senders
//! and receivers, and the open-handle counts.
//!
//! Invariants: receivers wait only while the buffer is empty and no sender waits; senders wait
//! only while the buffer is full (for capacity 0: always) and no receiver waits. A hand-off
//! moves the value straight into the waiter's slot and takes the slot out of the queue; the
//! waiter removes its slot when it next runs. Functions return the waker to wake, so that
//! callers wake it after releasing the lock.

use std::collections::VecDeque;
use std::task::Waker;

use super::{ChannelStatistics, RecvError, SendError};
use crate::slab::Slab;

pub(super) struct State<T> {
    buffer: VecDeque<T>,
    capacity: usize,
    peak: usize,
    pub(super) senders: usize,
    pub(super) receivers: usize,
    send_waiters: Waiters<SendSlot<T>>,
    recv_waiters: Waiters<RecvSlot<T>>,
    next_handle: u64,
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
    fn dequeue_handle(&mut self, handle: u64, wake: &mut Vec<Waker>) {
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
    fn dequeue_all(&mut self, wake: &mut Vec<Waker>) {
        for key in self.order.drain(..) {
            let slot = self.slots.get_mut(key).expect("queued slots exist");
            wake.push(take_waker(slot.waker()));
        }
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
    pub(super) fn new(capacity: usize) -> Self {
        State {
            buffer: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            peak: 0,
            senders: 1,
            receivers: 1,
            send_waiters: Waiters::new(),
            recv_waiters: Waiters::new(),
            next_handle: 0,
        }
    }

    pub(super) fn new_handle(&mut self) -> u64 {
        self.next_handle += 1;
        self.next_handle
    }

    fn push_buffer(&mut self, value: T) {
        self.buffer.push_back(value);
        self.peak = self.peak.max(self.buffer.len());
    }

    /// Sends without waiting: to the first waiting receiver, else into the buffer.
    pub(super) fn try_send(&mut self, value: T) -> Result<Option<Waker>, TrySend<T>> {
        if self.receivers == 0 {
            return Err(TrySend::Broken(value));
        }
        if let Some(key) = self.recv_waiters.order.pop_front() {
            let slot = self
                .recv_waiters
                .slots
                .get_mut(key)
                .expect("queued slots exist");
            slot.value = Some(value);
            return Ok(Some(take_waker(&mut slot.waker)));
        }
        if self.buffer.len() < self.capacity {
            self.push_buffer(value);
            return Ok(None);
        }
        Err(TrySend::Full(value))
    }

    /// Receives without waiting: from the buffer (refilling it from the first waiting sender),
    /// else straight from the first waiting sender (rendezvous).
    pub(super) fn try_recv(&mut self) -> Result<(T, Option<Waker>), TryRecv> {
        let sender = self.send_waiters.order.pop_front().map(|key| {
            let slot = self
                .send_waiters
                .slots
                .get_mut(key)
                .expect("queued slots exist");
            let value = slot.value.take().expect("a queued sender holds its value");
            (value, take_waker(&mut slot.waker))
        });
        if let Some(value) = self.buffer.pop_front() {
            let waker = sender.map(|(next, waker)| {
                self.push_buffer(next);
                waker
            });
            return Ok((value, waker));
        }
        if let Some((value, waker)) = sender {
            return Ok((value, Some(waker)));
        }
        if self.senders == 0 {
            Err(TryRecv::End)
        } else {
            Err(TryRecv::Empty)
        }
    }

    pub(super) fn wait_send(&mut self, handle: u64, value: T, waker: &Waker) -> usize {
        self.send_waiters.push(SendSlot {
            handle,
            waker: waker.clone(),
            value: Some(value),
        })
    }

    pub(super) fn wait_recv(&mut self, handle: u64, waker: &Waker) -> usize {
        self.recv_waiters.push(RecvSlot {
            handle,
            waker: waker.clone(),
            value: None,
        })
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
        if self.senders == 0 && self.buffer.is_empty() {
            self.recv_waiters.remove(key, true);
            return Some(Err(RecvError::EndOfChannel));
        }
        Waiters::refresh_waker(slot, waker);
        None
    }

    /// A waiting receiver gives up: the value handed to it meanwhile, if any.
    pub(super) fn withdraw_recv(&mut self, key: usize) -> Option<T> {
        self.recv_waiters.withdraw(key).and_then(|slot| slot.value)
    }

    /// Puts back a value whose receiver went away: to the next waiting receiver, else to the
    /// front of the buffer (which may then hold one more than its capacity).
    pub(super) fn unreceive(&mut self, value: T) -> Option<Waker> {
        if let Some(key) = self.recv_waiters.order.pop_front() {
            let slot = self
                .recv_waiters
                .slots
                .get_mut(key)
                .expect("queued slots exist");
            slot.value = Some(value);
            return Some(take_waker(&mut slot.waker));
        }
        self.buffer.push_front(value);
        self.peak = self.peak.max(self.buffer.len());
        None
    }

    /// A sender handle closed: its own waiting sends leave the queue (they fail with `Closed`
    /// when they run); the last one ends the channel for the waiting receivers. Returns the
    /// wakers to wake.
    pub(super) fn close_sender(&mut self, handle: u64) -> Vec<Waker> {
        self.senders -= 1;
        let mut wake = Vec::new();
        self.send_waiters.dequeue_handle(handle, &mut wake);
        if self.senders == 0 {
            self.recv_waiters.dequeue_all(&mut wake);
        }
        wake
    }

    /// A receiver handle closed: its own waiting receives leave the queue (they fail with
    /// `Closed` when they run); the last one breaks the channel for the waiting senders and
    /// discards the buffer, which is returned to be dropped outside the lock along with the
    /// wakers to wake.
    pub(super) fn close_receiver(&mut self, handle: u64) -> (VecDeque<T>, Vec<Waker>) {
        self.receivers -= 1;
        let mut wake = Vec::new();
        self.recv_waiters.dequeue_handle(handle, &mut wake);
        let mut discarded = VecDeque::new();
        if self.receivers == 0 {
            self.send_waiters.dequeue_all(&mut wake);
            discarded = std::mem::take(&mut self.buffer);
        }
        (discarded, wake)
    }

    pub(super) fn statistics(&self) -> ChannelStatistics {
        ChannelStatistics {
            current_buffer_used: self.buffer.len(),
            peak_buffer_used: self.peak,
            max_buffer_size: self.capacity,
            open_send_channels: self.senders,
            open_receive_channels: self.receivers,
            tasks_waiting_send: self.send_waiters.len(),
            tasks_waiting_receive: self.recv_waiters.len(),
        }
    }
}
