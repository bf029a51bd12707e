//! The messages two actors exchange, and their MessagePack envelope.
//!
//! Every message body is an array whose first element is the message's kind number; the other
//! elements are its fields in a fixed order (see `docs/wire-protocol.md`). Values carried for the
//! application (arguments, results, stream items) are [`Payload`]s: one MessagePack value each,
//! kept as bytes until the application decodes it into its own type.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::extension::{CancelReason, TraceContext};
use crate::msgpack::{Reader, write_array_len, write_bin, write_str, write_uint};
use crate::payload::{Payload, decode_limited};
use crate::{DecodeError, ErrorReport};

/// A protocol version: peers must agree on `major`; `minor` only adds what older peers can
/// do without (new optional fields at the end of a message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

/// The version this crate speaks.
pub const PROTOCOL_VERSION: Version = Version { major: 2, minor: 1 };

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Who an actor is: its name (not unique) and a unique id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActorId {
    /// The name it was started under.
    pub name: String,
    /// Unique among all actors ever started (random, 128 bits as hex is what trellis uses).
    pub uid: String,
}

impl ActorId {
    /// An id from its parts.
    pub fn new(name: impl Into<String>, uid: impl Into<String>) -> Self {
        ActorId {
            name: name.into(),
            uid: uid.into(),
        }
    }
}

impl std::fmt::Display for ActorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}#{}",
            self.name,
            self.uid.get(..8).unwrap_or(&self.uid)
        )
    }
}

/// The first message on every connection, from both sides: the version and a fresh nonce.
/// It says nothing of who the sender is: that comes in [`Auth`], once the peer is known to
/// belong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the sender speaks.
    pub version: Version,
    /// [`NONCE_LEN`](crate::auth::NONCE_LEN) random bytes, fresh for this connection.
    pub nonce: Bytes,
}

/// The second message of each side: the credential it proves, the proof, and who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The name of the credential proved, or `None` for a peer without one.
    pub credential: Option<String>,
    /// The proof (HMAC-SHA256, see [`proof`](crate::auth::proof)), or `None` with no
    /// credential.
    pub proof: Option<Bytes>,
    /// The sender.
    pub actor: ActorId,
    /// The sender's process id (0 where there is none).
    pub pid: u32,
}

/// Who this side of a connection is, as its `Auth` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The actor.
    pub actor: ActorId,
    /// Its process id (0 where there is none).
    pub pid: u32,
}

impl Identity {
    /// An identity from its parts.
    pub fn new(actor: ActorId, pid: u32) -> Self {
        Identity { actor, pid }
    }
}

/// The peer of a connection whose handshake completed: who it is and what it proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The version it speaks (the same major version as ours).
    pub version: Version,
    /// The peer actor.
    pub actor: ActorId,
    /// Its process id (0 where there is none).
    pub pid: u32,
    /// The credential it proved, or `None` when it proved none (an anonymous client, accepted
    /// because this side's keyring accepts those).
    pub credential: Option<String>,
}

/// What a call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// One result (`Portal::run`).
    Run,
    /// A one-way stream of values from the callee, then a result.
    Stream,
    /// A context: a `Started` value, then a two-way stream, then a result.
    Context,
}

impl CallKind {
    fn code(self) -> u64 {
        match self {
            CallKind::Run => 0,
            CallKind::Stream => 1,
            CallKind::Context => 2,
        }
    }

    fn from_code(code: u64, at: usize) -> Result<Self, DecodeError> {
        Ok(match code {
            0 => CallKind::Run,
            1 => CallKind::Stream,
            2 => CallKind::Context,
            _ => {
                return Err(DecodeError::OutOfRange {
                    at,
                    what: "a call kind (0, 1 or 2)",
                });
            }
        })
    }
}

