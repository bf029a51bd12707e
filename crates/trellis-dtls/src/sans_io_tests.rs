//! The sans-I/O core: records, the ClientHello's cookie, the cookie exchange, demultiplexing,
//! flights and the retransmission timer. Behaviours from Trio's `test_dtls.py` are named on
//! their test.

use std::net::SocketAddr;
use std::time::Duration;

use crate::BadPacket;
use crate::cookie::{COOKIE_LEN, CookieKey, hello_verify_request};
use crate::demux::{Dropped, Incoming, classify};
use crate::record::{
    DTLS1_0, DTLS1_2, HANDSHAKE_HEADER_LEN, RECORD_HEADER_LEN, content_type, decode_client_hello,
    decode_handshake_fragment, encode_handshake_fragment, encode_record, handshake_type,
    is_client_hello, part_of_handshake, records,
};
use crate::retransmit::{MAX_TIMEOUT, Retransmit, worst_case_mtu};
use crate::volley::{FlightMessage, RecordEncoder, decode_flight};
use proptest::prelude::*;

fn peer() -> SocketAddr {
    "127.0.0.1:4433".parse().unwrap()
}

/// A ClientHello body as a real client sends it: version, random, session id, cookie, cipher
/// suites, compression methods, extensions.
fn client_hello_body(cookie: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&DTLS1_2);
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // no session id
    body.push(cookie.len() as u8);
    body.extend_from_slice(cookie);
    body.extend_from_slice(&[0, 4, 0xc0, 0x2b, 0xc0, 0x2f]); // two cipher suites
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&[0, 4, 0, 23, 0, 0]); // one empty extension
    body
}

/// A datagram with one ClientHello record.
fn client_hello(cookie: &[u8], record_seq: u64, msg_seq: u16) -> Vec<u8> {
    let body = client_hello_body(cookie);
    let mut fragment = Vec::new();
    encode_handshake_fragment(
        handshake_type::CLIENT_HELLO,
        body.len(),
        msg_seq,
        0,
        &body,
        &mut fragment,
    );
    let mut packet = Vec::new();
    encode_record(
        content_type::HANDSHAKE,
        DTLS1_0,
        record_seq,
        &fragment,
        &mut packet,
    );
    packet
}

#[test]
fn records_round_trip_and_reject_truncation() {
    let mut packet = Vec::new();
    encode_record(content_type::HANDSHAKE, DTLS1_2, 5, b"first", &mut packet);
    encode_record(
        content_type::APPLICATION_DATA,
        DTLS1_2,
        (1 << 48) | 9,
        b"second",
        &mut packet,
    );
    let parsed: Vec<_> = records(&packet).collect::<Result<_, _>>().unwrap();
    assert_eq!(parsed.len(), 2);
    assert_eq!((parsed[0].epoch(), parsed[0].payload), (0, &b"first"[..]));
    assert_eq!(parsed[1].epoch(), 1);
    assert_eq!(parsed[1].epoch_seq & 0xffff_ffff_ffff, 9);
    assert!(part_of_handshake(&packet));
    // Every truncation is an error (or a shorter list), never a panic.
    for cut in 1..packet.len() {
        let outcome: Result<Vec<_>, BadPacket> = records(&packet[..cut]).collect();
        if cut != RECORD_HEADER_LEN + 5 {
            assert!(outcome.is_err(), "cut at {cut}");
        }
    }
}

#[test]
fn handshake_fragments_must_fit() {
    let mut ok = Vec::new();
    encode_handshake_fragment(handshake_type::SERVER_HELLO, 10, 1, 4, b"abcd", &mut ok);
    let fragment = decode_handshake_fragment(&ok).unwrap();
    assert_eq!(
        (fragment.msg_len, fragment.frag_offset, fragment.frag),
        (10, 4, &b"abcd"[..])
    );
    // Offset + length past the message's end.
    let mut past = Vec::new();
    encode_handshake_fragment(handshake_type::SERVER_HELLO, 5, 1, 4, b"abcd", &mut past);
    assert!(decode_handshake_fragment(&past).is_err());
    // Fragment length that does not match the bytes.
    assert!(decode_handshake_fragment(&ok[..ok.len() - 1]).is_err());
    assert!(decode_handshake_fragment(&ok[..HANDSHAKE_HEADER_LEN - 1]).is_err());
}

