//! The connection handle: the protocol engine under a lock, the socket's sending half, and
//! the local ends of the live calls. Callers act on the engine through it; the driver
//! (`driver.rs`) feeds it what arrives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, oneshot};
use trellis::sync::Event;
use trellis::{CancelScope, CancelSource, Cancelled};
use trellis_wire::{
    ActorId, CallCounts, CallKind, CidHash, Codec, ErrorKind, Identity, Keyring, Outcome, Payload,
    Peer, SendError, Session, Side, StreamStats, Window,
};

use super::chan::{CallEnd, Chan};
use crate::actor_error::ActorError;
use crate::cancel_reason;
use crate::error::{ErrorTypes, RemoteActorError, StreamOverrun};
use crate::limits::HANDSHAKE_BYTES;
use crate::transport::{Reader, Writer};

/// How long a caller that was cancelled waits for the callee to acknowledge the cancellation
/// before giving up on the call.
pub(crate) const CANCEL_ACK_WAIT: Duration = Duration::from_secs(2);

/// How the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer said goodbye, or we did.
    Goodbye,
    /// It broke: the peer vanished, or sent what it may not.
    Lost(String),
}

/// When what an action encoded goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Now, from the acting task, if the socket takes it (requests, results, credit: the
    /// critical path of a call).
    Now,
    /// By the writer task, which sends many stream items in one write.
    Writer,
}

/// What answers the peer's calls on a connection: the actor runtime.
pub(crate) trait Service: Send + Sync + 'static {
    /// The peer starts `function`: answer with [`Conn::refuse`], [`Conn::answer`] or
    /// [`Conn::serve_call`].
    fn call(&self, conn: &Conn, call: Incoming);

    /// The error types failures are sent and rebuilt with.
    fn error_types(&self) -> &ErrorTypes;

    /// Who cancelled this actor, if someone did, and why: its served calls' `CancelAck`s
    /// name them and repeat the reason.
    fn cancelled_by(&self) -> Option<(ActorId, Box<trellis_wire::CancelReason>)>;
}

/// A call the peer starts, for the [`Service`] to answer.
pub(crate) struct Incoming {
    pub(crate) cid: u64,
    pub(crate) function: String,
    pub(crate) kind: CallKind,
    pub(crate) args: Payload,
    /// The caller's trace context, when its `Start` carried one.
    pub(crate) trace: Option<Box<trellis_wire::TraceContext>>,
}

/// The local state of a call we serve.
pub(crate) struct Served {
    pub(crate) scope: CancelScope,
    pub(crate) cancelled_by: Option<ActorId>,
    /// Why the caller cancelled it, to repeat in the `CancelAck`.
    pub(crate) reason: Option<Box<trellis_wire::CancelReason>>,
    /// The call's receiving end overran: it fails with this.
    pub(crate) overrun: Option<StreamOverrun>,
}

/// A connection to one peer actor; cheap to clone.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) local: ActorId,
    pub(super) peer: Peer,
    pub(super) state: Mutex<State>,
    /// The session's codec, for senders that encode items outside its lock.
    pub(super) codec: Codec,
    pub(super) wake_writer: Notify,
    /// Set once the connection ended, both ways.
    pub(super) ended: Event,
    /// Run when the connection ends, before `ended` is set.
    pub(super) on_end: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// What serves the peer's calls, once the connection runs.
    pub(super) service: OnceLock<Arc<dyn Service>>,
}

pub(super) struct State {
    pub(super) session: Session,
    /// The socket's sending half, while the connection runs.
    pub(super) writer: Option<Arc<Writer>>,
    /// A write failed: the writer task ends the connection.
    pub(super) write_error: Option<std::io::Error>,
    /// The local ends of live calls, both ways.
    pub(super) calls: HashMap<u64, Local, CidHash>,
    pub(super) end: Option<End>,
    /// The writer task was woken and has not yet looked at the outgoing buffer: it will send
    /// what is added meanwhile, without another wake-up for each stream item.
    pub(super) writer_woken: bool,
    /// Stream senders waiting for the outgoing buffer to drain below
    /// [`OUT_LOW_WATER`](super::outgoing::OUT_LOW_WATER).
    pub(super) drained: Vec<Waker>,
    /// Calls whose senders encoded items the session has not seen yet (see
    /// [`Sending`](super::chan::Sending)): [`Conn::lock`] hands them over first.
    pub(super) sending: Vec<(u64, Arc<Chan>)>,
}

/// The local end of one live call.
#[derive(Default)]
pub(super) struct Local {
    /// A run call we made: where its end goes.
    pub(super) waiter: Option<oneshot::Sender<CallEnd>>,
    /// A stream or context call, either way: its buffer.
    pub(super) chan: Option<Arc<Chan>>,
    /// A call we serve.
    pub(super) served: Option<Served>,
}

