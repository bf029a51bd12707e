//! What the peer sends: bytes decoded into messages, each checked against the connection's
//! and its call's rules, turned into events; rule breaks answered.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::call::{Call, is_late_ok, is_terminal};
use super::{Batch, ConnectionError, Event, Handshake, Outcome, Role, Session, Side, items_of};
use crate::auth::{self, NONCE_LEN};
use crate::{
    ActorId, Auth, CancelReason, DecodeError, ErrorKind, ErrorReport, Hello, Message,
    PROTOCOL_VERSION, Payload, Peer, ProtocolError,
};

impl Session {
    /// Decodes and handles every whole frame in `buf`, leaving a partial one.
    ///
    /// # Errors
    ///
    /// The connection cannot go on (see [`ConnectionError`]); events produced before the
    /// error are still there to poll.
    pub fn handle_bytes(&mut self, buf: &mut BytesMut) -> Result<(), ConnectionError> {
        // An item of another call that ended a run of items, to handle next.
        let mut next = None;
        loop {
            if self.failed {
                return if buf.is_empty() {
                    Ok(())
                } else {
                    Err(ConnectionError::Closed)
                };
            }
            // A stream's items, the bulk of the traffic, skip the general decoder (the rules
            // applied to them are the same).
            let item = next
                .take()
                .or_else(|| Message::take_yield(buf, self.codec.max_frame()));
            if let Some((cid, value)) = item {
                next = self.receive_items(cid, value, buf)?;
                continue;
            }
            match self.codec.decode(buf) {
                Ok(Some(message)) => self.handle(message)?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.undecodable(e)),
            }
        }
    }

    /// Handles one whole frame's body (without its length header), which a transport read
    /// into memory of its own (a large frame, say, read straight into a buffer of its size):
    /// the same as [`handle_bytes`](Session::handle_bytes) given the frame with its header,
    /// and a `Yield`'s value shares `frame`'s memory.
    ///
    /// # Errors
    ///
    /// As [`handle_bytes`](Session::handle_bytes); a frame that is empty or longer than the
    /// codec's maximum is refused as a header announcing it would be.
    pub fn handle_frame(&mut self, frame: Bytes) -> Result<(), ConnectionError> {
        if self.failed {
            return Err(ConnectionError::Closed);
        }
        if let Err(e) = self.codec.check_len(frame.len()) {
            return Err(self.undecodable(e));
        }
        if let Some((cid, value)) = Message::yield_of(&frame) {
            return self
                .receive_items(cid, value, &mut BytesMut::new())
                .map(drop);
        }
        match Message::decode(frame) {
            Ok(message) => self.handle(message),
            Err(e) => Err(self.undecodable(e)),
        }
    }

    /// A frame that does not decode: the peer is told, and the connection cannot go on.
    fn undecodable(&mut self, error: DecodeError) -> ConnectionError {
        self.fail_connection(format!("undecodable frame: {error}"));
        error.into()
    }

    /// A `Yield` the fast path read, and the `Yield`s of the same call right behind it in
    /// `buf`: items for a live call that may receive them are counted and queued here, with
    /// one look-up of the call for the run, without building a [`Message`] or an event for
    /// each; anything else takes the general path, whose rules are the same. Returns the
    /// `Yield` of another call that ended the run, taken off `buf` and not yet handled.
    fn receive_items(
        &mut self,
        cid: u64,
        value: Payload,
        buf: &mut BytesMut,
    ) -> Result<Option<(u64, Payload)>, ConnectionError> {
        let Session {
            failed,
            peer_done,
            handshake,
            calls,
            events,
            codec,
            ..
        } = self;
        let call = match calls.get_mut(&cid) {
            Some(call)
                if !*failed
                    && !*peer_done
                    && matches!(handshake, Handshake::Done)
                    && !call.detached
                    && call.may_receive_item(call.role.other()) =>
            {
                call
            }
            _ => return self.handle(Message::Yield { cid, value }).map(|()| None),
        };
        let mut value = value;
        // The run's items, queued behind the items of the same call that came just before.
        let mut queued: Option<&mut VecDeque<Payload>> = None;
        loop {
            // Nothing in a run of items changes whether the call may receive one: only the
            // window's count, which `receive_item` keeps.
            match receive_item(call, value) {
                Received::Item(value) => match &mut queued {
                    Some(queue) => queue.push_back(value),
                    None => {
                        let queue = items_of(events, cid);
                        queue.push_back(value);
                        queued = Some(queue);
                    }
                },
                Received::Overrun { capacity } => {
                    queued = None;
                    events.push_back(Batch::Event(Event::Overrun { cid, capacity }));
                }
                Received::Dropped => {}
            }
            match Message::take_yield(buf, codec.max_frame()) {
                Some((next_cid, next_value)) if next_cid == cid => value = next_value,
                other => return Ok(other),
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
            Err(ProtocolError::Unauthorized) => {
                self.fail_connection_as(ErrorKind::Unauthorized, "not authorized".into());
                Err(ProtocolError::Unauthorized.into())
            }
            Err(e) => {
                self.fail_connection(format!("protocol error: {e}"));
                Err(e.into())
            }
        }
    }

    /// The handshake's messages (§4), until it completes.
    fn handshake(&mut self, msg: Message) -> Result<(), ProtocolError> {
        match (&self.handshake, msg) {
            (Handshake::Hello, Message::Hello(hello)) => self.hello(hello),
            (Handshake::Hello, other) => Err(ProtocolError::NoHello { got: other.name() }),
            (Handshake::Auth { .. }, Message::Hello(_)) => Err(ProtocolError::DuplicateHello),
            (Handshake::Auth { .. }, Message::Error { cid: None, error }) => {
                // The peer refuses us (we failed its check, or it ours).
                self.peer_done = true;
                self.push_event(Event::PeerError(error));
                Ok(())
            }
            (Handshake::Auth { peer_nonce }, Message::Auth(auth)) => {
                let peer_nonce = peer_nonce.clone();
                self.auth(auth, &peer_nonce)
            }
            (Handshake::Auth { .. }, other) => Err(ProtocolError::NoAuth { got: other.name() }),
            (Handshake::Done, _) => unreachable!("handled once the handshake is done"),
        }
    }

    fn hello(&mut self, hello: Hello) -> Result<(), ProtocolError> {
        if hello.version.major != PROTOCOL_VERSION.major {
            return Err(ProtocolError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: hello.version,
            });
        }
        if hello.nonce.len() != NONCE_LEN {
            return Err(ProtocolError::BadNonce {
                len: hello.nonce.len(),
            });
        }
        self.peer_version = hello.version;
        if self.side == Side::Connector {
            // We prove first: the acceptor says nothing of itself to a peer it does not know.
            let key = self.keyring.presented().cloned();
            let connector = self.local.actor.clone();
            let nonce = self.nonce.clone();
            self.send_auth(key.as_ref(), &nonce, &hello.nonce, &connector);
        }
        self.handshake = Handshake::Auth {
            peer_nonce: hello.nonce,
        };
        Ok(())
    }

    /// Sends our `Auth`: `key`'s credential and our proof as this side over the nonces and
    /// the connector's identity (the acceptor's proof covers ours too), or neither without a
    /// key.
    fn send_auth(
        &mut self,
        key: Option<&auth::Key>,
        nonce_connector: &[u8],
        nonce_acceptor: &[u8],
        connector: &ActorId,
    ) {
        let acceptor = (self.side == Side::Acceptor).then_some(&self.local.actor);
        let proof = key.map(|key| {
            Bytes::copy_from_slice(&auth::proof(
                key,
                self.side,
                nonce_connector,
                nonce_acceptor,
                connector,
                acceptor,
            ))
        });
        let message = Message::Auth(Auth {
            credential: key.map(|k| k.name().to_owned()),
            proof,
            actor: self.local.actor.clone(),
            pid: self.local.pid,
        });
        self.encode(&message);
    }

    /// Checks the peer's `Auth`; the acceptor answers with its own.
    fn auth(&mut self, auth: Auth, peer_nonce: &[u8]) -> Result<(), ProtocolError> {
        let (nonce_connector, nonce_acceptor) = match self.side {
            Side::Connector => (&self.nonce[..], peer_nonce),
            Side::Acceptor => (peer_nonce, &self.nonce[..]),
        };
        let (connector, acceptor) = match self.side {
            Side::Connector => (&self.local.actor, Some(&auth.actor)),
            Side::Acceptor => (&auth.actor, None),
        };
        let key = match (&self.side, &auth.credential) {
            (_, None) => {
                // No credential: the acceptor must accept anonymous peers; the connector must
                // have asked for nothing.
                let fine = match self.side {
                    Side::Acceptor => self.keyring.accepts_anonymous(),
                    Side::Connector => self.keyring.presented().is_none(),
                };
                if !fine || auth.proof.is_some() {
                    return Err(ProtocolError::Unauthorized);
                }
                None
            }
            (Side::Acceptor, Some(name)) => self.keyring.find(name).cloned(),
            (Side::Connector, Some(name)) => self
                .keyring
                .presented()
                .filter(|k| k.name() == name)
                .cloned(),
        };
        if let Some(name) = &auth.credential {
            let Some(key) = &key else {
                return Err(ProtocolError::Unauthorized);
            };
            let proof = auth.proof.as_deref().unwrap_or_default();
            let prover = match self.side {
                Side::Connector => Side::Acceptor,
                Side::Acceptor => Side::Connector,
            };
            let genuine = auth::verify(
                key,
                prover,
                nonce_connector,
                nonce_acceptor,
                connector,
                acceptor,
                proof,
            );
            if !genuine || key.name() != name {
                return Err(ProtocolError::Unauthorized);
            }
        }
        if self.side == Side::Acceptor {
            // The same credential back (checked above to be `key`'s), or none.
            let nonce = self.nonce.clone();
            self.send_auth(key.as_ref(), peer_nonce, &nonce, &auth.actor);
        }
        self.peer = Some(Peer {
            version: self.peer_version,
            actor: auth.actor,
            pid: auth.pid,
            credential: auth.credential,
        });
        self.handshake = Handshake::Done;
        Ok(())
    }

    fn receive(&mut self, msg: Message) -> Result<(), ProtocolError> {
        if self.peer_done {
            return Err(ProtocolError::AfterGoodbye { got: msg.name() });
        }
        if !matches!(self.handshake, Handshake::Done) {
            return self.handshake(msg);
        }
        match msg {
            Message::Hello(_) => return Err(ProtocolError::DuplicateHello),
            Message::Auth(_) => return Err(ProtocolError::DuplicateAuth),
            Message::Goodbye => {
                self.peer_done = true;
                self.calls.clear();
                self.push_event(Event::Goodbye);
                return Ok(());
            }
            Message::Error { cid: None, error } => {
                self.peer_done = true;
                self.calls.clear();
                self.push_event(Event::PeerError(error));
                return Ok(());
            }
            Message::Start {
                cid,
                function,
                kind,
                args,
                trace,
            } => {
                let fresh = !self.ours(cid) && self.peer_highest.is_none_or(|h| cid > h);
                if !fresh {
                    return Err(ProtocolError::BadCallId { cid });
                }
                self.peer_highest = Some(cid);
                if self.calls.callee() >= self.max_peer_calls {
                    let report = self.report_as(
                        ErrorKind::LimitExceeded,
                        format!(
                            "too many calls at once on this connection (the limit is {})",
                            self.max_peer_calls
                        ),
                    );
                    self.encode(&Message::Error {
                        cid: Some(cid),
                        error: Box::new(report),
                    });
                    return Ok(());
                }
                self.calls.insert(cid, Call::new(kind, Role::Callee));
                self.push_event(Event::Call {
                    cid,
                    function,
                    kind,
                    args,
                    trace,
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
            Message::Yield { value, .. } => match receive_item(call, value) {
                Received::Item(value) => Some(Event::Item { cid, value }),
                Received::Overrun { capacity } => Some(Event::Overrun { cid, capacity }),
                Received::Dropped => None,
            },
            Message::Stop { .. } => Some(Event::Stopped { cid }),
            Message::Credit { count, .. } => {
                let was_dry = call.send_credit == 0;
                call.add_send_credit(count);
                was_dry.then_some(Event::Credit { cid })
            }
            Message::Started { value, .. } => Some(Event::Started { cid, value }),
            Message::Cancel {
                requested_by,
                reason,
                ..
            } => Some(Event::CancelRequested {
                cid,
                requested_by,
                reason,
            }),
            Message::Return { value, .. } => Some(Event::Ended {
                cid,
                outcome: Outcome::Returned(value),
            }),
            Message::Error { error, .. } => Some(Event::Ended {
                cid,
                outcome: Outcome::Failed(error),
            }),
            Message::CancelAck {
                requested_by,
                reason,
                ..
            } => Some(Event::Ended {
                cid,
                outcome: Outcome::Cancelled {
                    requested_by,
                    reason,
                },
            }),
            _ => None,
        };
        if ends {
            self.calls.remove(&cid);
        }
        if let Some(event) = event {
            self.push_event(event);
        }
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
                let cancel = !std::mem::replace(&mut call.cancel_sent, true);
                self.calls.detach(cid);
                if cancel {
                    let requested_by = self.local.actor.clone();
                    let mut reason = CancelReason::new("explicit");
                    reason.message = Some(format!("the call broke the protocol: {error}"));
                    self.encode(&Message::Cancel {
                        cid,
                        requested_by,
                        reason: Some(Box::new(reason)),
                    });
                }
                self.check_detached();
            }
        }
        self.push_event(Event::Broken { cid, error });
    }

    /// Fails the connection when the peer leaves too many of our calls unended.
    pub(super) fn check_detached(&mut self) {
        if self.calls.detached() > super::MAX_DETACHED {
            self.fail_connection(format!(
                "the peer left more than {} calls unanswered after they were cancelled",
                super::MAX_DETACHED
            ));
        }
    }

    /// [`report`](Session::report), of another kind than `Protocol`.
    fn report_as(&self, kind: ErrorKind, message: String) -> ErrorReport {
        ErrorReport {
            kind,
            ..self.report(message)
        }
    }

    /// A report of a protocol failure found here. Before the handshake completed it names
    /// nobody: a peer that has not proved it belongs learns nothing of who we are.
    pub(super) fn report(&self, message: String) -> ErrorReport {
        let actor = match self.handshake {
            Handshake::Done => self.local.actor.clone(),
            _ => ActorId::new("", ""),
        };
        ErrorReport {
            actor,
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
    pub(super) fn fail_connection(&mut self, message: String) {
        self.fail_connection_as(ErrorKind::Protocol, message);
    }

    /// [`fail_connection`](Session::fail_connection) with a report of `kind`.
    pub(super) fn fail_connection_as(&mut self, kind: ErrorKind, message: String) {
        if self.failed {
            return;
        }
        if !self.goodbye_sent {
            let report = self.report_as(kind, message);
            self.encode(&Message::Error {
                cid: None,
                error: Box::new(report),
            });
        }
        self.failed = true;
        self.calls.clear();
    }

    /// Encodes a message the session itself sends (small, always within a frame).
    pub(super) fn encode(&mut self, msg: &Message) {
        if self.codec.encode(msg, self.out.tail()).is_err() {
            // Only an error report could be this large: send it without its details.
            if let Message::Error { cid, error } = msg {
                let mut short = self.report(error.message.chars().take(1024).collect());
                short.kind = error.kind.clone();
                let _ = self.codec.encode(
                    &Message::Error {
                        cid: *cid,
                        error: Box::new(short),
                    },
                    self.out.tail(),
                );
            }
        }
    }
}

/// What an item the rules allowed means for our receiving end.
enum Received {
    /// An item for it.
    Item(Payload),
    /// Nothing: the end closed, or overran already.
    Dropped,
    /// An overrun (beyond the window, or before any grant).
    Overrun { capacity: u32 },
}

/// Counts an item the rules allowed against the call's window.
fn receive_item(call: &mut Call, value: Payload) -> Received {
    match call.receiving.as_mut() {
        _ if call.overran => Received::Dropped,
        Some(receiving) if !receiving.overruns() => {
            receiving.received(value.as_bytes().len());
            if receiving.closed {
                Received::Dropped
            } else {
                Received::Item(value)
            }
        }
        receiving => {
            let capacity = receiving.map_or(0, |r| r.capacity());
            call.overran = true;
            Received::Overrun { capacity }
        }
    }
}
