//! The control API's service layer: arbitrary sequences of gRPC requests (protobuf bytes)
//! through the real `ApiService` over a stub engine (`nexd::api::fuzzing`). No panic, every
//! error one short line, and the listed rules, servers and peers always match the engine's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexd::api::fuzzing::Harness;

thread_local! {
    // One runtime per process; each input gets a fresh service on it.
    static HARNESS: Harness = Harness::new();
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| h.run(data));
});
