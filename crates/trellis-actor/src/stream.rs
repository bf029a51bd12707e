//! Streams and contexts: values flowing between two actors within one call.
//!
//! * A **one-way stream** (`Portal::open_stream_from`): the remote function gets a
//!   [`MsgStream`] to send on; the caller receives.
//! * A **context** (`Portal::open_context`): the remote function gets a [`Context`], reports a
//!   first value with [`Context::started`], and both sides may open one two-way [`MsgStream`];
//!   the caller ends with the function's result ([`PortalContext::result`]).
//!
//! Flow control is per receiving end ([`StreamOptions`]): by default a receiver grants its
//! sender credit for as many items as its buffer holds and more as it reads them, so a slow
//! consumer slows its producer down across the process boundary and nothing is ever dropped.
//! [`Flow::Overrun`] fails the call with [`StreamOverrun`] instead once the buffer overflows
//! (tractor's default); [`Flow::Unbounded`] buffers without limit (tractor's
//! `allow_overruns`).
//!
//! [`MsgStream::subscribe`] hands the stream's items to many local tasks, each getting every
//! item (the broadcast receiver of `trellis::broadcast`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context as TaskContext, Poll, Waker};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use trellis::CancelScope;
use trellis::broadcast::{
    BroadcastError, BroadcastHandle, BroadcastReceiver, broadcast_receiver,
    lossless_broadcast_receiver,
};
use trellis_wire::{ActorId, CallKind, Message, Payload, Role};

use crate::conn::{CANCEL_ACK_WAIT, Conn};
use crate::error::ActorError;
use crate::functions::{ContextFn, StreamFn};
use crate::nursery::Portal;

/// How many unread items a stream's receiving end holds by default. With backpressure this
/// is also how far the sender may run ahead: throughput is about this many items per
/// round trip, so a small window caps it (B7 in `BENCHMARKS.md`: 64 gives about 0.7M items/s
/// between two processes, 512 about 2.3M).
pub const DEFAULT_CAPACITY: usize = 512;

/// The credit count that means "no limit" (see `docs/wire-protocol.md`).
pub(crate) const UNLIMITED: u32 = u32::MAX;

/// What a receiving end does when its sender is faster than its reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Flow {
    /// The sender waits for room: the receiver grants credit as it reads. Nothing is lost and
    /// nothing fails.
    #[default]
    Backpressure,
    /// The sender never waits; once more than the capacity is unread the call fails with
    /// [`StreamOverrun`] (tractor's default).
    Overrun,
    /// The sender never waits and the receiver buffers everything (tractor's
    /// `allow_overruns=True`).
    Unbounded,
}

/// The receiving end's buffer and flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    capacity: usize,
    flow: Flow,
    lossless_subscribers: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            capacity: DEFAULT_CAPACITY,
            flow: Flow::Backpressure,
            lossless_subscribers: false,
        }
    }
}

impl StreamOptions {
    /// Backpressure with a buffer of [`DEFAULT_CAPACITY`].
    pub fn new() -> Self {
        StreamOptions::default()
    }

    /// How many unread items the receiving end holds (with [`Flow::Backpressure`], how many
    /// the sender may have in flight; with [`Flow::Overrun`], how many before the call fails).
    /// Subscribers of [`MsgStream::subscribe`] keep as many.
    ///
    /// # Panics
    ///
    /// When `capacity` is 0 or above `u32::MAX - 1`.
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        assert!(
            capacity > 0 && capacity < UNLIMITED as usize,
            "a stream capacity is between 1 and 2^32 - 2"
        );
        self.capacity = capacity;
        self
    }

    /// The flow control mode.
    #[must_use]
    pub fn flow(mut self, flow: Flow) -> Self {
        self.flow = flow;
        self
    }

    /// Makes [`MsgStream::subscribe`]'s subscribers lossless: none ever lags; the stream is
    /// read no faster than its slowest subscriber.
    #[must_use]
    pub fn lossless_subscribers(mut self) -> Self {
        self.lossless_subscribers = true;
        self
    }

    /// The credit the receiving end grants at first.
    fn initial_credit(&self) -> u32 {
        match self.flow {
            // Checked in `capacity`.
            Flow::Backpressure => u32::try_from(self.capacity).unwrap_or(UNLIMITED - 1),
            Flow::Overrun | Flow::Unbounded => UNLIMITED,
        }
    }

    /// After how many items read the receiver grants more credit: often enough that the sender
    /// rarely runs dry, rarely enough that credit costs little.
    fn regrant_after(&self) -> u32 {
        u32::try_from((self.capacity / 4).max(1)).unwrap_or(1)
    }
}

/// A stream's receiving end in [`Flow::Overrun`] mode had more unread items than its capacity.
/// Fails the call on the receiving side; a callee's overrun reaches the caller as a
/// [`RemoteActorError`](crate::RemoteActorError) whose
/// [`rebuilt`](crate::RemoteActorError::rebuilt) value is this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "stream overrun: actor {receiver} had more than {capacity} unread items from actor {sender}"
)]
pub struct StreamOverrun {
    /// The receiving actor.
    pub receiver: String,
    /// The sending actor.
    pub sender: String,
    /// The receiving end's capacity.
    pub capacity: usize,
}

