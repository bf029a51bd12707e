//! The conformance scenarios (`scenarios.json`, next to this file), read and checked. Shared by
//! the Rust runners: `crates/trellis-wire/tests/conformance.rs` (the engine, with the standard
//! functions emulated) and `crates/trellis-actor/tests/conformance.rs` (a live actor over a
//! socket). Each includes this file with `#[path]`. The Python peer has its own runner
//! (`clients/python/tests/test_conformance.py`) over the same file.

#![allow(dead_code)]

use serde_json::{Value, json};
use trellis_wire::auth::{NONCE_LEN, proof};
use trellis_wire::{ActorId, Auth, CallKind, CancelReason, Hello, Key, Message, Payload, Side};

/// The tree secret the implementation under test is configured with.
pub(crate) const SECRET: &[u8] = b"trellis conformance secret";

/// The nonce of the script's `Hello`.
pub(crate) const SCRIPT_NONCE: [u8; NONCE_LEN] = [0x5a; NONCE_LEN];

/// Who the script says it is.
pub(crate) fn script_id() -> ActorId {
    ActorId::new("conformance", "00000000000000000000000000000001")
}

/// One scenario: what the script (the caller, on the connecting side) sends and what the
/// implementation under test (an actor serving the standard functions) must answer.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) name: String,
    pub(crate) spec: String,
    pub(crate) must: String,
    /// Whether the script opens with the handshake (its `Hello`, the implementation's, its
    /// `Auth` proving [`SECRET`], the implementation's, checked).
    pub(crate) hello: bool,
    pub(crate) steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Bytes to write (a whole frame or a broken one).
    Send(Vec<u8>),
    /// The next message must match.
    Expect(Value),
    /// Messages matching are read past, as long as they come.
    Skip(Value),
    /// The connection ends next, with nothing more.
    ExpectClose,
    /// The script's `Auth`, proving `secret` as `credential` (or no credential), over the
    /// implementation's nonce, or over another nonce (a replay).
    SendAuth {
        secret: Option<String>,
        credential: Option<String>,
        replay: bool,
    },
}

/// The scenarios of `conformance/scenarios.json`.
pub(crate) fn load() -> Vec<Scenario> {
    let text = include_str!("scenarios.json");
    let file: Value = serde_json::from_str(text).expect("scenarios.json is JSON");
    file["scenarios"]
        .as_array()
        .expect("a list of scenarios")
        .iter()
        .map(|s| Scenario {
            name: s["name"].as_str().expect("a name").to_owned(),
            spec: s["spec"].as_str().unwrap_or_default().to_owned(),
            must: s["must"].as_str().unwrap_or_default().to_owned(),
            hello: s.get("hello").and_then(Value::as_bool).unwrap_or(true),
            steps: s["steps"]
                .as_array()
                .expect("steps")
                .iter()
                .map(step)
                .collect(),
        })
        .collect()
}

fn step(s: &Value) -> Step {
    if let Some(message) = s.get("send") {
        let extra = s
            .get("extra")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Step::Send(frame(message, &extra))
    } else if let Some(hex) = s.get("send_hex").and_then(Value::as_str) {
        Step::Send(from_hex(hex))
    } else if let Some(pattern) = s.get("expect") {
        Step::Expect(pattern.clone())
    } else if let Some(pattern) = s.get("skip") {
        Step::Skip(pattern.clone())
    } else if s.get("expect_close").is_some() {
        Step::ExpectClose
    } else if let Some(auth) = s.get("send_auth") {
        let text = |key: &str| auth.get(key).and_then(Value::as_str).map(str::to_owned);
        Step::SendAuth {
            secret: text("secret"),
            credential: text("credential"),
            replay: auth.get("nonce").and_then(Value::as_str) == Some("other"),
        }
    } else {
        panic!("unknown step {s}")
    }
}

fn from_hex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).expect("hex"))
        .collect()
}

const KINDS: [&str; 13] = [
    "Hello",
    "Start",
    "StartAck",
    "Started",
    "Yield",
    "Stop",
    "Return",
    "Error",
    "Cancel",
    "CancelAck",
    "Credit",
    "Goodbye",
    "Auth",
];

const CALL_KINDS: [&str; 3] = ["run", "stream", "context"];

