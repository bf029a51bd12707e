//! Streams between two actors within one call, and their broadcast to local tasks.
//!
//! * A **one-way stream** (`Portal::open_stream_from`): the remote function gets a
//!   [`MsgStream`] to send on; the caller receives.
//! * A **context**'s stream (`Context::open_stream`, `PortalContext::open_stream`): both ways.
//!
//! [`MsgStream::subscribe`] hands the stream's items to many local tasks, each getting every
//! item (the broadcast receiver of `trellis::broadcast`).

use std::any::{Any, TypeId};
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis::broadcast::{
    BroadcastError, BroadcastHandle, BroadcastReceiver, broadcast_receiver,
    lossless_broadcast_receiver,
};
use trellis_wire::{ActorId, CallKind, Payload, Role};

use super::options::StreamOptions;
use crate::actor_error::ActorError;
use crate::connection::Link;

/// A stream of `Rx` items from another actor and of `Tx` items to it, within one call.
///
/// One-way streams have one direction only: the caller's end is a `MsgStream<T>` (its `Tx`
/// is [`Infallible`], so it cannot send), the remote function's a `MsgStream<Infallible, T>`.
/// A context's stream goes both ways.
///
/// `recv` and `send` are checkpoints. Clones share the stream; when the last is dropped, the
/// end closes (its sending side says `Stop`, its receiving side discards what still comes).
///
/// Items are MessagePack values (serde). For bulk data, stream `bytes::Bytes` items (with
/// bytes' `serde` feature): a long one is written from its own memory and received as a
/// share of the buffer it was read into, with no copy on either side; the peer sees an
/// ordinary byte string (`bin`), as `serde_bytes` would send.
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
type Received<'a, Rx> = Pin<Box<dyn Future<Output = Result<Option<Rx>, ActorError>> + Send + 'a>>;

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

/// The end closes: a context caller's sending side says `Stop` (a callee's does not: its
/// function's `Return` or `Error` ends the stream, and a `Stop` sent as its stream is dropped
/// would arrive before a failure and make it look like a clean end); the receiving side
/// discards what still comes (a one-way caller's without granting more: leaving the call
/// cancels the remote function).
impl<Rx> Drop for StreamInner<Rx> {
    fn drop(&mut self) {
        if self.link.role == Role::Caller && self.link.kind == CallKind::Context {
            self.link.stop();
        }
        self.link.close_recv(!self.link.one_way_caller());
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

    /// Says this end sends nothing more (`Stop`): the other end's `recv` returns `None` once
    /// it read everything; receiving goes on. On the caller's end of a one-way stream, which
    /// sends nothing, it says the caller takes no more: the remote function's next `send`
    /// fails with [`ActorError::ReceiverStopped`] and, when it returns that error, the call
    /// ends normally. Idempotent.
    pub fn close(&self) {
        self.inner.link.stop();
    }
}

impl<Rx, Tx: Serialize + 'static> MsgStream<Rx, Tx> {
    /// Sends an item; waits for credit when the receiver is behind. A checkpoint.
    ///
    /// # Errors
    ///
    /// [`ActorError::StreamClosed`] after [`close`](MsgStream::close); the error that ended the
    /// call ([`ActorError::Remote`], [`ActorError::ConnectionLost`]…); [`ActorError::Cancelled`].
    pub async fn send(&self, item: Tx) -> Result<(), ActorError> {
        Ok(self.inner.link.send(item).await?)
    }
}

