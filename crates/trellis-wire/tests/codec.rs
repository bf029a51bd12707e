//! Frames and messages: every message round-trips, every malformed input is a typed error,
//! and no input makes the decoder panic.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use trellis_wire::{
    ActorId, Auth, CallKind, CancelReason, Codec, DecodeError, EncodeError, ErrorKind, ErrorReport,
    Hello, Message, PROTOCOL_VERSION, Payload, TraceContext, Version,
};

fn actor() -> ActorId {
    ActorId::new("calc", "5f0c6a1e9d2b4c7f8e3a1b2c3d4e5f60")
}

fn report() -> ErrorReport {
    ErrorReport {
        actor: actor(),
        kind: ErrorKind::Failed,
        type_name: "my_crate::BadInput".into(),
        message: "bad input: 7".into(),
        chain: vec!["parse error".into()],
        backtrace: Some("0: my_crate::parse".into()),
        value: Some(vec![0x92, 0x01, 0x02]),
        group: vec![ErrorReport {
            actor: ActorId::new("child", "1"),
            kind: ErrorKind::UnknownFunction,
            type_name: "trellis_actor::UnknownFunction".into(),
            message: "no function `nope`".into(),
            chain: vec![],
            backtrace: None,
            value: None,
            group: vec![],
        }],
    }
}

fn one_of_each() -> Vec<Message> {
    let value = Payload::encode(&(1u8, "two", [3.5f64])).unwrap();
    vec![
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            nonce: Bytes::from_static(&[9; 32]),
        }),
        Message::Auth(Auth {
            credential: Some("tree".into()),
            proof: Some(Bytes::from_static(&[3; 32])),
            actor: actor(),
            pid: 4242,
        }),
        Message::Auth(Auth {
            credential: None,
            proof: None,
            actor: actor(),
            pid: 0,
        }),
        Message::Start {
            cid: 1,
            function: "add".into(),
            kind: CallKind::Context,
            args: Payload::encode(&(1i64, 2i64)).unwrap(),
            trace: None,
        },
        Message::Start {
            cid: 3,
            function: "add".into(),
            kind: CallKind::Run,
            args: Payload::unit(),
            trace: Some(Box::new(TraceContext {
                traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                tracestate: Some("congo=t61rcWkgMzE".into()),
            })),
        },
        Message::StartAck { cid: 1 },
        Message::Started {
            cid: 1,
            value: Payload::unit(),
        },
        Message::Yield {
            cid: u64::MAX,
            value: value.clone(),
        },
        Message::Stop { cid: 3 },
        Message::Return { cid: 300, value },
        Message::Error {
            cid: Some(5),
            error: Box::new(report()),
        },
        Message::Error {
            cid: None,
            error: Box::new(report()),
        },
        Message::Cancel {
            cid: 7,
            requested_by: actor(),
            reason: None,
        },
        Message::Cancel {
            cid: 7,
            requested_by: actor(),
            reason: Some(Box::new(CancelReason {
                source: "deadline".into(),
                message: None,
                origin: Some("actor root#1a2b3c4d".into()),
            })),
        },
        Message::CancelAck {
            cid: 7,
            requested_by: actor(),
            reason: None,
        },
        Message::CancelAck {
            cid: 7,
            requested_by: actor(),
            reason: Some(Box::new(CancelReason {
                source: "nursery".into(),
                message: Some("task `feed` failed: boom".into()),
                origin: None,
            })),
        },
        Message::Credit {
            cid: 70_000,
            count: u32::MAX,
        },
        Message::Goodbye,
    ]
}

fn frame(body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32(body.len() as u32);
    b.put_slice(body);
    b
}

#[test]
fn every_message_round_trips_through_one_buffer() {
    let codec = Codec::new();
    let mut wire = BytesMut::new();
    let messages = one_of_each();
    for m in &messages {
        codec.encode(m, &mut wire).unwrap();
    }
    for m in &messages {
        assert_eq!(codec.decode(&mut wire).unwrap().as_ref(), Some(m));
    }
    assert!(wire.is_empty());
    assert_eq!(codec.decode(&mut wire).unwrap(), None);
}

