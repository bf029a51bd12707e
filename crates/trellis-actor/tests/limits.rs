//! What one peer may hold of an actor (`Limits`), tried with the hostile patterns it bounds:
//! thousands of silent connections, half-sent frames, a flood of calls, idle outsiders, too
//! many connections. The target is a child actor process; after each attack a fresh
//! connection still gets its call answered, and the target's memory stays within a stated
//! bound.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

mod common;

use bytes::BytesMut;
use trellis_actor::{Addr, Config, Functions, Limits, Transport, open_nursery};
use trellis_wire::{
    ActorId, CallKind, Codec, ErrorKind, Identity, Key, Keyring, Message, Payload, Session, Side,
};

const SECRET: &[u8] = b"the limit tests' tree secret";

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

/// Runs until cancelled.
async fn hold() -> Result<(), trellis::Error> {
    trellis::sleep(Duration::from_secs(3600)).await?;
    Ok(())
}

/// Small limits, so that each attack reaches them quickly.
fn limits() -> Limits {
    Limits::default()
        .max_connections(64)
        .max_handshakes(8)
        .handshake_timeout(Duration::from_secs(2))
        .idle_timeout(Some(Duration::from_millis(300)))
        .frame_timeout(Duration::from_secs(2))
        .read_budget(32 << 20)
        .max_calls_per_connection(64)
}

fn config() -> Config {
    Config::new(Functions::new().register(add).register(hold))
        .child_args(["serve_children", "--exact", "--nocapture", "-q"])
        .secret(trellis_actor::Secret::new(SECRET).unwrap())
        .expose_to_anyone(["add"])
        .limits(limits())
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

/// A connection from this test, speaking the protocol through the engine, blocking.
struct Raw {
    stream: TcpStream,
    session: Session,
    inbox: BytesMut,
    codec: Codec,
}

impl Raw {
    /// Connects and does the handshake with `keyring`; `None` if the actor refused.
    fn connect(addr: SocketAddr, keyring: Keyring) -> Result<Raw, Message> {
        let me = Identity::new(ActorId::new("tester", trellis_uid()), 0);
        let mut raw = Raw {
            stream: TcpStream::connect(addr).unwrap(),
            session: Session::new(Side::Connector, me, keyring),
            inbox: BytesMut::new(),
            codec: Codec::new(),
        };
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        while raw.session.peer().is_none() {
            raw.flush();
            match raw.next() {
                Some(m @ Message::Error { .. }) => return Err(m),
                Some(_) => {}
                None => panic!("the actor closed the connection in the handshake"),
            }
        }
        raw.flush();
        Ok(raw)
    }

    fn member(addr: SocketAddr) -> Raw {
        Raw::connect(addr, Keyring::new(Key::tree(SECRET).unwrap())).expect("a member gets in")
    }

    /// Sends what the engine wrote; a failure shows in the next read (the actor may have
    /// refused and closed).
    fn flush(&mut self) {
        let out = self.session.outgoing().split();
        let _ = self.stream.write_all(&out);
    }

    /// The next message (also handed to the engine); `None` when the actor closed.
    fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.codec.decode(&mut self.inbox).unwrap() {
                let _ = self.session.handle(message.clone());
                return Some(message);
            }
            let mut buf = [0; 64 * 1024];
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Calls `add(a, b)` and returns its result.
    fn add(&mut self, a: i64, b: i64) -> i64 {
        let cid = self
            .session
            .start("add", CallKind::Run, Payload::encode(&(a, b)).unwrap())
            .unwrap();
        self.flush();
        loop {
            match self.next().expect("the actor answers") {
                Message::Return { cid: c, value } if c == cid => {
                    return value.decode().unwrap();
                }
                Message::Error {
                    cid: Some(c),
                    error,
                } if c == cid => panic!("{error:?}"),
                _ => {}
            }
        }
    }
}

fn trellis_uid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{:032x}", N.fetch_add(1, Ordering::Relaxed) + 1)
}

/// A process's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A process's open file descriptors.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Starts a tree over TCP with a child `target` and runs `attack(target's address, pid)` on
/// a thread.
fn against_target(attack: impl FnOnce(SocketAddr, u32) + Send + 'static) {
    common::root_with(config(), Transport::tcp_loopback(), || async move {
        open_nursery(|an| async move {
            let target = an.start_actor("target").await?;
            let addr = match target.info().await?.addr.parse() {
                Ok(Addr::Tcp(addr)) => addr,
                other => panic!("a TCP address, not {other:?}"),
            };
            let pid = target.pid();
            trellis::threads::run_sync(move || attack(addr, pid)).await?;
            // The tree is unhurt: the parent's own connection still serves.
            assert_eq!(target.run(add, (1, 1)).await?, 2);
            an.cancel();
            Ok(())
        })
        .await
    })
    .unwrap_or_else(|e| panic!("{e:?}"));
}

/// Raises this process's open-file limit to its hard limit (the attacks hold thousands).
fn more_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// 2,000 connections that never say `Hello`: at most `max_handshakes` are held at once
/// (each new one closes the oldest), so the target holds neither their file descriptors nor
/// memory, and a peer that does its handshake gets in during the flood.
#[test]
fn silent_connections_do_not_keep_a_caller_out() {
    more_files();
    against_target(|addr, pid| {
        let (fds, memory) = (open_fds(pid), rss(pid));
        let silent: Vec<TcpStream> = (0..2000)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        assert!(silent.len() > 1000, "only {} connections", silent.len());
        assert_eq!(Raw::member(addr).add(20, 22), 42);
        // The closed handshakes' descriptors go as their tasks end; the limit only keeps a
        // broken build from hanging.
        let bound = fds + limits().max_handshakes + 4;
        let until = std::time::Instant::now() + Duration::from_secs(20);
        let mut held = open_fds(pid);
        while held > bound && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
            held = open_fds(pid);
        }
        assert!(
            held <= bound,
            "the target holds {held} descriptors (it held {fds} before)"
        );
        let grown = rss(pid).saturating_sub(memory);
        assert!(grown < 16 << 20, "the target grew by {grown} bytes");
        drop(silent);
    });
}