/// How a call's stream side ended, as the channel records it.
#[derive(Debug, Clone)]
pub(crate) enum ChanEnd {
    /// The callee's terminal message (`Return`, `Error`, `CancelAck`), on the caller's side.
    Terminal(Message),
    /// The connection ended first.
    Lost,
    /// On the callee's side: the served function finished.
    Over,
}

/// The shared state of one call's streams on one side: the items received and not yet read,
/// the credit for sending, and how the call ended. The connection's reader fills it; the
/// [`MsgStream`], [`Context`] or [`PortalContext`] of the call reads it.
pub(crate) struct Chan {
    state: Mutex<ChanState>,
}

#[derive(Default)]
struct ChanState {
    items: VecDeque<Payload>,
    /// Our receiving end's options, once it granted credit.
    recv: Option<StreamOptions>,
    /// Items read since the last grant.
    read_since_grant: u32,
    /// The peer sent `Stop`: no more items come after those buffered.
    peer_stopped: bool,
    /// We closed our receiving end: items are discarded.
    recv_closed: bool,
    /// Our receiving end overran.
    overrun: Option<StreamOverrun>,
    /// How many items we may send; `u64::MAX` without limit.
    credit: u64,
    /// We sent `Stop`.
    send_closed: bool,
    /// The callee's `Started` value, on the caller's side of a context.
    started: Option<Payload>,
    end: Option<ChanEnd>,
    /// Runs the caller's body of a context or stream: cancelled when the call fails under it.
    body: Option<CancelScope>,
    /// The caller sent `Cancel`.
    cancel_sent: bool,
    wakers: Vec<Waker>,
}

impl ChanState {
    fn wait(&mut self, cx: &TaskContext<'_>) {
        if !self.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            self.wakers.push(cx.waker().clone());
        }
    }

    fn wake(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.wakers)
    }
}

/// What the reader should do after an item arrived.
pub(crate) enum Pushed {
    Kept,
    /// The receiving end overran: fail the call.
    Overrun(StreamOverrun),
}

