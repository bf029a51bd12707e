//! One connection between two actors: the handshake, a writer that sends what the callers
//! buffered (so many messages go out in one write), a reader that routes each message to its
//! call, and the calls this side serves.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use bytes::Buf;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, oneshot};
use trellis::sync::Event;
use trellis::{CancelScope, Cancelled, Nursery};
use trellis_wire::{
    ActorId, CallKind, Codec, DecodeError, ErrorKind, Hello, Message, Payload, Received, Session,
    Side,
};

use crate::error::{ActorError, RemoteActorError, report, runtime_report};
use crate::functions::{CallFailure, Functions};
use crate::stream::{Chan, ChanEnd, Link, Pushed, StreamOptions, StreamOverrun};
use crate::transport::{Reader, Writer};

/// The reserved function that asks an actor to cancel itself and exit.
pub(crate) const CANCEL_ACTOR: &str = "trellis.cancel_actor";

/// The reserved function a new child calls in its parent once it is registered and serving.
pub(crate) const CHILD_READY: &str = "trellis.child_ready";

/// How long a caller that was cancelled waits for the callee to acknowledge the cancellation
/// before giving up on the call.
pub(crate) const CANCEL_ACK_WAIT: Duration = Duration::from_secs(2);

/// Stream items read but not yet handed to their call.
#[derive(Default)]
struct Items {
    chan: Option<(u64, Arc<Chan>)>,
    values: Vec<Payload>,
}

/// How the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer said goodbye, or we did.
    Goodbye,
    /// It broke: the peer vanished, or sent what it may not.
    Lost(String),
}

/// A connection to one peer actor; cheap to clone.
#[derive(Clone)]
pub(crate) struct Conn {
    inner: Arc<Inner>,
}

struct Inner {
    local: ActorId,
    peer: Hello,
    codec: Codec,
    state: Mutex<State>,
    wake_writer: Notify,
    /// Set once the connection ended, both ways.
    ended: Event,
    /// Run when the connection ends, before `ended` is set.
    on_end: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The actor's functions and error types, once the connection is adopted.
    functions: std::sync::OnceLock<Arc<Functions>>,
}

struct State {
    session: Session,
    /// Encoded messages not yet taken by the socket.
    out: BytesMut,
    /// The socket's sending half, while the connection runs.
    writer: Option<Arc<Writer>>,
    /// A write failed: the writer task ends the connection.
    write_error: Option<std::io::Error>,
    /// Calls we made, waiting for their terminal message.
    calling: HashMap<u64, oneshot::Sender<Message>>,
    /// Calls we serve.
    serving: HashMap<u64, Serving>,
    /// The stream state of stream and context calls, both ways.
    chans: HashMap<u64, Arc<Chan>>,
    /// We said goodbye: the writer stops once the buffer is out.
    closing: bool,
    end: Option<End>,
}

struct Serving {
    scope: CancelScope,
    cancelled_by: Option<ActorId>,
    /// The call's receiving end overran: it fails with this.
    overrun: Option<StreamOverrun>,
}

/// What the reader needs to serve the peer's calls.
#[derive(Clone)]
pub(crate) struct Serve {
    /// Where served calls run.
    pub(crate) work: Nursery,
    /// The actor serving: what [`crate::current`] gives inside served calls.
    pub(crate) actor: crate::Actor,
}