impl Conn {
    /// Runs the handshake over a fresh stream (`Hello`s both ways, then `Auth`s: each side
    /// proves what `keyring` holds) and returns the connection, ready to [`run`](Conn::run),
    /// with the bytes read past the handshake. A peer that breaks the handshake, or does not
    /// prove a credential we accept, gets a connection-level `Error` saying so.
    pub(crate) async fn handshake(
        side: Side,
        local: Identity,
        keyring: Keyring,
        reader: &mut Reader,
        writer: &Writer,
    ) -> Result<(Conn, BytesMut), trellis::Error> {
        let mut session = Session::new(side, local.clone(), keyring);
        let mut buf = BytesMut::with_capacity(4096);
        let refused = |error: String| ActorError::Protocol {
            actor: ActorId::new("", ""),
            error,
        };
        while session.peer().is_none() {
            let sent = writer.write_all(session.outgoing()).await;
            session.outgoing().clear();
            sent.map_err(|e| io("sending the handshake", e))?;
            let n = trellis::cancellable(reader.read_buf(&mut buf))
                .await?
                .map_err(|e| io("reading the handshake", e))?;
            if n == 0 {
                return Err(
                    refused("the peer closed the connection during the handshake".into()).into(),
                );
            }
            if buf.len() > HANDSHAKE_BYTES {
                // Nobody we do not know yet makes us hold a large frame.
                return Err(refused(format!(
                    "the peer sent more than {HANDSHAKE_BYTES} bytes in its handshake"
                ))
                .into());
            }
            let handled = session.handle_bytes(&mut buf);
            if let Some(trellis_wire::Event::PeerError(report)) = session.poll_event() {
                // The peer refused us.
                return Err(match report.kind {
                    ErrorKind::Unauthorized => {
                        ActorError::NotAuthorized("the peer refused the connection".into())
                    }
                    _ => refused(format!(
                        "the peer refused the handshake: {}",
                        report.message
                    )),
                }
                .into());
            }
            if let Err(e) = handled {
                // Best effort: tell the peer why before closing.
                let _ = trellis::move_on_after(Duration::from_millis(100), async {
                    Ok::<_, Cancelled>(writer.write_all(session.outgoing()).await)
                })
                .await;
                return Err(match e {
                    trellis_wire::ConnectionError::Protocol(
                        trellis_wire::ProtocolError::Unauthorized,
                    ) => ActorError::NotAuthorized("refused a peer".into()),
                    e => refused(format!("handshake failed: {e}")),
                }
                .into());
            }
        }
        // The acceptor's answering Auth.
        let sent = writer.write_all(session.outgoing()).await;
        session.outgoing().clear();
        sent.map_err(|e| io("sending the handshake", e))?;
        let peer = session
            .peer()
            .cloned()
            .expect("the loop ends with the handshake done");
        let codec = session.codec();
        let conn = Conn {
            inner: Arc::new(Inner {
                local: local.actor,
                peer,
                state: Mutex::new(State {
                    session,
                    writer: None,
                    write_error: None,
                    calls: HashMap::default(),
                    end: None,
                    writer_woken: false,
                    drained: Vec::new(),
                    sending: Vec::new(),
                }),
                codec,
                wake_writer: Notify::new(),
                ended: Event::new(),
                on_end: Mutex::new(None),
                service: OnceLock::new(),
            }),
        };
        Ok((conn, buf))
    }

    /// Refuses a connection before its handshake: our `Hello`, then a connection-level
    /// `Error` of kind `LimitExceeded` saying why (naming nobody), best effort and briefly.
    pub(crate) async fn refuse_connection(local: Identity, writer: &Writer, why: &str) {
        let mut session = Session::new(Side::Acceptor, local, Keyring::open());
        session.fail_with(ErrorKind::LimitExceeded, why);
        let _ = trellis::move_on_after(Duration::from_millis(100), async {
            Ok::<_, Cancelled>(writer.write_all(session.outgoing()).await)
        })
        .await;
    }