/// Every message of the protocol. `cid` is the call id the message belongs to; see
/// `docs/wire-protocol.md` for who may send what, and when.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// The first message of each side: version and nonce.
    Hello(Hello),
    /// The second message of each side: credential, proof and identity.
    Auth(Auth),
    /// Caller → callee: run `function` with `args`.
    Start {
        /// A new call id of the caller's parity.
        cid: u64,
        /// The registered name of the function.
        function: String,
        /// What the call returns.
        kind: CallKind,
        /// The arguments, one value (usually an array).
        args: Payload,
        /// The caller's trace context, when it has one (2.1; absent or nil: none).
        trace: Option<Box<TraceContext>>,
    },
    /// Callee → caller: the function exists and runs.
    StartAck {
        /// The call.
        cid: u64,
    },
    /// Callee → caller, contexts only: the value the function passed to `started`.
    Started {
        /// The call.
        cid: u64,
        /// The value.
        value: Payload,
    },
    /// Either way: one stream item.
    Yield {
        /// The call.
        cid: u64,
        /// The item.
        value: Payload,
    },
    /// Either way: the sender will send no more stream items.
    Stop {
        /// The call.
        cid: u64,
    },
    /// Callee → caller: the function returned; the call is over.
    Return {
        /// The call.
        cid: u64,
        /// The returned value.
        value: Payload,
    },
    /// Callee → caller: the call failed and is over; with no `cid`, the connection failed.
    Error {
        /// The call, or `None` for the connection.
        cid: Option<u64>,
        /// What went wrong.
        error: Box<ErrorReport>,
    },
    /// Caller → callee: cancel the call, at `requested_by`'s request.
    Cancel {
        /// The call.
        cid: u64,
        /// The actor that asked for the cancellation.
        requested_by: ActorId,
        /// Why (2.1; absent or nil: not said).
        reason: Option<Box<CancelReason>>,
    },
    /// Callee → caller: the call was cancelled, at `requested_by`'s request, and is over.
    CancelAck {
        /// The call.
        cid: u64,
        /// The actor that asked for the cancellation.
        requested_by: ActorId,
        /// Why (2.1; absent or nil: not said).
        reason: Option<Box<CancelReason>>,
    },
    /// Either way: the receiver of a stream may take `count` more items.
    Credit {
        /// The call.
        cid: u64,
        /// How many more items; at least 1.
        count: u32,
    },
    /// Either way: the sender closes the connection on purpose; nothing follows.
    Goodbye,
}

/// The kind numbers of the envelope.
mod kind {
    pub(super) const HELLO: u64 = 0;
    pub(super) const START: u64 = 1;
    pub(super) const START_ACK: u64 = 2;
    pub(super) const STARTED: u64 = 3;
    pub(super) const YIELD: u64 = 4;
    pub(super) const STOP: u64 = 5;
    pub(super) const RETURN: u64 = 6;
    pub(super) const ERROR: u64 = 7;
    pub(super) const CANCEL: u64 = 8;
    pub(super) const CANCEL_ACK: u64 = 9;
    pub(super) const CREDIT: u64 = 10;
    pub(super) const GOODBYE: u64 = 11;
    pub(super) const AUTH: u64 = 12;
}

