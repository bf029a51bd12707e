//! Any sequence of decoded messages into a session, as the peer's: every one is accepted or
//! refused with a protocol error, never a panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use trellis_wire::{ActorId, Codec, Hello, PROTOCOL_VERSION, Session, Side};

fuzz_target!(|data: &[u8]| {
    let local = Hello {
        version: PROTOCOL_VERSION,
        actor: ActorId::new("fuzz", "0"),
        pid: 1,
    };
    let side = if data.first().is_some_and(|b| b & 1 == 1) {
        Side::Connector
    } else {
        Side::Acceptor
    };
    let mut session = Session::new(side, local);
    let _ = session.hello();
    let codec = Codec::new().with_max_frame(1 << 16);
    let mut buf = BytesMut::from(data.get(1..).unwrap_or_default());
    while let Ok(Some(message)) = codec.decode(&mut buf) {
        let _ = session.receive(&message);
    }
});
