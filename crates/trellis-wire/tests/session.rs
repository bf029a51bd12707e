//! The protocol engine: the handshake, the call rules, flow control, and what happens when a
//! peer breaks them. Each test plays the peer with raw messages and checks what the session
//! sends back and which events it reports (the numbers are `docs/wire-protocol.md`'s sections).

use bytes::{Bytes, BytesMut};
use trellis_wire::auth::{self, NONCE_LEN};
use trellis_wire::{
    ActorId, Auth, Batch, CallKind, CancelReason, Codec, ConnectionError, ErrorKind, ErrorReport,
    Event, Hello, Identity, Key, Keyring, Message, Outcome, PROTOCOL_VERSION, Payload,
    ProtocolError, SendError, Session, Side, Version, Window,
};

/// The nonce the tests' peer says `Hello` with.
const PEER_NONCE: [u8; NONCE_LEN] = [7; NONCE_LEN];

fn hello(version: Version) -> Hello {
    Hello {
        version,
        nonce: Bytes::copy_from_slice(&PEER_NONCE),
    }
}

fn key() -> Key {
    Key::tree(b"the tree's secret, for tests").unwrap()
}

fn local_id() -> ActorId {
    ActorId::new("local", "fedcba9876543210")
}

fn peer_id() -> ActorId {
    ActorId::new("peer", "0123456789abcdef")
}

/// A fresh session of the tree `key()`, and the nonce of its `Hello` (taken off the wire).
fn fresh(side: Side, keyring: Keyring) -> (Session, Bytes) {
    let mut s = Session::new(side, Identity::new(local_id(), 1), keyring);
    match &sent(&mut s)[..] {
        [Message::Hello(h)] => {
            assert_eq!(h.version, PROTOCOL_VERSION);
            let nonce = h.nonce.clone();
            (s, nonce)
        }
        other => panic!("expected a Hello first, got {other:?}"),
    }
}

/// The `Auth` the tests' peer sends as `prover`, proving `key` (or nothing), over the nonces
/// of the connection with a session whose nonce is `theirs`.
fn peer_auth(prover: Side, key: Option<&Key>, theirs: &[u8]) -> Auth {
    let (nc, na) = match prover {
        Side::Connector => (&PEER_NONCE[..], theirs),
        Side::Acceptor => (theirs, &PEER_NONCE[..]),
    };
    let (connector, acceptor) = match prover {
        Side::Connector => (peer_id(), None),
        Side::Acceptor => (local_id(), Some(peer_id())),
    };
    Auth {
        credential: key.map(|k| k.name().to_owned()),
        proof: key.map(|k| {
            Bytes::copy_from_slice(&auth::proof(
                k,
                prover,
                nc,
                na,
                &connector,
                acceptor.as_ref(),
            ))
        }),
        actor: peer_id(),
        pid: 2,
    }
}

/// A session on `side` whose handshake with the tests' peer (of the same tree) completed;
/// what it sent is taken off the wire.
fn connected(side: Side) -> Session {
    let (mut s, ours) = fresh(side, Keyring::new(key()));
    s.handle(Message::Hello(hello(PROTOCOL_VERSION))).unwrap();
    let peer_side = match side {
        Side::Connector => Side::Acceptor,
        Side::Acceptor => Side::Connector,
    };
    if side == Side::Connector {
        assert!(matches!(&sent(&mut s)[..], [Message::Auth(_)]));
    }
    s.handle(Message::Auth(peer_auth(peer_side, Some(&key()), &ours)))
        .unwrap();
    if side == Side::Acceptor {
        assert!(matches!(&sent(&mut s)[..], [Message::Auth(_)]));
    }
    assert_eq!(s.peer().unwrap().actor, peer_id());
    s
}

