//! The connection and call rules: each test names the rule and sends or receives the message
//! that breaks it.

use trellis_wire::{
    ActorId, CallKind, ErrorKind, ErrorReport, Hello, Message, PROTOCOL_VERSION, Payload,
    ProtocolError, Received, Role, Session, Side, Version,
};

fn hello(name: &str, version: Version) -> Hello {
    Hello {
        version,
        actor: ActorId::new(name, "0123456789abcdef"),
        pid: 1,
    }
}

/// A connected pair after the handshake: (connector, acceptor).
fn pair() -> (Session, Session) {
    let mut a = Session::new(Side::Connector, hello("parent", PROTOCOL_VERSION));
    let mut b = Session::new(Side::Acceptor, hello("child", PROTOCOL_VERSION));
    let (ha, hb) = (a.hello(), b.hello());
    assert_eq!(b.receive(&ha), Ok(Received::Hello));
    assert_eq!(a.receive(&hb), Ok(Received::Hello));
    (a, b)
}

/// Sends `msg` from `from` and delivers it to `to`; both must accept it.
fn deliver(from: &mut Session, to: &mut Session, msg: Message) -> Received {
    from.send(&msg)
        .unwrap_or_else(|e| panic!("sender refused {msg:?}: {e}"));
    to.receive(&msg)
        .unwrap_or_else(|e| panic!("receiver refused {msg:?}: {e}"))
}

fn start(cid: u64, kind: CallKind) -> Message {
    Message::Start {
        cid,
        function: "f".into(),
        kind,
        args: Payload::unit(),
    }
}

fn value() -> Payload {
    Payload::encode(&1u8).unwrap()
}

fn failure() -> Box<ErrorReport> {
    Box::new(ErrorReport {
        actor: ActorId::new("child", "1"),
        kind: ErrorKind::UnknownFunction,
        type_name: "UnknownFunction".into(),
        message: "no function `f`".into(),
        chain: vec![],
        backtrace: None,
        value: None,
        group: vec![],
    })
}

fn out_of_order(result: Result<impl std::fmt::Debug, ProtocolError>, got: &str) {
    match result {
        Err(ProtocolError::OutOfOrder { got: g, .. }) if g == got => {}
        other => panic!("expected {got} to be out of order, got {other:?}"),
    }
}

#[test]
fn hello_comes_first_on_both_sides() {
    let mut a = Session::new(Side::Connector, hello("a", PROTOCOL_VERSION));
    assert_eq!(
        a.send(&Message::StartAck { cid: 2 }),
        Err(ProtocolError::NoHello { got: "StartAck" })
    );
    assert_eq!(
        a.receive(&Message::Goodbye),
        Err(ProtocolError::NoHello { got: "Goodbye" })
    );
    let h = Message::Hello(hello("b", PROTOCOL_VERSION));
    assert_eq!(a.receive(&h), Ok(Received::Hello));
    assert_eq!(a.receive(&h), Err(ProtocolError::DuplicateHello));
    assert_eq!(a.peer().unwrap().actor.name, "b");
    let _ = a.hello();
    assert_eq!(
        a.send(&Message::Hello(hello("a", PROTOCOL_VERSION))),
        Err(ProtocolError::DuplicateHello)
    );
}

#[test]
fn major_version_must_match_minor_may_differ() {
    let mut a = Session::new(Side::Connector, hello("a", PROTOCOL_VERSION));
    let theirs = Version {
        major: PROTOCOL_VERSION.major + 1,
        minor: 0,
    };
    assert_eq!(
        a.receive(&Message::Hello(hello("b", theirs))),
        Err(ProtocolError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs
        })
    );
    assert!(a.peer().is_none());
    let newer_minor = Version {
        major: PROTOCOL_VERSION.major,
        minor: PROTOCOL_VERSION.minor + 3,
    };
    assert_eq!(
        a.receive(&Message::Hello(hello("b", newer_minor))),
        Ok(Received::Hello)
    );
}

