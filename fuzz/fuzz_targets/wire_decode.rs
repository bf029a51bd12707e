//! Any bytes into the frame and message decoder: it must return errors, never panic, and what
//! it decodes must re-encode to the same message.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use trellis_wire::Codec;

fuzz_target!(|data: &[u8]| {
    let codec = Codec::new().with_max_frame(1 << 16);
    let mut buf = BytesMut::from(data);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(message)) => {
                let mut again = BytesMut::new();
                codec.encode(&message, &mut again).expect("a decoded message re-encodes");
                let back = codec.decode(&mut again).expect("re-encoded bytes decode");
                assert_eq!(back, Some(message));
            }
            Ok(None) => break,
            Err(e) if e.is_fatal() => break,
            Err(_) => {}
        }
    }
});
