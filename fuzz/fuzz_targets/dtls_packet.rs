//! Any datagram into the DTLS core's parsers and the server's decision: errors, never a panic;
//! a challenge is never larger than what caused it; a flight that decodes packs again into
//! datagrams that decode to the same messages.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use trellis_dtls::cookie::CookieKey;
use trellis_dtls::demux::{Incoming, classify};
use trellis_dtls::record::{decode_client_hello, records};
use trellis_dtls::volley::{RecordEncoder, decode_flight};

fuzz_target!(|data: &[u8]| {
    let _ = records(data).count();
    let _ = decode_client_hello(data);
    let key = CookieKey::from_bytes([7; 32]);
    let peer = "192.0.2.1:443".parse().unwrap();
    for known in [false, true] {
        if let Incoming::Challenge(reply) = classify(data, &peer, Some(&key), known, Duration::ZERO) {
            assert!(reply.len() <= data.len());
        }
    }
    if let Ok(messages) = decode_flight(data) {
        let mtu = 40 + usize::from(data.first().copied().unwrap_or(0)) * 8;
        let packets = RecordEncoder::new().encode_flight(&messages, mtu);
        let all: Vec<u8> = packets.concat();
        assert_eq!(decode_flight(&all).expect("our own packing decodes"), messages);
    }
});
