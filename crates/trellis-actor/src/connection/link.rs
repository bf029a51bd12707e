//! One stream or context call's local end: its connection, its id, its buffer. Receiving
//! reads the buffer and reports reads to the engine (which grants credit). Sending takes the
//! engine's credit ahead, for as many items as it grants, and adds each encoded item to the
//! call's own buffer without the connection's lock (the connection hands such buffers to the
//! engine whenever its lock is next taken); with no credit, it waits on the buffer's waker.

use std::any::Any;
use std::cell::RefCell;
use std::sync::{Arc, MutexGuard};
use std::task::{Context as TaskContext, Poll};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use trellis::{CancelScope, CancelSource};
use trellis_wire::{
    CallKind, CancelReason as WireReason, Payload, Role, SHARE_FROM, SendError, Session, Window,
};

use super::chan::{CallEnd, Chan, ChanState, Sending, Taken};
use super::conn::{CANCEL_ACK_WAIT, Conn, End, Flush};
use super::outgoing::SENDING_BATCH;
use super::spin::SpinGuard;
use crate::actor_error::ActorError;

thread_local! {
    /// Where a stream item is encoded before it is added to its call's buffer.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// One call's channel as seen by its local end.
#[derive(Clone)]
pub(crate) struct Link {
    pub(crate) conn: Conn,
    pub(crate) cid: u64,
    pub(crate) chan: Arc<Chan>,
    pub(crate) kind: CallKind,
    pub(crate) role: Role,
}

impl Link {
    pub(crate) fn new(conn: Conn, cid: u64, chan: Arc<Chan>, kind: CallKind, role: Role) -> Self {
        Link {
            conn,
            cid,
            chan,
            kind,
            role,
        }
    }

    /// Why the stream cannot go on, as an error for the local end, or `None` when it ended
    /// normally.
    pub(crate) fn ended_error(&self, state: &ChanState) -> Option<trellis::Error> {
        if let Some(overrun) = &state.overrun {
            return Some(trellis::Error::new(overrun.clone()));
        }
        match state.end.as_ref()? {
            CallEnd::Ended(trellis_wire::Outcome::Returned(_)) => None,
            end => self.conn.call_result(end.clone()).err(),
        }
    }

    /// The next item, `None` at the end of the stream.
    pub(crate) fn poll_recv(
        &self,
        cx: &TaskContext<'_>,
    ) -> Poll<Result<Option<Payload>, trellis::Error>> {
        match self.take_next(Some(cx)) {
            Some(ready) => Poll::Ready(ready),
            None => Poll::Pending,
        }
    }

    /// The next item or the stream's end, if there is one now; else `cx` (when given) is
    /// woken when there is.
    pub(crate) fn take_next(
        &self,
        cx: Option<&TaskContext<'_>>,
    ) -> Option<Result<Option<Payload>, trellis::Error>> {
        let mut taken = self.chan.taken();
        let mut item = taken.items.pop_front();
        let mut state = None;
        if item.is_none() {
            // Everything that arrived, in one step.
            let shared = state.insert(self.chan.lock());
            std::mem::swap(&mut taken.items, &mut shared.items);
            item = taken.items.pop_front();
        }
        if let Some(item) = item {
            drop(state);
            self.count_read(taken, 1);
            return Some(Ok(Some(item)));
        }
        let state = state.expect("locked when nothing was taken");
        self.no_items(state, cx).map(|ended| ended.map(|()| None))
    }

    /// Up to `limit` items (at least one) moved to `out`, or the stream's end (`Ok(0)`), if
    /// there is either now; else `cx` (when given) is woken when there is. The items count as
    /// read once [`consumed`](Link::consumed) says so.
    pub(crate) fn take_into(
        &self,
        cx: Option<&TaskContext<'_>>,
        limit: usize,
        out: &mut Vec<Payload>,
    ) -> Option<Result<usize, trellis::Error>> {
        let mut taken = self.chan.taken();
        if taken.items.is_empty() {
            let mut state = self.chan.lock();
            std::mem::swap(&mut taken.items, &mut state.items);
            if taken.items.is_empty() {
                return self.no_items(state, cx).map(|ended| ended.map(|()| 0));
            }
        }
        Some(Ok(taken.items.take_into(limit, out)))
    }

    /// `n` items taken with [`take_into`](Link::take_into) were read.
    pub(crate) fn consumed(&self, n: usize) {
        if n > 0 {
            self.count_read(self.chan.taken(), n);
        }
    }

    /// Puts items taken with [`take_into`](Link::take_into) and not read back at the front,
    /// in their order.
    pub(crate) fn put_back(&self, items: impl DoubleEndedIterator<Item = Payload>) {
        let mut taken = self.chan.taken();
        for item in items.rev() {
            taken.items.push_front(item);
        }
    }

    /// Counts `n` more reads; every [`report_every`](Window::report_every) of them, tells
    /// the session (which grants the sender more credit).
    fn count_read(&self, mut taken: SpinGuard<'_, Taken>, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        taken.unreported = taken.unreported.saturating_add(n);
        let report = if taken.unreported >= taken.report_every {
            std::mem::take(&mut taken.unreported)
        } else {
            0
        };
        drop(taken);
        if report > 0 {
            self.conn.act(Flush::Now, |s| s.consumed(self.cid, report));
        }
    }

    /// Why there is no item: the stream's end (`Ok`), its failure, or nothing yet (`None`,
    /// `cx` woken at the next change).
    fn no_items(
        &self,
        mut state: MutexGuard<'_, ChanState>,
        cx: Option<&TaskContext<'_>>,
    ) -> Option<Result<(), trellis::Error>> {
        if state.recv_closed {
            return Some(Err(ActorError::StreamClosed.into()));
        }
        if let Some(error) = self.ended_error(&state) {
            return Some(Err(error));
        }
        if state.peer_stopped || state.end.is_some() {
            return Some(Ok(()));
        }
        if let Some(cx) = cx {
            state.wait(cx);
        }
        None
    }

    pub(crate) fn call_over(&self) -> bool {
        self.chan.lock().end.is_some()
    }

    /// Sends `item` once there is credit, encoding it straight into the connection's
    /// outgoing buffer.
    pub(crate) async fn send<T: Serialize + 'static>(&self, item: T) -> Result<(), trellis::Error> {
        // A sender that never has to wait (unlimited credit) still lets the connection's
        // writer, which may sit on the same worker, run once in a while (and not so often
        // that each write carries only a few items).
        self.chan.schedule_point().await;
        // The fast path, a checkpoint and an item that goes out at once: no wait to record
        // for a dump, no cancellation to wait for.
        trellis::checkpoint_if_cancelled()?;
        let mut item = Some(item);
        // Borrowed mutably: the future stays `Send` for a `T` that is not `Sync`.
        let pending = &mut item;
        let first = std::future::poll_fn(|cx| {
            let item = pending.as_mut().expect("not sent yet");
            Poll::Ready(match self.poll_send(cx, &*item) {
                Poll::Ready(sent) => Some(sent),
                Poll::Pending => None,
            })
        })
        .await;
        if let Some(sent) = first {
            return sent;
        }
        let item = item.take().expect("not sent yet");
        // Owned by the future (a `T` that is `Send` but not `Sync` stays sendable), borrowed
        // only within each poll.
        let what = || self.waits_on("credit from");
        let send = trellis::cancellable(std::future::poll_fn(move |cx| self.poll_send(cx, &item)));
        trellis::dump::waiting_for(what, send).await?
    }

    /// What a task waiting on this call waits on, for a dump: `what` and the call.
    pub(crate) fn waits_on(&self, what: &str) -> trellis::dump::Waits {
        let kind = match self.kind {
            CallKind::Run => "call",
            CallKind::Stream => "stream",
            CallKind::Context => "context",
        };
        let peer = &self.conn.peer().actor;
        trellis::dump::Waits {
            what: format!("{what} actor {peer} ({kind} {})", self.cid).into(),
            // The caller waits for the callee's serving task; a callee's waits (for credit)
            // are for whatever reads the stream, which serves nothing a key names.
            key: (self.role == Role::Caller)
                .then(|| super::conn::call_key(self.conn.local(), self.cid)),
        }
    }

    fn poll_send<T: Serialize + 'static>(
        &self,
        cx: &TaskContext<'_>,
        item: &T,
    ) -> Poll<Result<(), trellis::Error>> {
        // A long `bytes::Bytes` item goes out from where it is (serde's `Serialize` would copy
        // it); the peer reads the same `bin` value either way.
        let bytes = (item as &dyn Any).downcast_ref::<Bytes>();
        if let Some(bytes) = bytes.filter(|b| b.len() >= SHARE_FROM) {
            return self.poll_send_with(cx, |s, sending| {
                // The session counts this item's credit: what this end holds goes back.
                sending.return_credit(s, self.cid);
                s.send_item_bytes(self.cid, bytes.clone())
            });
        }
        // Encoded outside any lock, into this thread's scratch buffer.
        SCRATCH.with(|scratch| {
            let mut fresh = BytesMut::new();
            let mut borrowed = scratch.try_borrow_mut();
            let frame = match borrowed.as_deref_mut() {
                Ok(scratch) => scratch,
                // A `Serialize` that sends on a stream while it encodes.
                Err(_) => &mut fresh,
            };
            frame.clear();
            let encode = |out: &mut BytesMut| Payload::encode_into(item, out);
            if let Err(e) = self
                .conn
                .inner
                .codec
                .encode_yield_with(frame, self.cid, encode)
            {
                return Poll::Ready(Err(self.send_error(e)));
            }
            let sent = self.add_frame(cx, frame);
            if frame.capacity() > SENDING_BATCH {
                // Not kept for the thread after an item this long.
                *frame = BytesMut::new();
            }
            sent
        })
    }

    /// Sends one encoded `Yield` frame: added to the call's own buffer while this end holds
    /// credit (no lock of the connection), else under the connection's lock, with credit
    /// taken ahead from the session for the items after it.
    fn add_frame(&self, cx: &TaskContext<'_>, frame: &[u8]) -> Poll<Result<(), trellis::Error>> {
        let mut sending = self.chan.sending();
        if sending.credit > 0
            && !sending.held
            && sending.frames.len() + frame.len() <= SENDING_BATCH
        {
            sending.frames.extend_from_slice(frame);
            sending.items += 1;
            if sending.credit != u64::MAX {
                sending.credit -= 1;
            }
            let first = !std::mem::replace(&mut sending.queued, true);
            drop(sending);
            if first {
                self.conn.queue_sending(self.cid, &self.chan);
            }
            return Poll::Ready(Ok(()));
        }
        drop(sending);
        // The connection's lock hands over what this call added first.
        self.poll_send_with(cx, |s, sending| {
            if sending.credit == 0 {
                sending.credit = s.take_credit(self.cid, u64::MAX)?;
            }
            if let Err(e) = s.send_encoded_items(self.cid, frame, 1) {
                // Refused (the receiver stopped, say): so is every later item.
                sending.return_credit(s, self.cid);
                return Err(e);
            }
            if sending.credit != u64::MAX {
                sending.credit -= 1;
            }
            Ok(())
        })
    }

    /// Sends an item with `f`, under the connection's lock and with this end's share of the
    /// call: waits for room in the outgoing buffer, and for credit.
    fn poll_send_with(
        &self,
        cx: &TaskContext<'_>,
        f: impl Fn(&mut Session, &mut Sending) -> Result<(), SendError>,
    ) -> Poll<Result<(), trellis::Error>> {
        for attempt in 0..2 {
            let sent = self.conn.act_item(cx, |s| {
                let mut sending = self.chan.sending();
                sending.held = false;
                f(s, &mut sending)
            });
            let Some(sent) = sent else {
                // The outgoing buffer is full; woken when it drained. Until then no item of
                // this end's is added past the connection's lock.
                self.chan.sending().held = true;
                return Poll::Pending;
            };
            match sent {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(SendError::NoCredit { .. }) if attempt == 0 => {
                    // Wait for credit; checked again in case it came meanwhile.
                    self.chan.lock().wait(cx);
                }
                Err(SendError::NoCredit { .. }) => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(self.send_error(e))),
            }
        }
        Poll::Pending
    }

    /// The error of a send that failed with `error`.
    fn send_error(&self, error: SendError) -> trellis::Error {
        match error {
            SendError::Payload(e) => ActorError::from(e).into(),
            e => self.send_failure(e),
        }
    }

    /// Why a send failed: the call's end when it is over, else the engine's refusal.
    fn send_failure(&self, error: SendError) -> trellis::Error {
        let state = self.chan.lock();
        if state.send_closed {
            return ActorError::StreamClosed.into();
        }
        if matches!(error, SendError::CallOver { .. } | SendError::Closed)
            && let Some(error) = self.ended_error(&state)
        {
            return error;
        }
        drop(state);
        self.conn.send_error(error)
    }

    /// The caller's end of a one-way stream: it does not send.
    pub(crate) fn one_way_caller(&self) -> bool {
        self.kind == CallKind::Stream && self.role == Role::Caller
    }

    /// Says we send no more items (context) or, as the caller of a one-way stream, that we
    /// take no more: `Stop`, once.
    pub(crate) fn stop(&self) {
        let first = !std::mem::replace(&mut self.chan.lock().send_closed, true);
        if first && !self.call_over() {
            let _ = self.conn.act(Flush::Now, |s| {
                // Items this end adds after `Stop` must fail, not wait in its own buffer.
                self.chan.sending().return_credit(s, self.cid);
                s.stop(self.cid)
            });
        }
    }

    /// Sends a context's first value and opens the callee's receiving end as `window` says,
    /// in one step.
    pub(crate) fn started(&self, value: Payload, window: Window) -> Result<(), trellis::Error> {
        self.chan.taken().report_every = window.report_every();
        let sent = self.conn.act(Flush::Now, |s| {
            s.started(self.cid, value)?;
            s.open_receive(self.cid, window)
        });
        sent.map_err(|e| self.send_failure(e))
    }

    /// Stops receiving: what is buffered or still comes is discarded and, with `grant`, the
    /// sender never waits for credit again.
    pub(crate) fn close_recv(&self, grant: bool) {
        self.chan.discard(|state| state.recv_closed = true);
        if grant && !self.call_over() {
            self.conn.act(Flush::Now, |s| s.close_receive(self.cid));
        }
    }

    /// Sends `Cancel` for a call we made, once, unless it is over.
    pub(crate) fn send_cancel(&self, reason: Box<WireReason>) {
        if !self.call_over() {
            let local = self.conn.local().clone();
            self.conn
                .act(Flush::Now, |s| s.cancel(self.cid, local, Some(reason)));
        }
    }

    /// A reason made here, for [`send_cancel`](Link::send_cancel).
    pub(crate) fn reason(&self, message: &str) -> Box<WireReason> {
        crate::cancel_reason::here(CancelSource::Explicit, message, self.conn.local())
    }

    /// Why the call is cancelled because `error` ended what waited for it.
    pub(crate) fn reason_for(&self, error: &trellis::Error, what: &str) -> Box<WireReason> {
        crate::cancel_reason::for_error(error, what, self.conn.local())
    }

    /// Cancels a call we made and waits, shielded and for a bounded time, for the callee to
    /// acknowledge (or end the call otherwise).
    pub(crate) async fn cancel_and_wait(&self, reason: Box<WireReason>) {
        if self.call_over() {
            return;
        }
        self.send_cancel(reason);
        let waited = CancelScope::shielded()
            .run(trellis::move_on_after(CANCEL_ACK_WAIT, async {
                Ok::<_, trellis::Error>(self.wait_end().await?)
            }))
            .await;
        if !matches!(waited, Ok(Some(Some(_)))) {
            self.conn.forget_call(self.cid);
        }
    }

    /// The error of a call that failed under the caller's body.
    pub(crate) fn failure(&self) -> trellis::Error {
        self.failure_or(trellis::Cancelled::new().into())
    }

    /// The call's failure, if it failed, else `otherwise`.
    pub(crate) fn failure_or(&self, otherwise: trellis::Error) -> trellis::Error {
        let state = self.chan.lock();
        let failed = state.failed(self.conn.local());
        match failed.then(|| self.ended_error(&state)).flatten() {
            Some(error) => error,
            None => otherwise,
        }
    }

    /// Waits for the call's end.
    pub(crate) async fn wait_end(&self) -> Result<CallEnd, trellis::Cancelled> {
        let what = || self.waits_on("the result from");
        let end = trellis::cancellable(std::future::poll_fn(|cx| {
            let mut state = self.chan.lock();
            match &state.end {
                Some(end) => Poll::Ready(end.clone()),
                None => {
                    state.wait(cx);
                    Poll::Pending
                }
            }
        }));
        trellis::dump::waiting_for(what, end).await
    }

    /// Waits for the callee's `Started` value (or the call's end before it).
    pub(crate) async fn wait_started(&self) -> Result<Payload, trellis::Error> {
        trellis::cancellable(std::future::poll_fn(|cx| {
            let mut state = self.chan.lock();
            if let Some(value) = state.started.clone() {
                return Poll::Ready(Ok(value));
            }
            if state.end.is_some() {
                return Poll::Ready(Err(self.ended_error(&state).unwrap_or_else(|| {
                    ActorError::NotStarted {
                        actor: self.conn.peer().actor.clone(),
                    }
                    .into()
                })));
            }
            state.wait(cx);
            Poll::Pending
        }))
        .await?
    }

    /// Why the connection the call runs over was lost, if it was.
    pub(crate) fn lost(&self) -> Option<trellis::Error> {
        match self.conn.end() {
            Some(End::Lost(_)) => Some(self.conn.lost()),
            _ => None,
        }
    }
}
