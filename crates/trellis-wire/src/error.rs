//! The errors of this crate, and the report of a remote failure that travels in an `Error`
//! message.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::message::{ActorId, Version};

/// Bytes that are not a valid frame or message. `at` is a byte offset in the frame's body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A frame header announcing more than the maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A frame header announcing an empty body.
    #[error("empty frame")]
    EmptyFrame,
    /// The body ends in the middle of a value.
    #[error("truncated value at byte {at}")]
    Truncated {
        /// Where the value starts.
        at: usize,
    },
    /// A value of the wrong type.
    #[error("expected {expected} at byte {at}, found marker {marker:#04x}")]
    Unexpected {
        /// Where.
        at: usize,
        /// What belongs there.
        expected: &'static str,
        /// The MessagePack marker byte found instead.
        marker: u8,
    },
    /// A number that does not fit its field.
    #[error("out of range at byte {at}: expected {what}")]
    OutOfRange {
        /// Where.
        at: usize,
        /// What belongs there.
        what: &'static str,
    },
    /// A string that is not UTF-8.
    #[error("invalid UTF-8 in the string at byte {at}")]
    InvalidUtf8 {
        /// Where the string starts.
        at: usize,
    },
    /// A message kind this version does not know.
    #[error("unknown message kind {kind} at byte {at}")]
    UnknownKind {
        /// The kind number.
        kind: u64,
        /// Where.
        at: usize,
    },
    /// A message without one of its fields.
    #[error("message{} lacks its {field} field", kind_suffix(*.kind))]
    MissingField {
        /// The message's kind number, once known.
        kind: Option<u64>,
        /// The missing field.
        field: &'static str,
    },
    /// Bytes after the end of the message.
    #[error("trailing bytes after the message, from byte {at}")]
    TrailingBytes {
        /// Where they start.
        at: usize,
    },
    /// An `Error` message whose report does not decode.
    #[error("malformed error report: {0}")]
    BadErrorReport(String),
}

fn kind_suffix(kind: Option<u64>) -> String {
    kind.map(|k| format!(" of kind {k}")).unwrap_or_default()
}

impl DecodeError {
    /// Whether the byte stream cannot go on after this error: the frame boundaries are lost.
    /// Other errors concern one frame, which has been consumed; the connection may report the
    /// error to its peer and continue, or close.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            DecodeError::FrameTooLarge { .. } | DecodeError::EmptyFrame
        )
    }
}

/// A message that cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded message exceeds the maximum frame size.
    #[error("message of {len} bytes exceeds the maximum frame size of {max}")]
    FrameTooLarge {
        /// The encoded length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// An application value that did not convert to or from its payload.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The value's `Serialize` failed.
    #[error("cannot encode the value: {0}")]
    Encode(String),
    /// The payload is not a value of the expected type.
    #[error("cannot decode the value: {0}")]
    Decode(String),
}

/// A message that breaks the protocol's rules for the connection or for its call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Something other than `Hello` came first.
    #[error("expected Hello first, got {got}")]
    NoHello {
        /// The message's name.
        got: &'static str,
    },
    /// A second `Hello`.
    #[error("Hello sent twice")]
    DuplicateHello,
    /// A message other than `Auth` before the handshake completed.
    #[error("expected Auth, got {got}")]
    NoAuth {
        /// The message's name.
        got: &'static str,
    },
    /// A second `Auth`.
    #[error("Auth sent twice")]
    DuplicateAuth,
    /// A `Hello` whose nonce is not [`NONCE_LEN`](crate::auth::NONCE_LEN) bytes long.
    #[error("a Hello's nonce must have 32 bytes, this one has {len}")]
    BadNonce {
        /// Its length.
        len: usize,
    },
    /// The peer did not prove a credential this side accepts (or, as the acceptor, did not
    /// prove the one it was asked for). Deliberately says no more.
    #[error("not authorized")]
    Unauthorized,
    /// The peer speaks an incompatible major version.
    #[error("protocol version {theirs} is incompatible with ours ({ours})")]
    VersionMismatch {
        /// Ours.
        ours: Version,
        /// The peer's.
        theirs: Version,
    },
    /// Anything after `Goodbye`.
    #[error("{got} after Goodbye")]
    AfterGoodbye {
        /// The message's name.
        got: &'static str,
    },
    /// A `Start` whose call id is not new, not of the starter's parity, or not increasing.
    #[error("Start with call id {cid}, which is not a fresh id of the caller's")]
    BadCallId {
        /// The id.
        cid: u64,
    },
    /// A message for a call that does not exist and never did.
    #[error("{got} for unknown call {cid}")]
    UnknownCall {
        /// The id.
        cid: u64,
        /// The message's name.
        got: &'static str,
    },
    /// A message the call's state does not allow (or that this side may not send).
    #[error("{got} not allowed for call {cid} ({call}, {state})")]
    OutOfOrder {
        /// The id.
        cid: u64,
        /// The message's name.
        got: &'static str,
        /// The call's kind and this side's role in it.
        call: String,
        /// Where the call stands.
        state: &'static str,
    },
    /// A `Credit` of zero.
    #[error("Credit of zero for call {cid}")]
    ZeroCredit {
        /// The id.
        cid: u64,
    },
}

/// What kind of failure an [`ErrorReport`] describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The function returned an error (or panicked).
    Failed,
    /// No function is registered under the name called.
    UnknownFunction,
    /// The arguments did not decode as the function's parameters.
    BadArguments,
    /// The peer broke the protocol.
    Protocol,
    /// The remote actor is being torn down and does not take calls.
    ActorShuttingDown,
    /// The peer did not authenticate, or may not call what it called.
    Unauthorized,
    /// A limit the callee sets per peer was reached: too many connections, or too many calls
    /// at once on one connection.
    LimitExceeded,
    /// Several failures together; they are in [`ErrorReport::group`].
    Group,
}

/// A failure in another actor, as it travels: enough to print it as the remote side would and
/// to rebuild a known error type on this side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// The actor where the error happened.
    pub actor: ActorId,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The Rust type name of the error (`std::any::type_name`), or a name chosen by its
    /// type's wire representation.
    pub type_name: String,
    /// The error's `Display`.
    pub message: String,
    /// The `Display` of each error in its `source()` chain, outermost first.
    #[serde(default)]
    pub chain: Vec<String>,
    /// The remote backtrace, when it was captured.
    #[serde(default)]
    pub backtrace: Option<String>,
    /// The error value itself, for types that can be rebuilt on the receiving side.
    #[serde(default, with = "opt_bytes")]
    pub value: Option<Vec<u8>>,
    /// The members, for a [`ErrorKind::Group`].
    #[serde(default)]
    pub group: Vec<ErrorReport>,
}

/// `Option<Vec<u8>>` as MessagePack `bin` (not an array of integers).
mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_bytes(bytes),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Bin(#[serde(with = "bin")] Vec<u8>);
        Ok(Option::<Bin>::deserialize(d)?.map(|b| b.0))
    }

    mod bin {
        use serde::Deserializer;
        use serde::de::{Error, SeqAccess, Visitor};

        pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                    Ok(v.to_vec())
                }
                fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                    Ok(v)
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                    let mut out = Vec::new();
                    while let Some(b) = seq.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(out)
                }
            }
            d.deserialize_bytes(V)
        }
    }
}
