//! The wire contract of a live actor, tried from a raw socket the way a peer written from
//! `docs/wire-protocol.md` alone would: functions called by the name they were registered
//! under, `Stop` ending a stream, bad arguments refused instead of acknowledged, a call's
//! rule break failing that call only, every handshake failure reported, `Goodbye` cancelling
//! what it leaves. The root actor of each test serves its own listener; the test speaks to it
//! through a `trellis-wire` session over a plain Unix socket.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use trellis_actor::{Addr, Config, Functions, MsgStream, Secret, Transport};
use trellis_wire::{
    ActorId, CallKind, Codec, ErrorKind, Event, Identity, Key, Keyring, Message, Outcome, Payload,
    Session, Side, Window,
};

/// The tree's secret in these tests.
const SECRET: &[u8] = b"wire rules, a secret of the tree";

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

/// Streams 0, 1, 2, … until its caller stops taking them.
async fn count_forever(stream: MsgStream<Infallible, u64>) -> Result<(), trellis::Error> {
    for i in 0.. {
        stream.send(i).await?;
    }
    Ok(())
}

static HOLD_CANCELLED: AtomicBool = AtomicBool::new(false);

/// Waits until cancelled, and records that it was.
async fn hold() -> Result<(), trellis::Error> {
    let Err(cancelled) = trellis::sleep_forever().await;
    HOLD_CANCELLED.store(true, Ordering::SeqCst);
    Err(cancelled.into())
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(add)
            .register(count_forever)
            .register(hold),
    )
    .unregistered()
    .secret(Secret::new(SECRET).unwrap())
}

/// Runs `body` with the address of a root actor serving [`config`].
fn with_actor<F, Fut>(body: F)
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    common::root_with(config(), Transport::Unix, || async {
        let Addr::Unix(path) = trellis_actor::current().addr().clone() else {
            unreachable!("a Unix transport")
        };
        body(path).await;
        Ok(())
    })
    .unwrap();
}

/// A peer on a raw socket: its session, and every message it received, in order.
struct Peer {
    stream: UnixStream,
    session: Session,
    inbox: BytesMut,
    codec: Codec,
}

impl Peer {
    /// Connects and runs the handshake, proving the tree's secret.
    async fn connect(path: &std::path::Path) -> Peer {
        let me = Identity::new(
            ActorId::new("raw-peer", "0123456789abcdef0123456789abcdef"),
            0,
        );
        let keyring = Keyring::new(Key::tree(SECRET).unwrap());
        let mut peer = Peer {
            stream: UnixStream::connect(path).await.unwrap(),
            session: Session::new(Side::Connector, me, keyring),
            inbox: BytesMut::new(),
            codec: Codec::new(),
        };
        while peer.session.peer().is_none() {
            peer.flush().await;
            peer.next().await.expect("the actor answers the handshake");
        }
        peer.flush().await;
        peer
    }

    async fn flush(&mut self) {
        let out = self.session.outgoing().split();
        self.stream.write_all(&out).await.unwrap();
    }

    /// Writes `message` as is, past the session's checks.
    async fn write_raw(&mut self, message: &Message) {
        let mut out = BytesMut::new();
        self.codec.encode(message, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next message from the actor (also handed to the session); `None` at the end of
    /// the connection.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.codec.decode(&mut self.inbox).unwrap() {
                let _ = self.session.handle(message.clone());
                return Some(message);
            }
            let read = tokio::time::timeout(
                Duration::from_secs(20),
                self.stream.read_buf(&mut self.inbox),
            )
            .await
            .expect("the actor answers");
            if read.unwrap() == 0 {
                return None;
            }
        }
    }

    /// Reads until the message `pick` accepts, and returns what it made of it.
    async fn until<T>(&mut self, mut pick: impl FnMut(&Message) -> Option<T>) -> T {
        loop {
            let message = self.next().await.expect("the connection stays open");
            if let Some(found) = pick(&message) {
                return found;
            }
        }
    }

    /// Starts a call of `hold` and waits for its acknowledgement: a call that stays running.
    async fn start_held(&mut self) -> u64 {
        let held = self
            .session
            .start("hold", CallKind::Run, Payload::unit())
            .unwrap();
        self.flush().await;
        self.until(|m| matches!(m, Message::StartAck { cid } if *cid == held).then_some(()))
            .await;
        held
    }

    async fn call(&mut self, function: &str, args: impl serde::Serialize) -> Outcome {
        let cid = self
            .session
            .start(function, CallKind::Run, Payload::encode(&args).unwrap())
            .unwrap();
        self.flush().await;
        self.ended(cid).await
    }

    async fn ended(&mut self, cid: u64) -> Outcome {
        loop {
            self.next().await.expect("the call ends");
            while let Some(event) = self.session.poll_event() {
                if let Event::Ended { cid: c, outcome } = event
                    && c == cid
                {
                    return outcome;
                }
            }
        }
    }
}

