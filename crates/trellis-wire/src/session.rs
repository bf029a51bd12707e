//! The rules of a connection: the handshake, call ids, and one state machine per call. A
//! [`Session`] checks every message sent and received against them, so that a misbehaving
//! peer is caught at the first wrong message with a typed [`ProtocolError`].

use std::collections::HashMap;

use crate::{CallKind, Hello, Message, PROTOCOL_VERSION, ProtocolError};

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

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `Start` sent; no `StartAck` yet.
    Starting,
    /// `StartAck` sent.
    Running,
    /// Contexts: `Started` sent; the two-way stream may flow.
    Started,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    kind: CallKind,
    role: Role,
    phase: Phase,
    /// The caller sent `Stop` (it sends no more items, or for one-way streams: it takes no
    /// more).
    caller_stopped: bool,
    /// The callee sent `Stop`.
    callee_stopped: bool,
    cancel_sent: bool,
}

impl Call {
    fn describe(&self) -> String {
        let kind = match self.kind {
            CallKind::Run => "run",
            CallKind::Stream => "stream",
            CallKind::Context => "context",
        };
        let role = match self.role {
            Role::Caller => "we call",
            Role::Callee => "we serve",
        };
        format!("{kind} call, {role}")
    }

    fn state(&self) -> &'static str {
        match self.phase {
            Phase::Starting => "not acknowledged",
            Phase::Running => "acknowledged",
            Phase::Started => "started",
        }
    }

    /// Checks a message flowing `from` the caller or the callee and applies it. Returns
    /// whether it ends the call.
    fn apply(&mut self, cid: u64, msg: &Message, from: Role) -> Result<bool, ProtocolError> {
        let ok = match (msg, from) {
            (Message::StartAck { .. }, Role::Callee) => {
                let ok = self.phase == Phase::Starting;
                self.phase = Phase::Running;
                ok
            }
            (Message::Started { .. }, Role::Callee) => {
                let ok = self.kind == CallKind::Context && self.phase == Phase::Running;
                self.phase = Phase::Started;
                ok
            }
            (Message::Yield { .. }, Role::Callee) => {
                self.callee_may_stream() && !self.callee_stopped
            }
            (Message::Stop { .. }, Role::Callee) => {
                let ok = self.callee_may_stream() && !self.callee_stopped;
                self.callee_stopped = true;
                ok
            }
            (Message::Return { .. }, Role::Callee) => match self.kind {
                CallKind::Context => self.phase == Phase::Started,
                CallKind::Run | CallKind::Stream => self.phase == Phase::Running,
            },
            (Message::CancelAck { .. }, Role::Callee) => self.phase != Phase::Starting,
            // An error may come instead of the acknowledgement (an unknown function, say).
            (Message::Error { .. }, Role::Callee) => true,
            (Message::Yield { .. }, Role::Caller) => {
                self.kind == CallKind::Context
                    && self.phase == Phase::Started
                    && !self.caller_stopped
            }
            (Message::Stop { .. }, Role::Caller) => {
                let ok = match self.kind {
                    CallKind::Run => false,
                    CallKind::Stream => self.phase != Phase::Starting,
                    CallKind::Context => self.phase == Phase::Started,
                } && !self.caller_stopped;
                self.caller_stopped = true;
                ok
            }
            (Message::Cancel { .. }, Role::Caller) => {
                !std::mem::replace(&mut self.cancel_sent, true)
            }
            (Message::Credit { count, .. }, from) => {
                if *count == 0 {
                    return Err(ProtocolError::ZeroCredit { cid });
                }
                // The caller grants credit for the callee's items with its `Start`; the callee
                // grants its own once it acknowledged the call.
                self.kind != CallKind::Run
                    && (from == Role::Caller || self.phase != Phase::Starting)
            }
            _ => false,
        };
        if !ok {
            return Err(ProtocolError::OutOfOrder {
                cid,
                got: msg.name(),
                call: self.describe(),
                state: self.state(),
            });
        }
        Ok(matches!(
            msg,
            Message::Return { .. } | Message::Error { .. } | Message::CancelAck { .. }
        ))
    }

    fn callee_may_stream(&self) -> bool {
        match self.kind {
            CallKind::Run => false,
            CallKind::Stream => self.phase == Phase::Running,
            CallKind::Context => self.phase == Phase::Started,
        }
    }
}

