//! A stream or context call's local buffer: the items received and not yet read, the
//! callee's `Started` value, how the call ended, and the tasks waiting on any of it. The
//! protocol state (credit, stops, phases) is the session's; this is a buffer and a waker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Waker};

use bytes::BytesMut;
use trellis::CancelScope;
use trellis_wire::{ActorId, Outcome, Payload, ProtocolError, Session};

use super::spin::{SpinGuard, SpinLock};
use crate::error::StreamOverrun;

/// How a call ended, for the side that waits on it.
#[derive(Debug, Clone)]
pub(crate) enum CallEnd {
    /// The callee's terminal message.
    Ended(Outcome),
    /// The callee broke the call's rules; we cancelled it.
    Broken(ProtocolError),
    /// The connection ended first.
    Lost,
    /// On the callee's side: the served function finished.
    Over,
}

impl CallEnd {
    /// Whether the call ended in a way that must cancel the caller's body: anything but the
    /// callee's `Return` or our own request to cancel.
    pub(crate) fn is_failure(&self, local: &ActorId) -> bool {
        match self {
            CallEnd::Ended(Outcome::Returned(_)) | CallEnd::Over => false,
            CallEnd::Ended(Outcome::Cancelled { requested_by, .. }) => requested_by != local,
            CallEnd::Ended(Outcome::Failed(_)) | CallEnd::Broken(_) | CallEnd::Lost => true,
        }
    }
}

/// Stream operations per unit of tokio's cooperative budget.
const OPERATIONS_PER_BUDGET_UNIT: u32 = 8;

/// The shared buffer of one call on one side.
pub(crate) struct Chan {
    state: Mutex<ChanState>,
    /// The receiving end's share: what it took from `state.items` in one step, read one at a
    /// time without contending with the reader task that fills `state`. Locked before
    /// `state` when both are.
    taken: Padded<SpinLock<Taken>>,
    /// The sending end's share, apart from both (locked after the connection's state when
    /// both are; never across encoding an item).
    sending: Padded<SpinLock<Sending>>,
    /// Sends and receives on this call, for [`schedule_point`](Chan::schedule_point).
    operations: AtomicU32,
}

/// Keeps its value on cache lines of its own, so that one thread's writes near it do not
/// take the line from another thread that locks it for each item.
#[repr(align(128))]
struct Padded<T>(T);

/// What the sending end encoded and the session has not seen yet, with the credit it took
/// ahead for more (`trellis_wire::Session::take_credit`): a sender with credit in hand adds
/// an item here without the connection's lock, which hands the batch over when it is next
/// taken ([`Conn::lock`](super::conn::Conn::lock)).
#[derive(Default)]
pub(crate) struct Sending {
    /// Whole `Yield` frames, in order.
    pub(crate) frames: BytesMut,
    /// How many items `frames` holds.
    pub(crate) items: u64,
    /// Items this end may still add (`u64::MAX`: no limit).
    pub(crate) credit: u64,
    /// The connection lists this call among those with frames to hand over.
    pub(crate) queued: bool,
    /// The connection's outgoing buffer was over its high-water mark at this end's last
    /// item: the next goes through the connection's lock (and waits there), not here.
    pub(crate) held: bool,
}

impl Sending {
    /// Gives the session back the credit this end holds for call `cid`: its next item asks
    /// the session again (which may refuse it now).
    pub(crate) fn return_credit(&mut self, session: &mut Session, cid: u64) {
        session.return_credit(cid, std::mem::take(&mut self.credit));
    }
}

/// Items in arrival order, kept in the batches they came in (one per read of the
/// connection): a batch is moved in whole, never copied into a buffer that grows with the
/// backlog.
#[derive(Default)]
pub(crate) struct Items {
    front: VecDeque<Payload>,
    /// Batches after `front`, none empty.
    rest: VecDeque<VecDeque<Payload>>,
}