/// Decodes what the session wrote since the last call.
fn sent(s: &mut Session) -> Vec<Message> {
    let codec = Codec::new();
    let mut out = s.outgoing().split();
    let mut messages = Vec::new();
    while let Some(m) = codec.decode(&mut out).unwrap() {
        messages.push(m);
    }
    assert!(out.is_empty(), "a partial frame was written");
    messages
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn value(n: u8) -> Payload {
    Payload::encode(&n).unwrap()
}

fn start(cid: u64, kind: CallKind) -> Message {
    Message::Start {
        cid,
        function: "f".into(),
        kind,
        args: Payload::unit(),
        trace: None,
    }
}

fn failure() -> Box<ErrorReport> {
    Box::new(ErrorReport {
        actor: ActorId::new("peer", "1"),
        kind: ErrorKind::Failed,
        type_name: "E".into(),
        message: "it failed".into(),
        chain: vec![],
        backtrace: None,
        value: None,
        group: vec![],
    })
}

/// The connection-level error the session sent last, which must be of kind `Protocol`.
fn connection_error(s: &mut Session) -> String {
    match sent(s).pop() {
        Some(Message::Error { cid: None, error }) if error.kind == ErrorKind::Protocol => {
            error.message
        }
        other => panic!("expected a connection-level Error, got {other:?}"),
    }
}

fn broken(events: &[Event], cid: u64) -> &ProtocolError {
    match events {
        [Event::Broken { cid: c, error }] if *c == cid => error,
        other => panic!("expected call {cid} broken, got {other:?}"),
    }
}

/// §4: `Hello` first. Anything else first is refused, with a connection-level `Error` after
/// our own `Hello`, naming nobody.
#[test]
fn hello_comes_first_and_a_refusal_is_reported() {
    let (mut s, _) = fresh(Side::Acceptor, Keyring::new(key()));
    let got = s.handle(start(1, CallKind::Run));
    assert_eq!(
        got,
        Err(ConnectionError::Protocol(ProtocolError::NoHello {
            got: "Start"
        }))
    );
    let out = sent(&mut s);
    assert!(matches!(&out[0], Message::Error { cid: None, error }
            if error.message.contains("Hello") && error.actor == ActorId::new("", "")));
    assert!(s.is_closed());
    assert_eq!(
        s.start("f", CallKind::Run, Payload::unit()),
        Err(SendError::Closed)
    );
    // A second `Hello` is refused too, as is a second `Auth`.
    let mut s = connected(Side::Connector);
    assert!(s.handle(Message::Hello(hello(PROTOCOL_VERSION))).is_err());
    assert!(connection_error(&mut s).contains("Hello sent twice"));
    let mut s = connected(Side::Acceptor);
    let again = peer_auth(Side::Connector, Some(&key()), &[0; 32]);
    assert!(s.handle(Message::Auth(again)).is_err());
    assert!(connection_error(&mut s).contains("Auth sent twice"));
}

/// §4: the major versions must match, and a mismatch is reported before closing; minor
/// versions may differ.
#[test]
fn major_version_mismatch_is_reported_minor_may_differ() {
    let (mut s, _) = fresh(Side::Connector, Keyring::new(key()));
    let newer_minor = Version {
        major: PROTOCOL_VERSION.major,
        minor: PROTOCOL_VERSION.minor + 5,
    };
    assert_eq!(s.handle(Message::Hello(hello(newer_minor))), Ok(()));

    let (mut s, _) = fresh(Side::Connector, Keyring::new(key()));
    let other_major = Version {
        major: PROTOCOL_VERSION.major + 1,
        minor: 0,
    };
    assert!(matches!(
        s.handle(Message::Hello(hello(other_major))),
        Err(ConnectionError::Protocol(
            ProtocolError::VersionMismatch { .. }
        ))
    ));
    assert!(connection_error(&mut s).contains("incompatible"));

    // A nonce of another length is refused.
    let (mut s, _) = fresh(Side::Acceptor, Keyring::new(key()));
    let short = Hello {
        version: PROTOCOL_VERSION,
        nonce: Bytes::from_static(b"short"),
    };
    assert!(matches!(
        s.handle(Message::Hello(short)),
        Err(ConnectionError::Protocol(ProtocolError::BadNonce {
            len: 5
        }))
    ));
}

/// The refusal a session sends to a peer that did not authenticate: a connection-level
/// `Error` of kind `Unauthorized` that names nobody and says no more, and nothing else.
fn assert_refused(s: &mut Session, got: Result<(), ConnectionError>) {
    assert_eq!(
        got,
        Err(ConnectionError::Protocol(ProtocolError::Unauthorized))
    );
    match &sent(s)[..] {
        [Message::Error { cid: None, error }] => {
            assert_eq!(error.kind, ErrorKind::Unauthorized);
            assert_eq!(error.actor, ActorId::new("", ""));
            assert_eq!(error.message, "not authorized");
        }
        other => panic!("expected only a connection-level Error, got {other:?}"),
    }
    assert!(s.is_closed());
    assert!(s.peer().is_none());
}

/// §4: both sides prove the tree's secret; each learns who the other is and what it proved.
#[test]
fn both_sides_prove_the_secret_and_learn_each_other() {
    let me = |name: &str| Identity::new(ActorId::new(name, "0"), 7);
    let mut a = Session::new(Side::Connector, me("a"), Keyring::new(key()));
    let mut b = Session::new(Side::Acceptor, me("b"), Keyring::new(key()));
    let pass = |from: &mut Session, to: &mut Session| {
        let mut bytes = from.outgoing().split();
        to.handle_bytes(&mut bytes).unwrap();
    };
    pass(&mut a, &mut b);
    pass(&mut b, &mut a);
    assert!(a.peer().is_none(), "the acceptor has not proved itself yet");
    assert_eq!(
        a.start("f", CallKind::Run, Payload::unit()),
        Err(SendError::Handshaking)
    );
    pass(&mut a, &mut b);
    let peer = b.peer().unwrap();
    assert_eq!((peer.actor.name.as_str(), peer.pid), ("a", 7));
    assert_eq!(peer.credential.as_deref(), Some("tree"));
    pass(&mut b, &mut a);
    assert_eq!(a.peer().unwrap().actor.name, "b");
    assert!(a.start("f", CallKind::Run, Payload::unit()).is_ok());
}

/// §4: a connector with another secret, an unknown credential, no proof, or a proof made for
/// another connection is refused, and learns nothing of the acceptor.
#[test]
fn an_acceptor_refuses_a_peer_that_does_not_prove_the_secret() {
    let other = Key::tree(b"another tree's secret, 16+").unwrap();
    let unknown = Key::new("friends", b"the tree's secret, for tests").unwrap();
    for key in [other, unknown] {
        let (mut s, ours) = fresh(Side::Acceptor, Keyring::new(self::key()));
        s.handle(Message::Hello(hello(PROTOCOL_VERSION))).unwrap();
        let got = s.handle(Message::Auth(peer_auth(Side::Connector, Some(&key), &ours)));
        assert_refused(&mut s, got);
    }
    // The credential's name without its proof.
    let (mut s, ours) = fresh(Side::Acceptor, Keyring::new(key()));
    s.handle(Message::Hello(hello(PROTOCOL_VERSION))).unwrap();
    let mut auth = peer_auth(Side::Connector, Some(&key()), &ours);
    auth.proof = None;
    let got = s.handle(Message::Auth(auth));
    assert_refused(&mut s, got);
    // A replay: a genuine Auth, made for another connection's nonce.
    let (mut s, _) = fresh(Side::Acceptor, Keyring::new(key()));
    s.handle(Message::Hello(hello(PROTOCOL_VERSION))).unwrap();
    let recorded = peer_auth(Side::Connector, Some(&key()), &[1; NONCE_LEN]);
    let got = s.handle(Message::Auth(recorded));
    assert_refused(&mut s, got);
    // A reflection: the acceptor's kind of proof, shown to an acceptor.
    let (mut s, ours) = fresh(Side::Acceptor, Keyring::new(key()));
    s.handle(Message::Hello(hello(PROTOCOL_VERSION))).unwrap();
    let mut reflected = peer_auth(Side::Acceptor, Some(&key()), &ours);
    reflected.actor = peer_id();
    let got = s.handle(Message::Auth(reflected));
    assert_refused(&mut s, got);
    // A message other than Auth after the Hello.
    let (mut s, _) = fresh(Side::Acceptor, Keyring::new(key()));
    s.handle(Message::Hello(hello(PROTOCOL_VERSION))).unwrap();
    assert_eq!(
        s.handle(start(1, CallKind::Run)),
        Err(ConnectionError::Protocol(ProtocolError::NoAuth {
            got: "Start"
        }))
    );
}

/// §4: the connector checks the acceptor in turn: an acceptor that cannot prove the secret
/// (an impostor at a registered address) gets no call.
#[test]
fn a_connector_refuses_an_acceptor_that_does_not_prove_the_secret() {
    let other = Key::tree(b"another tree's secret, 16+").unwrap();
    let (mut s, ours) = fresh(Side::Connector, Keyring::new(key()));
    s.handle(Message::Hello(hello(PROTOCOL_VERSION))).unwrap();
    let proved = sent(&mut s);
    assert!(matches!(&proved[..], [Message::Auth(a)] if a.credential.as_deref() == Some("tree")));
    let got = s.handle(Message::Auth(peer_auth(
        Side::Acceptor,
        Some(&other),
        &ours,
    )));
    assert_refused(&mut s, got);
    // An acceptor answering without a credential is no better.
    let (mut s, ours) = fresh(Side::Connector, Keyring::new(key()));
    s.handle(Message::Hello(hello(PROTOCOL_VERSION))).unwrap();
    sent(&mut s);
    let got = s.handle(Message::Auth(peer_auth(Side::Acceptor, None, &ours)));
    assert_refused(&mut s, got);
    // The acceptor's refusal of us is the peer's error, not ours.
    let (mut s, _) = fresh(Side::Connector, Keyring::new(key()));
    s.handle(Message::Hello(hello(PROTOCOL_VERSION))).unwrap();
    let mut refusal = *failure();
    refusal.kind = ErrorKind::Unauthorized;
    s.handle(Message::Error {
        cid: None,
        error: Box::new(refusal),
    })
    .unwrap();
    assert!(
        matches!(&events(&mut s)[..], [Event::PeerError(e)] if e.kind == ErrorKind::Unauthorized)
    );
    assert!(s.is_closed());
}

/// §4: a peer without a credential is served only by an acceptor that accepts such peers,
/// and then proves nothing either.
#[test]
fn anonymous_peers_only_where_accepted() {
    let (mut s, ours) = fresh(Side::Acceptor, Keyring::new(key()));
    s.handle(Message::Hello(hello(PROTOCOL_VERSION))).unwrap();
    let got = s.handle(Message::Auth(peer_auth(Side::Connector, None, &ours)));
    assert_refused(&mut s, got);

    let (mut s, ours) = fresh(Side::Acceptor, Keyring::new(key()).accept_anonymous());
    s.handle(Message::Hello(hello(PROTOCOL_VERSION))).unwrap();
    s.handle(Message::Auth(peer_auth(Side::Connector, None, &ours)))
        .unwrap();
    assert!(matches!(
        &sent(&mut s)[..],
        [Message::Auth(Auth {
            credential: None,
            proof: None,
            ..
        })]
    ));
    assert_eq!(s.peer().unwrap().credential, None);

    // An anonymous connector takes an anonymous acceptor.
    let (mut s, ours) = fresh(Side::Connector, Keyring::open());
    s.handle(Message::Hello(hello(PROTOCOL_VERSION))).unwrap();
    assert!(matches!(
        &sent(&mut s)[..],
        [Message::Auth(Auth {
            credential: None,
            ..
        })]
    ));
    s.handle(Message::Auth(peer_auth(Side::Acceptor, None, &ours)))
        .unwrap();
    assert!(s.peer().is_some());
}

/// §6: a run call is acknowledged, then returns; the result may not come first.
#[test]
fn a_run_call_is_acknowledged_then_returns() {
    let mut s = connected(Side::Acceptor);
    s.handle(start(1, CallKind::Run)).unwrap();
    assert!(matches!(
        &events(&mut s)[..],
        [Event::Call { cid: 1, function, kind: CallKind::Run, .. }] if function == "f"
    ));
    assert!(matches!(
        s.finish(1, Outcome::Returned(value(3))),
        Err(SendError::Protocol(ProtocolError::OutOfOrder {
            got: "Return",
            ..
        }))
    ));
    s.accept(1).unwrap();
    s.finish(1, Outcome::Returned(value(3))).unwrap();
    assert_eq!(
        sent(&mut s),
        [
            Message::StartAck { cid: 1 },
            Message::Return {
                cid: 1,
                value: value(3)
            }
        ]
    );
    assert_eq!(s.live_calls(), 0);
    // The caller's Cancel crossing the result is stale, not an error.
    s.handle(Message::Cancel {
        cid: 1,
        requested_by: peer_id(),
        reason: None,
    })
    .unwrap();
    assert!(events(&mut s).is_empty());
}

/// §6.2: an `Error` instead of the acknowledgement (an unknown function, bad arguments).
#[test]
fn a_call_may_be_refused_instead_of_acknowledged() {
    let mut s = connected(Side::Acceptor);
    s.handle(start(1, CallKind::Run)).unwrap();
    s.refuse(1, *failure()).unwrap();
    assert!(matches!(
        &sent(&mut s)[..],
        [Message::Error { cid: Some(1), .. }]
    ));
    assert_eq!(s.live_calls(), 0);

    let mut caller = connected(Side::Connector);
    let cid = caller.start("f", CallKind::Run, Payload::unit()).unwrap();
    caller
        .handle(Message::Error {
            cid: Some(cid),
            error: failure(),
        })
        .unwrap();
    assert!(matches!(
        &events(&mut caller)[..],
        [Event::Ended {
            outcome: Outcome::Failed(_),
            ..
        }]
    ));
}

/// §5: call ids are of the caller's parity and strictly increase; breaking that breaks the
/// connection (ids are how calls are told apart).
#[test]
fn call_ids_are_fresh_increasing_and_of_the_callers_parity() {
    let mut connector = connected(Side::Connector);
    let ids: Vec<u64> = (0..3)
        .map(|_| {
            connector
                .start("f", CallKind::Run, Payload::unit())
                .unwrap()
        })
        .collect();
    assert_eq!(ids, [1, 3, 5]);
    let mut acceptor = connected(Side::Acceptor);
    assert_eq!(acceptor.start("f", CallKind::Run, Payload::unit()), Ok(2));

    for bad in [[2, 0], [3, 3], [5, 3]] {
        let mut s = connected(Side::Acceptor);
        let mut result = Ok(());
        for cid in bad.into_iter().filter(|c| *c > 0) {
            result = s.handle(start(cid, CallKind::Run));
        }
        assert!(
            matches!(
                result,
                Err(ConnectionError::Protocol(ProtocolError::BadCallId { .. }))
            ),
            "{bad:?}: {result:?}"
        );
    }
}

/// §6: a message for a call that never existed breaks the connection.
#[test]
fn messages_for_calls_that_never_existed_break_the_connection() {
    let mut s = connected(Side::Acceptor);
    assert!(matches!(
        s.handle(Message::Stop { cid: 7 }),
        Err(ConnectionError::Protocol(ProtocolError::UnknownCall {
            cid: 7,
            ..
        }))
    ));
    assert!(connection_error(&mut s).contains("unknown call 7"));
    assert_eq!(s.handle(Message::Goodbye), Err(ConnectionError::Closed));
}

/// Spec 1.1 §6.5: a caller that breaks one call's rules fails that call only (a per-call
/// `Error`); the connection and its other calls go on.
#[test]
fn a_caller_breaking_a_call_fails_that_call_only() {
    let mut s = connected(Side::Acceptor);
    s.handle(start(1, CallKind::Run)).unwrap();
    s.handle(start(3, CallKind::Run)).unwrap();
    s.accept(1).unwrap();
    s.accept(3).unwrap();
    events(&mut s);
    sent(&mut s);
    // A run call carries no stream items.
    s.handle(Message::Yield {
        cid: 1,
        value: value(0),
    })
    .unwrap();
    assert!(matches!(
        broken(&events(&mut s), 1),
        ProtocolError::OutOfOrder { got: "Yield", .. }
    ));
    assert!(matches!(
        &sent(&mut s)[..],
        [Message::Error { cid: Some(1), error }] if error.kind == ErrorKind::Protocol
    ));
    // The broken call is over: the function's late result is refused, not sent.
    assert_eq!(
        s.finish(1, Outcome::Returned(value(1))),
        Err(SendError::CallOver { cid: 1 })
    );
    s.finish(3, Outcome::Returned(value(3))).unwrap();
    assert!(matches!(
        &sent(&mut s)[..],
        [Message::Return { cid: 3, .. }]
    ));
}

/// Spec 1.1 §6.5: a callee that breaks one call's rules fails that call for the caller, who
/// cancels it and drops what else comes for it until its end.
#[test]
fn a_callee_breaking_a_call_fails_that_call_only() {
    let mut s = connected(Side::Connector);
    let broken_cid = s.start("f", CallKind::Run, Payload::unit()).unwrap();
    let other = s.start("g", CallKind::Run, Payload::unit()).unwrap();
    sent(&mut s);
    // A result before the acknowledgement.
    s.handle(Message::Return {
        cid: broken_cid,
        value: value(0),
    })
    .unwrap();
    broken(&events(&mut s), broken_cid);
    // That message ended the call for the callee: nothing to cancel, nothing awaited.
    assert!(sent(&mut s).is_empty());
    assert_eq!(s.live_calls(), 1);
    // A non-terminal rule break: the call is cancelled, its messages dropped until its end.
    let third = s.start("h", CallKind::Run, Payload::unit()).unwrap();
    sent(&mut s);
    s.handle(Message::Stop { cid: third }).unwrap();
    broken(&events(&mut s), third);
    assert!(matches!(
        &sent(&mut s)[..],
        [Message::Cancel { cid, .. }] if *cid == third
    ));
    s.handle(Message::StartAck { cid: third }).unwrap();
    s.handle(Message::CancelAck {
        cid: third,
        requested_by: peer_id(),
        reason: None,
    })
    .unwrap();
    assert!(events(&mut s).is_empty());
    assert_eq!(s.live_calls(), 1);
    s.handle(Message::StartAck { cid: other }).unwrap();
    s.handle(Message::Return {
        cid: other,
        value: value(2),
    })
    .unwrap();
    assert!(matches!(
        &events(&mut s)[..],
        [Event::Ended {
            outcome: Outcome::Returned(_),
            ..
        }]
    ));
}

/// §6, flow control: the receiver grants its window, items beyond it are an overrun (further
/// items dropped), and consuming items grants more in batches of a quarter window.
#[test]
fn a_credit_window_grants_as_items_are_consumed_and_catches_overruns() {
    let mut s = connected(Side::Connector);
    let cid = s.start("f", CallKind::Stream, Payload::unit()).unwrap();
    s.open_receive(cid, Window::Credit(8)).unwrap();
    assert!(matches!(
        &sent(&mut s)[..],
        [Message::Start { .. }, Message::Credit { count: 8, .. }]
    ));
    s.handle(Message::StartAck { cid }).unwrap();
    for n in 0..8 {
        s.handle(Message::Yield {
            cid,
            value: value(n),
        })
        .unwrap();
    }
    assert_eq!(events(&mut s).len(), 8);
    s.consumed(cid, 1);
    assert!(
        sent(&mut s).is_empty(),
        "a grant waits for a quarter window"
    );
    s.consumed(cid, 1);
    assert_eq!(sent(&mut s), [Message::Credit { cid, count: 2 }]);
    s.handle(Message::Yield {
        cid,
        value: value(8),
    })
    .unwrap();
    s.handle(Message::Yield {
        cid,
        value: value(9),
    })
    .unwrap();
    assert_eq!(events(&mut s).len(), 2);
    // The sender ignores its credit: overrun, once; what follows is dropped.
    s.handle(Message::Yield {
        cid,
        value: value(10),
    })
    .unwrap();
    s.handle(Message::Yield {
        cid,
        value: value(11),
    })
    .unwrap();
    assert_eq!(events(&mut s), [Event::Overrun { cid, capacity: 8 }]);
    // The call itself is still live: the application ends it with the error it chooses.
    assert_eq!(s.live_calls(), 1);
}

/// tractor's overrun mode: unlimited credit, and an overrun once more than the limit is
/// unread.
#[test]
fn an_unlimited_window_with_a_limit_counts_unread_items() {
    let mut s = connected(Side::Connector);
    let cid = s.start("f", CallKind::Stream, Payload::unit()).unwrap();
    s.open_receive(cid, Window::Unlimited(Some(2))).unwrap();
    assert!(matches!(
        sent(&mut s)[..],
        [
            _,
            Message::Credit {
                count: u32::MAX,
                ..
            }
        ]
    ));
    s.handle(Message::StartAck { cid }).unwrap();
    for n in 0..4 {
        s.handle(Message::Yield {
            cid,
            value: value(n),
        })
        .unwrap();
        if n % 2 == 1 {
            s.consumed(cid, 2);
        }
    }
    assert_eq!(events(&mut s).len(), 4);
    assert!(
        sent(&mut s).is_empty(),
        "an unlimited window never grants again"
    );
    for n in 0..3 {
        s.handle(Message::Yield {
            cid,
            value: value(n),
        })
        .unwrap();
    }
    assert_eq!(
        events(&mut s).pop(),
        Some(Event::Overrun { cid, capacity: 2 })
    );
}

/// §6: a sender sends no more items than it was granted; an unlimited grant lifts the limit.
#[test]
fn a_sender_waits_for_credit() {
    let mut s = connected(Side::Acceptor);
    s.handle(start(1, CallKind::Stream)).unwrap();
    s.accept(1).unwrap();
    events(&mut s);
    assert_eq!(
        s.send_item(1, value(0)),
        Err(SendError::NoCredit { cid: 1 })
    );
    s.handle(Message::Credit { cid: 1, count: 2 }).unwrap();
    assert_eq!(events(&mut s), [Event::Credit { cid: 1 }]);
    s.handle(Message::Credit { cid: 1, count: 1 }).unwrap();
    assert!(
        events(&mut s).is_empty(),
        "only credit after none is an event"
    );
    for n in 0..3 {
        s.send_item(1, value(n)).unwrap();
    }
    assert_eq!(
        s.send_item(1, value(3)),
        Err(SendError::NoCredit { cid: 1 })
    );
    s.handle(Message::Credit {
        cid: 1,
        count: u32::MAX,
    })
    .unwrap();
    for n in 0..100 {
        s.send_item(1, value(n)).unwrap();
    }
    assert_eq!(s.send_credit(1), Ok(u64::MAX));
}

/// Spec 1.1 §6: the caller of a one-way stream ends it early with `Stop`: the callee's next
/// send learns that the receiver stopped, and the call then returns normally.
#[test]
fn stop_from_a_one_way_caller_stops_the_producer() {
    let mut s = connected(Side::Acceptor);
    s.handle(start(1, CallKind::Stream)).unwrap();
    s.handle(Message::Credit {
        cid: 1,
        count: u32::MAX,
    })
    .unwrap();
    s.accept(1).unwrap();
    s.send_item(1, value(0)).unwrap();
    events(&mut s);
    s.handle(Message::Stop { cid: 1 }).unwrap();
    assert_eq!(events(&mut s), [Event::Stopped { cid: 1 }]);
    assert_eq!(
        s.send_item(1, value(1)),
        Err(SendError::ReceiverStopped { cid: 1 })
    );
    s.finish(1, Outcome::Returned(Payload::unit())).unwrap();
    // As a caller: `stop` sends it, once.
    let mut c = connected(Side::Connector);
    let cid = c.start("f", CallKind::Stream, Payload::unit()).unwrap();
    c.handle(Message::StartAck { cid }).unwrap();
    c.stop(cid).unwrap();
    assert!(c.stop(cid).is_err());
}

/// §6: a context's `Started` comes once, before any item; the callee grants the caller's
/// items right after it, and the caller may not send before.
#[test]
fn a_context_starts_once_and_items_wait_for_the_callees_grant() {
    let mut callee = connected(Side::Acceptor);
    callee.handle(start(1, CallKind::Context)).unwrap();
    callee.accept(1).unwrap();
    assert!(
        callee.open_receive(1, Window::Credit(4)).is_err(),
        "not started"
    );
    callee.started(1, value(0)).unwrap();
    assert!(callee.started(1, value(0)).is_err());
    callee.open_receive(1, Window::Credit(4)).unwrap();
    assert!(matches!(
        &sent(&mut callee)[..],
        [
            Message::StartAck { .. },
            Message::Started { .. },
            Message::Credit { count: 4, .. }
        ]
    ));

    // A caller that sends before any grant overruns a window of nothing.
    let mut eager = connected(Side::Acceptor);
    eager.handle(start(1, CallKind::Context)).unwrap();
    eager.accept(1).unwrap();
    eager.started(1, value(0)).unwrap();
    events(&mut eager);
    eager
        .handle(Message::Yield {
            cid: 1,
            value: value(1),
        })
        .unwrap();
    assert_eq!(
        events(&mut eager),
        [Event::Overrun {
            cid: 1,
            capacity: 0
        }]
    );

    // A caller's `Yield` before `Started` breaks the call.
    let mut early = connected(Side::Acceptor);
    early.handle(start(1, CallKind::Context)).unwrap();
    early.accept(1).unwrap();
    events(&mut early);
    early
        .handle(Message::Yield {
            cid: 1,
            value: value(1),
        })
        .unwrap();
    broken(&events(&mut early), 1);
}

/// §3: a credit of zero breaks its call.
#[test]
fn zero_credit_breaks_the_call() {
    let mut s = connected(Side::Acceptor);
    s.handle(start(1, CallKind::Stream)).unwrap();
    events(&mut s);
    s.handle(Message::Credit { cid: 1, count: 0 }).unwrap();
    assert_eq!(
        broken(&events(&mut s), 1),
        &ProtocolError::ZeroCredit { cid: 1 }
    );
}

/// §6, cancellation: `Cancel` once; the callee acknowledges naming the canceller; a callee
/// may also end a call with `CancelAck` unprompted (its actor was cancelled by another).
#[test]
fn cancel_once_and_cancel_acks_name_the_canceller() {
    let mut s = connected(Side::Connector);
    let cid = s.start("f", CallKind::Run, Payload::unit()).unwrap();
    let why = Box::new(CancelReason {
        source: "deadline".into(),
        message: None,
        origin: Some("actor root#00000000".into()),
    });
    assert!(s.cancel(cid, peer_id(), Some(why.clone())));
    assert!(
        matches!(&sent(&mut s)[..], [.., Message::Cancel { reason: Some(r), .. }] if *r == why),
        "the reason goes with the Cancel"
    );
    assert!(!s.cancel(cid, peer_id(), None), "sent once");
    s.handle(Message::StartAck { cid }).unwrap();
    s.handle(Message::CancelAck {
        cid,
        requested_by: peer_id(),
        reason: None,
    })
    .unwrap();
    assert!(!s.cancel(cid, peer_id(), None), "the call is over");
    let other = s.start("f", CallKind::Run, Payload::unit()).unwrap();
    s.handle(Message::StartAck { cid: other }).unwrap();
    let third = ActorId::new("third", "3");
    let because = Box::new(CancelReason {
        source: "interrupt".into(),
        message: Some("Ctrl-C (SIGINT)".into()),
        origin: Some("actor root#00000000".into()),
    });
    s.handle(Message::CancelAck {
        cid: other,
        requested_by: third.clone(),
        reason: Some(because.clone()),
    })
    .unwrap();
    let ends: Vec<_> = events(&mut s).into_iter().collect();
    assert_eq!(
        ends.last(),
        Some(&Event::Ended {
            cid: other,
            outcome: Outcome::Cancelled {
                requested_by: third,
                reason: Some(because),
            }
        })
    );
}

/// §6: `Goodbye` is the last message; the calls still live are over; anything after it
/// breaks the connection. Our own `Goodbye` ends our sending.
#[test]
fn goodbye_ends_every_call_and_nothing_follows() {
    let mut s = connected(Side::Connector);
    s.start("f", CallKind::Run, Payload::unit()).unwrap();
    s.handle(Message::Goodbye).unwrap();
    assert_eq!(events(&mut s), [Event::Goodbye]);
    assert_eq!(s.live_calls(), 0);
    assert!(matches!(
        s.handle(Message::StartAck { cid: 1 }),
        Err(ConnectionError::Protocol(
            ProtocolError::AfterGoodbye { .. }
        ))
    ));

    let mut s = connected(Side::Connector);
    s.close();
    assert_eq!(sent(&mut s), [Message::Goodbye]);
    assert_eq!(
        s.start("f", CallKind::Run, Payload::unit()),
        Err(SendError::Closed)
    );
}

/// §6: a connection-level `Error` from the peer is an event; nothing follows it.
#[test]
fn a_peer_connection_error_is_reported() {
    let mut s = connected(Side::Connector);
    s.handle(Message::Error {
        cid: None,
        error: failure(),
    })
    .unwrap();
    assert!(matches!(&events(&mut s)[..], [Event::PeerError(_)]));
    assert!(s.is_closed());
}

/// §2: bytes that are not a frame break the connection, with a report.
#[test]
fn garbage_bytes_break_the_connection_with_a_report() {
    let mut s = connected(Side::Connector);
    let mut garbage = BytesMut::from(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1][..]);
    assert!(matches!(
        s.handle_bytes(&mut garbage),
        Err(ConnectionError::Decode(_))
    ));
    assert!(connection_error(&mut s).contains("undecodable"));
}

