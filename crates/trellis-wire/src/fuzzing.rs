//! Drivers shared by the fuzz targets (`fuzz/`) and the property tests, so that both run the
//! same scenarios: a hostile peer's bytes into a session, and two honest sessions taking
//! random actions against each other. Not a stable API.

use std::collections::HashMap;

use bytes::{Buf, Bytes, BytesMut};

use crate::{
    ActorId, CallKind, Codec, ConnectionError, Event, HEADER_LEN, Identity, Key, Keyring, Outcome,
    Payload, Session, Side, Window,
};

/// A byte string's length picked by `byte`: short ones, and ones long enough to go out
/// shared (up to about 46 KB).
fn byte_string_len(byte: u8) -> usize {
    usize::from(byte >> 3) * 1500
}

fn identity(name: &str) -> Identity {
    Identity::new(ActorId::new(name, "0"), 1)
}

/// Feeds `data` to a session as the peer's bytes, interleaved with local actions picked by
/// the data's first bytes (so that the peer's messages meet calls in every state, and
/// credit in both directions). Never panics: every input is handled or refused. The session
/// accepts peers without a credential, so that a fuzzer finds its way past the handshake (an
/// `Auth` with no credential) to the calls.
pub fn hostile_peer(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let side = if first & 1 == 1 {
        Side::Connector
    } else {
        Side::Acceptor
    };
    // Whether whole frames are handed over as frames (`handle_frame`, as a transport does
    // with a long frame it read into memory of its own) rather than among bytes.
    let whole_frames = first & 0x80 != 0;
    let codec = Codec::new().with_max_frame(1 << 16);
    let mut session = Session::with_codec(side, identity("fuzz"), Keyring::open(), codec);
    let actions = usize::from((first >> 1) & 0x3f).min(rest.len());
    let (actions, bytes) = rest.split_at(actions);
    let mut known = Vec::new();
    // Half the actions before the peer's bytes, half between pieces of them.
    for &action in &actions[..actions.len() / 2] {
        act(&mut session, action, &mut known);
    }
    let mut later = actions[actions.len() / 2..].iter();
    let mut inbox = BytesMut::new();
    for piece in bytes.chunks(16) {
        inbox.extend_from_slice(piece);
        let handled = if whole_frames {
            handle_whole_frames(&mut session, &mut inbox)
        } else {
            session.handle_bytes(&mut inbox)
        };
        if handled.is_err() {
            break;
        }
        while let Some(event) = session.poll_event() {
            note(&event, &mut known);
        }
        if let Some(&action) = later.next() {
            act(&mut session, action, &mut known);
        }
    }
}

/// Hands each whole frame at the front of `inbox` to `session` as a frame, whatever its
/// header says (an empty or overlong frame included), leaving a partial one.
fn handle_whole_frames(session: &mut Session, inbox: &mut BytesMut) -> Result<(), ConnectionError> {
    while let Some(header) = inbox.get(..HEADER_LEN) {
        let len = u32::from_be_bytes(header.try_into().expect("a header")) as usize;
        if inbox.len() < HEADER_LEN + len {
            break;
        }
        inbox.advance(HEADER_LEN);
        session.handle_frame(inbox.split_to(len).freeze())?;
    }
    Ok(())
}

fn note(event: &Event, known: &mut Vec<u64>) {
    if let Event::Call { cid, .. } = event {
        known.push(*cid);
    }
}

/// A local action chosen by `byte`, on a call chosen by it too. Refusals are fine.
fn act(session: &mut Session, byte: u8, known: &mut Vec<u64>) {
    let cid = known
        .get(usize::from(byte >> 4) % known.len().max(1))
        .copied()
        .unwrap_or(1);
    let small = Payload::unit();
    match byte & 0x0f {
        0 => {
            let kind =
                [CallKind::Run, CallKind::Stream, CallKind::Context][usize::from(byte >> 4) % 3];
            if let Ok(cid) = session.start("f", kind, small) {
                known.push(cid);
            }
        }
        1 => drop(session.open_receive(cid, window(byte >> 4))),
        2 => drop(session.open_receive(cid, Window::Unlimited(Some(u32::from(byte >> 4))))),
        3 => session.consumed(cid, u32::from(byte >> 4)),
        4 => drop(session.accept(cid)),
        5 => drop(session.started(cid, small)),
        6 => drop(session.send_item(cid, small)),
        7 => drop(session.finish(cid, Outcome::Returned(small))),
        8 => drop(session.cancel(cid, ActorId::new("x", "y"), None)),
        9 => drop(session.stop(cid)),
        10 => session.close_receive(cid),
        11 => session.forget(cid),
        12 => send_ahead(session, cid, u64::from(byte >> 4)),
        13 => {
            let _ = session.counts();
            let _ = session.send_credit(cid);
        }
        14 => session.outgoing().clear(),
        _ => drop(session.send_item_bytes(cid, Bytes::from(vec![byte; byte_string_len(byte)]))),
    }
}

