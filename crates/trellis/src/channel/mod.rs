//! Memory channels: many senders, many receivers, a bounded buffer, and Trio's close rules.
//!
//! [`channel(capacity)`](channel) makes a connected [`Sender`] and [`Receiver`]. Both ends can be
//! cloned; every value sent is received exactly once, by one receiver. A capacity of 0 makes a
//! rendezvous channel: `send` waits until a receiver takes the value.
//!
//! # Closing
//!
//! Each handle closes on its own, by [`close`](Sender::close) or by being dropped:
//!
//! * once every sender is closed and the buffer is drained, `recv` returns
//!   [`RecvError::EndOfChannel`] (Trio's `EndOfChannel`);
//! * once every receiver is closed, `send` returns [`SendError::Broken`] (Trio's
//!   `BrokenResourceError`) and buffered values are dropped;
//! * using a handle you closed yourself returns `Closed` (Trio's `ClosedResourceError`), also for
//!   an operation already waiting on it.
//!
//! # Cancellation
//!
//! `send` and `recv` are cancel points: in a cancelled scope they fail with `Cancelled` before
//! doing anything. A cancelled `send` hands its value back in [`SendError::Cancelled`], and the
//! value was not delivered; a `send` whose value was taken just as it was cancelled succeeds
//! instead. A cancelled `recv` loses nothing: a value handed to it as it was cancelled is
//! returned, and a `recv` future dropped after a value was handed to it puts the value back at
//! the front of the channel.
//!
//! A send or receive that need not wait, while no task waits on either side, takes no lock:
//! the buffer is a lock-free queue, and the channel's lock is taken only to queue or release a
//! waiting task. Operations that can complete at once do not yield every time: one in 128 on a thread yields
//! first (like tokio's cooperative budget), so a busy loop over a channel still lets other tasks
//! run without paying a task switch per value. Use [`checkpoint`](crate::checkpoint) where
//! Trio's strict "every operation yields" matters.
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), trellis::Error> {
//! let (tx, rx) = trellis::channel::channel(16);
//! trellis::open_nursery(|n| async move {
//!     n.start_soon(async move {
//!         for i in 0..3u32 {
//!             tx.send(i).await?;
//!         }
//!         Ok::<_, trellis::Error>(()) // dropping `tx` ends the channel
//!     })?;
//!     let mut got = Vec::new();
//!     loop {
//!         match rx.recv().await {
//!             Ok(v) => got.push(v),
//!             Err(trellis::channel::RecvError::EndOfChannel) => break,
//!             Err(e) => return Err(e.into()),
//!         }
//!     }
//!     assert_eq!(got, [0, 1, 2]);
//!     Ok::<_, trellis::Error>(())
//! })
//! .await?;
//! # Ok(()) }
//! ```

mod buffer;
mod error;
mod producer;
mod state;

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::Ordering;

use crate::loom::{Arc, AtomicBool, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

pub use error::{RecvError, SendError, TryRecvError, TrySendError};
pub use producer::with_producer;
use state::{Fast, State, WakeList};

use crate::cancel::CancelWait;

/// Makes a channel holding up to `capacity` values in its buffer; 0 makes a rendezvous
/// channel. `usize::MAX` means unbounded (Trio's `math.inf`).
#[doc(alias = "open_memory_channel")]
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        state: Mutex::new(State::new()),
        fast: Fast::new(capacity),
    });
    let (sender_id, receiver_id) = {
        let mut state = chan.lock();
        (state.new_handle(), state.new_handle())
    };
    let sender = Sender {
        chan: chan.clone(),
        handle: Handle::new(sender_id),
        sink: None,
    };
    let receiver = Receiver {
        chan,
        handle: Handle::new(receiver_id),
        stream: None,
    };
    (sender, receiver)
}

struct Chan<T> {
    state: Mutex<State<T>>,
    /// The buffer and the signal word, used without the lock (see `state.rs`).
    fast: Fast<T>,
}

/// The channel's lock, held: publishes the signal word before it is released.
struct Locked<'a, T> {
    state: MutexGuard<'a, State<T>>,
    fast: &'a Fast<T>,
}

impl<T> Deref for Locked<'_, T> {
    type Target = State<T>;

    fn deref(&self) -> &State<T> {
        &self.state
    }
}