impl Message {
    /// The message's name, as the protocol document spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Auth(_) => "Auth",
            Message::Start { .. } => "Start",
            Message::StartAck { .. } => "StartAck",
            Message::Started { .. } => "Started",
            Message::Yield { .. } => "Yield",
            Message::Stop { .. } => "Stop",
            Message::Return { .. } => "Return",
            Message::Error { .. } => "Error",
            Message::Cancel { .. } => "Cancel",
            Message::CancelAck { .. } => "CancelAck",
            Message::Credit { .. } => "Credit",
            Message::Goodbye => "Goodbye",
        }
    }

    /// The call the message belongs to, if any.
    pub fn cid(&self) -> Option<u64> {
        match self {
            Message::Hello(_) | Message::Auth(_) | Message::Goodbye => None,
            Message::Error { cid, .. } => *cid,
            Message::Start { cid, .. }
            | Message::StartAck { cid }
            | Message::Started { cid, .. }
            | Message::Yield { cid, .. }
            | Message::Stop { cid }
            | Message::Return { cid, .. }
            | Message::Cancel { cid, .. }
            | Message::CancelAck { cid, .. }
            | Message::Credit { cid, .. } => Some(*cid),
        }
    }

    /// Writes the message's body (without the frame header).
    pub(crate) fn encode_body(&self, dst: &mut BytesMut) {
        let actor = |dst: &mut BytesMut, id: &ActorId| {
            write_array_len(dst, 2);
            write_str(dst, &id.name);
            write_str(dst, &id.uid);
        };
        match self {
            Message::Hello(hello) => {
                write_array_len(dst, 4);
                write_uint(dst, kind::HELLO);
                write_array_len(dst, 2);
                write_uint(dst, hello.version.major.into());
                write_uint(dst, hello.version.minor.into());
                write_bin(dst, &hello.nonce);
                // Reserved for capabilities: an empty map.
                dst.put_u8(0x80);
            }
            Message::Auth(auth) => {
                write_array_len(dst, 5);
                write_uint(dst, kind::AUTH);
                match &auth.credential {
                    Some(name) => write_str(dst, name),
                    None => dst.put_u8(0xc0),
                }
                match &auth.proof {
                    Some(proof) => write_bin(dst, proof),
                    None => dst.put_u8(0xc0),
                }
                actor(dst, &auth.actor);
                write_uint(dst, auth.pid.into());
            }
            Message::Start {
                cid,
                function,
                kind,
                args,
                trace,
            } => {
                write_array_len(dst, if trace.is_some() { 6 } else { 5 });
                write_uint(dst, kind::START);
                write_uint(dst, *cid);
                write_str(dst, function);
                write_uint(dst, kind.code());
                dst.put_slice(args.as_bytes());
                if let Some(trace) = trace {
                    trace.encode(dst);
                }
            }
            Message::StartAck { cid } => id_only(dst, kind::START_ACK, *cid),
            Message::Stop { cid } => id_only(dst, kind::STOP, *cid),
            Message::Started { cid, value } => with_value(dst, kind::STARTED, *cid, value),
            Message::Yield { cid, value } => with_value(dst, kind::YIELD, *cid, value),
            Message::Return { cid, value } => with_value(dst, kind::RETURN, *cid, value),
            Message::Error { cid, error } => {
                write_array_len(dst, 3);
                write_uint(dst, kind::ERROR);
                match cid {
                    Some(cid) => write_uint(dst, *cid),
                    None => dst.put_u8(0xc0),
                }
                let mut w = std::mem::take(dst).writer();
                rmp_serde::encode::write_named(&mut w, error.as_ref())
                    .expect("an error report always encodes");
                *dst = w.into_inner();
            }
            Message::Cancel {
                cid,
                requested_by,
                reason,
            }
            | Message::CancelAck {
                cid,
                requested_by,
                reason,
            } => {
                write_array_len(dst, if reason.is_some() { 4 } else { 3 });
                let code = if matches!(self, Message::Cancel { .. }) {
                    kind::CANCEL
                } else {
                    kind::CANCEL_ACK
                };
                write_uint(dst, code);
                write_uint(dst, *cid);
                actor(dst, requested_by);
                if let Some(reason) = reason {
                    reason.encode(dst);
                }
            }
            Message::Credit { cid, count } => {
                write_array_len(dst, 3);
                write_uint(dst, kind::CREDIT);
                write_uint(dst, *cid);
                write_uint(dst, (*count).into());
            }
            Message::Goodbye => {
                write_array_len(dst, 1);
                write_uint(dst, kind::GOODBYE);
            }
        }
    }

    /// Decodes one frame's body. Payloads share `frame`'s memory.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] saying where and why the bytes are not a message.
    pub fn decode(frame: Bytes) -> Result<Message, DecodeError> {
        let mut r = Reader::new(&frame);
        let len = r.array_len()?;
        if len == 0 {
            return Err(DecodeError::MissingField {
                kind: None,
                field: "kind",
            });
        }
        let kind_at = r.position();
        let code = r.uint()?;
        // Fields in order; a message may carry more elements than this version knows (a newer
        // minor version's additions), which are skipped.
        let mut fields = Fields {
            r,
            left: len - 1,
            kind: code,
            frame: &frame,
        };
        let message = match code {
            kind::HELLO => {
                fields.next("version")?;
                let elements = fields.r.array_len()?;
                if elements < 2 {
                    return Err(DecodeError::MissingField {
                        kind: Some(code),
                        field: "version.minor",
                    });
                }
                let major = fields.r.uint_as("a u16 major version")?;
                let minor = fields.r.uint_as("a u16 minor version")?;
                // Later elements of the version are reserved.
                fields.r.skip_values(elements - 2)?;
                let version = Version { major, minor };
                if major != PROTOCOL_VERSION.major {
                    // Another major version lays its Hello out its own way: what follows its
                    // version is not ours to read. The session refuses the version.
                    fields.r.skip_values(fields.left)?;
                    fields.left = 0;
                    Message::Hello(Hello {
                        version,
                        nonce: Bytes::new(),
                    })
                } else {
                    fields.next("nonce")?;
                    let nonce = fields.bin()?;
                    // Reserved; required so that a peer that forgot it learns at once.
                    fields.next("capabilities")?;
                    fields.r.skip_values(1)?;
                    Message::Hello(Hello { version, nonce })
                }
            }
            kind::AUTH => {
                fields.next("credential")?;
                let credential = if fields.r.peek_nil() {
                    fields.r.nil()?;
                    None
                } else {
                    Some(fields.r.str()?.to_owned())
                };
                fields.next("proof")?;
                let proof = if fields.r.peek_nil() {
                    fields.r.nil()?;
                    None
                } else {
                    Some(fields.bin()?)
                };
                let actor = fields.actor("actor")?;
                fields.next("pid")?;
                let pid = fields.r.uint_as("a u32 pid")?;
                Message::Auth(Auth {
                    credential,
                    proof,
                    actor,
                    pid,
                })
            }
            kind::START => {
                let cid = fields.cid()?;
                fields.next("function")?;
                let function = fields.r.str()?.to_owned();
                fields.next("kind")?;
                let at = fields.r.position();
                let kind = CallKind::from_code(fields.r.uint()?, at)?;
                let args = fields.payload("args")?;
                let trace = match fields.optional() {
                    true => TraceContext::decode(&mut fields.r)?,
                    false => None,
                };
                Message::Start {
                    cid,
                    function,
                    kind,
                    args,
                    trace,
                }
            }
            kind::START_ACK => Message::StartAck { cid: fields.cid()? },
            kind::STOP => Message::Stop { cid: fields.cid()? },
            kind::STARTED => Message::Started {
                cid: fields.cid()?,
                value: fields.payload("value")?,
            },
            kind::YIELD => Message::Yield {
                cid: fields.cid()?,
                value: fields.payload("value")?,
            },
            kind::RETURN => Message::Return {
                cid: fields.cid()?,
                value: fields.payload("value")?,
            },
            kind::ERROR => {
                fields.next("cid")?;
                let cid = if fields.r.peek_nil() {
                    fields.r.nil()?;
                    None
                } else {
                    Some(fields.r.uint()?)
                };
                let report = fields.payload("error")?;
                let error = decode_limited::<ErrorReport>(report.as_bytes())
                    .map_err(|e| DecodeError::BadErrorReport(e.to_string()))?;
                Message::Error {
                    cid,
                    error: Box::new(error),
                }
            }
            kind::CANCEL => Message::Cancel {
                cid: fields.cid()?,
                requested_by: fields.actor("requested_by")?,
                reason: fields.reason()?,
            },
            kind::CANCEL_ACK => Message::CancelAck {
                cid: fields.cid()?,
                requested_by: fields.actor("requested_by")?,
                reason: fields.reason()?,
            },
            kind::CREDIT => {
                let cid = fields.cid()?;
                fields.next("count")?;
                let count = fields.r.uint_as("a u32 credit count")?;
                Message::Credit { cid, count }
            }
            kind::GOODBYE => Message::Goodbye,
            _ => {
                return Err(DecodeError::UnknownKind {
                    kind: code,
                    at: kind_at,
                });
            }
        };
        fields.finish()?;
        Ok(message)
    }
}

