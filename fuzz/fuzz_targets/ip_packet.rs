//! Arbitrary bytes as IP packets from an authenticated peer, through cryptokey routing into
//! the smoltcp stack; see `nexd::engine::fuzzing::ip_packets`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nexd::engine::fuzzing::ip_packets(data);
});