impl Chan {
    pub(crate) fn new() -> Arc<Chan> {
        Arc::new(Chan {
            state: Mutex::new(ChanState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ChanState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut ChanState)) {
        let wakers = {
            let mut state = self.lock();
            f(&mut state);
            state.wake()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Items from the peer, in order.
    pub(crate) fn push(&self, items: Vec<Payload>, receiver: &ActorId, sender: &ActorId) -> Pushed {
        let mut outcome = Pushed::Kept;
        self.update(|state| {
            if state.recv_closed || state.overrun.is_some() {
                return;
            }
            state.items.extend(items);
            // Under backpressure a sender has room for `capacity` unread items less those read
            // since the last grant: more is a sender ignoring its credit, which would buffer
            // without bound here. It fails the call as an overrun would.
            let unread = |options: &StreamOptions| match options.flow {
                Flow::Overrun => state.items.len(),
                Flow::Backpressure => state.items.len() + state.read_since_grant as usize,
                Flow::Unbounded => 0,
            };
            if let Some(options) = state.recv
                && unread(&options) > options.capacity
            {
                let overrun = StreamOverrun {
                    receiver: receiver.to_string(),
                    sender: sender.to_string(),
                    capacity: options.capacity,
                };
                state.overrun = Some(overrun.clone());
                state.items.clear();
                if let Some(body) = &state.body {
                    body.cancel();
                }
                outcome = Pushed::Overrun(overrun);
            }
        });
        outcome
    }

    pub(crate) fn peer_stopped(&self) {
        self.update(|state| state.peer_stopped = true);
    }

    pub(crate) fn credit(&self, count: u32) {
        self.update(|state| {
            state.credit = if count == UNLIMITED {
                u64::MAX
            } else {
                state.credit.saturating_add(u64::from(count))
            };
        });
    }

    pub(crate) fn started(&self, value: Payload) {
        self.update(|state| state.started = Some(value));
    }

    /// The call ended. A failure (anything but the callee's `Return`, or our own request to
    /// cancel) cancels the caller's body so that it learns at once.
    pub(crate) fn end(&self, end: ChanEnd, local: &ActorId) {
        self.update(|state| {
            if state.end.is_some() {
                return;
            }
            if end_is_failure(&end, local)
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
        let failed = state.overrun.is_some()
            || state
                .end
                .as_ref()
                .is_some_and(|end| end_is_failure(end, local));
        if failed {
            scope.cancel();
        }
        state.body = Some(scope);
    }

    pub(crate) fn terminal(&self) -> Option<ChanEnd> {
        self.lock().end.clone()
    }
}

/// Whether the call ended in a way that must cancel the caller's body: anything but the
/// callee's `Return` or our own request to cancel.
fn end_is_failure(end: &ChanEnd, local: &ActorId) -> bool {
    match end {
        ChanEnd::Terminal(Message::Return { .. }) | ChanEnd::Over => false,
        ChanEnd::Terminal(Message::CancelAck { requested_by, .. }) => requested_by != local,
        ChanEnd::Terminal(_) | ChanEnd::Lost => true,
    }
}

/// One call's channel as seen by its local end: the connection, the call id, the state.
#[derive(Clone)]
pub(crate) struct Link {
    pub(crate) conn: Conn,
    pub(crate) cid: u64,
    pub(crate) chan: Arc<Chan>,
    pub(crate) kind: CallKind,
    pub(crate) role: Role,
}

impl Link {
    /// Grants the sender its first credit (the receiving end is ready).
    pub(crate) fn grant(&self, options: StreamOptions) -> Result<(), trellis::Error> {
        self.chan.lock().recv = Some(options);
        self.conn.send(&Message::Credit {
            cid: self.cid,
            count: options.initial_credit(),
        })?;
        Ok(())
    }

    /// Why the stream cannot go on, as an error for the local end, or `None` when it ended
    /// normally.
    fn ended_error(&self, state: &ChanState) -> Option<trellis::Error> {
        if let Some(overrun) = &state.overrun {
            return Some(trellis::Error::new(overrun.clone()));
        }
        match state.end.as_ref()? {
            ChanEnd::Terminal(Message::Return { .. }) => None,
            ChanEnd::Terminal(message) => self.conn.terminal_error(message.clone()).err(),
            ChanEnd::Lost => Some(self.conn.lost()),
            ChanEnd::Over => Some(ActorError::StreamClosed.into()),
        }
    }

    /// The next item, `None` at the end of the stream.
    fn poll_recv(&self, cx: &TaskContext<'_>) -> Poll<Result<Option<Payload>, trellis::Error>> {
        let mut state = self.chan.lock();
        if let Some(item) = state.items.pop_front() {
            let mut grant = 0;
            if let Some(options) = state.recv
                && options.flow == Flow::Backpressure
            {
                state.read_since_grant += 1;
                if state.read_since_grant >= options.regrant_after() {
                    grant = std::mem::take(&mut state.read_since_grant);
                }
            }
            drop(state);
            if grant > 0 && !self.call_over() {
                // A lost connection shows at the next receive.
                let _ = self.conn.send(&Message::Credit {
                    cid: self.cid,
                    count: grant,
                });
            }
            return Poll::Ready(Ok(Some(item)));
        }
        if state.recv_closed {
            return Poll::Ready(Err(ActorError::StreamClosed.into()));
        }
        if let Some(error) = self.ended_error(&state) {
            return Poll::Ready(Err(error));
        }
        if state.peer_stopped || state.end.is_some() {
            return Poll::Ready(Ok(None));
        }
        state.wait(cx);
        Poll::Pending
    }

    fn call_over(&self) -> bool {
        self.chan.lock().end.is_some()
    }

    /// Waits for credit and takes one.
    fn poll_credit(&self, cx: &TaskContext<'_>) -> Poll<Result<(), trellis::Error>> {
        let mut state = self.chan.lock();
        if state.send_closed {
            return Poll::Ready(Err(ActorError::StreamClosed.into()));
        }
        if state.end.is_some() {
            return Poll::Ready(Err(self
                .ended_error(&state)
                .unwrap_or_else(|| ActorError::StreamClosed.into())));
        }
        if state.credit > 0 {
            if state.credit != u64::MAX {
                state.credit -= 1;
            }
            return Poll::Ready(Ok(()));
        }
        state.wait(cx);
        Poll::Pending
    }

    async fn send(&self, item: Payload) -> Result<(), trellis::Error> {
        // A sender that never has to wait (unlimited credit) still lets the connection's
        // writer, which may sit on the same worker, run once in a while.
        tokio::task::consume_budget().await;
        trellis::cancellable(std::future::poll_fn(|cx| self.poll_credit(cx))).await??;
        self.conn.send(&Message::Yield {
            cid: self.cid,
            value: item,
        })?;
        Ok(())
    }

    /// The caller's end of a one-way stream: it neither sends nor stops the sender by credit
    /// (leaving the call cancels the remote function).
    fn one_way_caller(&self) -> bool {
        self.kind == CallKind::Stream && self.role == Role::Caller
    }

    /// Says we send no more items: the caller's end of a context says `Stop` when it is
    /// closed or dropped. The callee's end says it only when closed explicitly: when the
    /// function returns, its `Return` or `Error` ends the stream, and a `Stop` sent as its
    /// stream is dropped would arrive before a failure and make it look like a clean end.
    fn close_send(&self) {
        self.close_send_with(false);
    }

    fn close_send_with(&self, explicit: bool) {
        if self.one_way_caller() || (self.role == Role::Callee && !explicit) {
            return;
        }
        let first = !std::mem::replace(&mut self.chan.lock().send_closed, true);
        if first && !self.call_over() {
            let _ = self.conn.send(&Message::Stop { cid: self.cid });
        }
    }

    /// Stops receiving: what is buffered or still comes is discarded, and the sender never
    /// waits for credit again.
    fn close_recv(&self) {
        let granted = {
            let mut state = self.chan.lock();
            state.recv_closed = true;
            state.items.clear();
            state.recv.is_some_and(|o| o.flow == Flow::Backpressure)
        };
        if granted && !self.one_way_caller() && !self.call_over() {
            let _ = self.conn.send(&Message::Credit {
                cid: self.cid,
                count: UNLIMITED,
            });
        }
    }

    /// Sends `Cancel` for a call we made, once, unless it is over.
    pub(crate) fn send_cancel(&self) {
        let send = {
            let mut state = self.chan.lock();
            state.end.is_none() && !std::mem::replace(&mut state.cancel_sent, true)
        };
        if send {
            let _ = self.conn.send(&Message::Cancel {
                cid: self.cid,
                requested_by: self.conn.local().clone(),
            });
        }
    }

    /// Cancels a call we made and waits, shielded and for a bounded time, for the callee to
    /// acknowledge (or end the call otherwise).
    async fn cancel_and_wait(&self) {
        if self.call_over() {
            return;
        }
        self.send_cancel();
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
    fn failure(&self) -> trellis::Error {
        self.failure_or(trellis::Cancelled::new().into())
    }

    /// The call's failure, if it failed, else `otherwise`.
    fn failure_or(&self, otherwise: trellis::Error) -> trellis::Error {
        let state = self.chan.lock();
        let failed = state.overrun.is_some()
            || state
                .end
                .as_ref()
                .is_some_and(|end| end_is_failure(end, self.conn.local()));
        match failed.then(|| self.ended_error(&state)).flatten() {
            Some(error) => error,
            None => otherwise,
        }
    }

    /// Waits for the call's end.
    pub(crate) async fn wait_end(&self) -> Result<ChanEnd, trellis::Cancelled> {
        trellis::cancellable(std::future::poll_fn(|cx| {
            let mut state = self.chan.lock();
            match &state.end {
                Some(end) => Poll::Ready(end.clone()),
                None => {
                    state.wait(cx);
                    Poll::Pending
                }
            }
        }))
        .await
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
}

/// A stream of `Rx` items from another actor and of `Tx` items to it, within one call.
///
/// One-way streams have one direction only: the caller's end is a `MsgStream<T>` (its `Tx`
/// is [`Infallible`], so it cannot send), the remote function's a `MsgStream<Infallible, T>`.
/// A context's stream goes both ways.
///
/// `recv` and `send` are checkpoints. Clones share the stream; when the last is dropped, the
/// end closes (its sending side says `Stop`, its receiving side discards what still comes).
pub struct MsgStream<Rx, Tx = Infallible> {
    inner: Arc<StreamInner<Rx>>,
    _types: PhantomData<fn(Tx)>,
}

impl<Rx, Tx> Clone for MsgStream<Rx, Tx> {
    fn clone(&self) -> Self {
        MsgStream {
            inner: self.inner.clone(),
            _types: PhantomData,
        }
    }
}

impl<Rx, Tx> std::fmt::Debug for MsgStream<Rx, Tx> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgStream")
            .field("peer", &self.inner.link.conn.peer().actor)
            .field("cid", &self.inner.link.cid)
            .finish()
    }
}

struct StreamInner<Rx> {
    link: Link,
    options: StreamOptions,
    /// The broadcast of decoded items (a `BroadcastHandle<Items<Rx>>`), once
    /// [`MsgStream::subscribe`] was called; kept as `Any` so that a stream whose items are
    /// never shared needs no bound on `Rx`.
    broadcast: OnceLock<Box<dyn std::any::Any + Send + Sync>>,
    /// Makes the stream's own subscription, for its `recv` once it is a broadcast.
    own_factory: OnceLock<OwnFactory<Rx>>,
    /// The stream's own subscription, made on its first `recv` after `subscribe`.
    own: OnceLock<Box<dyn OwnSubscription<Rx>>>,
}

/// The stream's own subscription, whatever `Rx` is.
trait OwnSubscription<Rx>: Send + Sync {
    fn recv(&self) -> Received<'_, Rx>;
}

/// What [`OwnSubscription::recv`] returns.
type Received<'a, Rx> =
    Pin<Box<dyn Future<Output = Result<Option<Rx>, trellis::Error>> + Send + 'a>>;

/// Makes a stream's own subscription.
type OwnFactory<Rx> = Box<dyn Fn() -> Box<dyn OwnSubscription<Rx>> + Send + Sync>;

impl<Rx> OwnSubscription<Rx> for Subscription<Rx>
where
    Rx: DeserializeOwned + Clone + Send + 'static,
{
    fn recv(&self) -> Received<'_, Rx> {
        Box::pin(Subscription::recv(self))
    }
}

impl<Rx> Drop for StreamInner<Rx> {
    fn drop(&mut self) {
        self.link.close_send();
        self.link.close_recv();
    }
}

impl<Rx, Tx> MsgStream<Rx, Tx> {
    pub(crate) fn new(link: Link, options: StreamOptions) -> Self {
        MsgStream {
            inner: Arc::new(StreamInner {
                link,
                options,
                broadcast: OnceLock::new(),
                own_factory: OnceLock::new(),
                own: OnceLock::new(),
            }),
            _types: PhantomData,
        }
    }

    /// The actor at the other end.
    pub fn peer(&self) -> &ActorId {
        &self.inner.link.conn.peer().actor
    }

    /// Says this end sends nothing more: the other end's `recv` returns `None` once it read
    /// everything. Receiving goes on. Idempotent.
    pub fn close(&self) {
        self.inner.link.close_send_with(true);
    }
}

impl<Rx, Tx: Serialize> MsgStream<Rx, Tx> {
    /// Sends an item; waits for credit when the receiver is behind. A checkpoint.
    ///
    /// # Errors
    ///
    /// [`ActorError::StreamClosed`] after [`close`](MsgStream::close), the error that ended the
    /// call, `Cancelled`.
    pub async fn send(&self, item: Tx) -> Result<(), trellis::Error> {
        let payload = Payload::encode(&item).map_err(ActorError::from)?;
        self.inner.link.send(payload).await
    }
}

impl<Rx: DeserializeOwned, Tx> MsgStream<Rx, Tx> {
    /// The next item; `None` once the other end stopped sending (or, on a one-way stream, the
    /// remote function returned). A checkpoint; cancel-safe (a cancelled receive takes
    /// nothing).
    ///
    /// # Errors
    ///
    /// The remote failure that ended the call, [`StreamOverrun`], the connection lost,
    /// `Cancelled`; [`ActorError::BadItem`] for an item that does not decode as `Rx`.
    pub async fn recv(&self) -> Result<Option<Rx>, trellis::Error> {
        if let Some(factory) = self.inner.own_factory.get() {
            return self.inner.own.get_or_init(factory).recv().await;
        }
        let link = &self.inner.link;
        tokio::task::consume_budget().await;
        let item = match trellis::cancellable(std::future::poll_fn(|cx| link.poll_recv(cx))).await {
            Ok(item) => item?,
            // Cancelled because the call failed (the caller's body): that failure is the
            // better answer.
            Err(cancelled) => return Err(link.failure_or(cancelled.into())),
        };
        item.map(|payload| decode_item(link, &payload)).transpose()
    }

    /// A new subscriber to this stream's items, for another task: every subscriber receives
    /// every item that arrives after it subscribed (tractor's `MsgStream.subscribe`). The
    /// first call turns the stream into a broadcast: its own [`recv`](MsgStream::recv) reads as
    /// one more subscriber from then on (with lossless subscribers, from its first use).
    ///
    /// The broadcast keeps the stream's capacity of items. By default a subscriber that falls
    /// further behind gets [`ActorError::Lagged`] with the exact count it missed and goes on
    /// from the oldest item kept; with [`StreamOptions::lossless_subscribers`] nobody lags
    /// and the slowest subscriber sets the pace (with backpressure, all the way to the
    /// sender). Items are pulled from the connection by whichever subscriber needs the next
    /// one; no task runs in the background.
    pub fn subscribe(&self) -> Subscription<Rx>
    where
        Rx: Clone + Send + 'static,
    {
        let handle = self.inner.broadcast.get_or_init(|| {
            let items = Items::<Rx> {
                link: self.inner.link.clone(),
                _rx: PhantomData,
            };
            let options = self.inner.options;
            let first = if options.lossless_subscribers {
                lossless_broadcast_receiver(items, options.capacity)
            } else {
                broadcast_receiver(items, options.capacity)
            };
            Box::new(first.handle())
        });
        let handle = handle
            .downcast_ref::<BroadcastHandle<Items<Rx>>>()
            .expect("one item type per stream")
            .clone();
        let link = self.inner.link.clone();
        let (factory_handle, factory_link) = (handle.clone(), link.clone());
        let _ = self.inner.own_factory.set(Box::new(move || {
            Box::new(Subscription {
                receiver: factory_handle.subscribe(),
                link: factory_link.clone(),
            })
        }));
        // Lossy: the stream's own `recv` sees every item from now on, as tractor's does. A
        // lossless broadcast cannot hold a subscriber nobody may read (it would stop the
        // others): there, the stream's own `recv` joins at its first use.
        if !self.inner.options.lossless_subscribers
            && let Some(factory) = self.inner.own_factory.get()
        {
            self.inner.own.get_or_init(factory);
        }
        Subscription {
            receiver: handle.subscribe(),
            link,
        }
    }
}

fn decode_item<Rx: DeserializeOwned>(link: &Link, payload: &Payload) -> Result<Rx, trellis::Error> {
    payload.decode().map_err(|e| {
        ActorError::BadItem(format!(
            "an item from actor {} does not decode as {}: {e}",
            link.conn.peer().actor,
            std::any::type_name::<Rx>()
        ))
        .into()
    })
}

async fn receive_subscribed<Rx>(
    receiver: &BroadcastReceiver<Items<Rx>>,
    link: &Link,
) -> Result<Option<Rx>, trellis::Error>
where
    Rx: DeserializeOwned + Clone,
{
    match receiver.recv().await {
        Ok(Ok(value)) => Ok(Some(value)),
        Ok(Err(bad)) => Err(ActorError::BadItem(bad.to_string()).into()),
        Err(BroadcastError::Lagged(missed)) => Err(ActorError::Lagged(missed).into()),
        Err(BroadcastError::Cancelled) => Err(link.failure_or(trellis::Cancelled::new().into())),
        Err(BroadcastError::Closed) => Err(ActorError::StreamClosed.into()),
        Err(BroadcastError::EndOfChannel) => {
            let state = link.chan.lock();
            match link.ended_error(&state) {
                Some(error) => Err(error),
                None => Ok(None),
            }
        }
    }
}

/// One task's subscription to a [`MsgStream`]'s items (see [`MsgStream::subscribe`]).
pub struct Subscription<Rx: DeserializeOwned> {
    receiver: BroadcastReceiver<Items<Rx>>,
    link: Link,
}

impl<Rx: DeserializeOwned> std::fmt::Debug for Subscription<Rx> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("cid", &self.link.cid)
            .finish_non_exhaustive()
    }
}

impl<Rx: DeserializeOwned + Clone> Subscription<Rx> {
    /// The next item for this subscriber; `None` at the end of the stream. A checkpoint.
    ///
    /// # Errors
    ///
    /// [`ActorError::Lagged`] when this subscriber fell behind (it stays subscribed); the error
    /// that ended the stream; `Cancelled`.
    pub async fn recv(&self) -> Result<Option<Rx>, trellis::Error> {
        receive_subscribed(&self.receiver, &self.link).await
    }

    /// Another subscriber.
    pub fn subscribe(&self) -> Subscription<Rx> {
        Subscription {
            receiver: self
                .receiver
                .subscribe()
                .expect("subscriptions are closed only by dropping them"),
            link: self.link.clone(),
        }
    }
}

/// An item as the broadcast carries it: decoded once, by whichever subscriber pulled it
/// (subscribers clone the value, not the bytes: cloning a payload is an atomic reference count
/// into the shared read buffer, which sixteen subscribers on two threads fight over), or the
/// text of why it did not decode.
type Decoded<Rx> = Result<Rx, Arc<str>>;

/// The stream's items as a `Stream`, the broadcast's source. Ends at the end of the stream or
/// at its failure, which each subscriber then reads from the channel.
struct Items<Rx> {
    link: Link,
    _rx: PhantomData<fn() -> Rx>,
}

impl<Rx: DeserializeOwned> futures_core::Stream for Items<Rx> {
    type Item = Decoded<Rx>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Decoded<Rx>>> {
        match self.link.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(payload))) => Poll::Ready(Some(
                decode_item(&self.link, &payload).map_err(|e| Arc::from(e.to_string())),
            )),
            Poll::Ready(Ok(None) | Err(_)) => Poll::Ready(None),
        }
    }
}