impl Items {
    /// Adds a batch at the back: into the last batch when it has room to spare (so that a
    /// peer sending an item per read does not make a batch of each), else as a batch of its
    /// own.
    pub(crate) fn push(&mut self, batch: VecDeque<Payload>) {
        if self.is_empty() {
            self.front = batch;
            return;
        }
        let last = self.rest.back_mut().unwrap_or(&mut self.front);
        if batch.len() <= last.capacity() - last.len() {
            last.extend(batch);
        } else if !batch.is_empty() {
            self.rest.push_back(batch);
        }
    }

    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<Payload> {
        match self.front.pop_front() {
            Some(item) => Some(item),
            None => self.next_batch(),
        }
    }

    /// The first item of the next batch, which becomes the front.
    #[cold]
    fn next_batch(&mut self) -> Option<Payload> {
        loop {
            self.front = self.rest.pop_front()?;
            if let Some(item) = self.front.pop_front() {
                return Some(item);
            }
        }
    }

    pub(crate) fn push_front(&mut self, item: Payload) {
        self.front.push_front(item);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.front.is_empty() && self.rest.is_empty()
    }

    /// Moves up to `limit` items from the front to `out`; returns how many.
    pub(crate) fn take_into(&mut self, limit: usize, out: &mut Vec<Payload>) -> usize {
        let mut n = 0;
        while n < limit {
            if self.front.is_empty() {
                match self.rest.pop_front() {
                    Some(batch) => self.front = batch,
                    None => break,
                }
            }
            let k = (limit - n).min(self.front.len());
            out.extend(self.front.drain(..k));
            n += k;
        }
        n
    }

    pub(crate) fn clear(&mut self) {
        self.front.clear();
        self.rest.clear();
    }
}

/// Items the receiving end took, and its count of reads for the session's credit.
#[derive(Default)]
pub(crate) struct Taken {
    pub(crate) items: Items,
    /// After how many reads the receiving end reports them to the session (0: not opened).
    pub(crate) report_every: u32,
    /// Items read and not yet reported.
    pub(crate) unreported: u32,
}

#[derive(Default)]
pub(crate) struct ChanState {
    pub(crate) items: Items,
    /// The peer sent `Stop`.
    pub(crate) peer_stopped: bool,
    /// Our receiving end closed: items are discarded.
    pub(crate) recv_closed: bool,
    /// Our receiving end overran.
    pub(crate) overrun: Option<StreamOverrun>,
    /// We closed our sending end.
    pub(crate) send_closed: bool,
    /// The callee's `Started` value, on the caller's side of a context.
    pub(crate) started: Option<Payload>,
    pub(crate) end: Option<CallEnd>,
    /// Runs the caller's body of a context or stream: cancelled when the call fails under it.
    body: Option<CancelScope>,
    wakers: Vec<Waker>,
}

impl ChanState {
    /// Wakes `cx` at the next change.
    pub(crate) fn wait(&mut self, cx: &TaskContext<'_>) {
        if !self.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            self.wakers.push(cx.waker().clone());
        }
    }

    /// Whether the call failed in a way the local end should report.
    pub(crate) fn failed(&self, local: &ActorId) -> bool {
        self.overrun.is_some() || self.end.as_ref().is_some_and(|end| end.is_failure(local))
    }
}