#[test]
fn client_hello_cookie_and_signed_part() {
    let first = client_hello(b"", 0, 0);
    let second = client_hello(&[9u8; 32], 1, 1);
    assert!(is_client_hello(&first) && is_client_hello(&second));
    let (a, b) = (
        decode_client_hello(&first).unwrap(),
        decode_client_hello(&second).unwrap(),
    );
    assert_eq!((a.cookie, b.cookie), (&[][..], &[9u8; 32][..]));
    assert_eq!((a.epoch_seq, b.epoch_seq), (0, 1));
    // What the cookie signs is the same in both: the message without its cookie.
    assert_eq!(a.signed, b.signed);
    assert_eq!(a.signed.len(), client_hello_body(b"").len() - 1);
}

/// A fragmented ClientHello is refused: the server keeps no state to reassemble it.
#[test]
fn fragmented_client_hello_is_refused() {
    let body = client_hello_body(b"");
    let mut fragment = Vec::new();
    encode_handshake_fragment(
        handshake_type::CLIENT_HELLO,
        body.len(),
        0,
        0,
        &body[..20],
        &mut fragment,
    );
    let mut packet = Vec::new();
    encode_record(content_type::HANDSHAKE, DTLS1_0, 0, &fragment, &mut packet);
    assert_eq!(
        decode_client_hello(&packet),
        Err(BadPacket("fragmented ClientHello"))
    );
}

/// Trio: test_dtls.py::test_invalid_cookie_rejected — every corrupted byte of a cookie is
/// rejected; the cookie is valid for its tick and the next, for its address and its
/// ClientHello only.
#[test]
fn cookie_checks() {
    let key = CookieKey::random();
    let now = Duration::from_secs(1000);
    let first = client_hello(b"", 0, 0);
    let hello = decode_client_hello(&first).unwrap();
    let challenge = key.challenge(&first, &hello, &peer(), now).unwrap();
    // The challenge carries the cookie: the last COOKIE_LEN bytes.
    let cookie = challenge[challenge.len() - COOKIE_LEN..].to_vec();
    let answer = client_hello(&cookie, 1, 1);
    let answer_hello = decode_client_hello(&answer).unwrap();
    assert!(key.valid(&answer_hello, &peer(), now));
    // Next tick still fine, the one after not.
    assert!(key.valid(&answer_hello, &peer(), now + Duration::from_secs(30)));
    assert!(!key.valid(&answer_hello, &peer(), now + Duration::from_secs(60)));
    // Another address, another key, another ClientHello.
    assert!(!key.valid(&answer_hello, &"127.0.0.1:4434".parse().unwrap(), now));
    assert!(!CookieKey::random().valid(&answer_hello, &peer(), now));
    let mut other = answer_hello.clone();
    other.signed[5] ^= 1;
    assert!(!key.valid(&other, &peer(), now));
    // Every corrupted byte.
    for i in 0..COOKIE_LEN {
        let mut bad = cookie.clone();
        bad[i] ^= 0x01;
        let packet = client_hello(&bad, 1, 1);
        assert!(
            !key.valid(&decode_client_hello(&packet).unwrap(), &peer(), now),
            "byte {i}"
        );
    }
    // Wrong lengths.
    for len in [0, 8, COOKIE_LEN - 1] {
        let packet = client_hello(&cookie[..len], 1, 1);
        assert!(!key.valid(&decode_client_hello(&packet).unwrap(), &peer(), now));
    }
}

/// The HelloVerifyRequest is a handshake record of DTLS 1.0 that copies the ClientHello's
/// record number, and is never larger than the ClientHello (amplification).
#[test]
fn hello_verify_request_shape_and_size() {
    let key = CookieKey::random();
    let first = client_hello(b"", 41, 0);
    let hello = decode_client_hello(&first).unwrap();
    let challenge = key
        .challenge(&first, &hello, &peer(), Duration::ZERO)
        .unwrap();
    assert!(challenge.len() <= first.len());
    let record = records(&challenge).next().unwrap().unwrap();
    assert_eq!(
        (record.content_type, record.version, record.epoch_seq),
        (content_type::HANDSHAKE, DTLS1_0, 41)
    );
    let fragment = decode_handshake_fragment(record.payload).unwrap();
    assert_eq!(fragment.msg_type, handshake_type::HELLO_VERIFY_REQUEST);
    assert_eq!(&fragment.frag[..3], &[254, 255, COOKIE_LEN as u8]);
    assert_eq!(
        challenge,
        hello_verify_request(41, &fragment.frag[3..]),
        "the builder is deterministic for a given cookie"
    );
}

