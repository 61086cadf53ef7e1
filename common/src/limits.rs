//! Size caps on what the API, the config file and the flags may ask nexd to hold, and the
//! checks that enforce them. One place, so every entry point refuses the same sizes with
//! the same one-line message, and no message ever quotes a huge input in full.

/// Proxy rules active at once (flags, state file and API together).
pub const MAX_RULES: usize = 4096;
/// Peers at once (config file, state file and API together).
pub const MAX_PEERS: usize = 16_384;
/// Entries in one ingress rule's allow-list (`--allow-peer`).
pub const MAX_ALLOW_PEERS_PER_RULE: usize = 1024;
/// AllowedIPs of one peer: lists of thousands of routes (a region's address blocks, a full
/// tunnel minus exclusions) are real, so this cap is higher than the others.
pub const MAX_ALLOWED_IPS_PER_PEER: usize = 8192;
/// Proxy servers (SOCKS5, HTTP) given as flags, and again those added through the API: each
/// holds a host listener, and a few are all a host needs.
pub const MAX_PROXY_SERVERS: usize = 256;
/// Entries in one proxy server's destination allow-list (`--allow-dest`), as given and
/// once comma-separated lists are split.
pub const MAX_ALLOW_DESTS_PER_SERVER: usize = 1024;
/// Bytes in any single string field: a rule, an allow-list entry, an AllowedIP, a key, an
/// endpoint. The longest legitimate one (a host name endpoint) is under 300.
pub const MAX_FIELD_LEN: usize = 1024;
/// Characters of an input that error messages quote before cutting it off with "…".
pub const QUOTE_PREFIX_CHARS: usize = 64;

/// A cap was exceeded; the message is one line and quotes at most a short prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A string field is longer than [`MAX_FIELD_LEN`].
    #[error("{what} too long ({len} bytes, at most {max}): {prefix}")]
    TooLong {
        /// The field, in words ("rule", "allowed IP").
        what: String,
        /// Its length in bytes.
        len: usize,
        /// The cap.
        max: usize,
        /// [`quote_prefix`] of the value.
        prefix: String,
    },
    /// A list has more entries than its cap.
    #[error("too many {what} ({count}, at most {max})")]
    TooMany {
        /// The entries, in words ("allowed IPs").
        what: String,
        /// How many were given (or would be held).
        count: usize,
        /// The cap.
        max: usize,
    },
}

/// `s` quoted for an error message: at most [`QUOTE_PREFIX_CHARS`] characters, escaped as
/// `{:?}` does, with "…" after the quote when it was cut.
pub fn quote_prefix(s: &str) -> String {
    match cut(s) {
        (head, true) => format!("{head:?}…"),
        (head, false) => format!("{head:?}"),
    }
}

/// The first [`QUOTE_PREFIX_CHARS`] characters of `s`, and whether that cut anything.
pub fn cut(s: &str) -> (&str, bool) {
    match s.char_indices().nth(QUOTE_PREFIX_CHARS) {
        Some((end, _)) => (&s[..end], true),
        None => (s, false),
    }
}

/// Refuses a string field longer than [`MAX_FIELD_LEN`] bytes.
pub fn check_len(what: &str, s: &str) -> Result<(), LimitError> {
    if s.len() > MAX_FIELD_LEN {
        return Err(LimitError::TooLong {
            what: what.to_string(),
            len: s.len(),
            max: MAX_FIELD_LEN,
            prefix: quote_prefix(s),
        });
    }
    Ok(())
}

/// Refuses `count` entries when more than `max`.
pub fn check_count(what: &str, count: usize, max: usize) -> Result<(), LimitError> {
    if count > max {
        return Err(LimitError::TooMany {
            what: what.to_string(),
            count,
            max,
        });
    }
    Ok(())
}