/// A caller that gives up on a call drops what still comes for it, up to its end.
#[test]
fn a_forgotten_call_drops_its_messages_until_its_end() {
    let mut s = connected(Side::Connector);
    let cid = s.start("f", CallKind::Stream, Payload::unit()).unwrap();
    s.open_receive(cid, Window::Credit(4)).unwrap();
    s.forget(cid);
    s.handle(Message::StartAck { cid }).unwrap();
    s.handle(Message::Yield {
        cid,
        value: value(1),
    })
    .unwrap();
    s.handle(Message::Return {
        cid,
        value: Payload::unit(),
    })
    .unwrap();
    assert!(events(&mut s).is_empty());
    assert_eq!(s.live_calls(), 0);
}

/// §6: a receiver that closes its end early grants the unlimited count and drops what still
/// arrives.
#[test]
fn closing_a_receiving_end_grants_without_limit_and_drops_items() {
    let mut s = connected(Side::Connector);
    let cid = s.start("f", CallKind::Stream, Payload::unit()).unwrap();
    s.open_receive(cid, Window::Credit(2)).unwrap();
    s.handle(Message::StartAck { cid }).unwrap();
    sent(&mut s);
    s.close_receive(cid);
    assert_eq!(
        sent(&mut s),
        [Message::Credit {
            cid,
            count: u32::MAX
        }]
    );
    for n in 0..10 {
        s.handle(Message::Yield {
            cid,
            value: value(n),
        })
        .unwrap();
    }
    assert!(events(&mut s).is_empty());
}