impl<T> DerefMut for Locked<'_, T> {
    fn deref_mut(&mut self) -> &mut State<T> {
        &mut self.state
    }
}

impl<T> Drop for Locked<'_, T> {
    fn drop(&mut self) {
        self.state.publish(self.fast);
    }
}

impl<T> Chan<T> {
    fn lock(&self) -> Locked<'_, T> {
        Locked {
            // The state is consistent between statements; a panic elsewhere does not poison it.
            state: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            fast: &self.fast,
        }
    }

    /// A push without the lock found a receiver waiting or every receiver gone.
    fn after_push(&self) {
        let mut wake = WakeList::new();
        let discarded = self.lock().after_push(&self.fast, &mut wake);
        wake.wake();
        drop(discarded);
    }

    /// A pop without the lock found a sender waiting for room.
    fn after_pop(&self) {
        let mut wake = WakeList::new();
        self.lock().settle(&self.fast, &mut wake);
        wake.wake();
    }

    /// Sends without waiting: without the lock if it can, else under it.
    fn try_send(&self, value: T) -> Result<(), state::TrySend<T>> {
        let Err(value) = self.fast.try_push(value, || self.after_push()) else {
            return Ok(());
        };
        let mut wake = WakeList::new();
        let outcome = self.lock().try_send(&self.fast, value, &mut wake);
        wake.wake();
        outcome
    }

    /// Receives without waiting: without the lock if it can, else under it.
    fn try_recv(&self) -> Result<T, state::TryRecv> {
        if let Some(value) = self.fast.try_pop(|| self.after_pop()) {
            return Ok(value);
        }
        let mut wake = WakeList::new();
        let outcome = self.lock().try_recv(&self.fast, &mut wake);
        wake.wake();
        outcome
    }

    /// A send dropped while waiting: its value, if still undelivered, is dropped with it.
    #[inline(never)]
    fn abandon_send(&self, key: usize) {
        let value = self.lock().withdraw_send(key);
        drop(value);
    }

    /// A receive that stops waiting without returning: a value handed to it goes back.
    #[inline(never)]
    fn unreceive_withdrawn(&self, key: usize) {
        let mut wake = WakeList::new();
        {
            let mut state = self.lock();
            if let Some(value) = state.withdraw_recv(key) {
                state.unreceive(&self.fast, value, &mut wake);
            }
        }
        wake.wake();
    }
}

/// One handle's identity and its own closed flag.
struct Handle {
    id: u64,
    closed: AtomicBool,
}

impl Handle {
    fn new(id: u64) -> Self {
        Handle {
            id,
            closed: AtomicBool::new(false),
        }
    }

    /// Relaxed: a stale `false` only lets one more operation through, as if it had started
    /// before the close (see [`Sender::close`] for a send that completes meanwhile).
    #[inline]
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// The state of a channel, as Trio's `statistics()` reports it, plus the peak buffer use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStatistics {
    /// Values in the buffer now.
    pub current_buffer_used: usize,
    /// The most values the buffer has held at once (read after each send: sends and receives
    /// racing on other threads can hide a momentary peak, never inflate one).
    pub peak_buffer_used: usize,
    /// The capacity given to [`channel`].
    pub max_buffer_size: usize,
    /// Senders not yet closed or dropped.
    pub open_send_channels: usize,
    /// Receivers not yet closed or dropped.
    pub open_receive_channels: usize,
    /// Tasks blocked in `send`.
    pub tasks_waiting_send: usize,
    /// Tasks blocked in `recv`.
    pub tasks_waiting_receive: usize,
}

/// The sending end of a [`channel`]. Clone it for more senders; each clone closes on its own.
#[doc(alias = "MemorySendChannel")]
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
    handle: Handle,
    /// The value in flight through the `Sink` implementation.
    sink: Option<SendOp<T>>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("closed", &self.handle.is_closed())
            .finish()
    }
}