fn returned<T: serde::de::DeserializeOwned>(outcome: Outcome) -> T {
    match outcome {
        Outcome::Returned(value) => value.decode().unwrap(),
        other => panic!("expected a value, got {other:?}"),
    }
}

/// Spec 1.1 §8: a function is called by the name it was registered under, its bare
/// identifier; `trellis.functions` lists them with their call kinds.
#[test]
fn functions_are_called_by_their_registered_names() {
    with_actor(|path| async move {
        let mut peer = Peer::connect(&path).await;
        assert_eq!(returned::<i64>(peer.call("add", (1, 2)).await), 3);
        let list: Vec<trellis_actor::FunctionInfo> =
            returned(peer.call("trellis.functions", ()).await);
        let kind = |name: &str| list.iter().find(|f| f.name == name).map(|f| f.kind.clone());
        assert_eq!(kind("add").as_deref(), Some("run"));
        assert_eq!(kind("count_forever").as_deref(), Some("stream"));
        assert_eq!(kind("trellis.terminal").as_deref(), Some("context"));
    });
}

/// Spec 1.1 §6.2: arguments that do not decode are refused with an `Error` instead of the
/// `StartAck`, not after it.
#[test]
fn bad_arguments_are_refused_instead_of_acknowledged() {
    with_actor(|path| async move {
        let mut peer = Peer::connect(&path).await;
        let cid = peer
            .session
            .start(
                "add",
                CallKind::Run,
                Payload::encode(&("one", "two")).unwrap(),
            )
            .unwrap();
        peer.flush().await;
        let first = peer
            .until(|m| (m.cid() == Some(cid)).then(|| m.clone()))
            .await;
        match first {
            Message::Error { error, .. } => assert_eq!(error.kind, ErrorKind::BadArguments),
            other => panic!("expected an Error first, got {}", other.name()),
        }
    });
}

/// Spec 1.1 §6.3: the caller of a one-way stream ends it early with `Stop`: the function's
/// next `send` learns it, and the call ends with `Return`.
#[test]
fn stop_ends_a_one_way_stream_with_a_return() {
    with_actor(|path| async move {
        let mut peer = Peer::connect(&path).await;
        let cid = peer
            .session
            .start("count_forever", CallKind::Stream, Payload::unit())
            .unwrap();
        peer.session.open_receive(cid, Window::Credit(8)).unwrap();
        peer.flush().await;
        let mut seen = 0;
        while seen < 3 {
            if let Some(Message::Yield { .. }) = peer.next().await {
                seen += 1;
            }
        }
        peer.session.stop(cid).unwrap();
        peer.flush().await;
        let end = peer
            .until(|m| match m {
                Message::Return { cid: c, .. }
                | Message::Error { cid: Some(c), .. }
                | Message::CancelAck { cid: c, .. }
                    if *c == cid =>
                {
                    Some(m.name())
                }
                _ => None,
            })
            .await;
        assert_eq!(end, "Return");
    });
}

/// A hostile caller: unlimited credit for a stream, then it never reads its socket. The stream
/// function is held once what waits to be written reaches the connection's bound (its own
/// buffer of items and the outgoing high-water mark), instead of buffering without end, and
/// the actor serves another peer meanwhile.
#[test]
fn a_caller_that_never_reads_holds_the_stream_not_the_memory() {
    with_actor(|path| async move {
        let mut silent = Peer::connect(&path).await;
        let cid = (silent.session)
            .start("count_forever", CallKind::Stream, Payload::unit())
            .unwrap();
        silent
            .session
            .open_receive(cid, Window::Unlimited(None))
            .unwrap();
        silent.flush().await;
        // The items the function has handed to its connection, once that count stays the
        // same for 200 ms.
        let sent = || {
            let info = trellis_actor::current().info();
            (info.stream_stats.iter())
                .find(|s| s.role == "callee")
                .map_or(0, |s| s.sent)
        };
        let mut last = (0, 0);
        for _ in 0..1000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = sent();
            last = if now == last.0 {
                (now, last.1 + 1)
            } else {
                (now, 0)
            };
            if last.1 == 20 || now > 10_000_000 {
                break;
            }
        }
        // About 16 bytes an item: 1 MiB of outgoing bytes, 64 KiB of the call's own buffer and
        // the socket's buffers hold well under a million; without a bound the function sends
        // millions in that time.
        assert!(last.0 > 0 && last.0 < 1_000_000, "{} items sent", last.0);
        let mut other = Peer::connect(&path).await;
        assert_eq!(returned::<i64>(other.call("add", (2, 3)).await), 5);
        assert_eq!(sent(), last.0, "the held function sent more");
    });
}