/// Counting live calls, by sort.
#[test]
fn counts_by_sort() {
    let mut s = connected(Side::Connector);
    s.start("f", CallKind::Run, Payload::unit()).unwrap();
    s.start("g", CallKind::Stream, Payload::unit()).unwrap();
    s.handle(start(2, CallKind::Context)).unwrap();
    let counts = s.counts();
    assert_eq!((counts.calling, counts.serving, counts.streams), (2, 1, 2));
}

/// §9: a peer may have at most the limit of calls live at once; the next `Start` is refused
/// with `LimitExceeded` and no event, and room comes back as calls end.
#[test]
fn calls_beyond_the_peers_limit_are_refused() {
    let mut s = connected(Side::Acceptor);
    s.limit_peer_calls(2);
    for cid in [1, 3, 5] {
        s.handle(start(cid, CallKind::Run)).unwrap();
    }
    assert_eq!(events(&mut s).len(), 2);
    match &sent(&mut s)[..] {
        [
            Message::Error {
                cid: Some(5),
                error,
            },
        ] => {
            assert_eq!(error.kind, ErrorKind::LimitExceeded);
        }
        other => panic!("expected call 5 refused, got {other:?}"),
    }
    s.accept(1).unwrap();
    s.finish(1, Outcome::Returned(value(1))).unwrap();
    s.handle(start(7, CallKind::Run)).unwrap();
    assert!(matches!(&events(&mut s)[..], [Event::Call { cid: 7, .. }]));
}