impl Chan {
    pub(crate) fn new() -> Arc<Chan> {
        Arc::new(Chan {
            state: Mutex::new(ChanState::default()),
            taken: Padded(SpinLock::default()),
            sending: Padded(SpinLock::default()),
            operations: AtomicU32::new(0),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ChanState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spends tokio's cooperative budget once every [`OPERATIONS_PER_BUDGET_UNIT`] sends or
    /// receives, so that a stream that never has to wait still yields to the tasks beside it
    /// (the connection's writer and reader among them), after about a thousand items rather
    /// than tokio's 128: each write and read then carries that many.
    pub(crate) async fn schedule_point(&self) {
        // A count, not a synchronisation: two tasks at once may lose one (no locked
        // read-modify-write on the path of every item).
        let n = self.operations.load(Ordering::Relaxed);
        self.operations.store(n.wrapping_add(1), Ordering::Relaxed);
        if n % OPERATIONS_PER_BUDGET_UNIT == 0 {
            tokio::task::consume_budget().await;
        }
    }

    /// The receiving end's share (lock it first when taking both).
    pub(crate) fn taken(&self) -> SpinGuard<'_, Taken> {
        self.taken.0.lock()
    }

    /// The sending end's share.
    pub(crate) fn sending(&self) -> SpinGuard<'_, Sending> {
        self.sending.0.lock()
    }

    /// Drops every item buffered, taken or not.
    pub(crate) fn discard(&self, f: impl FnOnce(&mut ChanState)) {
        let mut taken = self.taken();
        taken.items.clear();
        self.update(|state| {
            state.items.clear();
            f(state);
        });
    }

    /// Applies `f` and wakes everyone waiting.
    pub(crate) fn update(&self, f: impl FnOnce(&mut ChanState)) {
        let wakers = {
            let mut state = self.lock();
            f(&mut state);
            std::mem::take(&mut state.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Items from the peer, in order (the session checked them against the window).
    pub(crate) fn push(&self, items: VecDeque<Payload>) {
        self.update(|state| {
            if !state.recv_closed && state.overrun.is_none() {
                state.items.push(items);
            }
        });
    }

    /// The receiving end overran: what is buffered is dropped, the caller's body cancelled.
    pub(crate) fn overrun(&self, overrun: StreamOverrun) {
        self.discard(|state| {
            if let Some(body) = &state.body {
                body.cancel();
            }
            state.overrun = Some(overrun);
        });
    }

    pub(crate) fn started(&self, value: Payload) {
        self.update(|state| state.started = Some(value));
    }

    /// Wakes whoever waits (credit came, the peer stopped).
    pub(crate) fn wake(&self, peer_stopped: bool) {
        self.update(|state| state.peer_stopped |= peer_stopped);
    }

    /// The call ended. A failure cancels the caller's body so that it learns at once.
    pub(crate) fn end(&self, end: CallEnd, local: &ActorId) {
        // Credit taken ahead is void: the next send learns of the end from the session.
        self.sending().credit = 0;
        self.update(|state| {
            if state.end.is_some() {
                return;
            }
            if end.is_failure(local)
                && let Some(body) = &state.body
            {
                body.cancel();
            }
            state.end = Some(end);
        });
    }

    /// The caller's body runs in `scope`; if the call failed already, it is cancelled at once.
    pub(crate) fn set_body(&self, scope: CancelScope, local: &ActorId) {
        let mut state = self.lock();
        if state.failed(local) {
            scope.cancel();
        }
        state.body = Some(scope);
    }

    pub(crate) fn terminal(&self) -> Option<CallEnd> {
        self.lock().end.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(range: std::ops::Range<u32>, capacity: usize) -> VecDeque<Payload> {
        let mut batch = VecDeque::with_capacity(capacity);
        batch.extend(range.map(|n| Payload::encode(&n).unwrap()));
        batch
    }

    fn value(item: &Payload) -> u32 {
        item.decode().unwrap()
    }

    /// Items come out in arrival order across batches, whether a batch was kept whole or
    /// went into the room of the one before; `take_into` and `push_front` keep the order.
    #[test]
    fn items_keep_their_order_across_batches() {
        let mut items = Items::default();
        items.push(batch(0..3, 8));
        // Fits in the first batch's spare room; the next does not.
        items.push(batch(3..5, 2));
        items.push(batch(5..12, 8));
        items.push(batch(12..13, 1));
        assert_eq!(items.rest.len(), 1, "small batches went into spare room");
        assert_eq!(items.pop_front().map(|i| value(&i)), Some(0));
        let mut out = Vec::new();
        assert_eq!(items.take_into(6, &mut out), 6);
        assert_eq!(
            out.iter().map(value).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        items.push_front(out.pop().unwrap());
        let rest: Vec<u32> = std::iter::from_fn(|| items.pop_front())
            .map(|i| value(&i))
            .collect();
        assert_eq!(rest, (6..13).collect::<Vec<_>>());
        assert!(items.is_empty());
        items.push(batch(13..14, 1));
        assert_eq!(items.pop_front().map(|i| value(&i)), Some(13));
    }
}