impl<T> Clone for Sender<T> {
    /// Another sender on the same channel. A clone of a closed sender is closed too.
    fn clone(&self) -> Self {
        let mut state = self.chan.lock();
        let id = state.new_handle();
        let handle = Handle::new(id);
        if self.handle.is_closed() {
            handle.closed.store(true, Ordering::Release);
        } else {
            state.senders += 1;
        }
        Sender {
            chan: self.chan.clone(),
            handle,
            sink: None,
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(mut op) = self.sink.take() {
            op.abandon(&self.chan);
        }
        self.close();
    }
}

impl<T> Sender<T> {
    /// Sends `value`, waiting while the buffer is full (for a rendezvous channel: until a
    /// receiver takes it). A cancel point; see the [module docs](self) on cancellation.
    ///
    /// # Errors
    ///
    /// Hands `value` back in [`SendError::Closed`] when this handle was closed,
    /// [`SendError::Broken`] when every receiver is gone, and [`SendError::Cancelled`] when the
    /// calling code is cancelled before the value was delivered.
    pub fn send(&self, value: T) -> Send<'_, T> {
        Send {
            sender: self,
            op: SendOp::new(value),
        }
    }

    /// Sends `value` if that can be done without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when it would wait (Trio's `WouldBlock`), and the
    /// closed / broken cases of [`send`](Sender::send); each hands `value` back.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        if self.handle.is_closed() {
            return Err(TrySendError::Closed(value));
        }
        match self.chan.try_send(value) {
            Ok(()) => Ok(()),
            Err(state::TrySend::Broken(v)) => Err(TrySendError::Broken(v)),
            Err(state::TrySend::Full(v)) => Err(TrySendError::Full(v)),
        }
    }

    /// Closes this handle (Trio's `close`): it can no longer send, and once every sender is
    /// closed, receivers see the end of the channel. A `send` waiting on this handle fails with
    /// [`SendError::Closed`]. Idempotent; dropping the handle does the same.
    ///
    /// A `send` on this same handle that is completing on another thread at that moment (it
    /// found room, so it was not waiting) may still deliver its value, after receivers already
    /// saw the end of the channel; close a handle from the task that sends on it to rule that
    /// out.
    #[doc(alias = "aclose")]
    pub fn close(&self) {
        if self.handle.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut wake = WakeList::new();
        self.chan.lock().close_sender(self.handle.id, &mut wake);
        wake.wake();
    }

    /// True when this handle has been closed.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// The channel's statistics.
    pub fn statistics(&self) -> ChannelStatistics {
        self.chan.lock().statistics(&self.chan.fast)
    }
}

/// The future of [`Sender::send`].
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Send<'a, T> {
    sender: &'a Sender<T>,
    op: SendOp<T>,
}

impl<T> std::fmt::Debug for Send<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Send")
            .field("waiting", &self.op.key.is_some())
            .finish()
    }
}

impl<T> Future for Send<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.op.poll(&this.sender.chan, &this.sender.handle, cx)
    }
}

impl<T> Drop for Send<'_, T> {
    fn drop(&mut self) {
        self.op.abandon(&self.sender.chan);
    }
}

/// One send in progress: the value until it is delivered, the slot among the waiting senders
/// once it had to wait, and how it hears about cancellation.
struct SendOp<T> {
    value: Option<T>,
    key: Option<usize>,
    cancel: CancelWait,
}

// The value is moved, never pinned.
impl<T> Unpin for SendOp<T> {}

impl<T> SendOp<T> {
    fn new(value: T) -> Self {
        SendOp {
            value: Some(value),
            key: None,
            cancel: CancelWait::on("channel send (the buffer is full)"),
        }
    }