/// The remote function's side of a context: report the first value with
/// [`started`](Context::started), then optionally open the two-way stream.
pub struct Context {
    link: Link,
    started: Arc<AtomicBool>,
    opened: AtomicBool,
    options: Mutex<StreamOptions>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("caller", &self.link.conn.peer().actor)
            .field("cid", &self.link.cid)
            .finish()
    }
}

impl Context {
    /// Why the caller is gone, when the connection it called over broke (it crashed, was
    /// killed, or became unreachable and the keepalive gave up): the
    /// [`ActorError::ConnectionLost`] its own calls got. This function is cancelled then; this
    /// says why.
    pub fn caller_lost(&self) -> Option<trellis::Error> {
        match self.link.conn.end() {
            Some(crate::conn::End::Lost(_)) => Some(self.link.conn.lost()),
            _ => None,
        }
    }

    pub(crate) fn new(link: Link) -> Self {
        Context {
            link,
            started: Arc::new(AtomicBool::new(false)),
            opened: AtomicBool::new(false),
            options: Mutex::new(StreamOptions::default()),
        }
    }

    /// Whether [`started`](Context::started) was called, readable after the context is gone.
    pub(crate) fn started_flag(&self) -> Arc<AtomicBool> {
        self.started.clone()
    }

    /// The actor that opened the context.
    pub fn caller(&self) -> &ActorId {
        &self.link.conn.peer().actor
    }