impl Conn {
    /// Exchanges `Hello`s over a fresh stream; the connection is ready to [`run`](Conn::run).
    pub(crate) async fn handshake(
        side: Side,
        local: Hello,
        reader: &mut Reader,
        writer: &Writer,
    ) -> Result<(Conn, BytesMut), trellis::Error> {
        let codec = Codec::new();
        let mut session = Session::new(side, local.clone());
        let mut out = BytesMut::new();
        codec.encode(&session.hello(), &mut out)?;
        trellis::cancellable(writer.write_all(&out))
            .await?
            .map_err(|e| io("sending Hello", e))?;
        let mut buf = BytesMut::with_capacity(4096);
        let peer = loop {
            if let Some(message) = codec.decode(&mut buf)? {
                session
                    .receive(&message)
                    .map_err(|e| ActorError::Protocol {
                        actor: local.actor.clone(),
                        error: e.to_string(),
                    })?;
                let Message::Hello(hello) = message else {
                    unreachable!("the session accepts only Hello first")
                };
                break hello;
            }
            let n = trellis::cancellable(reader.read_buf(&mut buf))
                .await?
                .map_err(|e| io("reading Hello", e))?;
            if n == 0 {
                return Err(ActorError::Protocol {
                    actor: local.actor.clone(),
                    error: "the peer closed the connection during the handshake".into(),
                }
                .into());
            }
        };
        let conn = Conn {
            inner: Arc::new(Inner {
                local: local.actor,
                peer,
                codec,
                state: Mutex::new(State {
                    session,
                    out: BytesMut::new(),
                    writer: None,
                    write_error: None,
                    calling: HashMap::new(),
                    serving: HashMap::new(),
                    chans: HashMap::new(),
                    closing: false,
                    end: None,
                }),
                wake_writer: Notify::new(),
                ended: Event::new(),
                on_end: Mutex::new(None),
                functions: std::sync::OnceLock::new(),
            }),
        };
        Ok((conn, buf))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error types to rebuild remote failures with (and to send our own as values).
    pub(crate) fn set_functions(&self, functions: Arc<Functions>) {
        let _ = self.inner.functions.set(functions);
    }

    fn functions(&self) -> Arc<Functions> {
        self.inner.functions.get().cloned().unwrap_or_default()
    }

    /// Identifies the connection (for registrations made over it).
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// Runs `hook` when the connection ends, before [`ended`](Conn::ended) returns.
    pub(crate) fn on_end(&self, hook: impl FnOnce() + Send + 'static) {
        *self.inner.on_end.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(hook));
    }

    /// Whether both handles are of the same connection.
    pub(crate) fn same(&self, other: &Conn) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The peer's `Hello`.
    pub(crate) fn peer(&self) -> &Hello {
        &self.inner.peer
    }

    /// This side's actor.
    pub(crate) fn local(&self) -> &ActorId {
        &self.inner.local
    }

    /// Calls served, calls made and waited on, and open streams, right now.
    pub(crate) fn load(&self) -> (usize, usize, usize) {
        let state = self.lock();
        // Calls made: run calls waiting for their result, and streams and contexts opened
        // from this side (their state lives with the served ones in `chans`).
        let made_streams = state
            .chans
            .keys()
            .filter(|cid| !state.serving.contains_key(cid) && !state.calling.contains_key(cid))
            .count();
        (
            state.serving.len(),
            state.calling.len() + made_streams,
            state.chans.len(),
        )
    }

    /// How the connection ended, once it has.
    pub(crate) fn end(&self) -> Option<End> {
        self.lock().end.clone()
    }

    /// Waits until the connection has ended.
    pub(crate) async fn ended(&self) -> Result<End, Cancelled> {
        self.inner.ended.wait().await?;
        Ok(self.end().expect("set before the event"))
    }

    /// Runs the connection until it ends: writes what is sent, reads and routes what arrives,
    /// serves the peer's calls in `serve.work`. `buf` holds bytes read past the handshake.
    pub(crate) async fn run(
        self,
        reader: Reader,
        writer: Writer,
        buf: BytesMut,
        serve: Serve,
    ) -> Result<(), trellis::Error> {
        self.lock().writer = Some(Arc::new(writer));
        let conn = self.clone();
        let outcome = trellis::open_nursery(|n| async move {
            let w = conn.clone();
            n.start_soon(async move {
                w.write_loop().await;
                Ok::<_, trellis::Error>(())
            })?;
            let end = conn.read_loop(reader, buf, &serve).await;
            // Also stops the writer.
            conn.finish(end);
            Ok::<_, trellis::Error>(())
        })
        .await;
        self.finish(End::Lost("the actor is shutting down".into()));
        outcome.map(drop)
    }