/// Trio: test_dtls.py::test_server_socket_doesnt_crash_on_garbage (the decision part) and
/// the cookie exchange: what a server does with each kind of datagram.
#[test]
fn demultiplexing_decisions() {
    let key = CookieKey::random();
    let now = Duration::from_secs(5);
    let first = client_hello(b"", 0, 0);
    // Not a ClientHello: for a known peer, or dropped.
    let data = {
        let mut p = Vec::new();
        encode_record(
            content_type::APPLICATION_DATA,
            DTLS1_2,
            1 << 48,
            b"x",
            &mut p,
        );
        p
    };
    assert_eq!(
        classify(&data, &peer(), Some(&key), true, now),
        Incoming::ToPeer
    );
    assert_eq!(
        classify(&data, &peer(), Some(&key), false, now),
        Incoming::Drop(Dropped::UnknownPeer)
    );
    // A ClientHello where nobody serves.
    assert_eq!(
        classify(&first, &peer(), None, false, now),
        Incoming::Drop(Dropped::NotListening)
    );
    // Without a cookie: a challenge, no state.
    let Incoming::Challenge(challenge) = classify(&first, &peer(), Some(&key), false, now) else {
        panic!("expected a challenge");
    };
    // With the cookie: an association.
    let cookie = &challenge[challenge.len() - COOKIE_LEN..];
    let answer = client_hello(cookie, 1, 1);
    assert!(matches!(
        classify(&answer, &peer(), Some(&key), false, now),
        Incoming::Hello(hello) if hello.cookie == cookie
    ));
    // A mangled ClientHello.
    let mut mangled = first.clone();
    mangled.truncate(RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + 10);
    assert!(matches!(
        classify(&mangled, &peer(), Some(&key), false, now),
        Incoming::Drop(Dropped::Bad(_))
    ));
}

/// Amplification: even the smallest ClientHello that parses gets a HelloVerifyRequest no
/// larger than itself (a full cookie fits: 60 bytes against at least 61).
#[test]
fn smallest_client_hello_gets_a_challenge_no_larger_than_it() {
    // The smallest body that parses: version, random, empty session id and cookie.
    let mut body = DTLS1_2.to_vec();
    body.extend_from_slice(&[0u8; 32]);
    body.extend_from_slice(&[0, 0]);
    let mut fragment = Vec::new();
    encode_handshake_fragment(
        handshake_type::CLIENT_HELLO,
        body.len(),
        0,
        0,
        &body,
        &mut fragment,
    );
    let mut packet = Vec::new();
    encode_record(content_type::HANDSHAKE, DTLS1_0, 0, &fragment, &mut packet);
    let decision = classify(
        &packet,
        &peer(),
        Some(&CookieKey::random()),
        false,
        Duration::ZERO,
    );
    let Incoming::Challenge(reply) = decision else {
        panic!("expected a challenge, got {decision:?}");
    };
    assert!(
        reply.len() <= packet.len(),
        "{} > {}",
        reply.len(),
        packet.len()
    );
    // One byte shorter no longer parses: nothing is sent.
    packet.truncate(packet.len() - 1);
    assert!(matches!(
        classify(
            &packet,
            &peer(),
            Some(&CookieKey::random()),
            false,
            Duration::ZERO
        ),
        Incoming::Drop(Dropped::Bad(_))
    ));
}

fn flight() -> Vec<FlightMessage> {
    vec![
        FlightMessage::Handshake {
            version: DTLS1_2,
            msg_type: handshake_type::SERVER_HELLO,
            msg_seq: 1,
            body: (0..300u32).map(|i| i as u8).collect(),
        },
        FlightMessage::Handshake {
            version: DTLS1_2,
            msg_type: 11, // certificate
            msg_seq: 2,
            body: (0..2000u32).map(|i| (i * 7) as u8).collect(),
        },
        FlightMessage::Handshake {
            version: DTLS1_2,
            msg_type: 14, // server_hello_done: empty
            msg_seq: 3,
            body: Vec::new(),
        },
        FlightMessage::Pseudo {
            version: DTLS1_2,
            content_type: content_type::CHANGE_CIPHER_SPEC,
            payload: vec![1],
        },
        FlightMessage::Opaque({
            let mut raw = Vec::new();
            encode_record(
                content_type::HANDSHAKE,
                DTLS1_2,
                1 << 48,
                &[5u8; 40],
                &mut raw,
            );
            raw
        }),
    ]
}

