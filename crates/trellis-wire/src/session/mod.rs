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

mod ahead;
mod call;
mod cid_hash;
mod receive;
mod send;

use std::collections::VecDeque;

use bytes::Bytes;

use crate::auth::{self, Keyring};
use crate::outgoing::Outgoing;
use crate::{
    ActorId, CallKind, CancelReason, Codec, DecodeError, EncodeError, ErrorReport, Hello, Identity,
    Message, PROTOCOL_VERSION, Payload, Peer, ProtocolError, TraceContext,
};
use call::{CallTable, UNLIMITED};
pub use cid_hash::{CidHash, CidHasher};

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
    /// As [`Credit`](Window::Credit), with a window that moves between `start` and `max`
    /// items as the items received since the last grant show their size: it holds about
    /// `bytes` of them (each item counted with [`ITEM_OVERHEAD`] more), so a stream of small
    /// items gets a larger window — fewer round trips per item — for the same memory, and
    /// one of large items never more than `start`. Grants `start` at first; the window grows
    /// by granting more than was consumed and shrinks by granting less, so the sender never
    /// has more than the window's current size unconsumed. `start` and `max` are from 1 to
    /// 2³² − 2 (`max` below `start` counts as `start`).
    Growing {
        /// The first grant and the smallest window.
        start: u32,
        /// The largest window.
        max: u32,
        /// What the window's items may take, in bytes, as far as `max` allows.
        bytes: u32,
    },
    /// Grants without limit. With `Some(limit)`, more than `limit` items received and not yet
    /// consumed is an overrun.
    Unlimited(Option<u32>),
}

impl Window {
    /// After how many consumed items [`Session::consumed`] may usefully be called: a driver
    /// that counts reads locally and reports them in batches of this size loses nothing.
    pub fn report_every(&self) -> u32 {
        match *self {
            Window::Credit(capacity)
            | Window::Growing {
                start: capacity, ..
            } => (capacity / 4).max(1),
            Window::Unlimited(Some(_)) => 1,
            Window::Unlimited(None) => u32::MAX,
        }
    }

    /// Whether the receiver grants credit as it reads (and enforces it), rather than
    /// without limit.
    fn by_credit(&self) -> bool {
        !matches!(self, Window::Unlimited(_))
    }

