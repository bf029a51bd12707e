//! DTLS 1.2 records and handshake fragments (RFC 6347 §4.1, §4.2.2), read from untrusted bytes.
//!
//! Every function here that reads network bytes can fail only with [`BadPacket`]: lengths are
//! checked before every slice, nothing indexes past the end, nothing allocates more than the
//! packet it was given.

#![forbid(unsafe_code)]

/// The one error of everything that reads bytes from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad DTLS packet: {0}")]
pub struct BadPacket(pub &'static str);

/// A record's content type (the registry's values, whether used here or not).
#[allow(dead_code)]
pub mod content_type {
    /// `change_cipher_spec`.
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    /// `alert`.
    pub const ALERT: u8 = 21;
    /// `handshake`.
    pub const HANDSHAKE: u8 = 22;
    /// `application_data`.
    pub const APPLICATION_DATA: u8 = 23;
}

/// A handshake message's type (those this crate looks at, and ServerHello).
#[allow(dead_code)]
pub mod handshake_type {
    /// `client_hello`.
    pub const CLIENT_HELLO: u8 = 1;
    /// `server_hello`.
    pub const SERVER_HELLO: u8 = 2;
    /// `hello_verify_request`.
    pub const HELLO_VERIFY_REQUEST: u8 = 3;
}

/// DTLS 1.0's version bytes (used in HelloVerifyRequest, RFC 6347 §4.2.1).
pub const DTLS1_0: [u8; 2] = [254, 255];
/// DTLS 1.2's version bytes.
#[cfg_attr(not(any(test, fuzzing)), allow(dead_code))]
pub const DTLS1_2: [u8; 2] = [254, 253];

/// A record header: content type, version, epoch and sequence number, length.
pub const RECORD_HEADER_LEN: usize = 13;
/// A handshake message header: type, length, message sequence, fragment offset and length.
pub const HANDSHAKE_HEADER_LEN: usize = 12;

/// The epoch is the top 16 bits of the 64-bit epoch-and-sequence field.
const EPOCH_SHIFT: u32 = 48;

/// One record of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its content type (see [`content_type`]).
    pub content_type: u8,
    /// Its version bytes.
    pub version: [u8; 2],
    /// Epoch (top 16 bits) and sequence number (low 48 bits), as one number: a new epoch
    /// jumps forward by 2^48.
    pub epoch_seq: u64,
    /// Its payload.
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// The record's epoch: 0 during the first handshake.
    pub fn epoch(&self) -> u16 {
        (self.epoch_seq >> EPOCH_SHIFT) as u16
    }
}

/// The records of a datagram, in order; after a bad one, the iterator ends.
pub fn records(packet: &[u8]) -> Records<'_> {
    Records { rest: packet }
}

/// The iterator of [`records`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, BadPacket>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = parse_record(self.rest);
        match parsed {
            Ok((record, rest)) => {
                self.rest = rest;
                Some(Ok(record))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

fn parse_record(bytes: &[u8]) -> Result<(Record<'_>, &[u8]), BadPacket> {
    let Some((header, rest)) = bytes.split_first_chunk::<RECORD_HEADER_LEN>() else {
        return Err(BadPacket("short record header"));
    };
    let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
    if rest.len() < len {
        return Err(BadPacket("record longer than the datagram"));
    }
    let (payload, rest) = rest.split_at(len);
    let mut epoch_seq = [0u8; 8];
    epoch_seq.copy_from_slice(&header[3..11]);
    Ok((
        Record {
            content_type: header[0],
            version: [header[1], header[2]],
            epoch_seq: u64::from_be_bytes(epoch_seq),
            payload,
        },
        rest,
    ))
}

/// Appends a record to `out`.
///
/// # Panics
///
/// When `payload` is longer than a record can be (65,535 bytes): callers build payloads.
pub fn encode_record(
    content_type: u8,
    version: [u8; 2],
    epoch_seq: u64,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let len = u16::try_from(payload.len()).expect("a record payload fits in 16 bits");
    out.push(content_type);
    out.extend_from_slice(&version);
    out.extend_from_slice(&epoch_seq.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Whether the datagram's first record is of epoch 0: part of a first handshake, in the clear.
/// Cannot fail; short datagrams are not.
pub fn part_of_handshake(packet: &[u8]) -> bool {
    packet.len() >= RECORD_HEADER_LEN && packet[3..5] == [0, 0]
}

/// Whether the datagram starts like a ClientHello (a handshake record whose message is of type
/// `client_hello`). Cannot fail.
pub fn is_client_hello(packet: &[u8]) -> bool {
    packet.len() > RECORD_HEADER_LEN
        && packet[0] == content_type::HANDSHAKE
        && packet[RECORD_HEADER_LEN] == handshake_type::CLIENT_HELLO
}

/// One fragment of a handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeFragment<'a> {
    /// The message's type (see [`handshake_type`]).
    pub msg_type: u8,
    /// The whole message's length.
    pub msg_len: u32,
    /// The message's sequence number in the handshake.
    pub msg_seq: u16,
    /// Where this fragment starts in the message.
    pub frag_offset: u32,
    /// The fragment's length.
    pub frag_len: u32,
    /// The fragment.
    pub frag: &'a [u8],
}

fn u24(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]])
}

