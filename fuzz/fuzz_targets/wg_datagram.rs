//! Arbitrary bytes as UDP datagrams from the network into the WireGuard device, mixed with
//! real handshakes and data from a configured peer; see `nexd::engine::fuzzing::datagrams`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nexd::engine::fuzzing::datagrams(data);
});