    /// Sets how this side receives on the stream; call before [`started`](Context::started),
    /// which grants the caller its first credit.
    pub fn set_stream_options(&self, options: StreamOptions) {
        *self.options.lock().unwrap_or_else(|e| e.into_inner()) = options;
    }

    /// Sends the first value to the caller, whose `open_context` returns with it. Call it
    /// once, before opening the stream.
    ///
    /// # Errors
    ///
    /// [`ActorError::StartedTwice`] on a second call; the connection lost.
    pub async fn started<T: Serialize>(&self, value: T) -> Result<(), trellis::Error> {
        trellis::checkpoint_if_cancelled()?;
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(ActorError::StartedTwice.into());
        }
        let value = Payload::encode(&value).map_err(ActorError::from)?;
        self.link.conn.send(&Message::Started {
            cid: self.link.cid,
            value,
        })?;
        let options = *self.options.lock().unwrap_or_else(|e| e.into_inner());
        self.link.grant(options)
    }

    /// Opens this side of the two-way stream: receives `Rx`, sends `Tx`.
    ///
    /// # Errors
    ///
    /// [`ActorError::StreamBeforeStarted`] before [`started`](Context::started),
    /// [`ActorError::StreamOpenedTwice`] on a second call.
    pub fn open_stream<Rx, Tx>(&self) -> Result<MsgStream<Rx, Tx>, trellis::Error> {
        if !self.started.load(Ordering::Acquire) {
            return Err(ActorError::StreamBeforeStarted.into());
        }
        if self.opened.swap(true, Ordering::AcqRel) {
            return Err(ActorError::StreamOpenedTwice.into());
        }
        let options = *self.options.lock().unwrap_or_else(|e| e.into_inner());
        Ok(MsgStream::new(self.link.clone(), options))
    }
}