    /// Marks the connection ended: pending calls fail, served calls are cancelled.
    fn finish(&self, end: End) {
        let (calling, serving, chans) = {
            let mut state = self.lock();
            if state.end.is_some() {
                return;
            }
            tracing::debug!(peer = %self.inner.peer.actor, ?end, "connection ended");
            state.end = Some(end);
            (
                std::mem::take(&mut state.calling),
                std::mem::take(&mut state.serving),
                std::mem::take(&mut state.chans),
            )
        };
        drop(calling); // the callers see their channel closed: ConnectionLost
        for chan in chans.into_values() {
            chan.end(ChanEnd::Lost, &self.inner.local);
        }
        for serving in serving.into_values() {
            serving.scope.cancel();
        }
        self.inner.wake_writer.notify_one();
        let hook = self
            .inner
            .on_end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(hook) = hook {
            hook();
        }
        self.inner.ended.set();
    }

    /// Sends what the callers could not write at once: waits for room in the socket, or for
    /// more to send; ends when the connection does (dropping the sending half shuts it down).
    async fn write_loop(&self) {
        loop {
            let (writer, pending, done, failed) = {
                let mut state = self.lock();
                self.try_flush_locked(&mut state);
                let failed = state.write_error.take();
                let pending = !state.out.is_empty();
                let done = !pending && (state.closing || state.end.is_some());
                (state.writer.clone(), pending, done, failed)
            };
            if let Some(e) = failed {
                self.finish(End::Lost(format!("write failed: {e}")));
                break;
            }
            let Some(writer) = writer.filter(|_| !done) else {
                break;
            };
            let waited = if pending {
                // An error here shows again in the next write, which reports it.
                trellis::cancellable(writer.writable()).await.map(drop)
            } else {
                trellis::cancellable(self.inner.wake_writer.notified()).await
            };
            if waited.is_err() {
                break;
            }
        }
        self.lock().writer = None;
    }

