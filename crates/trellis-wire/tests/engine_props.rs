//! The fuzz targets' drivers under proptest, so that CI runs them on stable: a hostile peer
//! never makes a session panic, and two honest sessions never see each other break a rule,
//! whatever their actions and however their bytes are split.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_hostile_peer_never_panics_a_session(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        trellis_wire::fuzzing::hostile_peer(&data);
    }

    #[test]
    fn honest_sessions_never_break_each_others_rules(ops in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = trellis_wire::fuzzing::honest_pair(&ops);
    }
}

/// Frames of valid messages, so that the hostile driver gets past decoding: random calls and
/// stream messages from a peer, in any order.
#[test]
fn a_hostile_peer_sending_valid_messages_never_panics_a_session() {
    use bytes::BytesMut;
    use trellis_wire::{ActorId, Auth, CallKind, Codec, Hello, Message, PROTOCOL_VERSION, Payload};
    let codec = Codec::new();
    let mut runner = proptest::test_runner::TestRunner::default();
    let strategy = (
        any::<u8>(),
        proptest::collection::vec((0u8..9, 0u64..8, any::<u32>()), 0..40),
    );
    runner
        .run(&strategy, |(first, picks)| {
            let mut wire = BytesMut::new();
            // The hostile driver's session accepts peers without a credential.
            let hello = Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                nonce: bytes::Bytes::from_static(&[1; 32]),
            });
            codec.encode(&hello, &mut wire).unwrap();
            let auth = Message::Auth(Auth {
                credential: None,
                proof: None,
                actor: ActorId::new("peer", "1"),
                pid: 2,
            });
            codec.encode(&auth, &mut wire).unwrap();
            for (kind, cid, n) in picks {
                let v = Payload::unit();
                let m = match kind {
                    0 => Message::Start {
                        cid,
                        function: "f".into(),
                        kind: [CallKind::Run, CallKind::Stream, CallKind::Context][n as usize % 3],
                        args: v,
                        trace: None,
                    },
                    1 => Message::StartAck { cid },
                    2 => Message::Started { cid, value: v },
                    3 => Message::Yield { cid, value: v },
                    4 => Message::Stop { cid },
                    5 => Message::Return { cid, value: v },
                    6 => Message::Credit { cid, count: n % 4 },
                    7 => Message::Cancel {
                        cid,
                        requested_by: ActorId::new("a", "b"),
                        reason: None,
                    },
                    _ => Message::CancelAck {
                        cid,
                        requested_by: ActorId::new("a", "b"),
                        reason: None,
                    },
                };
                codec.encode(&m, &mut wire).unwrap();
            }
            let mut data = vec![first];
            data.extend_from_slice(&wire);
            trellis_wire::fuzzing::hostile_peer(&data);
            Ok(())
        })
        .unwrap();
}

/// The honest driver does exchange items and end calls (the property above is not vacuous):
/// a stream call with a window of one, three items, consumed in between, then a return.
#[test]
fn the_honest_driver_streams_under_credit() {
    const A_ACTS: u8 = 0x00;
    const B_ACTS: u8 = 0x80;
    const A_TO_B: u8 = 0x40 | 0x3f;
    const B_TO_A: u8 = 0xc0 | 0x3f;
    // `start` a stream (kind 1) with a window of 1; `accept`; `send_item`; `consumed`; `finish`.
    let (start_stream, accept, send, consume, finish) = (0b0000_1000, 1, 2, 4, 5);
    let mut ops = vec![A_ACTS, start_stream, A_TO_B, 255, B_ACTS, accept];
    for _ in 0..3 {
        ops.extend([
            B_ACTS, send, B_ACTS, send, B_TO_A, 255, A_ACTS, consume, A_TO_B, 255,
        ]);
    }
    ops.extend([B_ACTS, finish, B_TO_A, 255]);
    let stats = trellis_wire::fuzzing::honest_pair(&ops);
    assert_eq!(
        stats,
        trellis_wire::fuzzing::PairStats { items: 3, ended: 1 }
    );
}