    /// The connection's state, with every stream item encoded so far handed to the session:
    /// whatever the holder sends comes after the items its task sent before.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.sending.is_empty() {
            state.hand_over_sending();
        }
        state
    }

    /// Runs `f` with the error types failures are sent and rebuilt with (none registered
    /// before the connection runs).
    pub(crate) fn with_error_types<R>(&self, f: impl FnOnce(&ErrorTypes) -> R) -> R {
        match self.inner.service.get() {
            Some(service) => f(service.error_types()),
            None => f(&ErrorTypes::default()),
        }
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

    /// Who the peer is and what it proved.
    pub(crate) fn peer(&self) -> &Peer {
        &self.inner.peer
    }

    /// This side's actor.
    pub(crate) fn local(&self) -> &ActorId {
        &self.inner.local
    }

    /// Calls served, calls made and waited on, and the traffic of each open stream, right
    /// now, in one look. Items the local end read but has not reported to the engine yet (it
    /// reports in batches) are not counted unread.
    pub(crate) fn load(&self) -> (CallCounts, Vec<StreamStats>) {
        let state = self.lock();
        let mut stats = state.session.stream_stats();
        for stream in &mut stats {
            if let Some(chan) = state.calls.get(&stream.cid).and_then(|l| l.chan.as_ref()) {
                let read = u64::from(chan.taken().unreported);
                stream.unread = stream.unread.saturating_sub(read);
            }
        }
        (state.session.counts(), stats)
    }

    /// How the connection ended, once it has.
    pub(crate) fn end(&self) -> Option<End> {
        self.lock().end.clone()
    }

    /// Waits until the connection has ended.
    pub(crate) async fn ended(&self) -> Result<End, Cancelled> {
        let what = || {
            format!(
                "the end of the connection with actor {}",
                self.inner.peer.actor
            )
        };
        trellis::dump::waiting_on(|| what().into(), self.inner.ended.wait()).await?;
        Ok(self.end().expect("set before the event"))
    }

    /// Runs `f` on the engine, then sends what it encoded as `flush` says.
    pub(crate) fn act<R>(&self, flush: Flush, f: impl FnOnce(&mut Session) -> R) -> R {
        let mut state = self.lock();
        let result = f(&mut state.session);
        self.flush_locked(&mut state, flush);
        result
    }

    /// Says goodbye: the writer sends what is buffered, then closes its side.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.session.close();
        self.flush_locked(&mut state, Flush::Now);
        drop(state);
        self.inner.wake_writer.notify_one();
    }

    /// The error for an action the engine refused.
    pub(crate) fn send_error(&self, error: SendError) -> trellis::Error {
        match error {
            SendError::Closed => self.lost(),
            SendError::ReceiverStopped { .. } => ActorError::ReceiverStopped.into(),
            SendError::TooLarge(e) => ActorError::TooLarge(e).into(),
            SendError::CallOver { .. } | SendError::NoCredit { .. } => {
                ActorError::StreamClosed.into()
            }
            other => ActorError::Protocol {
                actor: self.inner.peer.actor.clone(),
                error: other.to_string(),
            }
            .into(),
        }
    }

    pub(crate) fn lost(&self) -> trellis::Error {
        ActorError::ConnectionLost {
            actor: self.inner.peer.actor.clone(),
        }
        .into()
    }

    /// Starts a call of ours with its local end in `local` and, for a stream or context, its
    /// receiving end opened with `window` in the same step (the callee may answer at once);
    /// returns its id.
    fn start(
        &self,
        function: &str,
        kind: CallKind,
        args: Payload,
        local: Local,
        window: Option<Window>,
    ) -> Result<u64, trellis::Error> {
        let trace = crate::trace::current();
        let mut state = self.lock();
        if state.end.is_some() {
            return Err(self.lost());
        }
        let cid = state
            .session
            .start_traced(function, kind, args, trace)
            .map_err(|e| self.send_error(e))?;
        if let Some(window) = window {
            state
                .session
                .open_receive(cid, window)
                .expect("a new stream or context call opens its receiving end");
        }
        state.calls.insert(cid, local);
        self.flush_locked(&mut state, Flush::Now);
        Ok(cid)
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
        let local = Local {
            waiter: Some(tx),
            ..Local::default()
        };
        let cid = self.start(function, CallKind::Run, args, local, None)?;
        let mut pending = Abandon {
            conn: self,
            cid: Some(cid),
        };
        let what = || trellis::dump::Waits {
            what: format!("call `{function}` in actor {}", self.inner.peer.actor).into(),
            key: Some(call_key(&self.inner.local, cid)),
        };
        let end = match trellis::dump::waiting_for(what, trellis::cancellable(&mut rx)).await {
            Ok(Ok(end)) => end,
            Ok(Err(_)) => {
                pending.cid = None;
                return Err(self.lost());
            }
            Err(cancelled) => {
                pending.cid = None;
                return self.cancel_call(cid, rx, cancelled).await;
            }
        };
        pending.cid = None;
        self.call_result(end)
    }

    /// The caller dropped the future of call `cid` before its end (a `select!`, an aborted
    /// task, a web framework dropping a request's handler): the callee is asked to cancel it,
    /// and whatever it answers is dropped.
    fn abandon(&self, cid: u64) {
        let local = self.inner.local.clone();
        let reason = cancel_reason::here(
            CancelSource::Explicit,
            "the caller stopped waiting for the call",
            &local,
        );
        self.act(Flush::Now, |s| s.cancel(cid, local, Some(reason)));
        self.forget_call(cid);
    }

    /// The caller of `cid` was cancelled: so is the call, for the same reason.
    async fn cancel_call(
        &self,
        cid: u64,
        rx: oneshot::Receiver<CallEnd>,
        cancelled: Cancelled,
    ) -> Result<Payload, trellis::Error> {
        let local = self.inner.local.clone();
        let reason = cancel_reason::cancelled_to_wire(&cancelled, &local);
        self.act(Flush::Now, |s| s.cancel(cid, local, Some(reason)));
        let waited = CancelScope::shielded()
            .run(trellis::move_on_after(CANCEL_ACK_WAIT, async {
                Ok::<_, trellis::Error>(trellis::cancellable(rx).await?.ok())
            }))
            .await;
        match waited {
            // It finished before the cancellation reached it: the call happened.
            Ok(Some(Some(Some(
                end @ CallEnd::Ended(Outcome::Returned(_) | Outcome::Failed(_)),
            )))) => self.call_result(end),
            _ => {
                self.forget_call(cid);
                Err(cancelled.into())
            }
        }
    }

    /// Starts a stream or context call, its local end a fresh buffer receiving as `window`
    /// says.
    pub(crate) fn open_call(
        &self,
        function: &str,
        kind: CallKind,
        args: Payload,
        window: Window,
    ) -> Result<(u64, Arc<Chan>), trellis::Error> {
        let chan = Chan::new();
        chan.taken().report_every = window.report_every();
        let local = Local {
            chan: Some(chan.clone()),
            ..Local::default()
        };
        let cid = self.start(function, kind, args, local, Some(window))?;
        Ok((cid, chan))
    }

    /// Starts a run call of `function` with `args` and does not follow it: whatever the
    /// callee answers is dropped.
    pub(crate) fn tell(&self, function: &str, args: Payload) -> Result<(), trellis::Error> {
        let cid = self.start(function, CallKind::Run, args, Local::default(), None)?;
        self.forget_call(cid);
        Ok(())
    }

    /// Forgets a call we made whose end we no longer wait for.
    pub(crate) fn forget_call(&self, cid: u64) {
        let mut state = self.lock();
        state.calls.remove(&cid);
        state.session.forget(cid);
        if state.session.is_closed() && state.end.is_none() {
            // The peer left too many cancelled calls unanswered: the engine failed the
            // connection (its error goes out first).
            self.flush_locked(&mut state, Flush::Now);
            drop(state);
            self.finish(End::Lost(
                "the peer left too many cancelled calls unanswered".into(),
            ));
        }
    }

    /// What a call's end means for its caller: the value, or the error.
    pub(crate) fn call_result(&self, end: CallEnd) -> Result<Payload, trellis::Error> {
        match end {
            CallEnd::Ended(Outcome::Returned(value)) => Ok(value),
            CallEnd::Ended(Outcome::Failed(report)) => {
                Err(self.with_error_types(|types| RemoteActorError::into_error(*report, types)))
            }
            CallEnd::Ended(Outcome::Cancelled {
                requested_by,
                reason,
            }) => {
                if requested_by == self.inner.local {
                    let reason = cancel_reason::from_wire(reason.as_deref(), &requested_by);
                    Err(Cancelled::with_reason(Arc::new(reason)).into())
                } else {
                    Err(ActorError::context_cancelled(
                        self.inner.peer.actor.clone(),
                        requested_by,
                        reason.as_deref(),
                    )
                    .into())
                }
            }
            CallEnd::Broken(error) => Err(ActorError::Protocol {
                actor: self.inner.peer.actor.clone(),
                error: error.to_string(),
            }
            .into()),
            CallEnd::Lost => Err(self.lost()),
            CallEnd::Over => Err(ActorError::StreamClosed.into()),
        }
    }
}

/// Cancels a call whose caller went away without waiting for its end.
struct Abandon<'a> {
    conn: &'a Conn,
    cid: Option<u64>,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(cid) = self.cid.take() {
            self.conn.abandon(cid);
        }
    }
}

/// The key of call `cid` made by `caller` in a dump's wait-for graph: what the caller's task
/// waits for, and what the callee's serving task serves.
pub(crate) fn call_key(caller: &ActorId, cid: u64) -> String {
    format!("call:{}:{cid}", caller.uid)
}

pub(super) fn io(context: &str, source: std::io::Error) -> ActorError {
    ActorError::Io {
        context: context.to_owned(),
        source,
    }
}