/// Calls of ours that we stopped following are kept to swallow their late end; a peer that
/// never ends them cannot make the table grow without bound: past `MAX_DETACHED` the
/// connection fails. Ended ones leave the count.
#[test]
fn a_peer_that_never_ends_cancelled_calls_fails_the_connection() {
    let mut s = connected(Side::Connector);
    let first = s.start("f", CallKind::Run, Payload::unit()).unwrap();
    s.forget(first);
    // Its end arrives: it no longer counts.
    s.handle(Message::Return {
        cid: first,
        value: value(0),
    })
    .unwrap();
    for _ in 0..trellis_wire::MAX_DETACHED {
        let cid = s.start("f", CallKind::Run, Payload::unit()).unwrap();
        s.forget(cid);
    }
    assert!(!s.is_closed(), "at the limit, not past it");
    let cid = s.start("f", CallKind::Run, Payload::unit()).unwrap();
    s.forget(cid);
    assert!(s.is_closed());
    let message = connection_error(&mut s);
    assert!(message.contains("unanswered"), "{message}");
}

/// Items encoded in place (`send_item_with`) follow the same rules, and a value that fails to
/// encode leaves nothing behind: no bytes, no credit taken.
#[test]
fn items_encoded_in_place_take_credit_once_and_fail_cleanly() {
    let mut s = connected(Side::Acceptor);
    s.handle(start(1, CallKind::Stream)).unwrap();
    s.accept(1).unwrap();
    s.handle(Message::Credit { cid: 1, count: 2 }).unwrap();
    sent(&mut s);
    s.send_item_with(1, |out| Payload::encode_into(&7u8, out))
        .unwrap();
    let refused = s.send_item_with(1, |out| {
        out.extend_from_slice(b"half a value");
        Err(trellis_wire::PayloadError::Encode("no".into()))
    });
    assert!(matches!(refused, Err(SendError::Payload(_))), "{refused:?}");
    assert_eq!(
        sent(&mut s),
        [Message::Yield {
            cid: 1,
            value: value(7)
        }]
    );
    assert_eq!(s.send_credit(1), Ok(1));
    s.send_item_with(1, |out| Payload::encode_into(&8u8, out))
        .unwrap();
    assert_eq!(
        s.send_item_with(1, |out| Payload::encode_into(&9u8, out)),
        Err(SendError::NoCredit { cid: 1 })
    );
    assert_eq!(
        sent(&mut s),
        [Message::Yield {
            cid: 1,
            value: value(8)
        }]
    );
}