#[test]
fn run_call_acknowledged_then_returns() {
    let (mut a, mut b) = pair();
    let cid = a.next_call_id();
    assert_eq!(
        deliver(&mut a, &mut b, start(cid, CallKind::Run)),
        Received::Call { cid, ends: false }
    );
    assert_eq!(b.role(cid), Some(Role::Callee));
    assert_eq!(a.role(cid), Some(Role::Caller));
    // No result before the acknowledgement, on either side's check.
    let early = Message::Return {
        cid,
        value: value(),
    };
    out_of_order(b.send(&early), "Return");
    out_of_order(a.receive(&early), "Return");
    deliver(&mut b, &mut a, Message::StartAck { cid });
    // A run call has no stream.
    out_of_order(
        b.send(&Message::Yield {
            cid,
            value: value(),
        }),
        "Yield",
    );
    out_of_order(a.send(&Message::Stop { cid }), "Stop");
    out_of_order(a.send(&Message::Credit { cid, count: 1 }), "Credit");
    assert_eq!(
        deliver(&mut b, &mut a, early),
        Received::Call { cid, ends: true }
    );
    assert_eq!((a.live_calls(), b.live_calls()), (0, 0));
}

#[test]
fn an_error_may_replace_the_acknowledgement() {
    let (mut a, mut b) = pair();
    let cid = a.next_call_id();
    deliver(&mut a, &mut b, start(cid, CallKind::Run));
    let err = Message::Error {
        cid: Some(cid),
        error: failure(),
    };
    assert_eq!(
        deliver(&mut b, &mut a, err),
        Received::Call { cid, ends: true }
    );
}

#[test]
fn call_ids_are_fresh_increasing_and_of_the_callers_parity() {
    let (mut a, mut b) = pair();
    // The connector's ids are odd, the acceptor's even.
    let (ca, cb) = (a.next_call_id(), b.next_call_id());
    assert_eq!((ca % 2, cb % 2), (1, 0));
    // The acceptor may not start a call with an odd id...
    assert_eq!(
        a.receive(&start(3, CallKind::Run)),
        Err(ProtocolError::BadCallId { cid: 3 })
    );
    // ...nor send a Start with an id it did not allocate.
    assert_eq!(
        b.send(&start(100, CallKind::Run)),
        Err(ProtocolError::BadCallId { cid: 100 })
    );
    deliver(&mut a, &mut b, start(ca, CallKind::Run));
    // Reused, then lower ids are refused by the receiver.
    assert_eq!(
        b.receive(&start(ca, CallKind::Run)),
        Err(ProtocolError::BadCallId { cid: ca })
    );
    let next = a.next_call_id();
    deliver(&mut a, &mut b, start(next, CallKind::Run));
    assert!(b.receive(&start(ca, CallKind::Run)).is_err());
    // Both directions at once: calls of both sides coexist.
    deliver(&mut b, &mut a, start(cb, CallKind::Run));
    assert_eq!((a.live_calls(), b.live_calls()), (3, 3));
    assert_eq!(a.role(cb), Some(Role::Callee));
}

#[test]
fn messages_for_calls_that_never_existed_are_refused() {
    let (mut a, _b) = pair();
    assert_eq!(
        a.receive(&Message::StartAck { cid: 41 }),
        Err(ProtocolError::UnknownCall {
            cid: 41,
            got: "StartAck"
        })
    );
    assert_eq!(
        a.receive(&Message::Cancel {
            cid: 40,
            requested_by: ActorId::new("x", "1")
        }),
        Err(ProtocolError::UnknownCall {
            cid: 40,
            got: "Cancel"
        })
    );
}

