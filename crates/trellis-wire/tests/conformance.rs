//! The conformance scenarios (`conformance/scenarios.json`) against the engine: a `Session`
//! on the accepting side, serving the standard functions through a small emulation of an
//! actor's runtime (below). The same scenarios run against a live actor in
//! `crates/trellis-actor/tests/conformance.rs` and from the Python peer.

#[path = "../../../conformance/runner.rs"]
mod runner;

use std::collections::{HashMap, VecDeque};

use bytes::BytesMut;
use trellis_wire::{
    ActorId, CallKind, Codec, ErrorKind, ErrorReport, Event, Identity, Key, Keyring, Message,
    Outcome, Payload, SendError, Session, Side, Window,
};

/// A standard function being served.
enum Running {
    Hold,
    Count { next: u64, end: Option<u64> },
    Echo { queue: VecDeque<Payload>, seen: u64 },
    Deaf,
}

/// An actor's runtime in miniature: the engine, and the standard functions of
/// `conformance/README.md`.
struct Emulated {
    session: Session,
    codec: Codec,
    running: HashMap<u64, Running>,
    /// What the implementation wrote, decoded.
    sent: VecDeque<Message>,
}

fn report(kind: ErrorKind, type_name: &str, message: &str) -> ErrorReport {
    ErrorReport {
        actor: ActorId::new("emulated", "1"),
        kind,
        type_name: type_name.into(),
        message: message.into(),
        chain: vec![],
        backtrace: None,
        value: None,
        group: vec![],
    }
}

fn kind_of(function: &str) -> Option<CallKind> {
    Some(match function {
        "add" | "fail" | "hold" | "trellis.functions" => CallKind::Run,
        "count" | "count_forever" => CallKind::Stream,
        "echo" | "deaf" => CallKind::Context,
        _ => return None,
    })
}

impl Emulated {
    fn new() -> Self {
        let me = Identity::new(ActorId::new("emulated", "1"), 1);
        let keyring = Keyring::new(Key::tree(runner::SECRET).expect("a usable secret"));
        let mut emulated = Emulated {
            session: Session::new(Side::Acceptor, me, keyring),
            codec: Codec::new(),
            running: HashMap::new(),
            sent: VecDeque::new(),
        };
        emulated.collect();
        emulated
    }

    fn collect(&mut self) {
        let mut out = self.session.outgoing().split();
        while let Some(message) = self
            .codec
            .decode(&mut out)
            .expect("the engine writes frames")
        {
            self.sent.push_back(message);
        }
    }

    fn call(&mut self, cid: u64, function: &str, kind: CallKind, args: &Payload) {
        let s = &mut self.session;
        let Some(registered) = kind_of(function) else {
            let r = report(ErrorKind::UnknownFunction, "UnknownFunction", function);
            return drop(s.refuse(cid, r));
        };
        if registered != kind {
            let r = report(ErrorKind::BadArguments, "BadArguments", "wrong call kind");
            return drop(s.refuse(cid, r));
        }
        let bad = |s: &mut Session| {
            let r = report(ErrorKind::BadArguments, "BadArguments", "bad arguments");
            drop(s.refuse(cid, r));
        };
        match function {
            "add" => match args.decode::<(i64, i64)>() {
                Ok((a, b)) => {
                    s.accept(cid).unwrap();
                    let value = Payload::encode(&(a + b)).unwrap();
                    s.finish(cid, Outcome::Returned(value)).unwrap();
                }
                Err(_) => bad(s),
            },
            "fail" => match args.decode::<(String,)>() {
                Ok((text,)) => {
                    s.accept(cid).unwrap();
                    let r = report(ErrorKind::Failed, "Failure", &text);
                    s.finish(cid, Outcome::Failed(Box::new(r))).unwrap();
                }
                Err(_) => bad(s),
            },
            "trellis.functions" => {
                s.accept(cid).unwrap();
                let list = Payload::encode(&["add", "count"]).unwrap();
                s.finish(cid, Outcome::Returned(list)).unwrap();
            }
            "hold" => {
                s.accept(cid).unwrap();
                self.running.insert(cid, Running::Hold);
            }
            "count" | "count_forever" => {
                let end = if function == "count" {
                    match args.decode::<(u64,)>() {
                        Ok((n,)) => Some(n),
                        Err(_) => return bad(s),
                    }
                } else {
                    None
                };
                s.accept(cid).unwrap();
                self.running.insert(cid, Running::Count { next: 0, end });
            }
            _ => {
                // A context: started, then the caller's items granted.
                s.accept(cid).unwrap();
                s.started(cid, Payload::unit()).unwrap();
                let (window, running) = if function == "echo" {
                    let running = Running::Echo {
                        queue: VecDeque::new(),
                        seen: 0,
                    };
                    (Window::Credit(4), running)
                } else {
                    (Window::Credit(2), Running::Deaf)
                };
                s.open_receive(cid, window).unwrap();
                self.running.insert(cid, running);
            }
        }
    }