#[test]
fn frames_split_anywhere_decode_once_complete() {
    let codec = Codec::new();
    let mut all = BytesMut::new();
    for m in one_of_each() {
        codec.encode(&m, &mut all).unwrap();
    }
    let all = all.freeze();
    for split in 0..all.len() {
        let mut buf = BytesMut::from(&all[..split]);
        let mut got = Vec::new();
        while let Some(m) = codec.decode(&mut buf).unwrap() {
            got.push(m);
        }
        buf.extend_from_slice(&all[split..]);
        while let Some(m) = codec.decode(&mut buf).unwrap() {
            got.push(m);
        }
        assert_eq!(got, one_of_each(), "split at {split}");
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Quote {
    symbol: String,
    price: f64,
    tags: Vec<String>,
}

#[test]
fn payloads_carry_serde_values_by_field_name() {
    let q = Quote {
        symbol: "ACME".into(),
        price: 12.5,
        tags: vec!["x".into()],
    };
    let p = Payload::encode(&q).unwrap();
    assert_eq!(p.decode::<Quote>().unwrap(), q);
    // A map with field names, readable by any MessagePack library.
    assert_eq!(p.as_bytes()[0], 0x83);
    assert!(p.as_bytes().windows(6).any(|w| w == b"symbol" as &[u8]));
    // The wrong type is a typed error, not a panic.
    let err = p.decode::<(i64, i64)>().unwrap_err();
    assert!(
        matches!(err, trellis_wire::PayloadError::Decode(_)),
        "{err}"
    );
}

#[test]
fn payload_from_bytes_accepts_exactly_one_value() {
    assert!(Payload::from_bytes(Bytes::from_static(&[0x92, 0x01, 0x02])).is_ok());
    assert_eq!(
        Payload::from_bytes(Bytes::from_static(&[0x01, 0x02])),
        Err(DecodeError::TrailingBytes { at: 1 })
    );
    assert_eq!(
        Payload::from_bytes(Bytes::from_static(&[0x92, 0x01])),
        Err(DecodeError::Truncated { at: 0 })
    );
}

#[test]
fn frame_header_errors_are_fatal() {
    let codec = Codec::new().with_max_frame(64);
    let mut big = BytesMut::new();
    big.put_u32(65);
    let err = codec.decode(&mut big).unwrap_err();
    assert_eq!(err, DecodeError::FrameTooLarge { len: 65, max: 64 });
    assert!(err.is_fatal());
    let mut empty = BytesMut::from(&[0u8, 0, 0, 0][..]);
    let err = codec.decode(&mut empty).unwrap_err();
    assert_eq!(err, DecodeError::EmptyFrame);
    assert!(err.is_fatal());
}

#[test]
fn encoding_beyond_the_maximum_frame_fails_and_writes_nothing() {
    let codec = Codec::new().with_max_frame(32);
    let mut wire = BytesMut::from(&b"kept"[..]);
    let big = Message::Return {
        cid: 1,
        value: Payload::encode(&vec![7u8; 64]).unwrap(),
    };
    assert!(matches!(
        codec.encode(&big, &mut wire),
        Err(EncodeError::FrameTooLarge { max: 32, .. })
    ));
    assert_eq!(&wire[..], b"kept");
}

#[test]
fn malformed_bodies_are_typed_errors_and_consume_their_frame() {
    let codec = Codec::new();
    let cases: Vec<(&[u8], DecodeError)> = vec![
        // Not an array.
        (
            &[0x01],
            DecodeError::Unexpected {
                at: 0,
                expected: "an array",
                marker: 0x01,
            },
        ),
        // An empty array: no kind.
        (
            &[0x90],
            DecodeError::MissingField {
                kind: None,
                field: "kind",
            },
        ),
        // Unknown kind 99.
        (&[0x91, 0x63], DecodeError::UnknownKind { kind: 99, at: 1 }),
        // StartAck without its call id.
        (
            &[0x91, 0x02],
            DecodeError::MissingField {
                kind: Some(2),
                field: "cid",
            },
        ),
        // A negative call id.
        (
            &[0x92, 0x02, 0xff],
            DecodeError::Unexpected {
                at: 2,
                expected: "an unsigned integer",
                marker: 0xff,
            },
        ),
        // Start whose function name is not UTF-8.
        (
            &[0x95, 0x01, 0x01, 0xa2, 0xff, 0xfe, 0x00, 0xc0],
            DecodeError::InvalidUtf8 { at: 3 },
        ),
        // Start with call kind 5.
        (
            &[0x95, 0x01, 0x01, 0xa1, b'f', 0x05, 0xc0],
            DecodeError::OutOfRange {
                at: 5,
                what: "a call kind (0, 1 or 2)",
            },
        ),
        // A Yield whose value claims 3 elements but has 1.
        (
            &[0x93, 0x04, 0x01, 0x93, 0x01],
            DecodeError::Truncated { at: 3 },
        ),
        // Bytes after the message.
        (&[0x91, 0x0b, 0x00], DecodeError::TrailingBytes { at: 2 }),
        // A credit beyond u32.
        (
            &[0x93, 0x0a, 0x01, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0],
            DecodeError::OutOfRange {
                at: 3,
                what: "a u32 credit count",
            },
        ),
        // The never-used marker 0xc1 inside a payload.
        (
            &[0x93, 0x06, 0x01, 0xc1],
            DecodeError::Unexpected {
                at: 3,
                expected: "a value (0xc1 is never used)",
                marker: 0xc1,
            },
        ),
    ];
    for (body, want) in cases {
        let mut wire = frame(body);
        // A good message after the bad one is still read: the bad frame was consumed.
        codec.encode(&Message::Goodbye, &mut wire).unwrap();
        let got = codec.decode(&mut wire).unwrap_err();
        assert_eq!(got, want, "body {body:02x?}");
        assert!(!got.is_fatal());
        assert_eq!(codec.decode(&mut wire).unwrap(), Some(Message::Goodbye));
    }
}

#[test]
fn bad_error_report_is_a_typed_error() {
    // Error for call 1 whose report is the integer 1.
    let mut wire = frame(&[0x93, 0x07, 0x01, 0x01]);
    assert!(matches!(
        Codec::new().decode(&mut wire),
        Err(DecodeError::BadErrorReport(_))
    ));
}

#[test]
fn newer_minor_versions_may_append_fields() {
    // StartAck { cid: 9 } with two more elements, a string and a map.
    let mut wire = frame(&[0x94, 0x02, 0x09, 0xa1, b'x', 0x81, 0x01, 0x02]);
    assert_eq!(
        Codec::new().decode(&mut wire).unwrap(),
        Some(Message::StartAck { cid: 9 })
    );
    // Hello whose version carries extra elements, with a capabilities map and a field more.
    let mut body = vec![0x95, 0x00, 0x93, 0x02, 0x07, 0x2a, 0xc4, 0x20];
    body.extend([5; 32]);
    body.extend([0x81, 0xa1, b'k', 0xc3, 0xc0]);
    assert_eq!(
        Codec::new().decode(&mut frame(&body)).unwrap(),
        Some(Message::Hello(Hello {
            version: Version { major: 2, minor: 7 },
            nonce: Bytes::copy_from_slice(&[5; 32]),
        }))
    );
    // Auth whose actor carries an extra element.
    let body = [
        0x95, 0x0c, 0xc0, 0xc0, 0x93, 0xa1, b'a', 0xa1, b'1', 0xc0, 0x05,
    ];
    assert_eq!(
        Codec::new().decode(&mut frame(&body)).unwrap(),
        Some(Message::Auth(Auth {
            credential: None,
            proof: None,
            actor: ActorId::new("a", "1"),
            pid: 5,
        }))
    );
    // Cancel with 2.1's reason (itself with an element more) and a field more after it.
    let mut body = vec![0x95, 0x08, 0x09, 0x92, 0xa1, b'a', 0xa1, b'1', 0x94, 0xa8];
    body.extend(b"deadline");
    body.extend([0xc0, 0xc0, 0x07, 0xa1, b'x']);
    assert_eq!(
        Codec::new().decode(&mut frame(&body)).unwrap(),
        Some(Message::Cancel {
            cid: 9,
            requested_by: ActorId::new("a", "1"),
            reason: Some(Box::new(CancelReason::new("deadline"))),
        })
    );
    // A 2.0 CancelAck (no reason) and a 2.1 one whose reason is nil read alike.
    for body in [
        &[0x93, 0x09, 0x09, 0x92, 0xa1, b'a', 0xa1, b'1'][..],
        &[0x94, 0x09, 0x09, 0x92, 0xa1, b'a', 0xa1, b'1', 0xc0],
    ] {
        assert_eq!(
            Codec::new().decode(&mut frame(body)).unwrap(),
            Some(Message::CancelAck {
                cid: 9,
                requested_by: ActorId::new("a", "1"),
                reason: None,
            })
        );
    }
}

/// Spec §3: a receiver rejects a message with fewer elements than listed; `Hello`'s
/// capabilities map is one of them.
#[test]
fn a_hello_without_capabilities_is_refused() {
    let mut body = vec![0x93, 0x00, 0x92, 0x02, 0x00, 0xc4, 0x20];
    body.extend([5; 32]);
    assert_eq!(
        Codec::new().decode(&mut frame(&body)),
        Err(DecodeError::MissingField {
            kind: Some(0),
            field: "capabilities"
        })
    );
}

/// §4: a `Hello` of another major version decodes as far as its version (what follows is laid
/// out that version's way), so that the receiver can say which version it refuses.
#[test]
fn a_hello_of_another_major_version_decodes_to_its_version() {
    // A 1.1 Hello: version, actor, pid, capabilities.
    let body = [
        0x95, 0x00, 0x92, 0x01, 0x01, 0x92, 0xa1, b'a', 0xa1, b'1', 0x05, 0x80,
    ];
    assert_eq!(
        Codec::new().decode(&mut frame(&body)).unwrap(),
        Some(Message::Hello(Hello {
            version: Version { major: 1, minor: 1 },
            nonce: Bytes::new(),
        }))
    );
}

#[test]
fn integers_in_any_width_decode() {
    // StartAck with cid 1 as uint8, uint64 and int16.
    for body in [
        &[0x92, 0x02, 0xcc, 0x01][..],
        &[0x92, 0x02, 0xcf, 0, 0, 0, 0, 0, 0, 0, 0x01],
        &[0x92, 0x02, 0xd1, 0x00, 0x01],
    ] {
        assert_eq!(
            Codec::new().decode(&mut frame(body)).unwrap(),
            Some(Message::StartAck { cid: 1 })
        );
    }
}

#[test]
fn deep_nesting_in_a_payload_is_walked_without_recursion() {
    // A Return whose value is 100,000 nested one-element arrays around nil.
    let mut body = vec![0x93, 0x06, 0x01];
    body.extend(std::iter::repeat_n(0x91, 100_000));
    body.push(0xc0);
    let m = Codec::new().decode(&mut frame(&body)).unwrap().unwrap();
    let Message::Return { value, .. } = m else {
        panic!("not a Return");
    };
    // Decoding it into a Rust value stops at the depth limit instead of overflowing the stack.
    let err = value.decode::<serde_json_like::Any>().unwrap_err();
    assert!(err.to_string().contains("depth"), "{err}");
    // An error report nested as deep is refused the same way.
    let mut body = vec![0x93, 0x07, 0x01];
    body.extend(std::iter::repeat_n(0x91, 100_000));
    body.push(0xc0);
    assert!(matches!(
        Codec::new().decode(&mut frame(&body)),
        Err(DecodeError::BadErrorReport(_))
    ));
    // Nesting within the limit decodes.
    let ok = Payload::encode(&vec![vec![vec![1u8]]]).unwrap();
    assert_eq!(ok.decode::<Vec<Vec<Vec<u8>>>>().unwrap(), [[[1]]]);
}

/// A type that accepts any MessagePack value, for the depth test.
mod serde_json_like {
    use serde::de::{Deserialize, Deserializer, IgnoredAny};

    #[derive(Debug)]
    pub(crate) struct Any;

    impl<'de> Deserialize<'de> for Any {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            IgnoredAny::deserialize(d).map(|_| Any)
        }
    }
}

fn arb_actor() -> impl Strategy<Value = ActorId> {
    (".{0,40}", "[0-9a-f]{0,32}").prop_map(|(n, u)| ActorId::new(n, u))
}

fn arb_reason() -> impl Strategy<Value = Box<CancelReason>> {
    (
        "[a-z]{0,12}",
        proptest::option::of(".{0,80}"),
        proptest::option::of(".{0,40}"),
    )
        .prop_map(|(source, message, origin)| {
            Box::new(CancelReason {
                source,
                message,
                origin,
            })
        })
}

fn arb_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        any::<i64>().prop_map(|v| Payload::encode(&v).unwrap()),
        ".{0,300}".prop_map(|v| Payload::encode(&v).unwrap()),
        proptest::collection::vec(any::<u32>(), 0..40).prop_map(|v| Payload::encode(&v).unwrap()),
        Just(Payload::unit()),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    let cid = any::<u64>();
    prop_oneof![
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(mi, nonce)| {
            Message::Hello(Hello {
                version: Version {
                    major: PROTOCOL_VERSION.major,
                    minor: mi,
                },
                nonce: nonce.into(),
            })
        }),
        (
            proptest::option::of(".{1,40}"),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            arb_actor(),
            any::<u32>()
        )
            .prop_map(|(credential, proof, actor, pid)| {
                Message::Auth(Auth {
                    credential,
                    proof: proof.map(Into::into),
                    actor,
                    pid,
                })
            }),
        (cid, ".{0,64}", 0..3u8, arb_payload()).prop_map(|(cid, f, k, args)| Message::Start {
            cid,
            function: f,
            kind: [CallKind::Run, CallKind::Stream, CallKind::Context][k as usize],
            args,
            trace: None,
        }),
        cid.prop_map(|cid| Message::StartAck { cid }),
        (cid, arb_payload()).prop_map(|(cid, value)| Message::Started { cid, value }),
        (cid, arb_payload()).prop_map(|(cid, value)| Message::Yield { cid, value }),
        cid.prop_map(|cid| Message::Stop { cid }),
        (cid, arb_payload()).prop_map(|(cid, value)| Message::Return { cid, value }),
        (proptest::option::of(cid), ".{0,100}").prop_map(|(cid, text)| {
            let mut error = report();
            error.message = text;
            Message::Error {
                cid,
                error: Box::new(error),
            }
        }),
        (cid, arb_actor(), proptest::option::of(arb_reason())).prop_map(
            |(cid, requested_by, reason)| Message::Cancel {
                cid,
                requested_by,
                reason,
            }
        ),
        (cid, arb_actor(), proptest::option::of(arb_reason())).prop_map(
            |(cid, requested_by, reason)| Message::CancelAck {
                cid,
                requested_by,
                reason,
            }
        ),
        (cid, any::<u32>()).prop_map(|(cid, count)| Message::Credit { cid, count }),
        Just(Message::Goodbye),
    ]
}

