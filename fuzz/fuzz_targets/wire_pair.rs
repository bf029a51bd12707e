//! Two honest sessions taking random actions against each other: neither ever sees a broken
//! rule or an overrun (credit accounting agrees on both sides).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    trellis_wire::fuzzing::honest_pair(data);
});
