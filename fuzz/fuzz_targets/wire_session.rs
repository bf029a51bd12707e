//! A hostile peer's bytes into a session, between local actions on its calls (credit both
//! ways, stops, cancels): every input is handled or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| trellis_wire::fuzzing::hostile_peer(data));