    fn first_grant(&self) -> u32 {
        match *self {
            Window::Credit(capacity)
            | Window::Growing {
                start: capacity, ..
            } => capacity.clamp(1, UNLIMITED - 1),
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
        /// Why, when the callee says (protocol 2.1).
        reason: Option<Box<CancelReason>>,
    },
}

/// Events as [`Session::poll_batch`] gives them: consecutive items of one call together.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// Items of call `cid` that arrived one after the other, in order (each as an
    /// [`Event::Item`] would be).
    Items {
        /// The call.
        cid: u64,
        /// Its items, oldest first.
        values: VecDeque<Payload>,
    },
    /// Any other event.
    Event(Event),
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
        /// The caller's trace context, when its `Start` carried one (protocol 2.1).
        trace: Option<Box<TraceContext>>,
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
        /// Why, when the caller says (protocol 2.1).
        reason: Option<Box<CancelReason>>,
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
    /// The item's value did not encode ([`Session::send_item_with`]); nothing was sent.
    #[error(transparent)]
    Payload(#[from] crate::PayloadError),
    /// The handshake has not completed: no call may start yet.
    #[error("the handshake has not completed")]
    Handshaking,
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

/// The traffic of one live stream or context call so far, on this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStats {
    /// The call.
    pub cid: u64,
    /// A one-way stream or a context.
    pub kind: CallKind,
    /// This side's part in it.
    pub role: Role,
    /// Items this side sent.
    pub sent: u64,
    /// Items this side received.
    pub received: u64,
    /// Items received and not yet read by the local end.
    pub unread: u64,
    /// Times this side found no credit for its next item and had to wait (backpressure).
    pub credit_waits: u64,
}

/// One connection's protocol engine, on one side.
///
/// ```
/// use bytes::BytesMut;
/// use trellis_wire::{ActorId, CallKind, Event, Identity, Key, Keyring, Outcome, Payload, Session, Side};
///
/// let me = |name: &str| Identity::new(ActorId::new(name, "0"), 1);
/// let secret = Keyring::new(Key::tree(b"a secret of the tree, 16+ bytes").unwrap());
/// let mut parent = Session::new(Side::Connector, me("parent"), secret.clone());
/// let mut child = Session::new(Side::Acceptor, me("child"), secret);
/// // Moves what one side wrote to the other.
/// let pass = |from: &mut Session, to: &mut Session| {
///     let mut bytes = from.outgoing().split();
///     to.handle_bytes(&mut bytes).unwrap();
/// };
/// pass(&mut parent, &mut child); // Hello
/// pass(&mut child, &mut parent); // Hello; the parent answers with its Auth
/// pass(&mut parent, &mut child); // Auth; the child checks it, answers with its own
/// pass(&mut child, &mut parent); // Auth: the parent knows the child is of its tree
/// assert_eq!(parent.peer().unwrap().actor.name, "child");
/// let cid = parent.start("add", CallKind::Run, Payload::encode(&(1, 2)).unwrap()).unwrap();
/// pass(&mut parent, &mut child);
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
    local: Identity,
    keyring: Keyring,
    codec: Codec,
    /// Our `Hello`'s nonce.
    nonce: Bytes,
    handshake: Handshake,
    /// The version of the peer's `Hello`.
    peer_version: crate::Version,
    peer: Option<Peer>,
    goodbye_sent: bool,
    /// The peer said `Goodbye` or reported a connection error: nothing more comes.
    peer_done: bool,
    /// We found the connection broken: nothing more is read or sent.
    failed: bool,
    calls: CallTable,
    /// How many calls the peer may have live at once; its next `Start` is refused.
    max_peer_calls: usize,
    /// The next id for a call we start.
    next_cid: u64,
    /// The highest id of a call the peer started.
    peer_highest: Option<u64>,
    out: Outgoing,
    /// Events in arrival order, consecutive items of one call kept together.
    events: VecDeque<Batch>,
}

/// The queue of items of call `cid` at the back of `events`, a new one unless the last
/// events are its items.
fn items_of(events: &mut VecDeque<Batch>, cid: u64) -> &mut VecDeque<Payload> {
    if !matches!(events.back(), Some(Batch::Items { cid: last, .. }) if *last == cid) {
        events.push_back(Batch::Items {
            cid,
            values: VecDeque::new(),
        });
    }
    match events.back_mut() {
        Some(Batch::Items { values, .. }) => values,
        _ => unreachable!("an item queue was just made"),
    }
}

/// What a [`Window::Growing`] counts for each item beside its payload's bytes: about what
/// holding one item costs a receiver (its handle and its place in a queue).
pub const ITEM_OVERHEAD: u32 = 32;

/// How many calls of ours a session keeps after it stopped following them (cancelled, and
/// waiting only for the peer's end to swallow it); one more fails the connection.
pub const MAX_DETACHED: usize = 1024;

/// Where the handshake stands (§4).
#[derive(Debug)]
enum Handshake {
    /// Waiting for the peer's `Hello`.
    Hello,
    /// Waiting for the peer's `Auth`; the connector has sent its own.
    Auth {
        /// The peer's nonce.
        peer_nonce: Bytes,
    },
    /// Both sides proved what they had to.
    Done,
}

impl Session {
    /// A session for a connection on `side`, introducing ourselves as `local`, proving and
    /// accepting what `keyring` holds: our `Hello` is the first outgoing message.
    pub fn new(side: Side, local: Identity, keyring: Keyring) -> Self {
        Session::with_codec(side, local, keyring, Codec::new())
    }

    /// [`new`](Session::new) with a codec of another maximum frame size.
    pub fn with_codec(side: Side, local: Identity, keyring: Keyring, codec: Codec) -> Self {
        Session::with_nonce(side, local, keyring, codec, auth::nonce())
    }