/// A message in the scenario notation (`["Start", 1, "add", "run", [1, 2]]`) as a frame:
/// the kind's number, the fields as MessagePack (`{"bin": "hex"}` as a binary string),
/// `extra` elements appended.
pub(crate) fn frame(message: &Value, extra: &[Value]) -> Vec<u8> {
    let parts = message.as_array().expect("a message is an array");
    let name = parts[0].as_str().expect("a message name");
    let kind = KINDS
        .iter()
        .position(|k| *k == name)
        .expect("a known message");
    let mut elements = vec![json!(kind)];
    for (i, field) in parts[1..].iter().enumerate() {
        match (name, i, field) {
            ("Start", 2, Value::String(call)) => {
                let code = CALL_KINDS
                    .iter()
                    .position(|k| k == call)
                    .expect("a call kind");
                elements.push(json!(code));
            }
            _ => elements.push(field.clone()),
        }
    }
    elements.extend(extra.iter().cloned());
    let mut body = vec![0xdc];
    body.extend((elements.len() as u16).to_be_bytes());
    for element in &elements {
        match element.get("bin").and_then(Value::as_str) {
            Some(hex) => {
                let bytes = from_hex(hex);
                body.push(0xc5);
                body.extend((bytes.len() as u16).to_be_bytes());
                body.extend(bytes);
            }
            None => body.extend(rmp_serde::to_vec_named(element).expect("encodes")),
        }
    }
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bin(bytes: &[u8]) -> Value {
    json!({ "bin": to_hex(bytes) })
}

/// The script's `Auth`, over the implementation's nonce `theirs`.
pub(crate) fn auth_frame(
    secret: Option<&[u8]>,
    credential: Option<&str>,
    theirs: &[u8],
) -> Vec<u8> {
    let (credential, proof) = match (secret, credential) {
        (Some(secret), Some(name)) => {
            let key = Key::new(name, secret).expect("a usable secret");
            let p = proof(
                &key,
                Side::Connector,
                &SCRIPT_NONCE,
                theirs,
                &script_id(),
                None,
            );
            (json!(name), bin(&p))
        }
        _ => (Value::Null, Value::Null),
    };
    let id = script_id();
    frame(
        &json!(["Auth", credential, proof, [id.name, id.uid], 0]),
        &[],
    )
}

/// The script's `Hello` as a frame.
pub(crate) fn hello_frame() -> Vec<u8> {
    frame(&json!(["Hello", [2, 0], bin(&SCRIPT_NONCE), {}]), &[])
}

fn payload(p: &Payload) -> Value {
    p.decode::<Value>()
        .unwrap_or(Value::String("<undecodable>".into()))
}

fn actor(id: &ActorId) -> Value {
    json!([id.name, id.uid])
}

/// A message the implementation sent, in the scenario notation.
pub(crate) fn notation(message: &Message) -> Value {
    match message {
        Message::Hello(Hello { version, nonce }) => {
            json!(["Hello", [version.major, version.minor], bin(nonce), {}])
        }
        Message::Auth(Auth {
            credential,
            proof,
            actor: id,
            pid,
        }) => json!([
            "Auth",
            credential,
            proof.as_ref().map(|p| bin(p)),
            actor(id),
            pid
        ]),
        Message::Start {
            cid,
            function,
            kind,
            args,
            trace,
        } => {
            let kind = match kind {
                CallKind::Run => "run",
                CallKind::Stream => "stream",
                CallKind::Context => "context",
            };
            let mut start = json!(["Start", cid, function, kind, payload(args)]);
            if let Some(trace) = trace {
                let mut map = serde_json::Map::new();
                map.insert("traceparent".into(), json!(trace.traceparent));
                if let Some(state) = &trace.tracestate {
                    map.insert("tracestate".into(), json!(state));
                }
                start
                    .as_array_mut()
                    .expect("an array")
                    .push(Value::Object(map));
            }
            start
        }
        Message::StartAck { cid } => json!(["StartAck", cid]),
        Message::Started { cid, value } => json!(["Started", cid, payload(value)]),
        Message::Yield { cid, value } => json!(["Yield", cid, payload(value)]),
        Message::Stop { cid } => json!(["Stop", cid]),
        Message::Return { cid, value } => json!(["Return", cid, payload(value)]),
        Message::Error { cid, error } => {
            json!([
                "Error",
                cid,
                serde_json::to_value(error.as_ref()).expect("a report")
            ])
        }
        Message::Cancel {
            cid,
            requested_by,
            reason,
        } => with_reason(json!(["Cancel", cid, actor(requested_by)]), reason),
        Message::CancelAck {
            cid,
            requested_by,
            reason,
        } => with_reason(json!(["CancelAck", cid, actor(requested_by)]), reason),
        Message::Credit { cid, count } => json!(["Credit", cid, count]),
        Message::Goodbye => json!(["Goodbye"]),
        other => panic!("a message this runner does not know: {}", other.name()),
    }
}

/// `message` with its cancel reason (protocol 2.1) appended, when it has one.
fn with_reason(mut message: Value, reason: &Option<Box<CancelReason>>) -> Value {
    if let Some(reason) = reason {
        message.as_array_mut().expect("an array").push(json!([
            reason.source,
            reason.message,
            reason.origin
        ]));
    }
    message
}

/// Whether the message `actual` matches the message `pattern`: as [`matches`], except that a
/// message may carry more fields than the pattern lists (fields a minor version added, which
/// a pattern checks only when it names them).
pub(crate) fn matches_message(pattern: &Value, actual: &Value) -> bool {
    match (pattern, actual) {
        (Value::Array(want), Value::Array(got)) if got.len() > want.len() => {
            want.iter().zip(got).all(|(w, g)| matches(w, g))
        }
        _ => matches(pattern, actual),
    }
}

/// Whether `actual` matches `pattern`: `"_"` matches anything, an object matches when each of
/// its keys does (other keys are free), arrays element by element.
pub(crate) fn matches(pattern: &Value, actual: &Value) -> bool {
    match (pattern, actual) {
        (Value::String(s), _) if s == "_" => true,
        (Value::Object(want), Value::Object(got)) => want
            .iter()
            .all(|(k, v)| got.get(k).is_some_and(|g| matches(v, g))),
        (Value::Array(want), Value::Array(got)) => {
            want.len() == got.len() && want.iter().zip(got).all(|(w, g)| matches(w, g))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => pattern == actual,
    }
}

/// The implementation under test, as the script sees it.
pub(crate) trait Wire {
    /// Writes bytes to the implementation.
    fn send(&mut self, bytes: &[u8]);
    /// The next message the implementation sent; `None` once it closed the connection.
    fn next(&mut self) -> Option<Message>;
}

/// Runs one scenario; `Err` says which step failed and how.
pub(crate) fn run(scenario: &Scenario, wire: &mut dyn Wire) -> Result<(), String> {
    let fail = |i: usize, what: String| {
        Err(format!(
            "scenario `{}` (§{}: {}), step {}: {what}",
            scenario.name,
            scenario.spec,
            scenario.must,
            i + 1
        ))
    };
    let mut peeked: Option<Option<Message>> = None;
    // The implementation's nonce, once its Hello came.
    let mut theirs: Vec<u8> = Vec::new();
    if scenario.hello {
        if let Err(e) = handshake(wire, &mut theirs) {
            return fail(0, e);
        }
    }
    for (i, step) in scenario.steps.iter().enumerate() {
        match step {
            Step::Send(bytes) => wire.send(bytes),
            Step::SendAuth {
                secret,
                credential,
                replay,
            } => {
                let other = [0x11; NONCE_LEN];
                let over = if *replay { &other[..] } else { &theirs[..] };
                let frame = auth_frame(
                    secret.as_deref().map(str::as_bytes),
                    credential.as_deref(),
                    over,
                );
                wire.send(&frame);
            }
            Step::Expect(pattern) => {
                let next = peeked.take().unwrap_or_else(|| wire.next());
                if let Some(Message::Hello(hello)) = &next {
                    theirs = hello.nonce.to_vec();
                }
                match next {
                    Some(message) if matches_message(pattern, &notation(&message)) => {}
                    Some(message) => {
                        return fail(i, format!("expected {pattern}, got {}", notation(&message)));
                    }
                    None => return fail(i, format!("expected {pattern}, the connection ended")),
                }
            }
            Step::Skip(pattern) => loop {
                let next = peeked.take().unwrap_or_else(|| wire.next());
                match next {
                    Some(message) if matches_message(pattern, &notation(&message)) => continue,
                    other => {
                        peeked = Some(other);
                        break;
                    }
                }
            },
            Step::ExpectClose => {
                let next = peeked.take().unwrap_or_else(|| wire.next());
                if let Some(message) = next {
                    return fail(i, format!("expected the end, got {}", notation(&message)));
                }
            }
        }
    }
    Ok(())
}

/// The handshake of §4 as the connector, proving [`SECRET`]; checks the implementation's
/// proof in turn. Leaves the implementation's nonce in `theirs`.
fn handshake(wire: &mut dyn Wire, theirs: &mut Vec<u8>) -> Result<(), String> {
    wire.send(&hello_frame());
    match wire.next() {
        Some(Message::Hello(hello)) => *theirs = hello.nonce.to_vec(),
        other => {
            return Err(format!(
                "expected the implementation's Hello, got {other:?}"
            ));
        }
    }
    wire.send(&auth_frame(Some(SECRET), Some("tree"), theirs));
    match wire.next() {
        Some(Message::Auth(auth)) => {
            let key = Key::tree(SECRET).expect("a usable secret");
            let expected = proof(
                &key,
                Side::Acceptor,
                &SCRIPT_NONCE,
                theirs,
                &script_id(),
                Some(&auth.actor),
            );
            if auth.credential.as_deref() != Some("tree")
                || auth.proof.as_deref() != Some(&expected[..])
            {
                return Err(format!(
                    "the implementation's Auth does not prove the secret: {auth:?}"
                ));
            }
            Ok(())
        }
        other => Err(format!("expected the implementation's Auth, got {other:?}")),
    }
}
