//! Handshake flights ("volleys"): what OpenSSL writes for one flight is taken apart into its
//! handshake messages, and packed again into datagrams that fit the current MTU, with record
//! numbers of our own — so that the endpoint, not OpenSSL, decides how big datagrams are and
//! when a flight is sent again (RFC 6347 §4.2.4).

#![forbid(unsafe_code)]

use crate::record::{
    BadPacket, HANDSHAKE_HEADER_LEN, RECORD_HEADER_LEN, content_type, decode_handshake_fragment,
    encode_handshake_fragment, encode_record, records,
};

/// One message of a flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlightMessage {
    /// A handshake message in the clear, reassembled: can be fragmented again at will.
    Handshake {
        /// The record version it came with.
        version: [u8; 2],
        /// Its handshake type.
        msg_type: u8,
        /// Its handshake sequence number.
        msg_seq: u16,
        /// The whole message.
        body: Vec<u8>,
    },
    /// ChangeCipherSpec or an alert: one record that is part of the flight but not a
    /// handshake message, so it cannot be fragmented (it is tiny).
    Pseudo {
        /// The record version.
        version: [u8; 2],
        /// Its content type.
        content_type: u8,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// An encrypted record of a later epoch (the Finished message): sent again as it is,
    /// record number included. It is one hash long, so it always fits.
    Opaque(Vec<u8>),
}

impl FlightMessage {
    /// The handshake sequence number, for handshake messages.
    pub fn msg_seq(&self) -> Option<u16> {
        match self {
            FlightMessage::Handshake { msg_seq, .. } => Some(*msg_seq),
            _ => None,
        }
    }
}

/// The messages of a flight OpenSSL wrote, fragments reassembled.
///
/// # Errors
///
/// [`BadPacket`] for malformed records or fragments (OpenSSL's output is trusted, but a wrong
/// fragment is still an error rather than a panic), and for messages declaring more bytes
/// than the flight holds: a declared length never sizes an allocation beyond the input.
pub fn decode_flight(bytes: &[u8]) -> Result<Vec<FlightMessage>, BadPacket> {
    let mut messages: Vec<FlightMessage> = Vec::new();
    // What the messages' declared lengths have allocated: every byte of a message comes from
    // the flight, so together they cannot exceed it.
    let mut allocated = 0usize;
    for record in records(bytes) {
        let record = record?;
        if record.epoch() != 0 {
            let mut raw = Vec::with_capacity(RECORD_HEADER_LEN + record.payload.len());
            encode_record(
                record.content_type,
                record.version,
                record.epoch_seq,
                record.payload,
                &mut raw,
            );
            messages.push(FlightMessage::Opaque(raw));
            continue;
        }
        if record.content_type != content_type::HANDSHAKE {
            messages.push(FlightMessage::Pseudo {
                version: record.version,
                content_type: record.content_type,
                payload: record.payload.to_vec(),
            });
            continue;
        }
        let fragment = decode_handshake_fragment(record.payload)?;
        let existing = messages.iter_mut().find_map(|m| match m {
            FlightMessage::Handshake {
                msg_type,
                msg_seq,
                body,
                ..
            } if *msg_seq == fragment.msg_seq => Some((msg_type, body)),
            _ => None,
        });
        let body = match existing {
            Some((msg_type, body)) => {
                if *msg_type != fragment.msg_type || body.len() != fragment.msg_len as usize {
                    return Err(BadPacket("fragments of one message disagree"));
                }
                body
            }
            None => {
                allocated += fragment.msg_len as usize;
                if allocated > bytes.len() {
                    return Err(BadPacket("handshake messages longer than their flight"));
                }
                messages.push(FlightMessage::Handshake {
                    version: record.version,
                    msg_type: fragment.msg_type,
                    msg_seq: fragment.msg_seq,
                    body: vec![0; fragment.msg_len as usize],
                });
                match messages.last_mut() {
                    Some(FlightMessage::Handshake { body, .. }) => body,
                    _ => unreachable!("just pushed"),
                }
            }
        };
        // `decode_handshake_fragment` checked that the fragment fits in its message.
        let at = fragment.frag_offset as usize;
        body[at..at + fragment.frag.len()].copy_from_slice(fragment.frag);
    }
    Ok(messages)
}

/// Numbers our epoch-0 records and packs flights into datagrams.
#[derive(Debug, Clone, Default)]
pub struct RecordEncoder {
    next_seq: u64,
}

impl RecordEncoder {
    /// An encoder whose first record has sequence number 0.
    pub fn new() -> Self {
        RecordEncoder::default()
    }

    /// Makes the next record number `n` (a server continues from the sequence number of the
    /// ClientHello that carried a valid cookie, so that its records are newer than the
    /// HelloVerifyRequest that copied the first ClientHello's).
    pub fn set_next_seq(&mut self, n: u64) {
        self.next_seq = n;
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Packs `messages` into datagrams of at most `mtu` bytes, fragmenting handshake messages
    /// where needed; each call numbers its records afresh, so a flight sent again is new
    /// records, as RFC 6347 §4.2.4 requires.
    ///
    /// An `mtu` too small for a record header, a handshake header and one byte is raised to
    /// that.
    pub fn encode_flight(&mut self, messages: &[FlightMessage], mtu: usize) -> Vec<Vec<u8>> {
        let mtu = mtu.max(RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + 1);
        let mut packets = Vec::new();
        let mut packet = Vec::new();
        // Starts a new datagram when `needed` more bytes do not fit in this one.
        let start_new = |packets: &mut Vec<Vec<u8>>, packet: &mut Vec<u8>, needed: usize| {
            if !packet.is_empty() && packet.len() + needed > mtu {
                packets.push(std::mem::take(packet));
            }
        };
        for message in messages {
            match message {
                FlightMessage::Opaque(raw) => {
                    start_new(&mut packets, &mut packet, raw.len());
                    packet.extend_from_slice(raw);
                }
                FlightMessage::Pseudo {
                    version,
                    content_type,
                    payload,
                } => {
                    start_new(&mut packets, &mut packet, RECORD_HEADER_LEN + payload.len());
                    let seq = self.take_seq();
                    encode_record(*content_type, *version, seq, payload, &mut packet);
                }
                FlightMessage::Handshake {
                    version,
                    msg_type,
                    msg_seq,
                    body,
                } => {
                    let mut offset = 0;
                    // An empty message still goes out, as one empty fragment.
                    loop {
                        let overhead = RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN;
                        if packet.len() + overhead >= mtu {
                            packets.push(std::mem::take(&mut packet));
                        }
                        let room = mtu - packet.len() - overhead;
                        let end = (offset + room).min(body.len());
                        let mut fragment = Vec::with_capacity(HANDSHAKE_HEADER_LEN + end - offset);
                        encode_handshake_fragment(
                            *msg_type,
                            body.len(),
                            *msg_seq,
                            offset,
                            &body[offset..end],
                            &mut fragment,
                        );
                        let seq = self.take_seq();
                        encode_record(
                            content_type::HANDSHAKE,
                            *version,
                            seq,
                            &fragment,
                            &mut packet,
                        );
                        offset = end;
                        if offset >= body.len() {
                            break;
                        }
                    }
                }
            }
        }
        if !packet.is_empty() {
            packets.push(packet);
        }
        packets
    }
}
