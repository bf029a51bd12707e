//! [`Payload`]: one MessagePack value carried for the application (arguments, results, stream
//! items), kept as bytes until the application decodes it into its own type; short values read
//! from a peer are held inline, long ones share the frame they came in.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::msgpack::Reader;
use crate::{DecodeError, PayloadError};

/// One MessagePack value carried for the application: arguments, a result, a stream item.
#[derive(Clone)]
pub struct Payload(Repr);

/// Values of at most this many bytes read from a peer are copied into their `Payload`
/// instead of sharing the read buffer: a stream of small items then touches no reference
/// count shared between the thread that reads the socket and the one that consumes them.
const INLINE: usize = 22;

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Bytes),
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.as_bytes().len())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Payload {}

impl Payload {
    pub(crate) fn shared(bytes: Bytes) -> Payload {
        Payload(Repr::Shared(bytes))
    }

    /// The value at `range` of `buf`: copied when short, else a share of `buf`.
    pub(crate) fn from_buffer(buf: &Bytes, range: std::ops::Range<usize>) -> Payload {
        match Payload::inline(&buf[range.clone()]) {
            Some(inline) => inline,
            None => Payload::shared(buf.slice(range)),
        }
    }

    /// The `len` bytes at `at` of `buf`, inline when short. When `buf` holds a whole inline
    /// buffer's worth from `at`, that many are copied (a copy of fixed size, no call to
    /// `memcpy` for each item); the bytes past `len` are never read.
    pub(crate) fn inline_at(buf: &[u8], at: usize, len: usize) -> Option<Payload> {
        let fixed: Option<&[u8; INLINE]> = buf
            .get(at..at + INLINE)
            .and_then(|window| window.try_into().ok());
        match (u8::try_from(len), fixed) {
            (Ok(short), Some(window)) if len <= INLINE => Some(Payload(Repr::Inline {
                len: short,
                bytes: *window,
            })),
            _ => Payload::inline(buf.get(at..at + len)?),
        }
    }

    fn inline(value: &[u8]) -> Option<Payload> {
        let len = u8::try_from(value.len())
            .ok()
            .filter(|&n| usize::from(n) <= INLINE)?;
        let mut bytes = [0; INLINE];
        bytes[..value.len()].copy_from_slice(value);
        Some(Payload(Repr::Inline { len, bytes }))
    }

    /// Encodes `value` (structs as maps with field names, so a peer in another language reads
    /// them by name).
    ///
    /// # Errors
    ///
    /// When `value`'s `Serialize` fails.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Payload, PayloadError> {
        let mut out = BytesMut::new().writer();
        rmp_serde::encode::write_named(&mut out, value)
            .map_err(|e| PayloadError::Encode(e.to_string()))?;
        Ok(Payload::shared(out.into_inner().freeze()))
    }

    /// Encodes `value` as [`encode`](Payload::encode) does, at the end of `dst`.
    ///
    /// # Errors
    ///
    /// [`PayloadError::Encode`] when `value`'s `Serialize` fails; `dst` may then hold part of
    /// it (callers truncate).
    pub fn encode_into<T: Serialize + ?Sized>(
        value: &T,
        dst: &mut BytesMut,
    ) -> Result<(), PayloadError> {
        let mut out = dst.writer();
        rmp_serde::encode::write_named(&mut out, value)
            .map_err(|e| PayloadError::Encode(e.to_string()))
    }

    /// Decodes the value as a `T`.
    ///
    /// # Errors
    ///
    /// [`PayloadError::Decode`] when the bytes are not a `T` (say, a remote function called
    /// with arguments of the wrong shape).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        decode_limited(self.as_bytes()).map_err(|e| PayloadError::Decode(e.to_string()))
    }

    /// The value as a byte string when it is one (a MessagePack `bin`, what a `bytes::Bytes`
    /// or `serde_bytes` value encodes to): a long value shares this payload's memory, with no
    /// copy; a short one is copied. `None` for any other value.
    pub fn to_bin(&self) -> Option<Bytes> {
        let mut reader = Reader::new(self.as_bytes());
        let value = reader.bin().ok().filter(|_| reader.is_empty())?;
        Some(match &self.0 {
            Repr::Shared(shared) => shared.slice_ref(value),
            Repr::Inline { .. } => Bytes::copy_from_slice(value),
        })
    }

    /// The MessagePack `nil` value (the unit `()`).
    pub fn unit() -> Payload {
        Payload::shared(Bytes::from_static(&[0xc0]))
    }

    /// The encoded value.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(bytes) => bytes,
        }
    }

    /// A payload from bytes that hold exactly one MessagePack value.
    ///
    /// # Errors
    ///
    /// When `bytes` is not exactly one well-formed value.
    pub fn from_bytes(bytes: Bytes) -> Result<Payload, DecodeError> {
        let mut reader = Reader::new(&bytes);
        reader.raw_value()?;
        if !reader.is_empty() {
            return Err(DecodeError::TrailingBytes {
                at: reader.position(),
            });
        }
        Ok(Payload::shared(bytes))
    }
}

/// How deeply containers may nest in a payload or an error report when it is decoded into a
/// Rust value. Decoding recurses once per level; a peer must not be able to exhaust a thread's
/// stack with a small frame of nested arrays.
pub const MAX_PAYLOAD_DEPTH: usize = 128;

pub(crate) fn decode_limited<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_PAYLOAD_DEPTH);
    T::deserialize(&mut de)
}
