//! The rule grammar: any string either fails to parse or parses to a rule whose Display
//! form parses back to the same rule (what `nexctl` prints, nexd accepts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexd_common::{ProxyRule, Rule};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = s.parse::<Rule>() {
        assert_eq!(r.to_string().parse::<Rule>(), Ok(r), "{s:?}");
    }
    if let Ok(p) = s.parse::<ProxyRule>() {
        assert_eq!(p.to_string().parse::<ProxyRule>(), Ok(p), "{s:?}");
    }
});