/// A sender that takes credit ahead and encodes its items outside the session puts on the
/// wire what `send_item_with` would, counts the same credit, gives back what it did not use,
/// and has nothing queued once the receiver stopped.
#[test]
fn items_encoded_ahead_are_the_same_frames_under_the_same_credit() {
    let mut s = connected(Side::Acceptor);
    s.handle(start(1, CallKind::Stream)).unwrap();
    s.accept(1).unwrap();
    s.handle(Message::Credit { cid: 1, count: 5 }).unwrap();
    sent(&mut s);
    assert_eq!(s.take_credit(1, 3), Ok(3));
    assert_eq!(s.send_credit(1), Ok(2));
    let mut frames = BytesMut::new();
    for n in [7u8, 8] {
        (s.codec())
            .encode_yield_with(&mut frames, 1, |out| Payload::encode_into(&n, out))
            .unwrap();
    }
    let refused = s.codec().encode_yield_with(&mut frames, 1, |out| {
        out.extend_from_slice(b"half a value");
        Err(trellis_wire::PayloadError::Encode("no".into()))
    });
    assert!(matches!(refused, Err(SendError::Payload(_))), "{refused:?}");
    s.send_encoded_items(1, &frames, 2).unwrap();
    s.return_credit(1, 1);
    assert_eq!(s.send_credit(1), Ok(3));
    s.send_item_with(1, |out| Payload::encode_into(&9u8, out))
        .unwrap();
    let mut in_place = BytesMut::new();
    for n in [7u8, 8, 9] {
        (Codec::new())
            .encode_yield_with(&mut in_place, 1, |out| Payload::encode_into(&n, out))
            .unwrap();
    }
    assert_eq!(&s.outgoing().split()[..], &in_place[..]);
    // The rest, then none: the call waits for credit, as with `send_item`.
    assert_eq!(s.take_credit(1, u64::MAX), Ok(2));
    assert_eq!(s.take_credit(1, 1), Err(SendError::NoCredit { cid: 1 }));
    // The caller stops: what was encoded under credit taken before is refused whole.
    s.handle(Message::Stop { cid: 1 }).unwrap();
    assert_eq!(
        s.send_encoded_items(1, &in_place, 3),
        Err(SendError::ReceiverStopped { cid: 1 })
    );
    assert!(s.outgoing().is_empty());
    assert_eq!(s.stream_stats()[0].sent, 3);
}

/// Credit taken ahead on a call with an unlimited window stays unlimited.
#[test]
fn credit_taken_ahead_of_an_unlimited_window_has_no_limit() {
    let mut s = connected(Side::Acceptor);
    s.handle(start(1, CallKind::Stream)).unwrap();
    s.accept(1).unwrap();
    s.handle(Message::Credit {
        cid: 1,
        count: u32::MAX,
    })
    .unwrap();
    assert_eq!(s.take_credit(1, 10), Ok(u64::MAX));
    assert_eq!(s.send_credit(1), Ok(u64::MAX));
    s.return_credit(1, u64::MAX);
    assert_eq!(s.send_credit(1), Ok(u64::MAX));
}

/// Item frames as bytes take the engine's fast path; its results are the general decoder's:
/// a `Yield` with an element a newer minor version added, frames split anywhere, and an item
/// for a call that does not exist (which breaks the connection, as §3 says).
#[test]
fn item_frames_read_from_bytes_follow_the_same_rules() {
    let mut s = connected(Side::Connector);
    let cid = s.start("f", CallKind::Stream, Payload::unit()).unwrap();
    s.handle(Message::StartAck { cid }).unwrap();
    s.open_receive(cid, Window::Credit(8)).unwrap();
    sent(&mut s);
    events(&mut s);
    let codec = Codec::new();
    let mut wire = BytesMut::new();
    codec
        .encode(
            &Message::Yield {
                cid,
                value: value(1),
            },
            &mut wire,
        )
        .unwrap();
    // [4 (Yield), cid, 2, nil]: four elements, the fourth unknown to this version.
    let body = [0x94, 0x04, cid as u8, 0x02, 0xc0];
    wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
    wire.extend_from_slice(&body);
    codec
        .encode(
            &Message::Yield {
                cid,
                value: value(3),
            },
            &mut wire,
        )
        .unwrap();
    let mut buf = BytesMut::new();
    for chunk in wire.chunks(3) {
        buf.extend_from_slice(chunk);
        s.handle_bytes(&mut buf).unwrap();
    }
    assert!(buf.is_empty());
    assert_eq!(
        events(&mut s),
        [1, 2, 3].map(|n| Event::Item {
            cid,
            value: value(n)
        })
    );
    // A value too long to be copied out shares the read buffer, and reads the same.
    let long = Payload::encode(&"y".repeat(100)).unwrap();
    codec
        .encode(
            &Message::Yield {
                cid,
                value: long.clone(),
            },
            &mut buf,
        )
        .unwrap();
    s.handle_bytes(&mut buf).unwrap();
    assert_eq!(events(&mut s), [Event::Item { cid, value: long }]);
    let mut stray = BytesMut::new();
    codec
        .encode(
            &Message::Yield {
                cid: cid + 2,
                value: value(4),
            },
            &mut stray,
        )
        .unwrap();
    assert!(s.handle_bytes(&mut stray).is_err());
    assert!(connection_error(&mut s).contains("unknown call"), "{s:?}");
}