impl<Rx: DeserializeOwned + 'static, Tx> MsgStream<Rx, Tx> {
    /// The next item; `None` once the other end stopped sending (or, on a one-way stream, the
    /// remote function returned). A checkpoint; cancel-safe (a cancelled receive takes
    /// nothing).
    ///
    /// # Errors
    ///
    /// [`ActorError::Remote`] when the remote function failed (an overrun there is a
    /// [`StreamOverrun`](crate::StreamOverrun) in it); [`ActorError::ConnectionLost`];
    /// [`ActorError::Cancelled`]; [`ActorError::BadItem`] for an item that does not decode as
    /// `Rx`.
    pub async fn recv(&self) -> Result<Option<Rx>, ActorError> {
        if let Some(factory) = self.inner.own_factory.get() {
            return self.inner.own.get_or_init(factory).recv().await;
        }
        let link = &self.inner.link;
        link.chan.schedule_point().await;
        trellis::checkpoint_if_cancelled().map_err(|c| link.failure_or(c.into()))?;
        // The fast path, an item (or the end) there already, in this future itself.
        let item = match link.take_next(None) {
            Some(ready) => ready?,
            None => wait_for_items(link, |cx| link.take_next(Some(cx))).await?,
        };
        Ok(item
            .map(|payload| decode_item(link, &payload))
            .transpose()?)
    }

    /// Receives up to `limit` items into `buffer` (appended), waiting only for the first:
    /// how many it received, `0` once the other end stopped sending (where [`recv`] returns
    /// `None`) or when `limit` is 0 (tokio's `mpsc::Receiver::recv_many`). One step for
    /// everything that arrived: for a hot path, it saves [`recv`]'s cost per item. An item
    /// that does not decode ends the batch before it, and the next call fails with it. A
    /// stream turned into a broadcast ([`subscribe`](MsgStream::subscribe)) receives one item
    /// at a time. A checkpoint; cancel-safe (a cancelled receive takes nothing).
    ///
    /// # Errors
    ///
    /// As [`recv`].
    ///
    /// [`recv`]: MsgStream::recv
    pub async fn recv_many(&self, buffer: &mut Vec<Rx>, limit: usize) -> Result<usize, ActorError> {
        if let Some(factory) = self.inner.own_factory.get() {
            let own = self.inner.own.get_or_init(factory);
            return Ok(match own.recv().await?.filter(|_| limit > 0) {
                Some(item) => {
                    buffer.push(item);
                    1
                }
                None => 0,
            });
        }
        if limit == 0 {
            trellis::checkpoint().await?;
            return Ok(0);
        }
        let link = &self.inner.link;
        link.chan.schedule_point().await;
        trellis::checkpoint_if_cancelled().map_err(|c| link.failure_or(c.into()))?;
        let mut payloads = Vec::new();
        let taken = match link.take_into(None, limit, &mut payloads) {
            Some(ready) => ready?,
            None => {
                wait_for_items(link, |cx| link.take_into(Some(cx), limit, &mut payloads)).await?
            }
        };
        debug_assert_eq!(taken, payloads.len());
        let mut payloads = payloads.into_iter();
        let mut read = 0;
        while let Some(payload) = payloads.next() {
            match decode_item(link, &payload) {
                Ok(item) => buffer.push(item),
                Err(error) if read == 0 => {
                    link.consumed(1);
                    link.put_back(payloads);
                    return Err(error.into());
                }
                Err(_) => {
                    link.put_back(std::iter::once(payload).chain(payloads));
                    break;
                }
            }
            read += 1;
        }
        link.consumed(read);
        Ok(read)
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
            let first = if options.lossless() {
                lossless_broadcast_receiver(items, options.capacity_value())
            } else {
                broadcast_receiver(items, options.capacity_value())
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
        if !self.inner.options.lossless()
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

/// Waits until `take` finds something (an item, a batch, the stream's end): the stream wakes
/// the task; the wait is recorded for a dump. Cancel-safe, as `take` takes nothing unless it
/// returns `Some`. (Each receive tries `take` once itself first, so that the common case
/// stays in its own future.)
async fn wait_for_items<T>(
    link: &Link,
    mut take: impl FnMut(&TaskContext<'_>) -> Option<Result<T, trellis::Error>>,
) -> Result<T, ActorError> {
    let what = || link.waits_on("items from");
    let wait = trellis::cancellable(std::future::poll_fn(|cx| match take(cx) {
        Some(ready) => Poll::Ready(ready),
        None => Poll::Pending,
    }));
    match trellis::dump::waiting_for(what, wait).await {
        Ok(ready) => Ok(ready?),
        // Cancelled because the call failed (the caller's body): that failure is the better
        // answer.
        Err(cancelled) => Err(link.failure_or(cancelled.into()).into()),
    }
}

fn decode_item<Rx: DeserializeOwned + 'static>(
    link: &Link,
    payload: &Payload,
) -> Result<Rx, trellis::Error> {
    if let Some(item) = shared_bytes(payload) {
        return Ok(item);
    }
    payload.decode().map_err(|e| {
        ActorError::BadItem(format!(
            "an item from actor {} does not decode as {}: {e}",
            link.conn.peer().actor,
            std::any::type_name::<Rx>()
        ))
        .into()
    })
}

/// A `bytes::Bytes` item that shares the memory of the frame it came in: a large item is
/// handed over without a copy (serde's `Deserialize` for `Bytes` would copy it). `None` for
/// any other item type, and for a value that is not a byte string (serde decodes it then).
fn shared_bytes<Rx: 'static>(payload: &Payload) -> Option<Rx> {
    if TypeId::of::<Rx>() != TypeId::of::<Bytes>() {
        return None;
    }
    let mut item = Some(payload.to_bin()?);
    (&mut item as &mut dyn Any)
        .downcast_mut::<Option<Rx>>()?
        .take()
}

async fn receive_subscribed<Rx>(
    receiver: &BroadcastReceiver<Items<Rx>>,
    link: &Link,
) -> Result<Option<Rx>, trellis::Error>
where
    Rx: DeserializeOwned + Clone + 'static,
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
pub struct Subscription<Rx: DeserializeOwned + 'static> {
    receiver: BroadcastReceiver<Items<Rx>>,
    link: Link,
}

impl<Rx: DeserializeOwned + 'static> std::fmt::Debug for Subscription<Rx> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("cid", &self.link.cid)
            .finish_non_exhaustive()
    }
}

impl<Rx: DeserializeOwned + Clone + 'static> Subscription<Rx> {
    /// The next item for this subscriber; `None` at the end of the stream. A checkpoint.
    ///
    /// # Errors
    ///
    /// [`ActorError::Lagged`] when this subscriber fell behind (it stays subscribed); the error
    /// that ended the stream; [`ActorError::Cancelled`].
    pub async fn recv(&self) -> Result<Option<Rx>, ActorError> {
        Ok(receive_subscribed(&self.receiver, &self.link).await?)
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

impl<Rx: DeserializeOwned + 'static> futures_core::Stream for Items<Rx> {
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