/// The caller's side of a context (see `Portal::open_context`): open the two-way stream, wait
/// for the function's result, or cancel it.
pub struct PortalContext<R> {
    link: Link,
    opened: Arc<AtomicBool>,
    options: StreamOptions,
    _result: PhantomData<fn() -> R>,
}

impl<R> Clone for PortalContext<R> {
    fn clone(&self) -> Self {
        PortalContext {
            link: self.link.clone(),
            opened: self.opened.clone(),
            options: self.options,
            _result: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for PortalContext<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalContext")
            .field("actor", &self.link.conn.peer().actor)
            .field("cid", &self.link.cid)
            .finish()
    }
}

impl<R: DeserializeOwned> PortalContext<R> {
    pub(crate) fn new(link: Link, options: StreamOptions) -> Self {
        PortalContext {
            link,
            opened: Arc::new(AtomicBool::new(false)),
            options,
            _result: PhantomData,
        }
    }

    /// The actor running the function.
    pub fn actor(&self) -> &ActorId {
        &self.link.conn.peer().actor
    }

    /// Opens the caller's side of the two-way stream: receives `Rx`, sends `Tx`.
    ///
    /// # Errors
    ///
    /// [`ActorError::StreamOpenedTwice`] on a second call.
    pub fn open_stream<Rx, Tx>(&self) -> Result<MsgStream<Rx, Tx>, trellis::Error> {
        if self.opened.swap(true, Ordering::AcqRel) {
            return Err(ActorError::StreamOpenedTwice.into());
        }
        Ok(MsgStream::new(self.link.clone(), self.options))
    }

