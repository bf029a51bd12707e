//! Stream items a sender encodes on its own, outside the session: credit taken ahead for
//! many items at once, the items' frames encoded with [`Codec::encode_yield_with`] into a
//! buffer of the sender's, and handed to the session in batches. A transport whose session
//! sits behind a lock takes the lock once per batch instead of once per item; the bytes on
//! the wire are those [`Session::send_item_with`] writes.

use bytes::BytesMut;

use super::{SendError, Session};
use crate::{Codec, Message, PayloadError};

impl Codec {
    /// Appends to `dst` one `Yield` frame of call `cid` whose value `encode` writes (exactly
    /// one MessagePack value): the frame [`Session::send_item_with`] writes, for a sender that
    /// took its credit ahead ([`Session::take_credit`]).
    ///
    /// # Errors
    ///
    /// [`SendError::Payload`] when `encode` fails, [`SendError::TooLarge`] past the maximum
    /// frame size; `dst` is left as it was.
    pub fn encode_yield_with(
        &self,
        dst: &mut BytesMut,
        cid: u64,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), PayloadError>,
    ) -> Result<(), SendError> {
        self.encode_with(dst, |dst| {
            Message::yield_head(dst, cid);
            encode(dst).map_err(SendError::from)
        })
    }
}

impl Session {
    /// The codec the session frames with (its maximum frame size).
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Takes the credit to send up to `max` items on call `cid` now, for a sender that
    /// encodes them itself and hands them over with [`send_encoded_items`]: the number of
    /// items it may send (`u64::MAX`: no limit, whatever `max`). Credit taken and not used
    /// goes back with [`return_credit`].
    ///
    /// # Errors
    ///
    /// As [`send_item`](Session::send_item): [`SendError::NoCredit`] when there is none (the
    /// call counts as waiting for credit, as with `send_item`).
    ///
    /// [`send_encoded_items`]: Session::send_encoded_items
    /// [`return_credit`]: Session::return_credit
    pub fn take_credit(&mut self, cid: u64, max: u64) -> Result<u64, SendError> {
        let closed = self.is_closed();
        let call = Self::yielding_call(&mut self.calls, closed, cid)?;
        if call.send_credit == 0 || max == 0 {
            return Err(call.wait_for_credit(cid));
        }
        call.waiting = false;
        if call.send_credit == u64::MAX {
            return Ok(u64::MAX);
        }
        let taken = call.send_credit.min(max);
        call.send_credit -= taken;
        Ok(taken)
    }

    /// Gives back `count` items' credit taken with [`take_credit`](Session::take_credit) and
    /// not used. Does nothing for a call that is over.
    pub fn return_credit(&mut self, cid: u64, count: u64) {
        if let Some(call) = self.calls.get_mut(&cid) {
            call.send_credit = if count == u64::MAX {
                u64::MAX
            } else {
                call.send_credit.saturating_add(count)
            };
        }
    }

    /// Queues `frames`, the frames of `items` stream items of call `cid` encoded with
    /// [`Codec::encode_yield_with`] under credit taken with
    /// [`take_credit`](Session::take_credit), after everything queued so far. The session
    /// trusts them to be that: they are the sender's own bytes, never a peer's.
    ///
    /// # Errors
    ///
    /// The call may no longer send items (it is over, its receiver stopped, the connection
    /// closed): nothing is queued, and what the sender still holds of its credit is void.
    pub fn send_encoded_items(
        &mut self,
        cid: u64,
        frames: &[u8],
        items: u64,
    ) -> Result<(), SendError> {
        let closed = self.is_closed();
        let call = Self::yielding_call(&mut self.calls, closed, cid)?;
        self.out.tail().extend_from_slice(frames);
        call.sent += items;
        Ok(())
    }
}