    fn poll(
        &mut self,
        chan: &Chan<T>,
        handle: &Handle,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError<T>>> {
        let Some(key) = self.key else {
            if handle.is_closed() {
                let value = self.value.take().expect("send polled after completion");
                return Poll::Ready(Err(SendError::Closed(value)));
            }
            let cancelled = ready!(self.cancel.poll_start(cx));
            let value = self.value.take().expect("send polled after completion");
            if cancelled {
                return Poll::Ready(Err(SendError::Cancelled(value)));
            }
            let Err(value) = chan.fast.try_push(value, || chan.after_push()) else {
                return Poll::Ready(Ok(()));
            };
            let mut wake = WakeList::new();
            let mut state = chan.lock();
            let outcome = match state.try_send(&chan.fast, value, &mut wake) {
                Ok(()) => Some(Ok(())),
                Err(state::TrySend::Broken(v)) => Some(Err(SendError::Broken(v))),
                Err(state::TrySend::Full(v)) => {
                    self.key = state.wait_send(&chan.fast, handle.id, v, cx.waker(), &mut wake);
                    self.key.is_none().then_some(Ok(()))
                }
            };
            drop(state);
            wake.wake();
            if let Some(outcome) = outcome {
                return Poll::Ready(outcome);
            }
            return self.poll_cancel(chan, cx);
        };
        let mut state = chan.lock();
        if let Some(outcome) = state.poll_send_waiter(key, handle.is_closed(), cx.waker()) {
            self.key = None;
            return Poll::Ready(outcome);
        }
        drop(state);
        self.poll_cancel(chan, cx)
    }

    /// Waiting: withdraws the value if the caller is cancelled before it was taken.
    fn poll_cancel(
        &mut self,
        chan: &Chan<T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError<T>>> {
        ready!(self.cancel.poll_cancelled(cx));
        let key = self.key.take().expect("waiting");
        Poll::Ready(match chan.lock().withdraw_send(key) {
            // Taken by a receiver just now: the send happened.
            None => Ok(()),
            Some(value) => Err(SendError::Cancelled(value)),
        })
    }

    /// Given up (dropped): the value, if still undelivered, is dropped with it.
    #[inline]
    fn abandon(&mut self, chan: &Chan<T>) {
        if let Some(key) = self.key.take() {
            chan.abandon_send(key);
        }
    }
}

/// Senders are [`Sink`](futures_sink::Sink)s: `start_send` holds one value, and
/// `poll_ready` / `poll_flush` deliver it (waiting for room, as [`send`](Sender::send)), so
/// nothing is dropped between readiness and sending. Like `send`, delivery is a cancel point.
impl<T> futures_sink::Sink<T> for Sender<T> {
    type Error = SendError<T>;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_flush(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: T) -> Result<(), Self::Error> {
        assert!(self.sink.is_none(), "start_send without poll_ready");
        self.sink = Some(SendOp::new(item));
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = &mut *self;
        let Some(op) = this.sink.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let outcome = ready!(op.poll(&this.chan, &this.handle, cx));
        this.sink = None;
        Poll::Ready(outcome)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.as_mut().poll_flush(cx))?;
        self.close();
        Poll::Ready(Ok(()))
    }
}

/// The receiving end of a [`channel`]. Clone it for more receivers (each value goes to one of
/// them); each clone closes on its own. It is also a [`Stream`](futures_core::Stream) of the
/// values, ending with the channel.
#[doc(alias = "MemoryReceiveChannel")]
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
    handle: Handle,
    /// The pending receive of the `Stream` implementation.
    stream: Option<(Option<usize>, CancelWait)>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("closed", &self.handle.is_closed())
            .finish()
    }
}

impl<T> Clone for Receiver<T> {
    /// Another receiver on the same channel. A clone of a closed receiver is closed too.
    fn clone(&self) -> Self {
        let mut state = self.chan.lock();
        let handle = Handle::new(state.new_handle());
        if self.handle.is_closed() {
            handle.closed.store(true, Ordering::Release);
        } else {
            state.receivers += 1;
        }
        Receiver {
            chan: self.chan.clone(),
            handle,
            stream: None,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if let Some((Some(key), _)) = self.stream.take() {
            self.chan.unreceive_withdrawn(key);
        }
        self.close();
    }
}

impl<T> Receiver<T> {
    /// Receives the next value, waiting while the channel is empty. A cancel point; see the
    /// [module docs](self) on cancellation.
    ///
    /// # Errors
    ///
    /// [`RecvError::EndOfChannel`] once every sender is closed and the buffer is empty,
    /// [`RecvError::Closed`] when this handle was closed, [`RecvError::Cancelled`] when the
    /// calling code is cancelled (nothing was received).
    pub fn recv(&self) -> Recv<'_, T> {
        Recv {
            receiver: self,
            key: None,
            cancel: CancelWait::on("channel receive"),
        }
    }