    /// Waits for the function's result. A checkpoint.
    ///
    /// # Errors
    ///
    /// The remote failure; [`ActorError::ContextCancelled`] naming who cancelled the function
    /// (this actor, after [`cancel`](PortalContext::cancel)); the connection lost; `Cancelled`.
    pub async fn result(&self) -> Result<R, trellis::Error> {
        let end = match self.link.wait_end().await {
            Ok(end) => end,
            Err(cancelled) => return Err(self.link.failure_or(cancelled.into())),
        };
        match end {
            ChanEnd::Terminal(message @ Message::CancelAck { .. }) => {
                let Message::CancelAck { requested_by, .. } = message else {
                    unreachable!()
                };
                Err(ActorError::ContextCancelled {
                    actor: self.actor().clone(),
                    requested_by,
                }
                .into())
            }
            ChanEnd::Terminal(message) => {
                let value = self.link.conn.terminal_error(message)?;
                Ok(value.decode().map_err(ActorError::from)?)
            }
            ChanEnd::Lost | ChanEnd::Over => Err(self.link.conn.lost()),
        }
    }

    /// Asks the remote function to cancel. The context's [`result`](PortalContext::result)
    /// then says it was cancelled by this actor, and `open_context` does not fail for it.
    pub fn cancel(&self) {
        self.link.send_cancel();
    }
}

/// Sends `Cancel` if the caller's future is dropped while its call runs (an aborted task): the
/// remote function does not outlive its caller.
struct CallGuard<'a> {
    link: &'a Link,
    armed: bool,
}

impl<'a> CallGuard<'a> {
    fn new(link: &'a Link) -> Self {
        CallGuard { link, armed: true }
    }

    /// The call ends through another guard, or normally.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.armed && !self.link.call_over() {
            self.link.send_cancel();
            self.link.conn.forget_call(self.link.cid);
        }
    }
}

/// Runs the caller's `body` of a stream or context call, then ends the call by tractor's
/// rules: a body that fails cancels the remote function and its error is what the caller
/// gets (never masked by the cancellation it caused); a failure of the call (a remote error,
/// an overrun, the connection lost) cancels the body and is what the caller gets; a body that
/// succeeds waits for the context's result (a context) or cancels the rest of the stream (a
/// one-way stream).
async fn run_body<T>(
    link: &Link,
    body: impl Future<Output = Result<T, trellis::Error>>,
) -> Result<T, trellis::Error> {
    let _guard = CallGuard::new(link);
    let scope = CancelScope::new();
    link.chan.set_body(scope.clone(), link.conn.local());
    let value = match scope.run(body).await {
        Ok(Some(value)) => value,
        Ok(None) => {
            link.cancel_and_wait().await;
            return Err(link.failure());
        }
        Err(error) => {
            link.cancel_and_wait().await;
            return Err(error);
        }
    };
    let end = if link.kind == CallKind::Stream {
        link.cancel_and_wait().await;
        match link.chan.terminal() {
            Some(end) => end,
            None => return Ok(value), // gave up waiting for the acknowledgement
        }
    } else {
        match link.wait_end().await {
            Ok(end) => end,
            Err(cancelled) => {
                link.cancel_and_wait().await;
                return Err(cancelled.into());
            }
        }
    };
    match end {
        ChanEnd::Terminal(Message::Return { .. }) => Ok(value),
        ChanEnd::Terminal(Message::CancelAck { requested_by, .. })
            if &requested_by == link.conn.local() =>
        {
            Ok(value)
        }
        ChanEnd::Terminal(message) => link.conn.terminal_error(message).map(|_| value),
        ChanEnd::Lost | ChanEnd::Over => Err(link.conn.lost()),
    }
}