/// What a received message means for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Received {
    /// The peer's `Hello`, accepted: see [`Session::peer`].
    Hello,
    /// A valid message for a live call (or a new one, for `Start`).
    Call {
        /// The call.
        cid: u64,
        /// Whether the message ends the call.
        ends: bool,
    },
    /// A message for a call that already ended, sent before the sender learnt it ended (a
    /// `Cancel` or `Credit` crossing the result on the wire): ignore it.
    Stale,
    /// A connection-level `Error`: the peer reports a failure and will close.
    ConnectionError,
    /// The peer's `Goodbye`: nothing more comes.
    Goodbye,
}

/// One connection's protocol state, on one side.
///
/// ```
/// use trellis_wire::{ActorId, CallKind, Hello, Message, Payload, PROTOCOL_VERSION, Received, Session, Side};
///
/// let hello = |name: &str| Hello { version: PROTOCOL_VERSION, actor: ActorId::new(name, "0"), pid: 1 };
/// let mut parent = Session::new(Side::Connector, hello("parent"));
/// let mut child = Session::new(Side::Acceptor, hello("child"));
/// // Both sides send Hello first.
/// let (to_child, to_parent) = (parent.hello(), child.hello());
/// child.receive(&to_child).unwrap();
/// parent.receive(&to_parent).unwrap();
/// let cid = parent.next_call_id();
/// let start = Message::Start { cid, function: "add".into(), kind: CallKind::Run, args: Payload::encode(&(1, 2)).unwrap() };
/// parent.send(&start).unwrap();
/// assert_eq!(child.receive(&start).unwrap(), Received::Call { cid, ends: false });
/// // The child may not return before it acknowledges the call.
/// let early = Message::Return { cid, value: Payload::encode(&3).unwrap() };
/// assert!(child.send(&early).is_err());
/// ```
#[derive(Debug)]
pub struct Session {
    side: Side,
    local: Hello,
    hello_sent: bool,
    peer: Option<Hello>,
    goodbye_sent: bool,
    goodbye_received: bool,
    calls: HashMap<u64, Call>,
    /// The next id for a call we start.
    next_cid: u64,
    /// The highest id of a call the peer started.
    peer_highest: Option<u64>,
}

impl Session {
    /// A session for a connection on `side`, introducing ourselves with `local`.
    pub fn new(side: Side, local: Hello) -> Self {
        Session {
            side,
            local,
            hello_sent: false,
            peer: None,
            goodbye_sent: false,
            goodbye_received: false,
            calls: HashMap::new(),
            next_cid: if side.parity() == 1 { 1 } else { 2 },
            peer_highest: None,
        }
    }

    /// Our `Hello`, to send first; marks it sent.
    pub fn hello(&mut self) -> Message {
        self.hello_sent = true;
        Message::Hello(self.local.clone())
    }

    /// The peer's `Hello`, once received.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// A fresh id for a call we start.
    pub fn next_call_id(&mut self) -> u64 {
        let cid = self.next_cid;
        self.next_cid += 2;
        cid
    }

    /// How many calls are in progress, both ways.
    pub fn live_calls(&self) -> usize {
        self.calls.len()
    }

    /// Our role in a live call.
    pub fn role(&self, cid: u64) -> Option<Role> {
        self.calls.get(&cid).map(|c| c.role)
    }

    fn ours(&self, cid: u64) -> bool {
        cid % 2 == self.side.parity()
    }