/// A peer that has not done its handshake cannot make the actor hold a large frame: a
/// header announcing 16 MiB followed by data ends the connection at once.
#[test]
fn a_large_frame_before_the_handshake_is_refused() {
    against_target(|addr, _| {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut bytes = (16u32 << 20).to_be_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(0x90, 100 * 1024));
        // The actor may close while this is being written.
        let _ = stream.write_all(&bytes);
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut seen = Vec::new();
        let _ = stream.read_to_end(&mut seen);
        assert!(seen.len() < 1024, "the actor sent {} bytes", seen.len());
        assert_eq!(Raw::member(addr).add(1, 2), 3);
    });
}

/// 32 members each announce a 16 MiB frame (512 MiB in all, against a 32 MiB budget), then
/// send 1 MiB of it: frames that do not fit the budget close their connections at once, the
/// others are closed at the frame deadline; the target's memory stays within the budget, and
/// a fresh caller is served. (How many fit depends on how many expired before the later
/// headers were read; the test asserts the bounds, not the split.)
#[test]
fn half_sent_frames_are_bounded_by_budget_and_deadline() {
    against_target(|addr, pid| {
        let memory = rss(pid);
        let mut half: Vec<Raw> = (0..32).map(|_| Raw::member(addr)).collect();
        for raw in &mut half {
            let _ = raw.stream.write_all(&(16u32 << 20).to_be_bytes());
        }
        for raw in &mut half {
            let _ = raw.stream.write_all(&[0x90; 1 << 20]);
        }
        assert_eq!(Raw::member(addr).add(2, 2), 4);
        let mut reasons = Vec::new();
        for raw in &mut half {
            // Each is ended by the target, with a connection-level error saying why.
            let mut why = None;
            while let Some(message) = raw.next() {
                if let Message::Error { cid: None, error } = message {
                    why = Some(error.message);
                }
            }
            reasons.push(why.unwrap_or_default());
        }
        let spent = reasons.iter().filter(|r| r.contains("memory")).count();
        let slow = reasons.iter().filter(|r| r.contains("took longer")).count();
        assert_eq!(spent + slow, 32, "{reasons:?}");
        assert!(spent > 0 && slow > 0, "{reasons:?}");
        let grown = rss(pid).saturating_sub(memory);
        assert!(
            grown < (limits().read_budget as u64) + (16 << 20),
            "the target grew by {grown} bytes"
        );
    });
}

/// 20,000 pipelined calls on one connection: the first `max_calls_per_connection` run, every
/// other is refused with `LimitExceeded`, memory stays bounded, and the connection and a
/// fresh one go on serving.
#[test]
fn a_call_flood_is_refused_beyond_the_limit() {
    against_target(|addr, pid| {
        let memory = rss(pid);
        let mut raw = Raw::member(addr);
        let n = 20_000;
        for _ in 0..n {
            raw.session
                .start("hold", CallKind::Run, Payload::unit())
                .unwrap();
        }
        raw.flush();
        let (mut acked, mut refused) = (0, 0);
        while acked + refused < n {
            match raw.next().expect("the connection stays open") {
                Message::StartAck { .. } => acked += 1,
                Message::Error {
                    cid: Some(_),
                    error,
                } => {
                    assert_eq!(error.kind, ErrorKind::LimitExceeded, "{error:?}");
                    refused += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(acked, limits().max_calls_per_connection);
        let grown = rss(pid).saturating_sub(memory);
        assert!(grown < 32 << 20, "the target grew by {grown} bytes");
        assert_eq!(Raw::member(addr).add(3, 4), 7);
    });
}

/// A peer from outside the tree that holds no call is let go with a `Goodbye` after the
/// idle timeout; a member's connection stays.
#[test]
fn idle_outsiders_are_let_go() {
    against_target(|addr, _| {
        let mut member = Raw::member(addr);
        let mut outsider = Raw::connect(addr, Keyring::open()).expect("anyone may call add");
        assert_eq!(outsider.add(1, 1), 2);
        let mut goodbye = false;
        while let Some(message) = outsider.next() {
            goodbye |= matches!(message, Message::Goodbye);
        }
        assert!(goodbye, "the outsider was told goodbye");
        assert_eq!(member.add(5, 5), 10);
    });
}

/// Connections beyond `max_connections` are refused after the `Hello`s with a
/// connection-level `LimitExceeded` error; those already open go on serving.
#[test]
fn connections_beyond_the_limit_are_refused() {
    more_files();
    against_target(|addr, _| {
        let mut open = Vec::new();
        let refusal = loop {
            assert!(open.len() <= limits().max_connections, "never refused");
            match Raw::connect(addr, Keyring::new(Key::tree(SECRET).unwrap())) {
                Ok(raw) => open.push(raw),
                Err(refusal) => break refusal,
            }
        };
        let Message::Error { cid: None, error } = refusal else {
            panic!("{refusal:?}")
        };
        assert_eq!(error.kind, ErrorKind::LimitExceeded);
        assert_eq!(error.actor, ActorId::new("", ""), "names nobody");
        assert_eq!(open[0].add(6, 6), 12);
        let last = open.len() - 1;
        assert_eq!(open[last].add(7, 7), 14);
    });
}