/// A stream's traffic as the engine counts it: items each way, unread items, and one credit
/// wait per time the sender ran dry (not per refused attempt).
#[test]
fn stream_stats_count_items_and_each_wait_for_credit_once() {
    let mut s = connected(Side::Acceptor);
    s.handle(start(1, CallKind::Stream)).unwrap();
    s.accept(1).unwrap();
    s.handle(Message::Credit { cid: 1, count: 2 }).unwrap();
    for n in 0..2 {
        s.send_item_with(1, |out| Payload::encode_into(&n, out))
            .unwrap();
    }
    for _ in 0..3 {
        let refused = s.send_item_with(1, |out| Payload::encode_into(&9, out));
        assert_eq!(refused, Err(SendError::NoCredit { cid: 1 }));
    }
    s.handle(Message::Credit { cid: 1, count: 1 }).unwrap();
    s.send_item_with(1, |out| Payload::encode_into(&2, out))
        .unwrap();
    let refused = s.send_item_with(1, |out| Payload::encode_into(&9, out));
    assert_eq!(refused, Err(SendError::NoCredit { cid: 1 }));
    let stats = s.stream_stats();
    assert_eq!(stats.len(), 1);
    let stats = stats[0];
    assert_eq!(
        (stats.cid, stats.role, stats.kind),
        (1, trellis_wire::Role::Callee, CallKind::Stream)
    );
    assert_eq!((stats.sent, stats.received, stats.unread), (3, 0, 0));
    assert_eq!(
        stats.credit_waits, 2,
        "two dry spells, five refused attempts"
    );
}

/// Two one-way streams of ours, started and acknowledged, each receiving with a window of
/// `capacity`; what that sent and the events so far taken.
fn two_streams(s: &mut Session, capacity: u32) -> [u64; 2] {
    let mut cids = [0; 2];
    for cid in &mut cids {
        *cid = s.start("f", CallKind::Stream, Payload::unit()).unwrap();
        s.handle(Message::StartAck { cid: *cid }).unwrap();
        s.open_receive(*cid, Window::Credit(capacity)).unwrap();
    }
    sent(s);
    events(s);
    cids
}

/// `poll_batch` gives consecutive items of one call together, in order, and every other
/// event between them where it came; `poll_event` gives the same one by one.
#[test]
fn consecutive_items_of_a_call_come_as_one_batch() {
    let feed = |s: &mut Session, a: u64, b: u64| {
        for (cid, n) in [(a, 1), (a, 2), (b, 3), (a, 4)] {
            s.handle(Message::Yield {
                cid,
                value: value(n),
            })
            .unwrap();
        }
        s.handle(Message::Return {
            cid: a,
            value: value(5),
        })
        .unwrap();
    };
    let open = |s: &mut Session| two_streams(s, 8);
    let mut s = connected(Side::Connector);
    let [a, b] = open(&mut s);
    feed(&mut s, a, b);
    let mut batches = Vec::new();
    while let Some(batch) = s.poll_batch() {
        batches.push(batch);
    }
    let items = |cid, ns: &[u8]| Batch::Items {
        cid,
        values: ns.iter().map(|&n| value(n)).collect(),
    };
    assert_eq!(batches.len(), 4, "{batches:?}");
    assert_eq!(batches[0], items(a, &[1, 2]));
    assert_eq!(batches[1], items(b, &[3]));
    assert_eq!(batches[2], items(a, &[4]));
    assert!(matches!(batches[3], Batch::Event(Event::Ended { cid, .. }) if cid == a));

    // The same, one event at a time.
    let mut s = connected(Side::Connector);
    let [a, b] = open(&mut s);
    feed(&mut s, a, b);
    let got = events(&mut s);
    let expected: Vec<Event> = [(a, 1), (a, 2), (b, 3), (a, 4)]
        .into_iter()
        .map(|(cid, n)| Event::Item {
            cid,
            value: value(n),
        })
        .collect();
    assert_eq!(&got[..4], &expected[..]);
    assert!(matches!(got[4], Event::Ended { cid, .. } if cid == a));
}

/// Items read from bytes (the fast path, which takes a run of one call's items with one
/// look-up) give exactly the events the same messages give one by one: order kept across
/// calls, the window counted through a run (an overrun in the middle of one, what follows
/// dropped), short values copied out and long ones shared, a short value last in the buffer.
#[test]
fn items_read_from_bytes_give_the_events_of_the_same_messages() {
    let open = |s: &mut Session| two_streams(s, 3);
    let long = Payload::encode(&"y".repeat(100)).unwrap();
    let messages = |a: u64, b: u64| {
        let mut m: Vec<Message> = [(a, 1), (a, 2), (b, 3), (a, 4), (a, 5), (a, 6), (b, 7)]
            .into_iter()
            .map(|(cid, n)| Message::Yield {
                cid,
                value: value(n),
            })
            .collect();
        m.push(Message::Yield {
            cid: b,
            value: long.clone(),
        });
        m.push(Message::Return {
            cid: a,
            value: value(8),
        });
        m.push(Message::Yield {
            cid: b,
            value: value(9),
        });
        m
    };

    let mut one_by_one = connected(Side::Connector);
    let [a, b] = open(&mut one_by_one);
    for m in messages(a, b) {
        one_by_one.handle(m).unwrap();
    }
    let expected = events(&mut one_by_one);
    assert!(expected.contains(&Event::Overrun {
        cid: a,
        capacity: 3
    }));

    let mut read = connected(Side::Connector);
    let [a, b] = open(&mut read);
    let codec = Codec::new();
    let mut buf = BytesMut::new();
    for m in messages(a, b) {
        codec.encode(&m, &mut buf).unwrap();
    }
    read.handle_bytes(&mut buf).unwrap();
    assert!(buf.is_empty());
    assert_eq!(events(&mut read), expected);
}

/// A stream on which the acceptor sends: call 1, with `credit`.
fn sending_stream(credit: u32) -> Session {
    let mut s = connected(Side::Acceptor);
    s.handle(start(1, CallKind::Stream)).unwrap();
    s.accept(1).unwrap();
    s.handle(Message::Credit {
        cid: 1,
        count: credit,
    })
    .unwrap();
    sent(&mut s);
    events(&mut s);
    s
}

fn byte_string(size: usize) -> Bytes {
    (0..size).map(|k| (k * 13) as u8).collect()
}

