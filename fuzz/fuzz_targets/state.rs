//! The state file loader: never panics, and a state it accepts survives a save/load round
//! trip unchanged (what nexd writes, it can read back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexd::state::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(state) = parse(s) {
        let saved = serde_json::to_string_pretty(&state).expect("state serialises");
        assert_eq!(parse(&saved), Ok(state), "{s:?}");
    }
});