/// Up to `n` unit items sent as a sender outside the session does: credit taken ahead (up to
/// one more than `n`), frames encoded on their own, handed over together, the rest of the
/// credit given back.
fn send_ahead(session: &mut Session, cid: u64, n: u64) {
    let Ok(credit) = session.take_credit(cid, n + 1) else {
        return;
    };
    let items = credit.min(n);
    let mut frames = BytesMut::new();
    for _ in 0..items {
        let unit = |out: &mut BytesMut| {
            out.extend_from_slice(Payload::unit().as_bytes());
            Ok(())
        };
        if session
            .codec()
            .encode_yield_with(&mut frames, cid, unit)
            .is_err()
        {
            return;
        }
    }
    if session.send_encoded_items(cid, &frames, items).is_ok() {
        let left = if credit == u64::MAX {
            u64::MAX
        } else {
            credit - items
        };
        session.return_credit(cid, left);
    }
}

/// The state one honest side keeps about its calls.
struct Honest {
    session: Session,
    /// Bytes received and not yet handled.
    inbox: BytesMut,
    /// Calls the peer made that this side has not answered.
    to_answer: Vec<(u64, CallKind)>,
    /// Calls this side serves or made that are live, with their kind.
    live: HashMap<u64, CallKind>,
    /// Items received and not yet consumed, per call.
    unread: HashMap<u64, u32>,
    /// Items received, and calls ended, in all.
    stats: PairStats,
}

/// What an [`honest_pair`] run exchanged, so that a test can tell it did something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairStats {
    /// Stream items received, both ways.
    pub items: usize,
    /// Calls that ended with the callee's terminal message, both ways.
    pub ended: usize,
}

impl Honest {
    fn new(side: Side, name: &str, keyring: Keyring) -> Self {
        Honest {
            session: Session::new(side, identity(name), keyring),
            inbox: BytesMut::new(),
            to_answer: Vec::new(),
            live: HashMap::new(),
            unread: HashMap::new(),
            stats: PairStats::default(),
        }
    }

    fn pick(&self, byte: u8) -> Option<u64> {
        let mut cids: Vec<u64> = self.live.keys().copied().collect();
        cids.sort_unstable();
        cids.get(usize::from(byte >> 3) % cids.len().max(1))
            .copied()
    }