/// A byte string sent as it is (`send_item_bytes`, a long one shared rather than copied into
/// the outgoing bytes) is the very frame serde writes for a `bytes::Bytes`, in the shortest
/// `bin` form, and it keeps its place among the messages encoded around it.
#[test]
fn a_byte_string_sent_as_it_is_is_the_frame_serde_writes() {
    let mut by_serde = sending_stream(1000);
    let mut shared = sending_stream(1000);
    for size in [0, 5, 255, 256, 16_383, 16_384, 65_535, 65_536, 100_000] {
        let item = byte_string(size);
        by_serde
            .send_item(1, Payload::encode(&item).unwrap())
            .unwrap();
        shared.send_item_bytes(1, item.clone()).unwrap();
        let wire = shared.outgoing().split();
        assert_eq!(by_serde.outgoing().split(), wire, "{size} bytes");
        let Some(Message::Yield { value, .. }) = Codec::new().decode(&mut wire.clone()).unwrap()
        else {
            panic!("not a Yield");
        };
        assert_eq!(value.to_bin(), Some(item), "{size} bytes");
    }
    let long = byte_string(50_000);
    shared.send_item(1, value(1)).unwrap();
    shared.send_item_bytes(1, long.clone()).unwrap();
    shared.send_item(1, value(2)).unwrap();
    shared.send_item_bytes(1, long.clone()).unwrap();
    let values: Vec<Payload> = sent(&mut shared)
        .into_iter()
        .map(|m| match m {
            Message::Yield { value, .. } => value,
            other => panic!("not a Yield: {other:?}"),
        })
        .collect();
    let long = Payload::encode(&long).unwrap();
    assert_eq!(values, [value(1), long.clone(), value(2), long]);
    assert_eq!(value(1).to_bin(), None, "not a byte string");
    assert_eq!(Payload::encode("text").unwrap().to_bin(), None);
}

/// A byte string longer than a frame may be is refused before anything is written, and
/// costs no credit; so is any item without credit.
#[test]
fn a_byte_string_too_long_for_a_frame_is_refused_whole() {
    let mut s = sending_stream(1);
    let too_long = Bytes::from(vec![0; trellis_wire::DEFAULT_MAX_FRAME]);
    assert!(matches!(
        s.send_item_bytes(1, too_long),
        Err(SendError::TooLarge(_))
    ));
    assert!(s.outgoing().is_empty());
    assert_eq!(s.send_credit(1), Ok(1));
    s.send_item_bytes(1, byte_string(20_000)).unwrap();
    assert_eq!(
        s.send_item_bytes(1, byte_string(20_000)),
        Err(SendError::NoCredit { cid: 1 })
    );
    assert_eq!(sent(&mut s).len(), 1);
}

/// A frame handed over whole (`handle_frame`: a transport read a long frame into memory of
/// its own) gives the events the same frame gives among bytes, and a `Yield`'s value shares
/// the frame's memory; an empty or overlong frame breaks the connection as its header would.
#[test]
fn a_frame_handed_over_whole_gives_the_events_of_its_bytes() {
    let long = Payload::encode(&byte_string(70_000)).unwrap();
    let messages = |a: u64, b: u64| {
        vec![
            Message::Yield {
                cid: a,
                value: value(1),
            },
            Message::Yield {
                cid: b,
                value: long.clone(),
            },
            Message::Yield {
                cid: a,
                value: long.clone(),
            },
            Message::Return {
                cid: b,
                value: value(2),
            },
        ]
    };
    let codec = Codec::new();

    let mut read = connected(Side::Connector);
    let [a, b] = two_streams(&mut read, 8);
    let mut buf = BytesMut::new();
    for m in messages(a, b) {
        codec.encode(&m, &mut buf).unwrap();
    }
    read.handle_bytes(&mut buf).unwrap();
    let expected = events(&mut read);
    assert_eq!(expected.len(), 4);

    let mut whole = connected(Side::Connector);
    let [a, b] = two_streams(&mut whole, 8);
    let mut frames = Vec::new();
    for m in messages(a, b) {
        let mut one = BytesMut::new();
        codec.encode(&m, &mut one).unwrap();
        frames.push(codec.decode_frame(&mut one).unwrap().unwrap());
    }
    let shared_frame = frames[2].clone();
    for frame in frames {
        whole.handle_frame(frame).unwrap();
    }
    let got = events(&mut whole);
    assert_eq!(got, expected);
    let Some(Event::Item { value, .. }) = got.get(2) else {
        panic!("not an item: {got:?}");
    };
    let range = shared_frame.as_ptr_range();
    assert!(range.contains(&value.to_bin().unwrap().as_ptr()), "copied");

    for (frame, what) in [
        (Bytes::new(), "empty"),
        (
            Bytes::from(vec![0x90; trellis_wire::DEFAULT_MAX_FRAME + 1]),
            "too large",
        ),
    ] {
        let mut s = connected(Side::Connector);
        assert!(s.handle_frame(frame).is_err(), "{what}");
        assert!(
            connection_error(&mut s).contains("undecodable frame"),
            "{what}"
        );
        assert_eq!(
            s.handle_frame(Bytes::from_static(&[0x91, 0x0c])),
            Err(ConnectionError::Closed)
        );
    }
}

/// §6.7 leaves how much to grant to the receiver. A growing window (trellis's default for
/// streams): small items widen it up to its maximum, large ones narrow it back to its start
/// and never below; the sender never has more unconsumed items than the window's size, a
/// grant is never zero, and an item beyond the grant is still an overrun.
#[test]
fn a_growing_window_follows_the_items_size() {
    let (start, max) = (8u64, 32u64);
    let mut s = connected(Side::Connector);
    let cid = s.start("f", CallKind::Stream, Payload::unit()).unwrap();
    let window = Window::Growing {
        start: 8,
        max: 32,
        bytes: 8 * 1024,
    };
    s.open_receive(cid, window).unwrap();
    assert!(matches!(
        &sent(&mut s)[..],
        [Message::Start { .. }, Message::Credit { count: 8, .. }]
    ));
    s.handle(Message::StartAck { cid }).unwrap();
    let (mut granted, mut consumed) = (start, 0u64);
    // The peer sends all it may of `item`, and the receiver consumes them one at a time;
    // returns the window's size (what the sender may have unconsumed) after the last grant.
    let mut rounds = |s: &mut Session, item: &Payload, rounds: usize| {
        for _ in 0..rounds {
            for _ in consumed..granted {
                s.handle(Message::Yield {
                    cid,
                    value: item.clone(),
                })
                .unwrap();
            }
            let items = events(s).len() as u64;
            assert_eq!(items, granted - consumed, "every granted item is received");
            for _ in 0..items {
                s.consumed(cid, 1);
                consumed += 1;
                for message in sent(s) {
                    let Message::Credit { count, .. } = message else {
                        panic!("only credit is sent, got {message:?}");
                    };
                    assert!(count > 0, "a grant is never zero");
                    granted += u64::from(count);
                    assert!(granted - consumed <= max, "never more than the maximum");
                    assert!(granted - consumed >= start, "never less than the start");
                }
            }
        }
        granted - consumed
    };
    let small = value(1);
    assert_eq!(
        rounds(&mut s, &small, 4),
        max,
        "small items widen the window"
    );
    let large = Payload::encode(&vec![7u32; 1000]).unwrap();
    assert_eq!(
        rounds(&mut s, &large, 8),
        start,
        "large items narrow it back"
    );
    assert_eq!(
        rounds(&mut s, &small, 4),
        max,
        "and small ones widen it again"
    );
    // One item beyond the grant is an overrun, reported with the window's size now.
    for _ in 0..=max {
        s.handle(Message::Yield {
            cid,
            value: small.clone(),
        })
        .unwrap();
    }
    let overrun = events(&mut s).pop();
    assert_eq!(overrun, Some(Event::Overrun { cid, capacity: 32 }));
}