    /// Writes as much of the buffer as the socket takes now, without waiting; leaves the rest
    /// (and any error) to the writer task.
    fn try_flush_locked(&self, state: &mut State) {
        let State {
            writer,
            out,
            write_error,
            ..
        } = state;
        let Some(writer) = writer else {
            return;
        };
        while !out.is_empty() {
            match writer.try_write(out) {
                Ok(0) => {
                    *write_error = Some(std::io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => out.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    *write_error = Some(e);
                    break;
                }
            }
        }
        if out.is_empty() {
            out.clear();
        } else {
            self.inner.wake_writer.notify_one();
        }
    }

    async fn read_loop(&self, mut reader: Reader, mut buf: BytesMut, serve: &Serve) -> End {
        let mut items = Items::default();
        loop {
            loop {
                match self.inner.codec.decode(&mut buf) {
                    Ok(Some(message)) => {
                        if let Err(end) = self.dispatch(message, serve, &mut items) {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.deliver(&mut items);
                        return self.refuse(e);
                    }
                }
            }
            // What one read brought for a stream goes to it in one step.
            self.deliver(&mut items);
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(64 * 1024);
            }
            match trellis::cancellable(reader.read_buf(&mut buf)).await {
                Ok(Ok(0)) => {
                    return End::Lost(format!(
                        "actor {} closed the connection without a goodbye",
                        self.inner.peer.actor
                    ));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return End::Lost(format!("read failed: {e}")),
                Err(Cancelled { .. }) => return End::Lost("the actor is shutting down".into()),
            }
        }
    }

    /// A frame we cannot read: tell the peer why, and end the connection.
    fn refuse(&self, error: DecodeError) -> End {
        let message = format!("undecodable frame: {error}");
        self.send_connection_error(message.clone());
        End::Lost(message)
    }

    fn send_connection_error(&self, message: String) {
        let report = runtime_report(&self.inner.local, ErrorKind::Protocol, message);
        let _ = self.send(&Message::Error {
            cid: None,
            error: Box::new(report),
        });
    }

    /// Hands the items gathered for one call to it.
    fn deliver(&self, items: &mut Items) {
        let Some((cid, chan)) = items.chan.take() else {
            return;
        };
        let batch = std::mem::take(&mut items.values);
        if let Pushed::Overrun(overrun) =
            chan.push(batch, &self.inner.local, &self.inner.peer.actor)
        {
            self.overrun(cid, overrun);
        }
    }

    /// Routes one received message; `Err` ends the connection. Consecutive stream items of
    /// one call are gathered in `items` and delivered together (before anything else).
    fn dispatch(&self, message: Message, serve: &Serve, items: &mut Items) -> Result<(), End> {
        let (received, chan) = {
            let mut state = self.lock();
            let received = state.session.receive(&message);
            let chan = match &message {
                Message::Yield { cid, .. }
                | Message::Stop { cid }
                | Message::Credit { cid, .. }
                | Message::Started { cid, .. } => state.chans.get(cid).cloned(),
                _ => None,
            };
            (received, chan)
        };
        if received.is_ok()
            && let Message::Yield { cid, value } = message
        {
            let Some(chan) = chan else {
                // A call with no stream state (its end is gone): nothing to do.
                return Ok(());
            };
            if items.chan.as_ref().is_some_and(|(c, _)| *c != cid) {
                self.deliver(items);
            }
            items.chan.get_or_insert((cid, chan));
            items.values.push(value);
            return Ok(());
        }
        self.deliver(items);
        match received {
            Err(e) => {
                let text = format!("protocol error: {e}");
                self.send_connection_error(text.clone());
                return Err(End::Lost(text));
            }
            Ok(Received::Goodbye) => return Err(End::Goodbye),
            Ok(Received::ConnectionError) => {
                let Message::Error { error, .. } = message else {
                    unreachable!()
                };
                return Err(End::Lost(format!(
                    "actor {} reported: {}",
                    self.inner.peer.actor, error.message
                )));
            }
            Ok(Received::Stale | Received::Hello) => return Ok(()),
            Ok(_) => {}
        }
        match message {
            Message::Start {
                cid,
                function,
                kind,
                args,
            } => self.start_serving(cid, &function, kind, args, serve),
            Message::Cancel { cid, requested_by } => {
                let mut state = self.lock();
                if let Some(serving) = state.serving.get_mut(&cid) {
                    serving.cancelled_by = Some(requested_by);
                    serving.scope.cancel();
                }
            }
            Message::Return { cid, .. }
            | Message::Error { cid: Some(cid), .. }
            | Message::CancelAck { cid, .. } => {
                let (waiter, chan) = {
                    let mut state = self.lock();
                    (state.calling.remove(&cid), state.chans.remove(&cid))
                };
                if let Some(waiter) = waiter {
                    let _ = waiter.send(message);
                } else if let Some(chan) = chan {
                    chan.end(ChanEnd::Terminal(message), &self.inner.local);
                }
            }
            Message::Stop { .. } => chan.into_iter().for_each(|c| c.peer_stopped()),
            Message::Credit { count, .. } => chan.into_iter().for_each(|c| c.credit(count)),
            Message::Started { value, .. } => {
                if let Some(chan) = chan {
                    chan.started(value);
                }
            }
            // Acknowledgements: nothing to do.
            _ => {}
        }
        Ok(())
    }

    /// The receiving end of a call overran. A call we serve fails with it; a call we made
    /// fails in the caller (its body was cancelled), whose exit cancels the remote side.
    fn overrun(&self, cid: u64, overrun: StreamOverrun) {
        tracing::debug!(cid, %overrun, "stream overrun");
        let mut state = self.lock();
        if let Some(serving) = state.serving.get_mut(&cid) {
            serving.overrun = Some(overrun);
            serving.scope.cancel();
        }
    }

    fn start_serving(
        &self,
        cid: u64,
        function: &str,
        kind: CallKind,
        args: Payload,
        serve: &Serve,
    ) {
        let local = &self.inner.local;
        let refuse = |kind: ErrorKind, text: String| {
            let _ = self.send(&Message::Error {
                cid: Some(cid),
                error: Box::new(runtime_report(local, kind, text)),
            });
        };
        if function == CANCEL_ACTOR || function == CHILD_READY {
            let _ = self.send(&Message::StartAck { cid });
            let _ = self.send(&Message::Return {
                cid,
                value: Payload::unit(),
            });
            if function == CANCEL_ACTOR {
                serve.actor.cancel_by(self.inner.peer.actor.clone());
            } else {
                serve.actor.child_ready(self);
            }
            return;
        }
        let builtin = serve.actor.registry().and_then(|registry| {
            crate::registry::serve(registry, function, args.clone(), self.key())
        });
        let handler = self.functions().get(function);
        let (call, chan) = match (builtin, handler) {
            (Some(builtin), _) if kind == CallKind::Run => (builtin, None),
            (None, Some(handler)) if handler.kind == kind => {
                let chan = (kind != CallKind::Run).then(Chan::new);
                let link = chan.clone().map(|chan| Link {
                    conn: self.clone(),
                    cid,
                    chan,
                    kind,
                    role: trellis_wire::Role::Callee,
                });
                ((handler.call)(args, link), chan)
            }
            (None, None) => {
                return refuse(
                    ErrorKind::UnknownFunction,
                    format!("no function named `{function}` in actor {local}"),
                );
            }
            (builtin, handler) => {
                let registered = handler.map_or(CallKind::Run, |h| h.kind);
                debug_assert!(builtin.is_none() || registered == CallKind::Run);
                return refuse(
                    ErrorKind::BadArguments,
                    format!(
                        "`{function}` is a {} function, called as a {}",
                        kind_name(registered),
                        kind_name(kind)
                    ),
                );
            }
        };
        let scope = CancelScope::new();
        {
            let mut state = self.lock();
            state.serving.insert(
                cid,
                Serving {
                    scope: scope.clone(),
                    cancelled_by: None,
                    overrun: None,
                },
            );
            if let Some(chan) = chan {
                state.chans.insert(cid, chan);
            }
        }
        // The acknowledgement waits in the buffer: a call that completes at once sends it in
        // the same write as its result; one that has to wait flushes it then.
        let _ = self.send_held(&Message::StartAck { cid });
        let conn = self.clone();
        let actor = serve.actor.clone();
        let spawned = serve.work.start_soon(async move {
            let mut call = std::pin::pin!(call);
            let mut flushed = false;
            // A panic in the function fails the call (with the panic's backtrace when one was
            // captured), like any other failure; the actor goes on serving.
            let call = std::future::poll_fn(|cx| {
                let polled =
                    match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
                        Ok(polled) => polled,
                        Err(payload) => {
                            Poll::Ready(Err(CallFailure::Panicked(crate::panic::report(payload))))
                        }
                    };
                if polled.is_pending() && !std::mem::replace(&mut flushed, true) {
                    conn.flush();
                }
                polled
            });
            let call = async {
                match call.await {
                    Err(CallFailure::Failed(e)) if e.is_cancelled() => Err(e),
                    other => Ok::<_, trellis::Error>(other),
                }
            };
            let outcome = scope.run(call).await;
            conn.finish_serving(cid, outcome, actor.cancelled_by());
            Ok::<_, trellis::Error>(())
        });
        if spawned.is_err() {
            let mut state = self.lock();
            state.serving.remove(&cid);
            state.chans.remove(&cid);
            drop(state);
            let local = self.inner.local.clone();
            let _ = self.send(&Message::Error {
                cid: Some(cid),
                error: Box::new(runtime_report(
                    &local,
                    ErrorKind::ActorShuttingDown,
                    format!("actor {local} is shutting down"),
                )),
            });
        }
    }

    /// Sends the end of a call we served.
    fn finish_serving(
        &self,
        cid: u64,
        outcome: Result<Option<Result<Payload, CallFailure>>, trellis::Error>,
        actor_cancelled_by: Option<ActorId>,
    ) {
        let (serving, chan) = {
            let mut state = self.lock();
            (state.serving.remove(&cid), state.chans.remove(&cid))
        };
        if let Some(chan) = chan {
            chan.end(ChanEnd::Over, &self.inner.local);
        }
        let local = &self.inner.local;
        let overrun = serving.as_ref().and_then(|s| s.overrun.clone());
        let outcome = match overrun {
            Some(overrun) => Ok(Some(Err(CallFailure::Failed(trellis::Error::new(overrun))))),
            None => outcome,
        };
        let message = match outcome {
            Ok(Some(Ok(value))) => Message::Return { cid, value },
            Ok(Some(Err(failure))) => {
                let report = match failure {
                    CallFailure::BadArguments(text) => runtime_report(
                        local,
                        ErrorKind::BadArguments,
                        format!("bad arguments: {text}"),
                    ),
                    CallFailure::BadResult(text) => runtime_report(
                        local,
                        ErrorKind::Failed,
                        format!("the result does not encode: {text}"),
                    ),
                    CallFailure::Failed(error) => {
                        report(local, ErrorKind::Failed, &error, &self.functions())
                    }
                    CallFailure::Panicked(panic) => crate::panic::error_report(local, panic),
                };
                Message::Error {
                    cid: Some(cid),
                    error: Box::new(report),
                }
            }
            // Cancelled: at the caller's request, or because this actor was cancelled (by
            // whoever asked for that).
            Ok(None) | Err(_) => Message::CancelAck {
                cid,
                requested_by: serving
                    .and_then(|s| s.cancelled_by)
                    .or(actor_cancelled_by)
                    .unwrap_or_else(|| local.clone()),
            },
        };
        // The caller waits for the end of its call: if the protocol forbids the message
        // (a bug here), it still gets one, as an error.
        if let Err(ActorError::Protocol { error, .. }) = self.send(&message) {
            tracing::error!(cid, %error, "could not end a served call");
            let _ = self.send(&Message::Error {
                cid: Some(cid),
                error: Box::new(runtime_report(local, ErrorKind::Protocol, error)),
            });
        }
    }

    /// Buffers `message` and wakes the writer.
    pub(crate) fn send(&self, message: &Message) -> Result<(), ActorError> {
        let mut state = self.lock();
        self.send_locked(&mut state, message)
    }

    /// Buffers `message` without waking the writer: it goes out with the next message sent,
    /// or at the next [`flush`](Conn::flush).
    fn send_held(&self, message: &Message) -> Result<(), ActorError> {
        let mut state = self.lock();
        self.encode_locked(&mut state, message)
    }

    /// Sends what is buffered.
    fn flush(&self) {
        let mut state = self.lock();
        self.try_flush_locked(&mut state);
    }

    /// Encodes `message` and sends it at once if the socket takes it: requests, results and
    /// credit go out from the calling task, without a hop to the writer task (credit is on
    /// the critical path of a stream: the sender may be waiting for it). Stream items are
    /// left for the writer, which sends many in one write.
    fn send_locked(&self, state: &mut State, message: &Message) -> Result<(), ActorError> {
        self.encode_locked(state, message)?;
        if matches!(message, Message::Yield { .. }) {
            self.inner.wake_writer.notify_one();
        } else {
            self.try_flush_locked(state);
        }
        Ok(())
    }

    fn encode_locked(&self, state: &mut State, message: &Message) -> Result<(), ActorError> {
        if state.end.is_some() || state.closing {
            return Err(ActorError::ConnectionLost {
                actor: self.inner.peer.actor.clone(),
            });
        }
        state
            .session
            .send(message)
            .map_err(|e| ActorError::Protocol {
                actor: self.inner.peer.actor.clone(),
                error: format!("refusing to send: {e}"),
            })?;
        self.inner
            .codec
            .encode(message, &mut state.out)
            .map_err(|e| ActorError::Protocol {
                actor: self.inner.peer.actor.clone(),
                error: e.to_string(),
            })?;
        Ok(())
    }

    /// Says goodbye: the writer sends what is buffered, then closes its side.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        if self.send_locked(&mut state, &Message::Goodbye).is_ok() {
            state.closing = true;
        }
        drop(state);
        self.inner.wake_writer.notify_one();
    }

    /// Calls `function` in the peer and waits for its result. Cancelling the caller cancels
    /// the remote call; the caller then sees `Cancelled` once the callee acknowledged it (or
    /// after a bounded wait).
    pub(crate) async fn call(
        &self,
        function: &str,
        args: Payload,
    ) -> Result<Payload, trellis::Error> {
        let (tx, mut rx) = oneshot::channel();
        let cid = {
            let mut state = self.lock();
            let cid = self.start_locked(&mut state, function, CallKind::Run, args)?;
            state.calling.insert(cid, tx);
            cid
        };
        let message = match trellis::cancellable(&mut rx).await {
            Ok(Ok(message)) => message,
            Ok(Err(_)) => return Err(self.lost()),
            Err(Cancelled { .. }) => return self.cancel_call(cid, rx).await,
        };
        self.terminal_error(message)
    }

    /// Starts a stream or context call: sends `Start`, and the credit for the callee's items
    /// right behind it.
    pub(crate) fn open_call(
        &self,
        function: &str,
        kind: CallKind,
        args: Payload,
        options: StreamOptions,
    ) -> Result<Link, trellis::Error> {
        let chan = Chan::new();
        let cid = {
            let mut state = self.lock();
            let cid = self.start_locked(&mut state, function, kind, args)?;
            state.chans.insert(cid, chan.clone());
            cid
        };
        let link = Link {
            conn: self.clone(),
            cid,
            chan,
            kind,
            role: trellis_wire::Role::Caller,
        };
        link.grant(options)?;
        Ok(link)
    }

    /// Sends the `Start` of a new call of ours; returns its id.
    fn start_locked(
        &self,
        state: &mut State,
        function: &str,
        kind: CallKind,
        args: Payload,
    ) -> Result<u64, ActorError> {
        let cid = state.session.next_call_id();
        let start = Message::Start {
            cid,
            function: function.to_owned(),
            kind,
            args,
        };
        self.send_locked(state, &start)?;
        Ok(cid)
    }

    /// Forgets a call we made whose end we no longer wait for.
    pub(crate) fn forget_call(&self, cid: u64) {
        self.lock().chans.remove(&cid);
    }

    pub(crate) fn lost(&self) -> trellis::Error {
        ActorError::ConnectionLost {
            actor: self.inner.peer.actor.clone(),
        }
        .into()
    }

    async fn cancel_call(
        &self,
        cid: u64,
        rx: oneshot::Receiver<Message>,
    ) -> Result<Payload, trellis::Error> {
        let _ = self.send(&Message::Cancel {
            cid,
            requested_by: self.inner.local.clone(),
        });
        let waited = CancelScope::shielded()
            .run(trellis::move_on_after(CANCEL_ACK_WAIT, async {
                Ok::<_, trellis::Error>(trellis::cancellable(rx).await?.ok())
            }))
            .await;
        match waited {
            // It finished before the cancellation reached it: the call happened.
            Ok(Some(Some(Some(message @ Message::Return { .. })))) => self.terminal_error(message),
            Ok(Some(Some(Some(message @ Message::Error { .. })))) => self.terminal_error(message),
            _ => {
                self.lock().calling.remove(&cid);
                Err(Cancelled::new().into())
            }
        }
    }

    /// What a terminal message means for the caller: the value, or the error.
    pub(crate) fn terminal_error(&self, message: Message) -> Result<Payload, trellis::Error> {
        match message {
            Message::Return { value, .. } => Ok(value),
            Message::Error { error, .. } => {
                Err(RemoteActorError::into_error(*error, &self.functions()))
            }
            Message::CancelAck { requested_by, .. } => {
                if requested_by == self.inner.local {
                    Err(Cancelled::new().into())
                } else {
                    Err(ActorError::ContextCancelled {
                        actor: self.inner.peer.actor.clone(),
                        requested_by,
                    }
                    .into())
                }
            }
            other => unreachable!("not a terminal message: {}", other.name()),
        }
    }
}

fn kind_name(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Run => "run",
        CallKind::Stream => "stream",
        CallKind::Context => "context",
    }
}

fn io(context: &str, source: std::io::Error) -> ActorError {
    ActorError::Io {
        context: context.to_owned(),
        source,
    }
}