proptest! {
    #[test]
    fn any_message_round_trips(messages in proptest::collection::vec(arb_message(), 1..8)) {
        let codec = Codec::new();
        let mut wire = BytesMut::new();
        for m in &messages {
            codec.encode(m, &mut wire).unwrap();
        }
        for m in &messages {
            let got = codec.decode(&mut wire).unwrap();
            prop_assert_eq!(got.as_ref(), Some(m));
        }
        prop_assert!(wire.is_empty());
    }

    /// Random bytes: an error or a message, never a panic; and a decoded message re-encodes
    /// to something that decodes to the same message.
    #[test]
    fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 1..200)) {
        let codec = Codec::new();
        if let Ok(Some(m)) = codec.decode(&mut frame(&body)) {
            let mut again = BytesMut::new();
            codec.encode(&m, &mut again).unwrap();
            prop_assert_eq!(codec.decode(&mut again).unwrap(), Some(m));
        }
    }

    /// Valid messages with bytes flipped, cut or inserted: an error or a message, never a
    /// panic.
    #[test]
    fn mutated_messages_never_panic(
        m in arb_message(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        let mut wire = BytesMut::new();
        Codec::new().encode(&m, &mut wire).unwrap();
        let mut body = wire.split_off(4).to_vec();
        for (at, byte, op) in edits {
            if body.is_empty() {
                break;
            }
            let i = at.index(body.len());
            match op {
                0 => body[i] = byte,
                1 => { body.truncate(i.max(1)); }
                _ => body.insert(i, byte),
            }
        }
        let _ = Codec::new().decode(&mut frame(&body));
    }
}

