//! The protocol engine of one connection, on one side, sans I/O: the handshake, the call
//! table, each call's state machine and both directions' flow control.
//!
//! A [`Session`] is driven from two ends. Bytes (or messages) from the peer go in through
//! [`Session::handle_bytes`] (or [`Session::handle`]); what they mean for the application comes
//! out as [`Event`]s from [`Session::poll_event`]. The application's actions (start a call,
//! accept one, send an item, grant credit as items are read, cancel, finish) are methods that
//! check the action against the rules and encode its message into the outgoing buffer
//! ([`Session::outgoing`]), which the driver writes to the socket. Every rule of
//! `docs/wire-protocol.md` lives here, so that tests and fuzzers exercise all of it without a
//! socket.
//!
//! A peer that breaks the rules of one call fails that call only: as the callee, the session
//! answers with a per-call `Error`; as the caller, it cancels the call and reports it
//! [`Event::Broken`]. Breaking the rules of the connection itself (its handshake, its call
//! ids, its framing) ends the connection, after a connection-level `Error` saying why.

mod call;

use std::collections::{HashMap, VecDeque};

use bytes::BytesMut;

use crate::{
    ActorId, CallKind, Codec, DecodeError, EncodeError, ErrorKind, ErrorReport, Hello, Message,
    PROTOCOL_VERSION, Payload, ProtocolError,
};
use call::{Call, Receiving, UNLIMITED, is_late_ok, is_terminal};

/// Which end of the connection this session is: the side that connected uses odd call ids,
/// the side that accepted even ones, so calls started by both sides never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Opened the connection.
    Connector,
    /// Accepted it.
    Acceptor,
}

impl Side {
    fn parity(self) -> u64 {
        match self {
            Side::Connector => 1,
            Side::Acceptor => 0,
        }
    }
}

/// This side's part in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This side started the call.
    Caller,
    /// The peer started the call; this side runs the function.
    Callee,
}

impl Role {
    fn other(self) -> Role {
        match self {
            Role::Caller => Role::Callee,
            Role::Callee => Role::Caller,
        }
    }
}

/// How a receiving end grants its sender credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Grants `capacity` items at first, and more as they are consumed (in batches of a
    /// quarter of it): the sender never has more than `capacity` items unconsumed. An item
    /// beyond the grant is an overrun. `capacity` is from 1 to 2³² − 2.
    Credit(u32),
    /// Grants without limit. With `Some(limit)`, more than `limit` items received and not yet
    /// consumed is an overrun.
    Unlimited(Option<u32>),
}

impl Window {
    /// After how many consumed items [`Session::consumed`] may usefully be called: a driver
    /// that counts reads locally and reports them in batches of this size loses nothing.
    pub fn report_every(&self) -> u32 {
        match *self {
            Window::Credit(capacity) => (capacity / 4).max(1),
            Window::Unlimited(Some(_)) => 1,
            Window::Unlimited(None) => u32::MAX,
        }
    }

    fn first_grant(&self) -> u32 {
        match *self {
            Window::Credit(capacity) => capacity.clamp(1, UNLIMITED - 1),
            Window::Unlimited(_) => UNLIMITED,
        }
    }
}

/// How the callee ended a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `Return`: the function's value.
    Returned(Payload),
    /// `Error`: the call failed.
    Failed(Box<ErrorReport>),
    /// `CancelAck`: the call was cancelled at `requested_by`'s request.
    Cancelled {
        /// Who asked for the cancellation.
        requested_by: ActorId,
    },
}