    /// Receives a value if one is there.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when it would wait (Trio's `WouldBlock`), and the end / closed
    /// cases of [`recv`](Receiver::recv).
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        if self.handle.is_closed() {
            return Err(TryRecvError::Closed);
        }
        match self.chan.try_recv() {
            Ok(value) => Ok(value),
            Err(state::TryRecv::Empty) => Err(TryRecvError::Empty),
            Err(state::TryRecv::End) => Err(TryRecvError::EndOfChannel),
        }
    }

    /// Closes this handle: it can no longer receive, and once every receiver is closed the
    /// buffered values are dropped and senders fail with [`SendError::Broken`]. A `recv`
    /// waiting on this handle fails with [`RecvError::Closed`]. Idempotent; dropping the handle
    /// does the same.
    #[doc(alias = "aclose")]
    pub fn close(&self) {
        if self.handle.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut wake = WakeList::new();
        let discarded = self
            .chan
            .lock()
            .close_receiver(&self.chan.fast, self.handle.id, &mut wake);
        wake.wake();
        // User values may run arbitrary code when dropped: not under the lock.
        drop(discarded);
    }

    /// True when this handle has been closed.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// The channel's statistics.
    pub fn statistics(&self) -> ChannelStatistics {
        self.chan.lock().statistics(&self.chan.fast)
    }

    fn poll_recv_inner(
        chan: &Chan<T>,
        handle: &Handle,
        key: &mut Option<usize>,
        cancel: &mut CancelWait,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, RecvError>> {
        match *key {
            None => {
                if handle.is_closed() {
                    return Poll::Ready(Err(RecvError::Closed));
                }
                if ready!(cancel.poll_start(cx)) {
                    return Poll::Ready(Err(RecvError::Cancelled));
                }
                if let Some(value) = chan.fast.try_pop(|| chan.after_pop()) {
                    return Poll::Ready(Ok(value));
                }
                let mut wake = WakeList::new();
                let mut state = chan.lock();
                let outcome = match state.try_recv(&chan.fast, &mut wake) {
                    Ok(value) => Some(Ok(value)),
                    Err(state::TryRecv::End) => Some(Err(RecvError::EndOfChannel)),
                    Err(state::TryRecv::Empty) => {
                        match state.wait_recv(&chan.fast, handle.id, cx.waker(), &mut wake) {
                            Ok(value) => Some(Ok(value)),
                            Err(k) => {
                                *key = Some(k);
                                None
                            }
                        }
                    }
                };
                drop(state);
                wake.wake();
                if let Some(outcome) = outcome {
                    return Poll::Ready(outcome);
                }
            }
            Some(k) => {
                let mut state = chan.lock();
                let fast = &chan.fast;
                if let Some(outcome) =
                    state.poll_recv_waiter(fast, k, handle.is_closed(), cx.waker())
                {
                    *key = None;
                    return Poll::Ready(outcome);
                }
            }
        }
        ready!(cancel.poll_cancelled(cx));
        let k = key.take().expect("waiting");
        Poll::Ready(match chan.lock().withdraw_recv(k) {
            // Handed to us just as we were cancelled: keep it rather than lose it.
            Some(value) => Ok(value),
            None => Err(RecvError::Cancelled),
        })
    }
}

/// The future of [`Receiver::recv`].
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Recv<'a, T> {
    receiver: &'a Receiver<T>,
    key: Option<usize>,
    cancel: CancelWait,
}

impl<T> std::fmt::Debug for Recv<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recv")
            .field("waiting", &self.key.is_some())
            .finish()
    }
}

impl<T> Future for Recv<'_, T> {
    type Output = Result<T, RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let receiver = this.receiver;
        Receiver::poll_recv_inner(
            &receiver.chan,
            &receiver.handle,
            &mut this.key,
            &mut this.cancel,
            cx,
        )
    }
}

impl<T> Drop for Recv<'_, T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // A value handed to us goes back to the front of the channel.
            self.receiver.chan.unreceive_withdrawn(key);
        }
    }
}

/// The values of the channel, ending with it. Not a cancel point (a stream has nowhere to put
/// `Cancelled`): use [`recv`](Receiver::recv) for a checkpoint, or wrap the stream in code that
/// handles cancellation itself, as [`BroadcastReceiver`](crate::broadcast::BroadcastReceiver)
/// does. A value handed to a pending poll stays with this receiver until the next poll.
impl<T> futures_core::Stream for Receiver<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        let (key, cancel) = this
            .stream
            .get_or_insert_with(|| (None, CancelWait::uncancellable()));
        let outcome = ready!(Self::poll_recv_inner(
            &this.chan,
            &this.handle,
            key,
            cancel,
            cx
        ));
        this.stream = None;
        Poll::Ready(outcome.ok())
    }
}
