//! What this side sends: each action checked against the rules, encoded into the outgoing
//! buffer, and applied to the call's state (credit both ways included).

use super::call::{Call, CallTable, Receiving, UNLIMITED};
use super::{Outcome, Role, SendError, Session, Window};
use bytes::{Bytes, BytesMut};

use crate::msgpack::{write_bin, write_bin_len};
use crate::outgoing::{Outgoing, SHARE_FROM};
use crate::{
    ActorId, CallKind, CancelReason, Codec, ErrorReport, Message, Payload, PayloadError,
    ProtocolError, TraceContext,
};

impl Session {
    pub(super) fn check_open(&self) -> Result<(), SendError> {
        if self.is_closed() {
            Err(SendError::Closed)
        } else {
            Ok(())
        }
    }

    /// Checks `msg` for call `cid` against the rules, encodes it, and applies it.
    pub(super) fn send_on_call(&mut self, cid: u64, msg: &Message) -> Result<(), SendError> {
        self.check_open()?;
        let call = self
            .calls
            .get_mut(&cid)
            .filter(|c| !c.detached)
            .ok_or(SendError::CallOver { cid })?;
        let mut trial = *call;
        let ends = trial.apply(cid, msg, call.role)?;
        self.codec.encode(msg, self.out.tail())?;
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
    /// The connection is closed; the handshake has not completed; the `Start` exceeds the
    /// maximum frame size.
    pub fn start(
        &mut self,
        function: &str,
        kind: CallKind,
        args: Payload,
    ) -> Result<u64, SendError> {
        self.start_traced(function, kind, args, None)
    }

    /// Starts a call of ours as [`start`](Session::start) does, its `Start` carrying the
    /// caller's trace context (protocol 2.1) when there is one.
    ///
    /// # Errors
    ///
    /// As [`start`](Session::start).
    pub fn start_traced(
        &mut self,
        function: &str,
        kind: CallKind,
        args: Payload,
        trace: Option<Box<TraceContext>>,
    ) -> Result<u64, SendError> {
        self.check_open()?;
        if self.peer.is_none() {
            return Err(SendError::Handshaking);
        }
        let cid = self.next_cid;
        self.codec.encode(
            &Message::Start {
                cid,
                function: function.to_owned(),
                kind,
                args,
                trace,
            },
            self.out.tail(),
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
        if let Some(grant) = receiving.consume(count)
            && !self.is_closed()
        {
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
        if receiving.window.by_credit() && !overran {
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
        let call = self.calls.get(&cid).ok_or(SendError::CallOver { cid })?;
        Self::may_yield(cid, call)?;
        Ok(call.send_credit)
    }

    /// Whether call `cid` may send an item now, credit aside.
    pub(super) fn may_yield(cid: u64, call: &Call) -> Result<(), SendError> {
        if call.detached {
            return Err(SendError::CallOver { cid });
        }
        if call.kind == CallKind::Stream && call.role == Role::Callee && call.caller_stopped {
            return Err(SendError::ReceiverStopped { cid });
        }
        if !call.may_send_items() {
            return Err(call.out_of_order(cid, "Yield").into());
        }
        Ok(())
    }

    /// Call `cid`, on a session still open, if it may send an item now (credit aside).
    pub(super) fn yielding_call(
        calls: &mut CallTable,
        closed: bool,
        cid: u64,
    ) -> Result<&mut Call, SendError> {
        if closed {
            return Err(SendError::Closed);
        }
        let call = calls.get_mut(&cid).ok_or(SendError::CallOver { cid })?;
        Self::may_yield(cid, call)?;
        Ok(call)
    }

    /// Sends a stream item, taking one credit.
    ///
    /// # Errors
    ///
    /// [`SendError::NoCredit`] (wait for [`Event::Credit`](super::Event::Credit)); as
    /// [`send_credit`](Session::send_credit); the item exceeds the maximum frame size.
    pub fn send_item(&mut self, cid: u64, value: Payload) -> Result<(), SendError> {
        self.send_item_with(cid, |out| {
            out.extend_from_slice(value.as_bytes());
            Ok(())
        })
    }

    /// Sends a stream item whose value `encode` writes (exactly one MessagePack value) straight
    /// into the outgoing buffer: no intermediate [`Payload`] for each item of a stream. One
    /// look-up of the call, its credit taken, nothing written when anything fails.
    ///
    /// # Errors
    ///
    /// As [`send_item`](Session::send_item); [`SendError::Payload`] when `encode` fails.
    pub fn send_item_with(
        &mut self,
        cid: u64,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), PayloadError>,
    ) -> Result<(), SendError> {
        self.send_item_as(cid, |codec, out| {
            codec.encode_yield_with(out.tail(), cid, encode)
        })
    }

    /// Sends a stream item whose value is the byte string `value` (a MessagePack `bin`, what
    /// a `bytes::Bytes` encodes to): a long value is queued in the outgoing bytes as it is,
    /// shared and not copied.
    ///
    /// # Errors
    ///
    /// As [`send_item`](Session::send_item).
    pub fn send_item_bytes(&mut self, cid: u64, value: Bytes) -> Result<(), SendError> {
        if value.len() < SHARE_FROM {
            return self.send_item_with(cid, |dst| {
                write_bin(dst, &value);
                Ok(())
            });
        }
        self.send_item_as(cid, |codec, out| {
            codec.encode_head(out.tail(), value.len(), |dst| {
                Message::yield_head(dst, cid);
                write_bin_len(dst, value.len());
                Ok::<_, SendError>(())
            })?;
            out.share(value);
            Ok(())
        })
    }

    /// Sends a stream item that `encode` writes as a whole frame: one look-up of the call,
    /// its rules and credit checked first, the credit taken only when the item was written.
    fn send_item_as(
        &mut self,
        cid: u64,
        encode: impl FnOnce(&Codec, &mut Outgoing) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        let closed = self.is_closed();
        let call = Self::yielding_call(&mut self.calls, closed, cid)?;
        if call.send_credit == 0 {
            return Err(call.wait_for_credit(cid));
        }
        encode(&self.codec, &mut self.out)?;
        if call.send_credit != u64::MAX {
            call.send_credit -= 1;
        }
        call.sent += 1;
        call.waiting = false;
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

    /// Cancels a call we made, on `requested_by`'s behalf, saying why when `reason` does.
    /// Returns whether `Cancel` was sent now (not before, and the call not over).
    pub fn cancel(
        &mut self,
        cid: u64,
        requested_by: ActorId,
        reason: Option<Box<CancelReason>>,
    ) -> bool {
        let live = self
            .calls
            .get(&cid)
            .is_some_and(|c| c.role == Role::Caller && !c.cancel_sent);
        live && self
            .send_on_call(
                cid,
                &Message::Cancel {
                    cid,
                    requested_by,
                    reason,
                },
            )
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
            Outcome::Cancelled {
                requested_by,
                reason,
            } => Message::CancelAck {
                cid,
                requested_by,
                reason,
            },
        };
        self.send_on_call(cid, &msg)
    }

    /// Stops following a call we made (we gave up waiting for its end): no more events for
    /// it; what the callee still sends for it is dropped.
    ///
    /// A peer that leaves more than [`MAX_DETACHED`](super::MAX_DETACHED) such calls without
    /// their end (it never answers a `Cancel`) fails the connection: their entries would
    /// otherwise pile up for good.
    pub fn forget(&mut self, cid: u64) {
        if self.calls.detach(cid) {
            self.check_detached();
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