/// What the peer's messages mean for the application, in the order they arrived.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The peer starts a call: answer with [`Session::accept`] or [`Session::refuse`].
    Call {
        /// The call.
        cid: u64,
        /// The function's name.
        function: String,
        /// The call's kind.
        kind: CallKind,
        /// The arguments.
        args: Payload,
    },
    /// The callee of a context we opened reports its first value.
    Started {
        /// The call.
        cid: u64,
        /// The value.
        value: Payload,
    },
    /// A stream item, within the receiving window. Report it read with
    /// [`Session::consumed`].
    Item {
        /// The call.
        cid: u64,
        /// The item.
        value: Payload,
    },
    /// The peer sent `Stop`: on a context, or from a stream's callee, it sends no more items;
    /// from a one-way stream's caller, it takes no more ([`Session::send_item`] then fails
    /// with [`SendError::ReceiverStopped`]).
    Stopped {
        /// The call.
        cid: u64,
    },
    /// Our sending credit on the call went from none to some.
    Credit {
        /// The call.
        cid: u64,
    },
    /// The caller asks us to cancel a call we serve; end it with
    /// [`Outcome::Cancelled`] naming `requested_by`, or with its result if it finished first.
    CancelRequested {
        /// The call.
        cid: u64,
        /// On whose behalf.
        requested_by: ActorId,
    },
    /// A call we made is over.
    Ended {
        /// The call.
        cid: u64,
        /// How the callee ended it.
        outcome: Outcome,
    },
    /// Our receiving end of the call had more items than its window allows; further items
    /// are dropped. The call should fail (the session does not end it: the application
    /// chooses the error it reports).
    Overrun {
        /// The call.
        cid: u64,
        /// The window's capacity.
        capacity: u32,
    },
    /// The peer broke the rules of this call, which is over for us: as its callee we sent a
    /// per-call `Error` (stop running the function; its result is not wanted), as its caller
    /// we sent `Cancel` and drop what else comes for it. Other calls go on.
    Broken {
        /// The call.
        cid: u64,
        /// The rule broken.
        error: ProtocolError,
    },
    /// The peer said `Goodbye`: nothing more comes. Every call that was live is over: calls
    /// it made to us should be cancelled, and calls we made to it fail.
    Goodbye,
    /// The peer reported a connection-level error and will close.
    PeerError(Box<ErrorReport>),
}

/// Why the connection cannot go on. The session has queued a connection-level `Error` saying
/// so (when the connection still allowed one): write out what is outgoing, then close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// Bytes that are not a frame or not a message.
    #[error("undecodable frame: {0}")]
    Decode(#[from] DecodeError),
    /// A message that breaks the connection's rules (handshake, call ids, after `Goodbye`).
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The connection was closed already (by either side, or by an earlier error).
    #[error("the connection is closed")]
    Closed,
}

/// Why an action of ours cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No credit left: wait for [`Event::Credit`].
    #[error("no credit to send on call {cid}")]
    NoCredit {
        /// The call.
        cid: u64,
    },
    /// The caller of this one-way stream sent `Stop`: it takes no more items.
    #[error("the receiver of call {cid} stopped")]
    ReceiverStopped {
        /// The call.
        cid: u64,
    },
    /// The call is not live (it ended, or never existed).
    #[error("call {cid} is over")]
    CallOver {
        /// The call.
        cid: u64,
    },
    /// The rules do not allow this message now.
    #[error("refusing to send: {0}")]
    Protocol(#[from] ProtocolError),
    /// The message exceeds the maximum frame size; nothing changed.
    #[error(transparent)]
    TooLarge(#[from] EncodeError),
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
}

/// How many calls of each sort are live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Calls the peer made that we serve.
    pub serving: usize,
    /// Calls we made and still follow.
    pub calling: usize,
    /// Stream and context calls, both ways.
    pub streams: usize,
}