fn id_only(dst: &mut BytesMut, code: u64, cid: u64) {
    write_array_len(dst, 2);
    write_uint(dst, code);
    write_uint(dst, cid);
}

impl Message {
    /// Takes a whole `Yield` frame of the plain shape (three elements: kind, call id, value)
    /// off the front of `src`, when it starts with one: the value shares `src`'s memory, with
    /// no frame of its own to make and drop for each stream item. `None` leaves `src` as it
    /// was, for [`Codec::decode`](crate::Codec::decode) to take or refuse.
    pub(crate) fn take_yield(src: &mut BytesMut, max_frame: usize) -> Option<(u64, Payload)> {
        use crate::frame::HEADER_LEN;
        let header: [u8; HEADER_LEN] = src.get(..HEADER_LEN)?.try_into().ok()?;
        let len = u32::from_be_bytes(header) as usize;
        if len > max_frame {
            return None;
        }
        let (cid, value_at) = Message::yield_head_of(src.get(HEADER_LEN..HEADER_LEN + len)?)?;
        let value_len = len - value_at;
        let payload = match Payload::inline_at(src, HEADER_LEN + value_at, value_len) {
            Some(inline) => {
                src.advance(HEADER_LEN + len);
                inline
            }
            None => {
                src.advance(HEADER_LEN + value_at);
                Payload::shared(src.split_to(value_len).freeze())
            }
        };
        Some((cid, payload))
    }