/// Spec 1.1 §6.5: a caller that breaks one call's rules gets a per-call `Error` for it; the
/// connection and its other calls go on.
#[test]
fn a_broken_call_leaves_the_connection_alone() {
    with_actor(|path| async move {
        let mut peer = Peer::connect(&path).await;
        let held = peer.start_held().await;
        // A run call carries no items.
        peer.write_raw(&Message::Yield {
            cid: held,
            value: Payload::unit(),
        })
        .await;
        let error = peer
            .until(|m| match m {
                Message::Error {
                    cid: Some(c),
                    error,
                } if *c == held => Some(error.clone()),
                _ => None,
            })
            .await;
        assert_eq!(error.kind, ErrorKind::Protocol);
        assert_eq!(returned::<i64>(peer.call("add", (2, 3)).await), 5);
    });
}

/// Spec 1.1 §4: every handshake failure is reported with a connection-level `Error` before
/// the actor closes the connection.
#[test]
fn every_handshake_failure_is_reported() {
    with_actor(|path| async move {
        // Not a Hello first.
        let mut stream = UnixStream::connect(&path).await.unwrap();
        let mut out = BytesMut::new();
        Codec::new().encode(&Message::Goodbye, &mut out).unwrap();
        stream.write_all(&out).await.unwrap();
        assert_reported(&mut stream, "Goodbye first").await;
        let raw = [
            // A 1.1 Hello (another major version): version, actor, pid, capabilities.
            (
                "1.1 Hello",
                vec![
                    0x95, 0x00, 0x92, 0x01, 0x01, 0x92, 0xa1, b'a', 0xa1, b'1', 0x00, 0x80,
                ],
            ),
            // A Hello without its capabilities map.
            ("short Hello", {
                let mut body = vec![0x93, 0x00, 0x92, 0x02, 0x00, 0xc4, 0x20];
                body.extend([1; 32]);
                body
            }),
        ];
        for (case, body) in raw {
            let mut stream = UnixStream::connect(&path).await.unwrap();
            stream
                .write_all(&[0, 0, 0, body.len() as u8])
                .await
                .unwrap();
            stream.write_all(&body).await.unwrap();
            assert_reported(&mut stream, case).await;
        }
    });
}

/// Reads the actor's `Hello`, then a connection-level `Error` of kind `Protocol`, then the
/// end of the stream.
async fn assert_reported(stream: &mut UnixStream, case: &str) {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes))
        .await
        .expect("the actor closes")
        .unwrap();
    let mut buf = BytesMut::from(&bytes[..]);
    let codec = Codec::new();
    assert!(
        matches!(codec.decode(&mut buf), Ok(Some(Message::Hello(_)))),
        "{case}"
    );
    match codec.decode(&mut buf) {
        Ok(Some(Message::Error { cid: None, error })) => {
            assert_eq!(error.kind, ErrorKind::Protocol, "{case}");
        }
        other => panic!("{case}: expected a connection-level Error, got {other:?}"),
    }
}

/// Spec 1.1 §6.6: `Goodbye` with calls still running cancels them.
#[test]
fn goodbye_cancels_the_calls_it_leaves() {
    with_actor(|path| async move {
        let mut peer = Peer::connect(&path).await;
        peer.start_held().await;
        peer.session.close();
        peer.flush().await;
        // The actor closes its side too; by then the call was cancelled.
        while peer.next().await.is_some() {}
        for _ in 0..2000 {
            if HOLD_CANCELLED.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the held call was not cancelled");
    });
}

/// Spec 1.1 §8: two functions of one name are an error at registration.
#[test]
#[should_panic(expected = "two functions registered under the name `add`")]
fn two_functions_of_one_name_are_refused() {
    mod other {
        pub(super) async fn add(a: i64) -> Result<i64, trellis::Error> {
            Ok(a)
        }
    }
    let _ = Functions::new().register(add).register(other::add);
}

/// A closure has no identifier: it needs a name given.
#[test]
#[should_panic(expected = "register it with `register_as`")]
fn a_closure_needs_a_name() {
    let _ = Functions::new().register(|a: i64| async move { Ok::<_, trellis::Error>(a) });
}

/// Error types too: two of one bare name are refused.
#[test]
#[should_panic(expected = "is taken")]
fn two_error_types_of_one_name_are_refused() {
    mod one {
        #[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
        #[error("one")]
        pub(super) struct Oops;
    }
    mod two {
        #[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
        #[error("two")]
        pub(super) struct Oops;
    }
    let _ = Functions::new()
        .error_type::<one::Oops>()
        .error_type::<two::Oops>();
}