/// One connection's protocol engine, on one side.
///
/// ```
/// use bytes::BytesMut;
/// use trellis_wire::{ActorId, CallKind, Event, Hello, Outcome, Payload, PROTOCOL_VERSION, Session, Side};
///
/// let hello = |name: &str| Hello { version: PROTOCOL_VERSION, actor: ActorId::new(name, "0"), pid: 1 };
/// let mut parent = Session::new(Side::Connector, hello("parent"));
/// let mut child = Session::new(Side::Acceptor, hello("child"));
/// // Moves what one side wrote to the other.
/// let pass = |from: &mut Session, to: &mut Session| {
///     let mut bytes = from.outgoing().split();
///     to.handle_bytes(&mut bytes).unwrap();
/// };
/// let cid = parent.start("add", CallKind::Run, Payload::encode(&(1, 2)).unwrap()).unwrap();
/// pass(&mut parent, &mut child); // Hello and Start
/// pass(&mut child, &mut parent); // Hello
/// let Some(Event::Call { function, .. }) = child.poll_event() else { panic!() };
/// assert_eq!(function, "add");
/// // The child may not return before it acknowledges the call.
/// assert!(child.finish(cid, Outcome::Returned(Payload::encode(&3).unwrap())).is_err());
/// child.accept(cid).unwrap();
/// child.finish(cid, Outcome::Returned(Payload::encode(&3).unwrap())).unwrap();
/// pass(&mut child, &mut parent);
/// let Some(Event::Ended { outcome: Outcome::Returned(value), .. }) = parent.poll_event() else { panic!() };
/// assert_eq!(value.decode::<i64>().unwrap(), 3);
/// ```
#[derive(Debug)]
pub struct Session {
    side: Side,
    local: Hello,
    codec: Codec,
    peer: Option<Hello>,
    goodbye_sent: bool,
    /// The peer said `Goodbye` or reported a connection error: nothing more comes.
    peer_done: bool,
    /// We found the connection broken: nothing more is read or sent.
    failed: bool,
    calls: HashMap<u64, Call>,
    /// The next id for a call we start.
    next_cid: u64,
    /// The highest id of a call the peer started.
    peer_highest: Option<u64>,
    out: BytesMut,
    events: VecDeque<Event>,
}

impl Session {
    /// A session for a connection on `side`, introducing ourselves with `local`: our `Hello`
    /// is the first outgoing message.
    pub fn new(side: Side, local: Hello) -> Self {
        Session::with_codec(side, local, Codec::new())
    }

    /// [`new`](Session::new) with a codec of another maximum frame size.
    pub fn with_codec(side: Side, local: Hello, codec: Codec) -> Self {
        let mut session = Session {
            side,
            local,
            codec,
            peer: None,
            goodbye_sent: false,
            peer_done: false,
            failed: false,
            calls: HashMap::new(),
            next_cid: if side.parity() == 1 { 1 } else { 2 },
            peer_highest: None,
            out: BytesMut::new(),
            events: VecDeque::new(),
        };
        let hello = Message::Hello(session.local.clone());
        session
            .codec
            .encode(&hello, &mut session.out)
            .expect("a Hello fits any frame");
        session
    }

    /// Which end of the connection this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Our `Hello`.
    pub fn local(&self) -> &Hello {
        &self.local
    }

    /// The peer's `Hello`, once received.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// Whether nothing more will be exchanged: a `Goodbye` either way, a connection error
    /// either way.
    pub fn is_closed(&self) -> bool {
        self.failed || self.goodbye_sent || self.peer_done
    }

    /// Encoded messages waiting to be written. The driver writes from the front and advances
    /// past what the socket took.
    pub fn outgoing(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// The next event, in arrival order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// How many calls are live, both ways.
    pub fn live_calls(&self) -> usize {
        self.calls.len()
    }

    /// Live calls by sort.
    pub fn counts(&self) -> CallCounts {
        let mut counts = CallCounts::default();
        for call in self.calls.values().filter(|c| !c.detached) {
            match call.role {
                Role::Caller => counts.calling += 1,
                Role::Callee => counts.serving += 1,
            }
            if call.kind != CallKind::Run {
                counts.streams += 1;
            }
        }
        counts
    }

    /// Our role in a live call.
    pub fn role(&self, cid: u64) -> Option<Role> {
        self.calls.get(&cid).map(|c| c.role)
    }

    fn ours(&self, cid: u64) -> bool {
        cid % 2 == self.side.parity()
    }

    /// Whether `cid` names a call that existed and is over.
    fn ended(&self, cid: u64) -> bool {
        if self.calls.contains_key(&cid) {
            return false;
        }
        if self.ours(cid) {
            cid < self.next_cid
        } else {
            self.peer_highest.is_some_and(|h| cid <= h)
        }
    }

    // ---- what the peer sends ----

    /// Decodes and handles every whole frame in `buf`, leaving a partial one.
    ///
    /// # Errors
    ///
    /// The connection cannot go on (see [`ConnectionError`]); events produced before the
    /// error are still there to poll.
    pub fn handle_bytes(&mut self, buf: &mut BytesMut) -> Result<(), ConnectionError> {
        loop {
            if self.failed {
                return if buf.is_empty() {
                    Ok(())
                } else {
                    Err(ConnectionError::Closed)
                };
            }
            match self.codec.decode(buf) {
                Ok(Some(message)) => self.handle(message)?,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.fail_connection(format!("undecodable frame: {e}"));
                    return Err(e.into());
                }
            }
        }
    }