    /// [`with_codec`](Session::with_codec) with a chosen nonce instead of a random one: for
    /// tests and fuzzers that replay a handshake. A session that serves a real peer must use
    /// a fresh random nonce, or its peer's proofs can be replayed.
    #[doc(hidden)]
    pub fn with_nonce(
        side: Side,
        local: Identity,
        keyring: Keyring,
        codec: Codec,
        nonce: [u8; auth::NONCE_LEN],
    ) -> Self {
        let mut session = Session {
            side,
            local,
            keyring,
            codec,
            nonce: Bytes::copy_from_slice(&nonce),
            handshake: Handshake::Hello,
            peer_version: PROTOCOL_VERSION,
            peer: None,
            goodbye_sent: false,
            peer_done: false,
            failed: false,
            calls: CallTable::default(),
            max_peer_calls: usize::MAX,
            next_cid: if side.parity() == 1 { 1 } else { 2 },
            peer_highest: None,
            out: Outgoing::default(),
            events: VecDeque::new(),
        };
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            nonce: session.nonce.clone(),
        });
        session
            .codec
            .encode(&hello, session.out.tail())
            .expect("a Hello fits any frame");
        session
    }

    /// Limits how many calls the peer may have live at once (calls it started that have not
    /// ended); a `Start` beyond it is refused at once with an `Error` of kind
    /// [`LimitExceeded`](crate::ErrorKind::LimitExceeded), and no event (§9).
    pub fn limit_peer_calls(&mut self, max: usize) {
        self.max_peer_calls = max;
    }

    /// Reports a connection-level failure of kind `kind` to the peer and stops: after our
    /// `Hello` during the handshake (a connection refused before it is served), or at any
    /// time.
    pub fn fail_with(&mut self, kind: crate::ErrorKind, message: impl Into<String>) {
        self.fail_connection_as(kind, message.into());
    }

    /// Which end of the connection this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Who we are.
    pub fn local(&self) -> &Identity {
        &self.local
    }

    /// The peer, once the handshake completed: calls may flow from then on.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// Whether nothing more will be exchanged: a `Goodbye` either way, a connection error
    /// either way.
    pub fn is_closed(&self) -> bool {
        self.failed || self.goodbye_sent || self.peer_done
    }

    /// What waits to be written. The driver writes from the front and advances past what
    /// the socket took.
    pub fn outgoing(&mut self) -> &mut Outgoing {
        &mut self.out
    }

    /// The next event, in arrival order.
    pub fn poll_event(&mut self) -> Option<Event> {
        match self.events.front_mut()? {
            Batch::Items { cid, values } => {
                let (cid, value) = (*cid, values.pop_front());
                if values.is_empty() {
                    self.events.pop_front();
                }
                value.map(|value| Event::Item { cid, value })
            }
            Batch::Event(_) => match self.events.pop_front() {
                Some(Batch::Event(event)) => Some(event),
                _ => None,
            },
        }
    }

    /// The next events, in arrival order, with the items of one call that came one after the
    /// other taken together (a stream's items read from one read of the socket, say): what
    /// [`poll_event`](Session::poll_event) gives, without an event for each item.
    pub fn poll_batch(&mut self) -> Option<Batch> {
        self.events.pop_front()
    }

    /// Queues `event`, an item next to the items of its call that came just before.
    fn push_event(&mut self, event: Event) {
        match event {
            Event::Item { cid, value } => items_of(&mut self.events, cid).push_back(value),
            event => self.events.push_back(Batch::Event(event)),
        }
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

    /// The traffic of every live stream and context call, in no particular order.
    pub fn stream_stats(&self) -> Vec<StreamStats> {
        self.calls
            .iter()
            .filter(|(_, c)| !c.detached && c.kind != CallKind::Run)
            .map(|(&cid, call)| {
                let (received, consumed) = call
                    .receiving
                    .as_ref()
                    .map_or((0, 0), |r| (r.received, r.consumed));
                StreamStats {
                    cid,
                    kind: call.kind,
                    role: call.role,
                    sent: call.sent,
                    received,
                    unread: received - consumed.min(received),
                    credit_waits: call.credit_waits,
                }
            })
            .collect()
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
}
