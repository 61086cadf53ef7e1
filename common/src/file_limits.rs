//! Caps on what nexd reads from files (config, key file, state file), so a hostile or
//! mistaken file costs a bounded amount of memory and produces a short error.
//!
//! The counts match the control plane's caps (the API refuses more than this too), so a
//! state file nexd wrote can always be read back.

/// Largest configuration file read (wg-quick configs are a few KiB; 1 MiB holds thousands
/// of peers).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Largest line in a configuration file: long enough for an AllowedIPs line of
/// [`MAX_ALLOWED_IPS`] IPv6 prefixes.
pub const MAX_CONFIG_LINE: usize = 64 * 1024;

/// Largest private key file read (a key is 44 base64 characters).
pub const MAX_KEY_FILE_BYTES: u64 = 4 * 1024;

/// Largest state file read.
pub const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;

/// Most peers in a config file or added at runtime.
pub const MAX_PEERS: usize = 16_384;

/// Most AllowedIPs of one peer (and Address entries of the interface).
pub const MAX_ALLOWED_IPS: usize = 1_024;

/// Most rules in a state file.
pub const MAX_RULES: usize = 4_096;

/// Most entries of one rule's allow-list in a state file.
pub const MAX_ALLOW_LIST: usize = 1_024;

/// Longest string field of a state file (a rule line, a key, an address, an endpoint):
/// twice the longest rule the API takes, since a saved rule line also holds its direction,
/// so that whatever nexd saved it can read back.
pub const MAX_FIELD_LEN: usize = 2_048;

/// How much of an offending value an error message quotes.
pub const QUOTE_CHARS: usize = 64;

/// The first [`QUOTE_CHARS`] characters of `s`, with `…` when cut, so an error about a
/// huge value stays one short line.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_values_and_cuts_long_ones_on_a_char_boundary() {
        assert_eq!(clip("abc"), "abc");
        let long = "é".repeat(1000);
        let c = clip(&long);
        assert_eq!(c.chars().count(), QUOTE_CHARS + 1);
        assert!(c.ends_with('…'));
    }
}