/// Trio: test_dtls.py::test_tiny_mtu / test_min_mtu (the packing part) — a flight packed at
/// any MTU gives datagrams no larger than it, that reassemble to the same messages, with
/// record numbers that only grow (a resend is new records).
#[test]
fn flights_pack_to_the_mtu_and_reassemble() {
    let messages = flight();
    let mut encoder = RecordEncoder::new();
    encoder.set_next_seq(7);
    let mut last_seq = 6;
    for mtu in [
        RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + 1,
        60,
        worst_case_mtu(false),
        1472,
        65_000,
    ] {
        let packets = encoder.encode_flight(&messages, mtu);
        let mut all = Vec::new();
        for packet in &packets {
            assert!(packet.len() <= mtu.max(RECORD_HEADER_LEN + 40), "mtu {mtu}");
            for record in records(packet) {
                let record = record.unwrap();
                if record.epoch() == 0 {
                    assert!(record.epoch_seq > last_seq);
                    last_seq = record.epoch_seq;
                }
            }
            all.extend_from_slice(packet);
        }
        assert_eq!(decode_flight(&all).unwrap(), messages, "mtu {mtu}");
    }
}

#[test]
fn retransmission_backs_off_and_falls_back_to_the_minimum_mtu() {
    let mut timer = Retransmit::new(Duration::from_secs(1));
    assert_eq!(timer.wait(), Duration::from_secs(1));
    let first = timer.timed_out();
    assert_eq!(
        (first.next_wait, first.use_min_mtu),
        (Duration::from_secs(2), false)
    );
    let second = timer.timed_out();
    assert_eq!(
        (second.next_wait, second.use_min_mtu),
        (Duration::from_secs(4), true)
    );
    for _ in 0..10 {
        timer.timed_out();
    }
    assert_eq!(timer.wait(), MAX_TIMEOUT);
    // A flight that needed resends keeps the timer; the next clean one resets it.
    timer.answered();
    assert_eq!(timer.wait(), MAX_TIMEOUT);
    timer.answered();
    assert_eq!(timer.wait(), Duration::from_secs(1));
}

/// A handshake message that declares 16 MiB in a 25-byte flight is refused before anything
/// is allocated for it; so are messages that together declare more than the flight holds.
#[test]
fn a_declared_length_never_sizes_an_allocation() {
    fn flight(messages: &[(u16, u32)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (i, &(msg_seq, msg_len)) in messages.iter().enumerate() {
            // Record header: handshake, DTLS 1.2, epoch 0, sequence i, 12 bytes of payload.
            bytes.extend([22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, i as u8, 0, 12]);
            // Handshake header: type 1, declared length, sequence, an empty fragment at 0.
            bytes.push(1);
            bytes.extend(&msg_len.to_be_bytes()[1..]);
            bytes.extend(msg_seq.to_be_bytes());
            bytes.extend([0, 0, 0, 0, 0, 0]);
        }
        bytes
    }
    let huge = flight(&[(0, 0xff_ffff)]);
    assert_eq!(huge.len(), 25);
    assert!(decode_flight(&huge).is_err());
    // Forty messages of 40 bytes each: 1,600 declared in 1,000 bytes of flight.
    let many = flight(&(0..40).map(|seq| (seq, 40)).collect::<Vec<_>>());
    assert_eq!(many.len(), 1000);
    assert!(decode_flight(&many).is_err());
    // Within the flight's length, the same shape decodes (its gaps are OpenSSL's business).
    let fits = flight(&[(0, 10), (1, 10)]);
    assert_eq!(decode_flight(&fits).map(|m| m.len()), Ok(2));
}

proptest! {
    /// Any bytes: the parsers and the server's decision return, never panic.
    #[test]
    fn untrusted_bytes_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = records(&packet).count();
        let _ = decode_client_hello(&packet);
        let _ = decode_flight(&packet);
        let key = CookieKey::from_bytes([3; 32]);
        let _ = classify(&packet, &peer(), Some(&key), false, Duration::ZERO);
    }

    /// ClientHello-shaped bytes with random contents after the header.
    #[test]
    fn client_hello_shaped_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut packet = vec![content_type::HANDSHAKE, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0];
        packet.extend_from_slice(&(tail.len() as u16 + 1).to_be_bytes());
        packet.push(handshake_type::CLIENT_HELLO);
        packet.extend_from_slice(&tail);
        let _ = decode_client_hello(&packet);
        let key = CookieKey::from_bytes([3; 32]);
        if let Incoming::Challenge(reply) = classify(&packet, &peer(), Some(&key), false, Duration::ZERO) {
            prop_assert!(reply.len() <= packet.len());
        }
    }
}