    /// Handles what arrived, a long whole frame at the front handed over as a frame (as a
    /// transport does); an honest peer never breaks a rule, so any violation panics.
    fn receive(&mut self) {
        loop {
            let long = self.inbox.get(..HEADER_LEN).and_then(|header| {
                let len = u32::from_be_bytes(header.try_into().expect("a header")) as usize;
                (len >= 1000 && self.inbox.len() >= HEADER_LEN + len).then_some(len)
            });
            let handled = match long {
                Some(len) => {
                    self.inbox.advance(HEADER_LEN);
                    self.session.handle_frame(self.inbox.split_to(len).freeze())
                }
                None => self.session.handle_bytes(&mut self.inbox),
            };
            if let Err(e) = handled {
                panic!("an honest peer broke the connection: {e}");
            }
            if long.is_none() {
                break;
            }
        }
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Call { cid, kind, .. } => self.to_answer.push((cid, kind)),
                Event::Item { cid, .. } => {
                    *self.unread.entry(cid).or_default() += 1;
                    self.stats.items += 1;
                }
                Event::Ended { cid, .. } => {
                    self.live.remove(&cid);
                    self.stats.ended += 1;
                }
                Event::Broken { cid, error } => panic!("an honest peer broke call {cid}: {error}"),
                Event::Overrun { cid, .. } => panic!("an honest peer overran call {cid}"),
                _ => {}
            }
        }
    }

    fn act(&mut self, byte: u8) {
        let picked = self.pick(byte);
        let s = &mut self.session;
        let unit = Payload::unit();
        match byte & 7 {
            0 => {
                let kind = [CallKind::Run, CallKind::Stream, CallKind::Context]
                    [usize::from(byte >> 3) % 3];
                let cid = s.start("f", kind, unit).expect("a start is always allowed");
                if kind != CallKind::Run {
                    s.open_receive(cid, window(byte >> 5))
                        .expect("a caller opens its receiving end at once");
                }
                self.live.insert(cid, kind);
            }
            1 => {
                if let Some((cid, kind)) = self.to_answer.pop() {
                    s.accept(cid).expect("acknowledging a new call");
                    if kind == CallKind::Context {
                        s.started(cid, unit).expect("starting a context");
                        s.open_receive(cid, Window::Credit(2))
                            .expect("after Started");
                    }
                    self.live.insert(cid, kind);
                }
            }
            2 => {
                if let Some(cid) = picked {
                    // Refused without credit, after a stop, on a call that cannot stream.
                    if byte & 0x80 == 0 {
                        let _ = s.send_item(cid, unit);
                    } else {
                        send_ahead(s, cid, u64::from(byte & 0x7f) % 4);
                    }
                }
            }
            3 => {
                if let Some(cid) = picked {
                    // Long ones go out shared, not copied.
                    let value = Bytes::from(vec![byte; byte_string_len(byte)]);
                    let _ = s.send_item_bytes(cid, value);
                }
            }
            4 => {
                for (cid, unread) in self.unread.iter_mut() {
                    s.consumed(*cid, std::mem::take(unread));
                }
            }
            5 => {
                if let Some(cid) = picked
                    && s.role(cid) == Some(crate::Role::Callee)
                    && s.finish(cid, Outcome::Returned(unit)).is_ok()
                {
                    self.live.remove(&cid);
                }
            }
            6 => {
                if let Some(cid) = picked {
                    let reason = Some(Box::new(crate::CancelReason::new("explicit")));
                    s.cancel(cid, ActorId::new("x", "y"), reason.clone());
                    if s.role(cid) == Some(crate::Role::Callee) {
                        let _ = s.finish(
                            cid,
                            Outcome::Cancelled {
                                requested_by: ActorId::new("x", "y"),
                                reason,
                            },
                        );
                    }
                }
            }
            _ => {
                if let Some(cid) = picked {
                    let _ = s.stop(cid);
                }
            }
        }
    }
}

/// Delivers all that `from` wrote to `to`.
fn deliver(from: &mut Honest, to: &mut Honest) {
    let out = from.session.outgoing().split();
    to.inbox.extend_from_slice(&out);
    to.receive();
}

/// Two honest sessions take the actions `ops` picks and exchange their bytes in pieces of
/// the sizes `ops` picks. Panics if either sees a broken rule or an overrun: an engine that
/// follows its own checks never sends what its peer refuses.
pub fn honest_pair(ops: &[u8]) -> PairStats {
    let key = Key::tree(b"sixteen or more bytes").expect("a long enough secret");
    let mut a = Honest::new(Side::Connector, "a", Keyring::new(key.clone()));
    let mut b = Honest::new(Side::Acceptor, "b", Keyring::new(key));
    // The handshake: Hellos both ways, then the connector's Auth and the acceptor's.
    while a.session.peer().is_none() || b.session.peer().is_none() {
        deliver(&mut a, &mut b);
        deliver(&mut b, &mut a);
    }
    for pair in ops.chunks(2) {
        let (op, arg) = (pair[0], pair.get(1).copied().unwrap_or(0));
        let (from, to) = if op & 0x80 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        if op & 0x40 == 0 {
            from.act(arg);
        } else {
            // Deliver part of what `from` wrote (frames split anywhere).
            let out = from.session.outgoing();
            let n = (usize::from(op & 0x3f) * 7 + usize::from(arg)).min(out.len());
            to.inbox.extend_from_slice(&out.split_to(n));
            to.receive();
        }
    }
    PairStats {
        items: a.stats.items + b.stats.items,
        ended: a.stats.ended + b.stats.ended,
    }
}

/// A fixed window of 1 to 8 items, or (high bit of `bits`' four) a growing one from that
/// many to 64 items within a few hundred bytes, so that the window moves both ways.
fn window(bits: u8) -> Window {
    let start = u32::from(bits & 7) + 1;
    if bits & 8 == 0 {
        Window::Credit(start)
    } else {
        Window::Growing {
            start,
            max: 64,
            bytes: 512,
        }
    }
}