    /// Checks a message we are about to send and records it. Returns whether it ends its call.
    ///
    /// # Errors
    ///
    /// The [`ProtocolError`] the peer would see in it; the state is unchanged.
    pub fn send(&mut self, msg: &Message) -> Result<bool, ProtocolError> {
        if self.goodbye_sent {
            return Err(ProtocolError::AfterGoodbye { got: msg.name() });
        }
        match msg {
            Message::Hello(_) => {
                if std::mem::replace(&mut self.hello_sent, true) {
                    return Err(ProtocolError::DuplicateHello);
                }
                return Ok(false);
            }
            _ if !self.hello_sent => return Err(ProtocolError::NoHello { got: msg.name() }),
            Message::Goodbye => {
                self.goodbye_sent = true;
                return Ok(false);
            }
            Message::Error { cid: None, .. } => return Ok(false),
            Message::Start { cid, kind, .. } => {
                if !self.ours(*cid) || self.calls.contains_key(cid) || *cid >= self.next_cid {
                    return Err(ProtocolError::BadCallId { cid: *cid });
                }
                self.calls.insert(*cid, new_call(*kind, Role::Caller));
                return Ok(false);
            }
            _ => {}
        }
        let cid = msg.cid().expect("every other message has a call id");
        let Some(call) = self.calls.get_mut(&cid) else {
            // As the caller, our messages may cross the call's end on the wire.
            if self.ours(cid) && self.ended(cid) && is_late_ok(msg) {
                return Ok(false);
            }
            return Err(ProtocolError::UnknownCall {
                cid,
                got: msg.name(),
            });
        };
        let from = call.role;
        let mut trial = *call;
        let ends = trial.apply(cid, msg, from)?;
        *call = trial;
        if ends {
            self.calls.remove(&cid);
        }
        Ok(ends)
    }

    /// Checks a message received from the peer and records it.
    ///
    /// # Errors
    ///
    /// A [`ProtocolError`] when the peer broke the rules; the state is unchanged. The
    /// connection should then report it (an `Error` without call id) and close.
    pub fn receive(&mut self, msg: &Message) -> Result<Received, ProtocolError> {
        if self.goodbye_received {
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
                self.peer = Some(hello.clone());
                return Ok(Received::Hello);
            }
            _ if self.peer.is_none() => return Err(ProtocolError::NoHello { got: msg.name() }),
            Message::Goodbye => {
                self.goodbye_received = true;
                return Ok(Received::Goodbye);
            }
            Message::Error { cid: None, .. } => return Ok(Received::ConnectionError),
            Message::Start { cid, kind, .. } => {
                let fresh = !self.ours(*cid) && self.peer_highest.is_none_or(|h| *cid > h);
                if !fresh {
                    return Err(ProtocolError::BadCallId { cid: *cid });
                }
                self.peer_highest = Some(*cid);
                self.calls.insert(*cid, new_call(*kind, Role::Callee));
                return Ok(Received::Call {
                    cid: *cid,
                    ends: false,
                });
            }
            _ => {}
        }
        let cid = msg.cid().expect("every other message has a call id");
        let Some(call) = self.calls.get_mut(&cid) else {
            // The peer's messages as the caller may cross the call's end; the callee's may not,
            // since the callee ends the call.
            if !self.ours(cid) && self.ended(cid) && is_late_ok(msg) {
                return Ok(Received::Stale);
            }
            return Err(ProtocolError::UnknownCall {
                cid,
                got: msg.name(),
            });
        };
        let from = match call.role {
            Role::Caller => Role::Callee,
            Role::Callee => Role::Caller,
        };
        let mut trial = *call;
        let ends = trial.apply(cid, msg, from)?;
        *call = trial;
        if ends {
            self.calls.remove(&cid);
        }
        Ok(Received::Call { cid, ends })
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
}

/// Messages a caller may send before it sees its call's result, which then arrive after the
/// callee ended the call.
fn is_late_ok(msg: &Message) -> bool {
    matches!(
        msg,
        Message::Cancel { .. }
            | Message::Stop { .. }
            | Message::Credit { .. }
            | Message::Yield { .. }
    )
}

fn new_call(kind: CallKind, role: Role) -> Call {
    Call {
        kind,
        role,
        phase: Phase::Starting,
        caller_stopped: false,
        callee_stopped: false,
        cancel_sent: false,
    }
}