    /// Handles the engine's events and lets the functions run until nothing moves.
    fn settle(&mut self) {
        while let Some(event) = self.session.poll_event() {
            let s = &mut self.session;
            match event {
                Event::Call {
                    cid,
                    function,
                    kind,
                    args,
                    ..
                } => self.call(cid, &function, kind, &args),
                Event::Item { cid, value } => {
                    if let Some(Running::Echo { queue, seen }) = self.running.get_mut(&cid) {
                        s.consumed(cid, 1);
                        queue.push_back(value);
                        *seen += 1;
                    }
                }
                Event::Stopped { cid } => match self.running.remove(&cid) {
                    Some(Running::Echo { seen, .. }) => {
                        let value = Payload::encode(&seen).unwrap();
                        s.finish(cid, Outcome::Returned(value)).unwrap();
                    }
                    Some(Running::Count { .. }) => {
                        s.finish(cid, Outcome::Returned(Payload::unit())).unwrap();
                    }
                    Some(other) => drop(self.running.insert(cid, other)),
                    None => {}
                },
                Event::CancelRequested {
                    cid,
                    requested_by,
                    reason,
                } if self.running.remove(&cid).is_some() => {
                    s.finish(
                        cid,
                        Outcome::Cancelled {
                            requested_by,
                            reason,
                        },
                    )
                    .unwrap();
                }
                Event::Overrun { cid, capacity } => {
                    self.running.remove(&cid);
                    let text = format!("more than {capacity} unread items");
                    let r = report(ErrorKind::Failed, "StreamOverrun", &text);
                    s.finish(cid, Outcome::Failed(Box::new(r))).unwrap();
                }
                Event::Broken { cid, .. } => drop(self.running.remove(&cid)),
                Event::Goodbye | Event::PeerError(_) => self.running.clear(),
                _ => {}
            }
        }
        self.run_streams();
        self.collect();
    }

    fn run_streams(&mut self) {
        let s = &mut self.session;
        let mut done = Vec::new();
        for (cid, running) in &mut self.running {
            match running {
                Running::Count { next, end } => loop {
                    if Some(*next) == *end {
                        done.push(*cid);
                        break;
                    }
                    match s.send_item(*cid, Payload::encode(&*next).unwrap()) {
                        Ok(()) => *next += 1,
                        Err(SendError::ReceiverStopped { .. }) => {
                            done.push(*cid);
                            break;
                        }
                        Err(_) => break,
                    }
                },
                Running::Echo { queue, .. } => {
                    while let Some(item) = queue.front() {
                        if s.send_item(*cid, item.clone()).is_err() {
                            break;
                        }
                        queue.pop_front();
                    }
                }
                Running::Hold | Running::Deaf => {}
            }
        }
        for cid in done {
            self.running.remove(&cid);
            s.finish(cid, Outcome::Returned(Payload::unit())).unwrap();
        }
    }
}

impl runner::Wire for Emulated {
    fn send(&mut self, bytes: &[u8]) {
        let mut buf = BytesMut::from(bytes);
        let _ = self.session.handle_bytes(&mut buf);
        self.settle();
    }

    fn next(&mut self) -> Option<Message> {
        if let Some(message) = self.sent.pop_front() {
            return Some(message);
        }
        assert!(
            self.session.is_closed(),
            "the engine waits for more, where the scenario expects a message"
        );
        None
    }
}

/// Every scenario, against the engine.
#[test]
fn the_engine_passes_every_scenario() {
    let scenarios = runner::load();
    assert!(scenarios.len() >= 30);
    let failures: Vec<String> = scenarios
        .iter()
        .filter_map(|scenario| runner::run(scenario, &mut Emulated::new()).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every section of `docs/wire-protocol.md` that says MUST has a scenario citing it.
#[test]
fn every_section_with_a_must_has_a_scenario() {
    let spec = include_str!("../../../docs/wire-protocol.md");
    let cited: Vec<String> = runner::load()
        .iter()
        .flat_map(|s| {
            s.spec
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut section = String::new();
    let mut uncovered = Vec::new();
    for line in spec.lines() {
        if let Some(heading) = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "))
        {
            section = heading
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_owned();
        }
        let must = line.contains("MUST") && !line.starts_with("Key words");
        if must && !cited.contains(&section) && !uncovered.contains(&section) {
            uncovered.push(section.clone());
        }
    }
    assert!(
        uncovered.is_empty(),
        "sections with a MUST and no scenario: {uncovered:?}"
    );
}