/// tractor's context rules: `started` comes once and before any stream item, both ways.
#[test]
fn context_started_once_before_streaming() {
    let (mut a, mut b) = pair();
    let cid = a.next_call_id();
    deliver(&mut a, &mut b, start(cid, CallKind::Context));
    deliver(&mut b, &mut a, Message::StartAck { cid });
    let item = || Message::Yield {
        cid,
        value: value(),
    };
    out_of_order(b.send(&item()), "Yield");
    out_of_order(a.send(&item()), "Yield");
    out_of_order(
        b.send(&Message::Return {
            cid,
            value: value(),
        }),
        "Return",
    );
    deliver(
        &mut b,
        &mut a,
        Message::Started {
            cid,
            value: value(),
        },
    );
    out_of_order(
        b.send(&Message::Started {
            cid,
            value: value(),
        }),
        "Started",
    );
    // Both directions stream now.
    deliver(&mut a, &mut b, item());
    deliver(&mut b, &mut a, item());
    deliver(&mut b, &mut a, Message::Credit { cid, count: 4 });
    deliver(&mut a, &mut b, Message::Credit { cid, count: 4 });
    // A side that stopped sends no more items; the other side still may.
    deliver(&mut a, &mut b, Message::Stop { cid });
    out_of_order(a.send(&item()), "Yield");
    out_of_order(b.receive(&item()), "Yield");
    out_of_order(a.send(&Message::Stop { cid }), "Stop");
    deliver(&mut b, &mut a, item());
    deliver(&mut b, &mut a, Message::Stop { cid });
    out_of_order(b.send(&item()), "Yield");
    assert_eq!(
        deliver(
            &mut b,
            &mut a,
            Message::Return {
                cid,
                value: value()
            }
        ),
        Received::Call { cid, ends: true }
    );
}

#[test]
fn stream_flows_from_the_callee_only() {
    let (mut a, mut b) = pair();
    let cid = a.next_call_id();
    deliver(&mut a, &mut b, start(cid, CallKind::Stream));
    out_of_order(
        b.send(&Message::Yield {
            cid,
            value: value(),
        }),
        "Yield",
    );
    deliver(&mut b, &mut a, Message::StartAck { cid });
    out_of_order(
        b.send(&Message::Started {
            cid,
            value: value(),
        }),
        "Started",
    );
    out_of_order(
        a.send(&Message::Yield {
            cid,
            value: value(),
        }),
        "Yield",
    );
    deliver(
        &mut b,
        &mut a,
        Message::Yield {
            cid,
            value: value(),
        },
    );
    // The caller stops listening; items already in flight still arrive legally.
    deliver(&mut a, &mut b, Message::Stop { cid });
    deliver(
        &mut b,
        &mut a,
        Message::Yield {
            cid,
            value: value(),
        },
    );
    deliver(
        &mut b,
        &mut a,
        Message::Return {
            cid,
            value: Payload::unit(),
        },
    );
}

#[test]
fn cancel_once_then_acknowledged_naming_the_canceller() {
    let (mut a, mut b) = pair();
    let cid = a.next_call_id();
    let by = ActorId::new("root", "9");
    deliver(&mut a, &mut b, start(cid, CallKind::Run));
    // The callee cannot report a cancellation of a call it never acknowledged.
    out_of_order(
        b.send(&Message::CancelAck {
            cid,
            requested_by: by.clone(),
        }),
        "CancelAck",
    );
    deliver(&mut b, &mut a, Message::StartAck { cid });
    let cancel = Message::Cancel {
        cid,
        requested_by: by.clone(),
    };
    deliver(&mut a, &mut b, cancel.clone());
    out_of_order(a.send(&cancel), "Cancel");
    // Only the caller cancels.
    let cb = b.next_call_id();
    deliver(&mut b, &mut a, start(cb, CallKind::Run));
    deliver(&mut a, &mut b, Message::StartAck { cid: cb });
    out_of_order(
        a.send(&Message::Cancel {
            cid: cb,
            requested_by: by.clone(),
        }),
        "Cancel",
    );
    assert_eq!(
        deliver(
            &mut b,
            &mut a,
            Message::CancelAck {
                cid,
                requested_by: by
            }
        ),
        Received::Call { cid, ends: true }
    );
}

