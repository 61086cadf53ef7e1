//! The wg-quick config parser: never panics, and every error is one line (nexd prints it
//! as one log line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexd_common::NetworkConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match NetworkConfig::parse(s) {
        Ok(c) => assert!(!c.addresses.is_empty(), "parsed without an address"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line error {msg:?}");
        }
    }
});