/// The bytes of the example in `docs/wire-protocol.md`, section 9.
#[test]
fn spec_example_bytes() {
    let codec = Codec::new();
    let mut wire = BytesMut::new();
    codec
        .encode(
            &Message::Start {
                cid: 1,
                function: "add".into(),
                kind: CallKind::Run,
                args: Payload::encode(&(1, 2)).unwrap(),
                trace: None,
            },
            &mut wire,
        )
        .unwrap();
    codec
        .encode(&Message::StartAck { cid: 1 }, &mut wire)
        .unwrap();
    codec
        .encode(
            &Message::Return {
                cid: 1,
                value: Payload::encode(&3).unwrap(),
            },
            &mut wire,
        )
        .unwrap();
    let want: &[u8] = &[
        0, 0, 0, 0x0b, 0x95, 0x01, 0x01, 0xa3, b'a', b'd', b'd', 0x00, 0x92, 0x01, 0x02, //
        0, 0, 0, 0x03, 0x92, 0x02, 0x01, //
        0, 0, 0, 0x04, 0x93, 0x06, 0x01, 0x03,
    ];
    assert_eq!(&wire[..], want);
}

/// Short values are copied out of the read buffer, longer ones share it: either way a payload
/// reads back as the bytes that were sent, whichever decoder took its frame.
#[test]
fn payloads_of_every_length_read_back_the_same() {
    let codec = Codec::new();
    for len in [0usize, 1, 19, 20, 21, 22, 23, 64, 4096] {
        let value = Payload::encode(&vec![b'x'; len]).unwrap();
        let message = Message::Yield {
            cid: 3,
            value: value.clone(),
        };
        let mut wire = BytesMut::new();
        codec.encode(&message, &mut wire).unwrap();
        assert_eq!(
            codec.decode(&mut wire).unwrap(),
            Some(message),
            "{len} bytes"
        );
        assert_eq!(value.decode::<Vec<u8>>().unwrap().len(), len);
    }
}
