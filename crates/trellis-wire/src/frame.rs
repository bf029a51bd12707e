//! Framing: each message travels as a 4-byte big-endian length followed by that many bytes of
//! MessagePack.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{DecodeError, EncodeError, Message};

/// The largest frame body accepted unless configured otherwise: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// Splits a byte stream into frames and frames into [`Message`]s, and writes messages as
/// frames. It holds no I/O: feed it what the transport read, write out what it encoded.
///
/// ```
/// use bytes::BytesMut;
/// use trellis_wire::{Codec, Message};
///
/// let codec = Codec::new();
/// let mut wire = BytesMut::new();
/// codec.encode(&Message::StartAck { cid: 7 }, &mut wire).unwrap();
/// codec.encode(&Message::Goodbye, &mut wire).unwrap();
/// assert_eq!(codec.decode(&mut wire).unwrap(), Some(Message::StartAck { cid: 7 }));
/// assert_eq!(codec.decode(&mut wire).unwrap(), Some(Message::Goodbye));
/// assert_eq!(codec.decode(&mut wire).unwrap(), None); // needs more bytes
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    max_frame: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new()
    }
}

impl Codec {
    /// A codec accepting frames up to [`DEFAULT_MAX_FRAME`].
    pub const fn new() -> Self {
        Codec {
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Sets the largest frame body accepted and produced (at most `u32::MAX` bytes).
    pub fn with_max_frame(mut self, max_frame: usize) -> Self {
        self.max_frame = max_frame.min(u32::MAX as usize);
        self
    }

    /// The largest frame body accepted and produced.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Takes one whole frame's body off the front of `src`, if `src` holds one.
    ///
    /// # Errors
    ///
    /// [`DecodeError::FrameTooLarge`] or [`DecodeError::EmptyFrame`] for a header no peer may
    /// send; the stream cannot be resynchronised after either, so the connection should be
    /// dropped.
    pub fn decode_frame(&self, src: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        if src.len() < HEADER_LEN {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        self.check_len(len)?;
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        Ok(Some(src.split_to(len).freeze()))
    }

    /// Refuses a frame body of `len` bytes that no peer may send: empty, or over the maximum.
    pub(crate) fn check_len(&self, len: usize) -> Result<(), DecodeError> {
        if len == 0 {
            return Err(DecodeError::EmptyFrame);
        }
        if len > self.max_frame {
            return Err(DecodeError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(())
    }

    /// Takes one whole message off the front of `src`, if `src` holds one.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a bad frame header (drop the connection) or a frame whose body is
    /// not a valid message (the frame has been consumed; [`DecodeError::is_fatal`] says
    /// whether the stream can go on).
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        match self.decode_frame(src)? {
            Some(frame) => Message::decode(frame).map(Some),
            None => Ok(None),
        }
    }

    /// Appends `message` to `dst` as one frame.
    ///
    /// # Errors
    ///
    /// [`EncodeError::FrameTooLarge`] when the body exceeds the maximum frame size; `dst` is
    /// left as it was.
    pub fn encode(&self, message: &Message, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_with(dst, |dst| {
            message.encode_body(dst);
            Ok::<_, EncodeError>(())
        })
    }

    /// Writes one frame whose body `body` writes; on any error nothing of it stays in `dst`.
    pub(crate) fn encode_with<E: From<EncodeError>>(
        &self,
        dst: &mut BytesMut,
        body: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), E> {
        self.encode_head(dst, 0, body)
    }

    /// Writes the head of one frame: its length, then what `body` writes; the frame's last
    /// `rest` bytes are the caller's to queue right after (a value sent from where it is). On
    /// any error nothing of it stays in `dst`.
    pub(crate) fn encode_head<E: From<EncodeError>>(
        &self,
        dst: &mut BytesMut,
        rest: usize,
        body: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), E> {
        if rest > self.max_frame {
            let max = self.max_frame;
            return Err(EncodeError::FrameTooLarge { len: rest, max }.into());
        }
        // Cuts `dst` back to `start` unless the frame completes: on an error, on a frame too
        // large, and on a panic in `body` (a value's `Serialize`), so that no partial frame
        // is ever sent.
        struct Partial<'a> {
            dst: &'a mut BytesMut,
            start: usize,
            done: bool,
        }
        impl Drop for Partial<'_> {
            fn drop(&mut self) {
                if !self.done {
                    self.dst.truncate(self.start);
                }
            }
        }
        let start = dst.len();
        dst.put_u32(0);
        let mut frame = Partial {
            dst,
            start,
            done: false,
        };
        body(frame.dst)?;
        let len = frame.dst.len() - start - HEADER_LEN + rest;
        if len > self.max_frame {
            return Err(EncodeError::FrameTooLarge {
                len,
                max: self.max_frame,
            }
            .into());
        }
        frame.dst[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        frame.done = true;
        Ok(())
    }
}