    /// Handles one message from the peer.
    ///
    /// # Errors
    ///
    /// The connection cannot go on (see [`ConnectionError`]).
    pub fn handle(&mut self, msg: Message) -> Result<(), ConnectionError> {
        if self.failed {
            return Err(ConnectionError::Closed);
        }
        match self.receive(msg) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fail_connection(format!("protocol error: {e}"));
                Err(e.into())
            }
        }
    }

    fn receive(&mut self, msg: Message) -> Result<(), ProtocolError> {
        if self.peer_done {
            return Err(ProtocolError::AfterGoodbye { got: msg.name() });
        }
        match msg {
            Message::Hello(hello) => {
                if self.peer.is_some() {
                    return Err(ProtocolError::DuplicateHello);
                }
                if hello.version.major != PROTOCOL_VERSION.major {
                    return Err(ProtocolError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs: hello.version,
                    });
                }
                self.peer = Some(hello);
                return Ok(());
            }
            _ if self.peer.is_none() => return Err(ProtocolError::NoHello { got: msg.name() }),
            Message::Goodbye => {
                self.peer_done = true;
                self.calls.clear();
                self.events.push_back(Event::Goodbye);
                return Ok(());
            }
            Message::Error { cid: None, error } => {
                self.peer_done = true;
                self.calls.clear();
                self.events.push_back(Event::PeerError(error));
                return Ok(());
            }
            Message::Start {
                cid,
                function,
                kind,
                args,
            } => {
                let fresh = !self.ours(cid) && self.peer_highest.is_none_or(|h| cid > h);
                if !fresh {
                    return Err(ProtocolError::BadCallId { cid });
                }
                self.peer_highest = Some(cid);
                self.calls.insert(cid, Call::new(kind, Role::Callee));
                self.events.push_back(Event::Call {
                    cid,
                    function,
                    kind,
                    args,
                });
                return Ok(());
            }
            _ => {}
        }
        let cid = msg.cid().expect("every other message has a call id");
        let Some(call) = self.calls.get_mut(&cid) else {
            // The peer's messages as the caller may cross the call's end; the callee's may not,
            // since the callee ends the call.
            if !self.ours(cid) && self.ended(cid) && is_late_ok(&msg) {
                return Ok(());
            }
            return Err(ProtocolError::UnknownCall {
                cid,
                got: msg.name(),
            });
        };
        if call.detached {
            if is_terminal(&msg) {
                self.calls.remove(&cid);
            }
            return Ok(());
        }
        let from = call.role.other();
        let ends = match call.apply(cid, &msg, from) {
            Ok(ends) => ends,
            Err(error) => {
                self.break_call(cid, error, is_terminal(&msg));
                return Ok(());
            }
        };
        let event = match msg {
            Message::Yield { value, .. } => match call.receiving.as_mut() {
                _ if call.overran => None,
                Some(receiving) if !receiving.overruns() => {
                    receiving.received += 1;
                    (!receiving.closed).then_some(Event::Item { cid, value })
                }
                // Beyond the window, or before any grant.
                receiving => {
                    let capacity = receiving.map_or(0, |r| r.capacity());
                    call.overran = true;
                    Some(Event::Overrun { cid, capacity })
                }
            },
            Message::Stop { .. } => Some(Event::Stopped { cid }),
            Message::Credit { count, .. } => {
                let was_dry = call.send_credit == 0;
                call.add_send_credit(count);
                was_dry.then_some(Event::Credit { cid })
            }
            Message::Started { value, .. } => Some(Event::Started { cid, value }),
            Message::Cancel { requested_by, .. } => {
                Some(Event::CancelRequested { cid, requested_by })
            }
            Message::Return { value, .. } => Some(Event::Ended {
                cid,
                outcome: Outcome::Returned(value),
            }),
            Message::Error { error, .. } => Some(Event::Ended {
                cid,
                outcome: Outcome::Failed(error),
            }),
            Message::CancelAck { requested_by, .. } => Some(Event::Ended {
                cid,
                outcome: Outcome::Cancelled { requested_by },
            }),
            _ => None,
        };
        if ends {
            self.calls.remove(&cid);
        }
        self.events.extend(event);
        Ok(())
    }

    /// The peer broke the rules of call `cid`: end it for us, tell the peer, go on. A callee's
    /// out-of-place terminal message (`ended`) ends the call for it: nothing is awaited.
    fn break_call(&mut self, cid: u64, error: ProtocolError, ended: bool) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        match call.role {
            Role::Callee => {
                self.calls.remove(&cid);
                let report = self.report(format!("call {cid} failed: {error}"));
                self.encode(&Message::Error {
                    cid: Some(cid),
                    error: Box::new(report),
                });
            }
            Role::Caller if ended => {
                self.calls.remove(&cid);
            }
            Role::Caller => {
                call.detached = true;
                if !std::mem::replace(&mut call.cancel_sent, true) {
                    let requested_by = self.local.actor.clone();
                    self.encode(&Message::Cancel { cid, requested_by });
                }
            }
        }
        self.events.push_back(Event::Broken { cid, error });
    }

    /// A report of a protocol failure found here.
    fn report(&self, message: String) -> ErrorReport {
        ErrorReport {
            actor: self.local.actor.clone(),
            kind: ErrorKind::Protocol,
            type_name: "trellis_wire::ProtocolError".into(),
            message,
            chain: Vec::new(),
            backtrace: None,
            value: None,
            group: Vec::new(),
        }
    }

    /// The connection is broken: say why (if we still may) and stop.
    fn fail_connection(&mut self, message: String) {
        if self.failed {
            return;
        }
        if !self.goodbye_sent {
            let report = self.report(message);
            self.encode(&Message::Error {
                cid: None,
                error: Box::new(report),
            });
        }
        self.failed = true;
        self.calls.clear();
    }

    /// Encodes a message the session itself sends (small, always within a frame).
    fn encode(&mut self, msg: &Message) {
        if self.codec.encode(msg, &mut self.out).is_err() {
            // Only an error report could be this large: send it without its details.
            if let Message::Error { cid, error } = msg {
                let mut short = self.report(error.message.chars().take(1024).collect());
                short.kind = error.kind.clone();
                let _ = self.codec.encode(
                    &Message::Error {
                        cid: *cid,
                        error: Box::new(short),
                    },
                    &mut self.out,
                );
            }
        }
    }

    // ---- what we send ----

    fn check_open(&self) -> Result<(), SendError> {
        if self.is_closed() {
            Err(SendError::Closed)
        } else {
            Ok(())
        }
    }

    /// Checks `msg` for call `cid` against the rules, encodes it, and applies it.
    fn send_on_call(&mut self, cid: u64, msg: &Message) -> Result<(), SendError> {
        self.check_open()?;
        let call = self
            .calls
            .get_mut(&cid)
            .filter(|c| !c.detached)
            .ok_or(SendError::CallOver { cid })?;
        let mut trial = *call;
        let ends = trial.apply(cid, msg, call.role)?;
        self.codec.encode(msg, &mut self.out)?;
        *call = trial;
        if ends {
            self.calls.remove(&cid);
        }
        Ok(())
    }

    /// Starts a call of ours; returns its id.
    ///
    /// # Errors
    ///
    /// The connection is closed; the `Start` exceeds the maximum frame size.
    pub fn start(
        &mut self,
        function: &str,
        kind: CallKind,
        args: Payload,
    ) -> Result<u64, SendError> {
        self.check_open()?;
        let cid = self.next_cid;
        self.codec.encode(
            &Message::Start {
                cid,
                function: function.to_owned(),
                kind,
                args,
            },
            &mut self.out,
        )?;
        self.next_cid += 2;
        self.calls.insert(cid, Call::new(kind, Role::Caller));
        Ok(cid)
    }

    /// Opens our receiving end of a call: grants the first credit as `window` says. The
    /// caller of a stream or context opens it right after `start`; the callee of a context
    /// right after [`started`](Session::started).
    ///
    /// # Errors
    ///
    /// The call is over; this side does not receive items on it, or not yet; it was opened
    /// already.
    pub fn open_receive(&mut self, cid: u64, window: Window) -> Result<(), SendError> {
        let opened = self.calls.get(&cid).is_some_and(|c| c.receiving.is_some());
        if opened {
            return Err(SendError::Protocol(ProtocolError::OutOfOrder {
                cid,
                got: "Credit",
                call: "the receiving end".into(),
                state: "opened already",
            }));
        }
        self.send_on_call(
            cid,
            &Message::Credit {
                cid,
                count: window.first_grant(),
            },
        )?;
        if let Some(call) = self.calls.get_mut(&cid) {
            call.receiving = Some(Receiving::new(window));
        }
        Ok(())
    }

    /// Our receiving end consumed `count` more items: grants the sender more credit when the
    /// window says so. Does nothing for a call that is over.
    pub fn consumed(&mut self, cid: u64, count: u32) {
        let Some(receiving) = self.calls.get_mut(&cid).and_then(|c| c.receiving.as_mut()) else {
            return;
        };
        receiving.consumed = (receiving.consumed + u64::from(count)).min(receiving.received);
        let Window::Credit(capacity) = receiving.window else {
            return;
        };
        if receiving.closed {
            return;
        }
        receiving.ungranted += u64::from(count);
        if receiving.ungranted < u64::from((capacity / 4).max(1)) {
            return;
        }
        let grant = u32::try_from(receiving.ungranted).unwrap_or(UNLIMITED - 1);
        receiving.ungranted = 0;
        receiving.granted = receiving.granted.saturating_add(u64::from(grant));
        if !self.is_closed() {
            let _ = self.send_on_call(cid, &Message::Credit { cid, count: grant });
        }
    }

    /// Closes our receiving end: what still comes is dropped, and the sender gets unlimited
    /// credit so that it never waits on us again (unless the end overran: its call is
    /// failing).
    pub fn close_receive(&mut self, cid: u64) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let overran = call.overran;
        let Some(receiving) = call.receiving.as_mut() else {
            return;
        };
        if std::mem::replace(&mut receiving.closed, true) {
            return;
        }
        // An end that overran is failing its call: no more credit for it.
        if matches!(receiving.window, Window::Credit(_)) && !overran {
            receiving.granted = u64::MAX;
            let _ = self.send_on_call(
                cid,
                &Message::Credit {
                    cid,
                    count: UNLIMITED,
                },
            );
        }
    }

    /// Accepts a call the peer started: `StartAck`.
    ///
    /// # Errors
    ///
    /// The call is not one we were asked to serve and have not answered.
    pub fn accept(&mut self, cid: u64) -> Result<(), SendError> {
        self.send_on_call(cid, &Message::StartAck { cid })
    }

    /// Refuses a call the peer started, or fails one we serve: a per-call `Error`, which ends
    /// it.
    ///
    /// # Errors
    ///
    /// The call is over; the report exceeds the maximum frame size.
    pub fn refuse(&mut self, cid: u64, report: ErrorReport) -> Result<(), SendError> {
        self.finish(cid, Outcome::Failed(Box::new(report)))
    }

    /// Sends a context's first value: `Started`.
    ///
    /// # Errors
    ///
    /// Not a context we serve, or it started already.
    pub fn started(&mut self, cid: u64, value: Payload) -> Result<(), SendError> {
        self.send_on_call(cid, &Message::Started { cid, value })
    }

    /// How many items we may send on the call now (`u64::MAX`: no limit).
    ///
    /// # Errors
    ///
    /// The call is over; we do not send items on it (or not yet, or no more);
    /// [`SendError::ReceiverStopped`].
    pub fn send_credit(&self, cid: u64) -> Result<u64, SendError> {
        self.check_open()?;
        let call = self
            .calls
            .get(&cid)
            .filter(|c| !c.detached)
            .ok_or(SendError::CallOver { cid })?;
        if call.kind == CallKind::Stream && call.role == Role::Callee && call.caller_stopped {
            return Err(SendError::ReceiverStopped { cid });
        }
        if !call.may_send_items() {
            return Err(call.out_of_order(cid, "Yield").into());
        }
        Ok(call.send_credit)
    }

    /// Sends a stream item, taking one credit.
    ///
    /// # Errors
    ///
    /// [`SendError::NoCredit`] (wait for [`Event::Credit`]); as
    /// [`send_credit`](Session::send_credit); the item exceeds the maximum frame size.
    pub fn send_item(&mut self, cid: u64, value: Payload) -> Result<(), SendError> {
        if self.send_credit(cid)? == 0 {
            return Err(SendError::NoCredit { cid });
        }
        self.codec
            .encode(&Message::Yield { cid, value }, &mut self.out)?;
        let call = self.calls.get_mut(&cid).expect("checked live");
        if call.send_credit != u64::MAX {
            call.send_credit -= 1;
        }
        Ok(())
    }

    /// Sends `Stop`: on a context, we send no more items; as the caller of a one-way stream,
    /// we take no more.
    ///
    /// # Errors
    ///
    /// The call is over, or `Stop` is not allowed (sent already, a run call, a context that
    /// has not started).
    pub fn stop(&mut self, cid: u64) -> Result<(), SendError> {
        self.send_on_call(cid, &Message::Stop { cid })
    }

    /// Cancels a call we made, on `requested_by`'s behalf. Returns whether `Cancel` was sent
    /// now (not before, and the call not over).
    pub fn cancel(&mut self, cid: u64, requested_by: ActorId) -> bool {
        let live = self
            .calls
            .get(&cid)
            .is_some_and(|c| c.role == Role::Caller && !c.cancel_sent);
        live && self
            .send_on_call(cid, &Message::Cancel { cid, requested_by })
            .is_ok()
    }

    /// Ends a call we serve: `Return`, `Error` or `CancelAck`.
    ///
    /// # Errors
    ///
    /// The call is over (the peer broke it, or said goodbye); the outcome is not allowed yet
    /// (a `Return` before `StartAck`); the message exceeds the maximum frame size (the call
    /// stays live: end it otherwise).
    pub fn finish(&mut self, cid: u64, outcome: Outcome) -> Result<(), SendError> {
        let msg = match outcome {
            Outcome::Returned(value) => Message::Return { cid, value },
            Outcome::Failed(error) => Message::Error {
                cid: Some(cid),
                error,
            },
            Outcome::Cancelled { requested_by } => Message::CancelAck { cid, requested_by },
        };
        self.send_on_call(cid, &msg)
    }

    /// Stops following a call we made (we gave up waiting for its end): no more events for
    /// it; what the callee still sends for it is dropped.
    pub fn forget(&mut self, cid: u64) {
        if let Some(call) = self.calls.get_mut(&cid)
            && call.role == Role::Caller
        {
            call.detached = true;
        }
    }

    /// Says `Goodbye`: nothing more is sent. Calls still live are over.
    pub fn close(&mut self) {
        if self.is_closed() {
            return;
        }
        self.encode(&Message::Goodbye);
        self.goodbye_sent = true;
        self.calls.clear();
    }

    /// Reports a connection-level failure of ours to the peer (a connection-level `Error`)
    /// and stops.
    pub fn fail(&mut self, message: impl Into<String>) {
        self.fail_connection(message.into());
    }
}