impl Portal {
    /// Starts a stream or context call (a checkpoint first).
    fn open_link<A: Serialize>(
        &self,
        function: &str,
        kind: CallKind,
        args: &A,
        options: StreamOptions,
    ) -> Result<Link, trellis::Error> {
        trellis::checkpoint_if_cancelled()?;
        let args = Payload::encode(args).map_err(ActorError::from)?;
        self.conn().open_call(function, kind, args, options)
    }

    /// Calls a stream function in the actor and runs `body` with the stream of its items
    /// (tractor's `open_stream_from`). Returns what `body` returns.
    ///
    /// When `body` returns first, the remote function is cancelled (the caller sees no
    /// cancellation error for that). When the remote function fails, `body` is cancelled and
    /// the failure is returned; when `body` fails, the remote function is cancelled and
    /// `body`'s error is returned.
    ///
    /// # Errors
    ///
    /// As described; [`ActorError::ConnectionLost`] when the actor went away.
    pub async fn open_stream_from<F, M, B, Fut, T>(
        &self,
        function: F,
        args: F::Args,
        body: B,
    ) -> Result<T, trellis::Error>
    where
        F: StreamFn<M>,
        B: FnOnce(MsgStream<F::Item>) -> Fut,
        Fut: Future<Output = Result<T, trellis::Error>>,
    {
        self.open_stream_from_with(function, args, StreamOptions::default(), body)
            .await
    }

    /// [`open_stream_from`](Portal::open_stream_from) with the receiving end's buffer and flow
    /// control.
    ///
    /// # Errors
    ///
    /// As [`open_stream_from`](Portal::open_stream_from); [`StreamOverrun`] in
    /// [`Flow::Overrun`] mode.
    pub async fn open_stream_from_with<F, M, B, Fut, T>(
        &self,
        function: F,
        args: F::Args,
        options: StreamOptions,
        body: B,
    ) -> Result<T, trellis::Error>
    where
        F: StreamFn<M>,
        B: FnOnce(MsgStream<F::Item>) -> Fut,
        Fut: Future<Output = Result<T, trellis::Error>>,
    {
        let link = self.open_link(function.name(), CallKind::Stream, &args, options)?;
        let stream = MsgStream::new(link.clone(), options);
        run_body(&link, body(stream)).await
    }

    /// Opens a context with a context function in the actor (tractor's `open_context`): waits
    /// for the function's [`started`](Context::started) value, then runs `body` with the
    /// caller's side of the context and that value. Returns what `body` returns, once the
    /// function returned too (its result is [`PortalContext::result`]).
    ///
    /// When `body` fails, the function is cancelled and `body`'s error is returned; when the
    /// function fails, `body` is cancelled and the function's error is returned. A context
    /// cancelled through [`PortalContext::cancel`] ends without error; one cancelled by
    /// another actor (`cancel_actor`) fails with [`ActorError::ContextCancelled`] naming it.
    ///
    /// # Errors
    ///
    /// As described; [`ActorError::NotStarted`] when the function returned without calling
    /// `started`; [`ActorError::ConnectionLost`] when the actor went away.
    pub async fn open_context<F, M, S, B, Fut, T>(
        &self,
        function: F,
        args: F::Args,
        body: B,
    ) -> Result<T, trellis::Error>
    where
        F: ContextFn<M>,
        S: DeserializeOwned,
        B: FnOnce(PortalContext<F::Output>, S) -> Fut,
        Fut: Future<Output = Result<T, trellis::Error>>,
    {
        self.open_context_with(function, args, StreamOptions::default(), body)
            .await
    }

    /// [`open_context`](Portal::open_context) with the caller's receiving end's buffer and
    /// flow control.
    ///
    /// # Errors
    ///
    /// As [`open_context`](Portal::open_context).
    pub async fn open_context_with<F, M, S, B, Fut, T>(
        &self,
        function: F,
        args: F::Args,
        options: StreamOptions,
        body: B,
    ) -> Result<T, trellis::Error>
    where
        F: ContextFn<M>,
        S: DeserializeOwned,
        B: FnOnce(PortalContext<F::Output>, S) -> Fut,
        Fut: Future<Output = Result<T, trellis::Error>>,
    {
        let link = self.open_link(function.name(), CallKind::Context, &args, options)?;
        let guard = CallGuard::new(&link);
        let first = match link.wait_started().await {
            Ok(first) => first,
            Err(error) => {
                link.cancel_and_wait().await;
                return Err(error);
            }
        };
        let first: S = match first.decode() {
            Ok(first) => first,
            Err(e) => {
                link.cancel_and_wait().await;
                return Err(ActorError::from(e).into());
            }
        };
        guard.disarm();
        let ctx = PortalContext::new(link.clone(), options);
        run_body(&link, body(ctx, first)).await
    }
}
