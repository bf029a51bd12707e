//! The trellis actor wire protocol, sans I/O: message types, framing, the handshake and the
//! per-call state machines, over byte buffers. The actor runtime glues it to sockets; tests and
//! fuzzers drive it directly.
//!
//! The protocol is specified in `docs/wire-protocol.md` at the repository root, precisely
//! enough to write a peer in another language. In short: length-prefixed MessagePack frames
//! ([`Codec`]), one connection per pair of actors carrying many calls by call id, a
//! [`Hello`] and an [`Auth`] from each side first (a mutual challenge–response over a shared
//! secret, [`auth`]), and [`Session`] checking each message against its call's state.
//!
//! Decoding never panics on any input: every malformed frame is a [`DecodeError`], every
//! message out of place a [`ProtocolError`].

#![forbid(unsafe_code)]

pub mod auth;
mod error;
mod extension;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod message;
mod msgpack;
mod outgoing;
mod payload;
mod session;

pub use auth::{Key, KeyError, Keyring};
pub use error::{DecodeError, EncodeError, ErrorKind, ErrorReport, PayloadError, ProtocolError};
pub use extension::{
    CancelReason, MAX_CANCEL_MESSAGE, MAX_CANCEL_ORIGIN, MAX_TRACE_VALUE, TraceContext,
};
pub use frame::{Codec, DEFAULT_MAX_FRAME, HEADER_LEN};
pub use message::{
    ActorId, Auth, CallKind, Hello, Identity, Message, PROTOCOL_VERSION, Peer, Version,
};
pub use outgoing::{Outgoing, SHARE_FROM};
pub use payload::{MAX_PAYLOAD_DEPTH, Payload};
pub use session::{
    Batch, CallCounts, CidHash, CidHasher, ConnectionError, Event, ITEM_OVERHEAD, MAX_DETACHED,
    Outcome, Role, SendError, Session, Side, StreamStats, Window,
};

/// The README's example, compiled and run as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