/// Refuses a list with more than `max` entries or any entry longer than [`MAX_FIELD_LEN`];
/// `item` names one entry, `items` the list ("allowed IP", "allowed IPs").
pub fn check_list<S: AsRef<str>>(
    item: &str,
    items_name: &str,
    items: &[S],
    max: usize,
) -> Result<(), LimitError> {
    check_count(items_name, items.len(), max)?;
    items.iter().try_for_each(|s| check_len(item, s.as_ref()))
}

/// Checks a rule as given (its text and allow-list) before it is parsed.
pub fn check_rule_input<S: AsRef<str>>(rule: &str, allowed_peers: &[S]) -> Result<(), LimitError> {
    check_len("rule", rule)?;
    check_list(
        "allow-list entry",
        "allow-list entries",
        allowed_peers,
        MAX_ALLOW_PEERS_PER_RULE,
    )
}

/// Checks a proxy server as given (its listen address and allow-list) before it is parsed.
pub fn check_server_input<S: AsRef<str>>(
    listen: &str,
    allow_dests: &[S],
) -> Result<(), LimitError> {
    check_len("listen address", listen)?;
    check_list(
        "allow-dest entry",
        "allow-dest entries",
        allow_dests,
        MAX_ALLOW_DESTS_PER_SERVER,
    )
}

/// Checks a parsed allow-list: comma-separated entries may hold more destinations than the
/// list has entries.
pub fn check_dest_count(n: usize) -> Result<(), LimitError> {
    check_count("allow-dest entries", n, MAX_ALLOW_DESTS_PER_SERVER)
}

/// Checks a peer's AllowedIPs as given, before they are parsed.
pub fn check_allowed_ips<S: AsRef<str>>(allowed_ips: &[S]) -> Result<(), LimitError> {
    check_list(
        "allowed IP",
        "allowed IPs",
        allowed_ips,
        MAX_ALLOWED_IPS_PER_PEER,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_prefix_cuts_long_input_on_a_char_boundary() {
        assert_eq!(quote_prefix("tcp:1"), "\"tcp:1\"");
        let long = "é".repeat(10_000);
        let q = quote_prefix(&long);
        assert_eq!(q, format!("{:?}…", "é".repeat(QUOTE_PREFIX_CHARS)));
        assert_eq!(
            quote_prefix(&"a".repeat(64)),
            format!("\"{}\"", "a".repeat(64))
        );
        assert!(quote_prefix("a\nb").lines().count() == 1);
    }

    #[test]
    fn caps_refuse_one_past_the_limit_with_a_short_message() {
        assert!(check_len("rule", &"x".repeat(MAX_FIELD_LEN)).is_ok());
        let e = check_len("rule", &"x".repeat(100_000_000)).unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("rule too long (100000000 bytes, at most 1024): \"xxx"),
            "{m}"
        );
        assert!(m.len() < 200, "{m}");
        let ips = vec!["10.0.0.1/32"; MAX_ALLOWED_IPS_PER_PEER];
        assert!(check_allowed_ips(&ips).is_ok());
        let ips = vec!["10.0.0.1/32"; MAX_ALLOWED_IPS_PER_PEER + 1];
        assert_eq!(
            check_allowed_ips(&ips).unwrap_err().to_string(),
            "too many allowed IPs (8193, at most 8192)"
        );
        let peers = vec!["10.0.0.1"; MAX_ALLOW_PEERS_PER_RULE + 1];
        assert!(check_rule_input("tcp:1:1.1.1.1:1", &peers).is_err());
        assert!(check_rule_input("tcp:1:1.1.1.1:1", &[&"a".repeat(2000)]).is_err());
        assert!(check_count("rules", MAX_RULES, MAX_RULES).is_ok());
        let dests = vec!["100.100.0.0/24"; MAX_ALLOW_DESTS_PER_SERVER + 1];
        assert!(check_server_input("1080", &dests).is_err());
        assert!(check_server_input(&"1".repeat(2000), &[] as &[&str]).is_err());
        assert!(check_server_input("127.0.0.1:1080", &dests[1..]).is_ok());
        assert!(check_dest_count(MAX_ALLOW_DESTS_PER_SERVER + 1).is_err());
    }
}