/// Reads a handshake record's payload as one fragment.
///
/// # Errors
///
/// [`BadPacket`] when the header is short, the fragment's length does not match the
/// payload, or the fragment does not fit in its message.
pub fn decode_handshake_fragment(payload: &[u8]) -> Result<HandshakeFragment<'_>, BadPacket> {
    let Some((header, frag)) = payload.split_first_chunk::<HANDSHAKE_HEADER_LEN>() else {
        return Err(BadPacket("short handshake message header"));
    };
    let fragment = HandshakeFragment {
        msg_type: header[0],
        msg_len: u24(&header[1..4]),
        msg_seq: u16::from_be_bytes([header[4], header[5]]),
        frag_offset: u24(&header[6..9]),
        frag_len: u24(&header[9..12]),
        frag,
    };
    if frag.len() != fragment.frag_len as usize {
        return Err(BadPacket(
            "handshake fragment length does not match the record",
        ));
    }
    if u64::from(fragment.frag_offset) + u64::from(fragment.frag_len) > u64::from(fragment.msg_len)
    {
        return Err(BadPacket("handshake fragment past the end of its message"));
    }
    Ok(fragment)
}

/// Appends a handshake fragment (header and bytes) to `out`.
///
/// # Panics
///
/// When a length does not fit in 24 bits: callers build fragments.
pub fn encode_handshake_fragment(
    msg_type: u8,
    msg_len: usize,
    msg_seq: u16,
    frag_offset: usize,
    frag: &[u8],
    out: &mut Vec<u8>,
) {
    let u24 = |n: usize| {
        let n = u32::try_from(n)
            .ok()
            .filter(|n| *n < 1 << 24)
            .expect("fits in 24 bits");
        [(n >> 16) as u8, (n >> 8) as u8, n as u8]
    };
    out.push(msg_type);
    out.extend_from_slice(&u24(msg_len));
    out.extend_from_slice(&msg_seq.to_be_bytes());
    out.extend_from_slice(&u24(frag_offset));
    out.extend_from_slice(&u24(frag.len()));
    out.extend_from_slice(frag);
}

/// What the cookie exchange needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// The record's epoch and sequence number (the HelloVerifyRequest copies it).
    pub epoch_seq: u64,
    /// The cookie (empty in a first ClientHello).
    pub cookie: &'a [u8],
    /// The message without its cookie: what the cookie signs, identical in the first
    /// ClientHello and in the one that answers the HelloVerifyRequest (RFC 6347 §4.2.1).
    pub signed: Vec<u8>,
}

/// Reads the ClientHello that starts a datagram.
///
/// # Errors
///
/// [`BadPacket`] when the first record is not a whole, unfragmented ClientHello (a server
/// keeps no state before the cookie, so it cannot reassemble fragments), or it is too short
/// to hold its cookie.
pub fn decode_client_hello(packet: &[u8]) -> Result<ClientHello<'_>, BadPacket> {
    let record = records(packet)
        .next()
        .ok_or(BadPacket("empty datagram"))??;
    if record.content_type != content_type::HANDSHAKE {
        return Err(BadPacket("not a handshake record"));
    }
    let fragment = decode_handshake_fragment(record.payload)?;
    if fragment.msg_type != handshake_type::CLIENT_HELLO {
        return Err(BadPacket("not a ClientHello"));
    }
    if fragment.frag_offset != 0 || fragment.frag_len != fragment.msg_len {
        return Err(BadPacket("fragmented ClientHello"));
    }
    // client_version (2), random (32), session_id (length-prefixed), cookie
    // (length-prefixed), then the rest.
    let body = fragment.frag;
    const SESSION_ID_LEN_AT: usize = 2 + 32;
    let session_id_len = usize::from(
        *body
            .get(SESSION_ID_LEN_AT)
            .ok_or(BadPacket("ClientHello too short for its session id"))?,
    );
    let cookie_len_at = SESSION_ID_LEN_AT + 1 + session_id_len;
    let cookie_len = usize::from(
        *body
            .get(cookie_len_at)
            .ok_or(BadPacket("ClientHello too short for its cookie"))?,
    );
    let cookie_end = cookie_len_at + 1 + cookie_len;
    let cookie = body
        .get(cookie_len_at + 1..cookie_end)
        .ok_or(BadPacket("short cookie"))?;
    let mut signed = Vec::with_capacity(body.len() - cookie_len - 1);
    signed.extend_from_slice(&body[..cookie_len_at]);
    signed.extend_from_slice(&body[cookie_end..]);
    Ok(ClientHello {
        epoch_seq: record.epoch_seq,
        cookie,
        signed,
    })
}
