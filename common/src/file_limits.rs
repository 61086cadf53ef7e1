//! Caps on what nexd reads from files (config, key file, state file), so a hostile or
//! mistaken file costs a bounded amount of memory and produces a short error.
//!
//! The counts match the control plane's caps (the API refuses more than this too), so a
//! state file nexd wrote can always be read back.

/// Largest configuration file read (wg-quick configs are a few KiB; 1 MiB holds thousands
/// of peers).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Largest line in a configuration file: long enough for an AllowedIPs line of thousands of
/// prefixes (a list of [`MAX_ALLOWED_IPS`] may also be split over several lines).
pub const MAX_CONFIG_LINE: usize = 512 * 1024;

/// Largest private key file read (a key is 44 base64 characters).
pub const MAX_KEY_FILE_BYTES: u64 = 4 * 1024;

/// Largest state file read.
pub const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;

pub use crate::limits::{MAX_PEERS, MAX_PROXY_SERVERS, MAX_RULES};

/// Most AllowedIPs of one peer (and Address entries of the interface): the API's cap.
pub const MAX_ALLOWED_IPS: usize = crate::limits::MAX_ALLOWED_IPS_PER_PEER;

/// Most entries of one rule's allow-list in a state file: the API's cap.
pub const MAX_ALLOW_LIST: usize = crate::limits::MAX_ALLOW_PEERS_PER_RULE;

/// Most entries of one proxy server's allow-list in a state file: the API's cap.
pub const MAX_DEST_LIST: usize = crate::limits::MAX_ALLOW_DESTS_PER_SERVER;

/// Longest string field of a state file (a rule line, a key, an address, an endpoint):
/// twice the longest rule the API takes, since a saved rule line also holds its direction,
/// so that whatever nexd saved it can read back.
pub const MAX_FIELD_LEN: usize = 2_048;

/// How much of an offending value an error message quotes.
pub const QUOTE_CHARS: usize = crate::limits::QUOTE_PREFIX_CHARS;

/// The first [`QUOTE_CHARS`] characters of `s` unquoted, with `…` when cut (for messages
/// that already quote; [`crate::limits::quote_prefix`] quotes), so an error about a huge
/// value stays one short line.
pub fn clip(s: &str) -> String {
    match crate::limits::cut(s) {
        (head, true) => format!("{head}…"),
        (head, false) => head.to_string(),
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