/// A caller's Cancel or Credit may cross the result on the wire: the callee ignores it. The
/// callee ends its calls, so nothing of its own may follow the end.
#[test]
fn late_caller_messages_are_stale_late_callee_messages_are_errors() {
    let (mut a, mut b) = pair();
    let cid = a.next_call_id();
    deliver(&mut a, &mut b, start(cid, CallKind::Context));
    deliver(&mut b, &mut a, Message::StartAck { cid });
    deliver(
        &mut b,
        &mut a,
        Message::Started {
            cid,
            value: value(),
        },
    );
    let result = Message::Return {
        cid,
        value: value(),
    };
    b.send(&result).unwrap();
    // Before the result reaches the caller, it sends more.
    let late = [
        Message::Yield {
            cid,
            value: value(),
        },
        Message::Credit { cid, count: 1 },
        Message::Stop { cid },
        Message::Cancel {
            cid,
            requested_by: ActorId::new("root", "9"),
        },
    ];
    for m in &late {
        a.send(m).unwrap();
        assert_eq!(b.receive(m), Ok(Received::Stale), "{m:?}");
    }
    a.receive(&result).unwrap();
    assert_eq!(
        a.receive(&Message::Yield {
            cid,
            value: value()
        }),
        Err(ProtocolError::UnknownCall { cid, got: "Yield" })
    );
}

#[test]
fn zero_credit_is_refused() {
    let (mut a, mut b) = pair();
    let cid = a.next_call_id();
    deliver(&mut a, &mut b, start(cid, CallKind::Stream));
    deliver(&mut b, &mut a, Message::StartAck { cid });
    assert_eq!(
        a.send(&Message::Credit { cid, count: 0 }),
        Err(ProtocolError::ZeroCredit { cid })
    );
}

#[test]
fn nothing_after_goodbye() {
    let (mut a, mut b) = pair();
    assert_eq!(deliver(&mut a, &mut b, Message::Goodbye), Received::Goodbye);
    let cid = a.next_call_id();
    assert_eq!(
        a.send(&start(cid, CallKind::Run)),
        Err(ProtocolError::AfterGoodbye { got: "Start" })
    );
    assert_eq!(
        b.receive(&start(cid, CallKind::Run)),
        Err(ProtocolError::AfterGoodbye { got: "Start" })
    );
}

#[test]
fn a_refused_message_changes_nothing() {
    let (mut a, mut b) = pair();
    let cid = a.next_call_id();
    deliver(&mut a, &mut b, start(cid, CallKind::Context));
    deliver(&mut b, &mut a, Message::StartAck { cid });
    // A Stop from the caller before Started is refused and does not count as a stop.
    out_of_order(a.send(&Message::Stop { cid }), "Stop");
    deliver(
        &mut b,
        &mut a,
        Message::Started {
            cid,
            value: value(),
        },
    );
    deliver(
        &mut a,
        &mut b,
        Message::Yield {
            cid,
            value: value(),
        },
    );
    deliver(&mut a, &mut b, Message::Stop { cid });
}

#[test]
fn connection_errors_have_no_call() {
    let (mut a, mut b) = pair();
    assert_eq!(
        deliver(
            &mut b,
            &mut a,
            Message::Error {
                cid: None,
                error: failure()
            }
        ),
        Received::ConnectionError
    );
}

/// The caller grants credit for the callee's items together with its `Start`, before the
/// acknowledgement; the callee grants its own only once it acknowledged the call.
#[test]
fn caller_credit_may_precede_the_acknowledgement() {
    for kind in [CallKind::Stream, CallKind::Context] {
        let (mut a, mut b) = pair();
        let cid = a.next_call_id();
        deliver(&mut a, &mut b, start(cid, kind));
        deliver(&mut a, &mut b, Message::Credit { cid, count: 64 });
        out_of_order(b.send(&Message::Credit { cid, count: 1 }), "Credit");
        out_of_order(a.receive(&Message::Credit { cid, count: 1 }), "Credit");
        deliver(&mut b, &mut a, Message::StartAck { cid });
        deliver(
            &mut b,
            &mut a,
            Message::Credit {
                cid,
                count: u32::MAX,
            },
        );
    }
    // Run calls take no credit at all.
    let (mut a, mut b) = pair();
    let cid = a.next_call_id();
    deliver(&mut a, &mut b, start(cid, CallKind::Run));
    out_of_order(a.send(&Message::Credit { cid, count: 1 }), "Credit");
}