    /// The call id and value of a `Yield` whose whole frame body is `frame`, the value sharing
    /// the frame's memory; `None` for any other frame, left to [`Message::decode`].
    pub(crate) fn yield_of(frame: &Bytes) -> Option<(u64, Payload)> {
        let (cid, value_at) = Message::yield_head_of(frame)?;
        Some((cid, Payload::from_buffer(frame, value_at..frame.len())))
    }

    /// The call id of the `Yield` that `body` (a whole frame body) is, and where its value
    /// starts: `None` unless `body` is exactly a well-formed `Yield`.
    fn yield_head_of(body: &[u8]) -> Option<(u64, usize)> {
        if body.first() != Some(&0x93) {
            return None;
        }
        let mut r = Reader::new(&body[1..]);
        if r.uint().ok()? != kind::YIELD {
            return None;
        }
        let cid = r.uint().ok()?;
        let value_at = 1 + r.position();
        let value_len = r.raw_value().ok()?.len();
        (value_at + value_len == body.len()).then_some((cid, value_at))
    }

    /// The start of a `Yield`'s body, up to its value.
    pub(crate) fn yield_head(dst: &mut BytesMut, cid: u64) {
        write_array_len(dst, 3);
        write_uint(dst, kind::YIELD);
        write_uint(dst, cid);
    }
}

fn with_value(dst: &mut BytesMut, code: u64, cid: u64, value: &Payload) {
    write_array_len(dst, 3);
    write_uint(dst, code);
    write_uint(dst, cid);
    dst.put_slice(value.as_bytes());
}

/// The remaining elements of a message's array.
struct Fields<'a> {
    r: Reader<'a>,
    left: usize,
    kind: u64,
    frame: &'a Bytes,
}

impl Fields<'_> {
    /// Moves to the next field, which must be there.
    fn next(&mut self, field: &'static str) -> Result<(), DecodeError> {
        if self.left == 0 {
            return Err(DecodeError::MissingField {
                kind: Some(self.kind),
                field,
            });
        }
        self.left -= 1;
        Ok(())
    }

    fn cid(&mut self) -> Result<u64, DecodeError> {
        self.next("cid")?;
        self.r.uint()
    }

    fn payload(&mut self, field: &'static str) -> Result<Payload, DecodeError> {
        self.next(field)?;
        let start = self.r.position();
        let raw = self.r.raw_value()?;
        Ok(Payload::from_buffer(self.frame, start..start + raw.len()))
    }

    /// A binary string, sharing the frame's memory.
    fn bin(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.r.bin()?.len();
        let end = self.r.position();
        Ok(self.frame.slice(end - len..end))
    }

    fn actor(&mut self, field: &'static str) -> Result<ActorId, DecodeError> {
        self.next(field)?;
        let elements = self.r.array_len()?;
        if elements < 2 {
            return Err(DecodeError::MissingField {
                kind: Some(self.kind),
                field,
            });
        }
        let name = self.r.str()?.to_owned();
        let uid = self.r.str()?.to_owned();
        self.r.skip_values(elements - 2)?;
        Ok(ActorId { name, uid })
    }

    /// Moves to an optional field (one a minor version added), when the message has it.
    fn optional(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }

    /// The optional cancel reason of `Cancel` and `CancelAck`.
    fn reason(&mut self) -> Result<Option<Box<CancelReason>>, DecodeError> {
        match self.optional() {
            true => CancelReason::decode(&mut self.r),
            false => Ok(None),
        }
    }

    /// Skips the fields a newer minor version added; the frame must end with the message.
    fn finish(mut self) -> Result<(), DecodeError> {
        self.r.skip_values(self.left)?;
        if !self.r.is_empty() {
            return Err(DecodeError::TrailingBytes {
                at: self.r.position(),
            });
        }
        Ok(())
    }
}
