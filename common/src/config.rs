//! wg-quick style INI configuration, parsed into a typed [`NetworkConfig`].

use crate::file_limits::{clip, MAX_ALLOWED_IPS, MAX_CONFIG_LINE, MAX_PEERS};
use crate::key::{Key, KeyError};
use ipnet::IpNet;
use std::net::IpAddr;

/// Keys wg-quick understands for the kernel interface; meaningless in userspace, so ignored.
const WG_QUICK_ONLY_KEYS: &[&str] = &[
    "dns",
    "table",
    "preup",
    "postup",
    "predown",
    "postdown",
    "saveconfig",
    "fwmark",
];

/// The node's own WireGuard identity and its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The node's private key.
    pub private_key: Key,
    /// Tunnel addresses with their prefixes (IPv4 and/or IPv6).
    pub addresses: Vec<IpNet>,
    /// UDP port to listen on; `None` means any free port.
    pub listen_port: Option<u16>,
    /// Tunnel MTU, if set.
    pub mtu: Option<u16>,
    /// Peers, in file order.
    pub peers: Vec<PeerConfig>,
    /// The line of each peer's `[Peer]` header, in the order of `peers`, so errors found
    /// after parsing (a peer with the node's own key) can name it.
    pub peer_lines: Vec<usize>,
    /// Ignored wg-quick keys, as `(line, key)`, so the caller can warn about them.
    pub ignored: Vec<(usize, String)>,
}

/// One `[Peer]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's public key.
    pub public_key: Key,
    /// Optional preshared key.
    pub preshared_key: Option<Key>,
    /// Networks routed to this peer, and the only inner source addresses accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// `host:port` or `[v6]:port`, unresolved.
    pub endpoint: Option<String>,
    /// Keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
}

/// Why a configuration is invalid. Line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A line that is not `[Section]`, `Key = Value`, a comment or blank.
    #[error("line {line}: cannot parse {text:?}: expected [Section] or Key = Value")]
    Syntax { line: usize, text: String },
    /// A section other than Interface or Peer.
    #[error("line {line}: unknown section [{name}]")]
    UnknownSection { line: usize, name: String },
    /// A key outside any section.
    #[error("line {line}: {key} appears before any [Interface] or [Peer] section")]
    NoSection { line: usize, key: String },
    /// A key this parser does not know.
    #[error("line {line}: unknown key {key:?} in [{section}]")]
    UnknownKey {
        line: usize,
        section: &'static str,
        key: String,
    },
    /// A value that does not parse.
    #[error("line {line}: invalid {key} {value:?}: {reason}")]
    InvalidValue {
        line: usize,
        key: String,
        value: String,
        reason: String,
    },
    /// A key given twice in one section.
    #[error("line {line}: {key} given twice in one section")]
    Duplicate { line: usize, key: String },
    /// A required key is absent.
    #[error("missing {key} in [{section}]{}", at_line(*.line))]
    Missing {
        section: &'static str,
        key: &'static str,
        line: Option<usize>,
    },
    /// The same public key in two `[Peer]` sections.
    #[error("line {line}: peer {key} is already listed in the [Peer] section at line {first}")]
    DuplicatePeer {
        line: usize,
        first: usize,
        key: String,
    },
    /// More `[Peer]` sections than nexd accepts.
    #[error("line {line}: more than {max} [Peer] sections")]
    TooManyPeers { line: usize, max: usize },
    /// A line longer than any valid line (which bounds what an error may quote).
    #[error("line {line}: longer than {max} bytes ({len}): {text:?}")]
    LineTooLong {
        line: usize,
        len: usize,
        max: usize,
        text: String,
    },
    /// No [Interface] section at all, or more than one.
    #[error("expected exactly one [Interface] section, found {0}")]
    InterfaceCount(usize),
    /// Both PrivateKey and PrivateKeyFile in [Interface].
    #[error("line {line}: {key} and {other} both given; use one of them")]
    Conflict {
        line: usize,
        key: String,
        other: &'static str,
    },
    /// The file named by PrivateKeyFile cannot be read or does not hold a key.
    #[error("line {line}: PrivateKeyFile {path:?}: {reason}")]
    KeyFile {
        line: usize,
        path: String,
        reason: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" (section starting at line {l})"))
        .unwrap_or_default()
}

#[derive(Default)]
struct InterfaceDraft {
    private_key: Option<Key>,
    /// `(line, path)` of PrivateKeyFile, as written.
    private_key_file: Option<(usize, String)>,
    addresses: Option<Vec<IpNet>>,
    listen_port: Option<u16>,
    mtu: Option<u16>,
}

struct PeerDraft {
    line: usize,
    public_key: Option<Key>,
    preshared_key: Option<Key>,
    allowed_ips: Option<Vec<IpNet>>,
    endpoint: Option<String>,
    persistent_keepalive: Option<u16>,
}

enum Section {
    Interface,
    Peer(PeerDraft),
}

fn invalid(line: usize, key: &str, value: &str, reason: impl ToString) -> ConfigError {
    ConfigError::InvalidValue {
        line,
        key: clip(key),
        value: clip(value),
        reason: reason.to_string(),
    }
}

fn conflict(line: usize, key: &str, other: &'static str) -> ConfigError {
    ConfigError::Conflict {
        line,
        key: clip(key),
        other,
    }
}

fn parse_key(line: usize, key: &str, value: &str) -> Result<Key, ConfigError> {
    value
        .parse()
        .map_err(|e: KeyError| invalid(line, key, value, e))
}

/// Parses a comma-separated list of CIDRs; a bare address means a host route.
fn parse_cidrs(line: usize, key: &str, value: &str) -> Result<Vec<IpNet>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| invalid(line, key, s, "not an IP address or CIDR"))
        })
        .collect()
}

/// Refuses more than [`MAX_ALLOWED_IPS`] entries in one list (over all its lines).
fn check_count(line: usize, key: &str, value: &str, n: usize) -> Result<(), ConfigError> {
    if n > MAX_ALLOWED_IPS {
        return Err(invalid(
            line,
            key,
            value,
            format!("more than {MAX_ALLOWED_IPS} entries"),
        ));
    }
    Ok(())
}

fn parse_num<T: std::str::FromStr>(line: usize, key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse::<T>().map_err(|e| invalid(line, key, value, e))
}

fn set_once<T>(slot: &mut Option<T>, v: T, line: usize, key: &str) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(ConfigError::Duplicate {
            line,
            key: clip(key),
        });
    }
    *slot = Some(v);
    Ok(())
}

/// Checks that an endpoint looks like `host:port` or `[v6]:port` with a valid port.
fn check_endpoint(line: usize, value: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| invalid(line, "Endpoint", value, why);
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("IPv6 endpoints must be written [addr]:port"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(value.to_string()),
        _ => Err(bad("port must be 1-65535")),
    }
}

impl NetworkConfig {
    /// Parses wg-quick style text. A `PrivateKeyFile` is an error here, since reading it is
    /// I/O: use [`NetworkConfig::parse_with`] for that.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_with(text, |_| {
            Err("key files are not read by this parser; give PrivateKey".to_string())
        })
    }

    /// Parses wg-quick style text; `read_key_file` is called with the path written after
    /// `PrivateKeyFile =` (as written: the caller resolves relative paths) and returns the
    /// file's text or a one-line reason. Surrounding whitespace of the key is ignored.
    pub fn parse_with(
        text: &str,
        read_key_file: impl FnOnce(&str) -> Result<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut iface = InterfaceDraft::default();
        let mut iface_count = 0;
        let mut peers: Vec<PeerDraft> = Vec::new();
        let mut ignored = Vec::new();
        let mut section: Option<Section> = None;

        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            if raw.len() > MAX_CONFIG_LINE {
                return Err(ConfigError::LineTooLong {
                    line,
                    len: raw.len(),
                    max: MAX_CONFIG_LINE,
                    text: clip(raw.trim()),
                });
            }
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            if let Some(name) = content.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                if let Some(Section::Peer(p)) = section.take() {
                    peers.push(p);
                }
                section = Some(match name.trim().to_ascii_lowercase().as_str() {
                    "interface" => {
                        iface_count += 1;
                        if iface_count > 1 {
                            return Err(ConfigError::InterfaceCount(iface_count));
                        }
                        Section::Interface
                    }
                    "peer" if peers.len() >= MAX_PEERS => {
                        return Err(ConfigError::TooManyPeers {
                            line,
                            max: MAX_PEERS,
                        })
                    }
                    "peer" => Section::Peer(PeerDraft {
                        line,
                        public_key: None,
                        preshared_key: None,
                        allowed_ips: None,
                        endpoint: None,
                        persistent_keepalive: None,
                    }),
                    _ => {
                        return Err(ConfigError::UnknownSection {
                            line,
                            name: clip(name),
                        })
                    }
                });
                continue;
            }
            let Some((key, value)) = content.split_once('=') else {
                return Err(ConfigError::Syntax {
                    line,
                    text: clip(raw.trim()),
                });
            };
            let (key, value) = (key.trim(), value.trim());
            let lower = key.to_ascii_lowercase();
            match section.as_mut() {
                None => {
                    return Err(ConfigError::NoSection {
                        line,
                        key: clip(key),
                    })
                }
                Some(Section::Interface) => match lower.as_str() {
                    "privatekey" => {
                        if iface.private_key_file.is_some() {
                            return Err(conflict(line, key, "PrivateKeyFile"));
                        }
                        set_once(
                            &mut iface.private_key,
                            parse_key(line, key, value)?,
                            line,
                            key,
                        )?
                    }
                    "privatekeyfile" => {
                        if iface.private_key.is_some() {
                            return Err(conflict(line, key, "PrivateKey"));
                        }
                        if value.is_empty() {
                            return Err(invalid(line, key, value, "empty path"));
                        }
                        set_once(
                            &mut iface.private_key_file,
                            (line, value.to_string()),
                            line,
                            key,
                        )?
                    }
                    "address" => {
                        let mut list = iface.addresses.take().unwrap_or_default();
                        list.extend(parse_cidrs(line, key, value)?);
                        check_count(line, key, value, list.len())?;
                        iface.addresses = Some(list);
                    }
                    "listenport" => set_once(
                        &mut iface.listen_port,
                        parse_num(line, key, value)?,
                        line,
                        key,
                    )?,
                    "mtu" => {
                        let mtu: u16 = parse_num(line, key, value)?;
                        if !(576..=9000).contains(&mtu) {
                            return Err(invalid(line, key, value, "MTU must be 576-9000"));
                        }
                        set_once(&mut iface.mtu, mtu, line, key)?
                    }
                    k if WG_QUICK_ONLY_KEYS.contains(&k) => ignored.push((line, key.to_string())),
                    _ => {
                        return Err(ConfigError::UnknownKey {
                            line,
                            section: "Interface",
                            key: clip(key),
                        })
                    }
                },
                Some(Section::Peer(p)) => match lower.as_str() {
                    "publickey" => {
                        set_once(&mut p.public_key, parse_key(line, key, value)?, line, key)?
                    }
                    "presharedkey" => set_once(
                        &mut p.preshared_key,
                        parse_key(line, key, value)?,
                        line,
                        key,
                    )?,
                    "allowedips" => {
                        let mut list = p.allowed_ips.take().unwrap_or_default();
                        list.extend(parse_cidrs(line, key, value)?);
                        check_count(line, key, value, list.len())?;
                        p.allowed_ips = Some(list);
                    }
                    "endpoint" => {
                        set_once(&mut p.endpoint, check_endpoint(line, value)?, line, key)?
                    }
                    "persistentkeepalive" => {
                        let v: u16 = if value.eq_ignore_ascii_case("off") {
                            0
                        } else {
                            parse_num(line, key, value)?
                        };
                        set_once(&mut p.persistent_keepalive, v, line, key)?
                    }
                    _ => {
                        return Err(ConfigError::UnknownKey {
                            line,
                            section: "Peer",
                            key: clip(key),
                        })
                    }
                },
            }
        }
        if let Some(Section::Peer(p)) = section.take() {
            peers.push(p);
        }
        if iface_count != 1 {
            return Err(ConfigError::InterfaceCount(iface_count));
        }
        let missing = |section, key| ConfigError::Missing {
            section,
            key,
            line: None,
        };
        let private_key = match (iface.private_key, iface.private_key_file) {
            (Some(k), _) => k,
            (None, Some((line, path))) => {
                let key_file = |reason: String| ConfigError::KeyFile {
                    line,
                    path: clip(&path),
                    reason,
                };
                let text = read_key_file(&path).map_err(key_file)?;
                text.trim()
                    .parse::<Key>()
                    .map_err(|e| key_file(format!("not a WireGuard key: {e}")))?
            }
            (None, None) => return Err(missing("Interface", "PrivateKey")),
        };
        let addresses = iface
            .addresses
            .filter(|a| !a.is_empty())
            .ok_or_else(|| missing("Interface", "Address"))?;
        let mut first_line: std::collections::HashMap<[u8; 32], usize> =
            std::collections::HashMap::new();
        for p in &peers {
            if let Some(k) = p.public_key {
                if let Some(&first) = first_line.get(&k.0) {
                    return Err(ConfigError::DuplicatePeer {
                        line: p.line,
                        first,
                        key: k.to_string(),
                    });
                }
                first_line.insert(k.0, p.line);
            }
        }
        let peer_lines = peers.iter().map(|p| p.line).collect();
        let peers = peers
            .into_iter()
            .map(|p| {
                Ok(PeerConfig {
                    public_key: p.public_key.ok_or(ConfigError::Missing {
                        section: "Peer",
                        key: "PublicKey",
                        line: Some(p.line),
                    })?,
                    preshared_key: p.preshared_key,
                    allowed_ips: p.allowed_ips.unwrap_or_default(),
                    endpoint: p.endpoint,
                    persistent_keepalive: p.persistent_keepalive.filter(|&k| k != 0),
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(NetworkConfig {
            private_key,
            addresses,
            listen_port: iface.listen_port.filter(|&p| p != 0),
            mtu: iface.mtu,
            peers,
            peer_lines,
            ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K1: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const K2: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn sample() -> String {
        format!(
            "[Interface]\nPrivateKey = {K1}\nAddress = 100.100.0.1/32, fd00::1/128   # both\n\
             ListenPort = 51820\nMTU = 1420\nDNS = 1.1.1.1\n\n[Peer]\nPublicKey = {K2}\n\
             PresharedKey = {K1}\nAllowedIPs = 100.100.0.2/32, fd00::2/128\n\
             Endpoint = 127.0.0.1:51821\nPersistentKeepalive = 25\n"
        )
    }

    #[test]
    fn parses_the_documented_example() {
        let c = NetworkConfig::parse(&sample()).unwrap();
        assert_eq!(c.private_key.to_string(), K1);
        assert_eq!(c.addresses.len(), 2);
        assert_eq!(c.listen_port, Some(51820));
        assert_eq!(c.mtu, Some(1420));
        assert_eq!(c.ignored, vec![(6, "DNS".to_string())]);
        let p = &c.peers[0];
        assert_eq!(p.public_key.to_string(), K2);
        assert!(p.preshared_key.is_some());
        assert_eq!(p.allowed_ips[1], "fd00::2/128".parse::<IpNet>().unwrap());
        assert_eq!(p.endpoint.as_deref(), Some("127.0.0.1:51821"));
        assert_eq!(p.persistent_keepalive, Some(25));
    }

    #[test]
    fn listen_port_zero_means_any() {
        let text = format!("[Interface]\nPrivateKey={K1}\nAddress=10.0.0.1\nListenPort=0\n");
        let c = NetworkConfig::parse(&text).unwrap();
        assert_eq!(c.listen_port, None);
        assert_eq!(c.addresses[0], "10.0.0.1/32".parse::<IpNet>().unwrap());
    }

    #[test]
    fn every_error_names_line_and_value() {
        let iface = format!("[Interface]\nPrivateKey = {K1}\nAddress = 10.0.0.1/32\n");
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{iface}Bogus = 1\n"),
                "line 4: unknown key \"Bogus\"",
            ),
            (
                format!("{iface}garbage\n"),
                "line 4: cannot parse \"garbage\"",
            ),
            (format!("{iface}[Nope]\n"), "line 4: unknown section [Nope]"),
            (
                "Address = 1.2.3.4\n".into(),
                "line 1: Address appears before",
            ),
            (
                "[Interface]\nPrivateKey = abc\n".into(),
                "line 2: invalid PrivateKey \"abc\"",
            ),
            (
                format!("[Interface]\nPrivateKey = {K1}\nAddress = 10.0.0.300/32\n"),
                "line 3: invalid Address \"10.0.0.300/32\"",
            ),
            (
                format!("{iface}ListenPort = 70000\n"),
                "line 4: invalid ListenPort \"70000\"",
            ),
            (format!("{iface}MTU = 10\n"), "line 4: invalid MTU \"10\""),
            (
                format!("{iface}[Peer]\nAllowedIPs = 10.0.0.2/32\n"),
                "missing PublicKey in [Peer] (section starting at line 4)",
            ),
            (
                format!("{iface}[Peer]\nPublicKey = {K2}\nEndpoint = nope\n"),
                "line 6: invalid Endpoint \"nope\"",
            ),
            (
                format!("{iface}[Peer]\nPublicKey = {K2}\nEndpoint = fd00::1:5\n"),
                "line 6: invalid Endpoint",
            ),
            (
                format!("{iface}[Peer]\nPublicKey = {K2}\nPublicKey = {K2}\n"),
                "line 6: PublicKey given twice",
            ),
            (
                format!("{iface}[Peer]\nPublicKey = {K2}\nPersistentKeepalive = x\n"),
                "line 6: invalid PersistentKeepalive",
            ),
            (
                "[Interface]\nAddress = 10.0.0.1\n".into(),
                "missing PrivateKey in [Interface]",
            ),
            (
                format!("[Interface]\nPrivateKey = {K1}\n"),
                "missing Address in [Interface]",
            ),
            ("".into(), "exactly one [Interface] section, found 0"),
            (format!("{iface}{iface}"), "found 2"),
        ];
        for (text, want) in cases {
            let err = NetworkConfig::parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn private_key_file_is_read_through_the_callback() {
        let text = "[Interface]\nPrivateKeyFile = keys/nexd.key\nAddress = 10.0.0.1\n";
        let mut asked = None;
        let c = NetworkConfig::parse_with(text, |p| {
            asked = Some(p.to_string());
            Ok(format!("  {K1}\n\n"))
        })
        .unwrap();
        assert_eq!(asked.as_deref(), Some("keys/nexd.key"));
        assert_eq!(c.private_key.to_string(), K1);
    }

    #[test]
    fn private_key_file_errors_name_line_and_path() {
        let text = "[Interface]\nAddress = 10.0.0.1\nPrivateKeyFile = /etc/k\n";
        let cases: Vec<(Result<String, String>, &str)> = vec![
            (
                Err("No such file".into()),
                "line 3: PrivateKeyFile \"/etc/k\": No such file",
            ),
            (
                Ok("nope".into()),
                "line 3: PrivateKeyFile \"/etc/k\": not a WireGuard key",
            ),
        ];
        for (read, want) in cases {
            let err = NetworkConfig::parse_with(text, |_| read)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
        // The pure parser refuses to read, with a one-line error.
        let err = NetworkConfig::parse(text).unwrap_err().to_string();
        assert!(err.contains("line 3: PrivateKeyFile"), "{err:?}");
    }

    #[test]
    fn exactly_one_of_private_key_and_private_key_file() {
        for text in [
            format!("[Interface]\nPrivateKey = {K1}\nPrivateKeyFile = k\nAddress = 10.0.0.1\n"),
            format!("[Interface]\nPrivateKeyFile = k\nPrivateKey = {K1}\nAddress = 10.0.0.1\n"),
        ] {
            let err = NetworkConfig::parse_with(&text, |_| Ok(K1.to_string()))
                .unwrap_err()
                .to_string();
            assert!(err.contains("line 3: "), "{err:?}");
            assert!(err.contains("both given"), "{err:?}");
        }
        let text = "[Interface]\nPrivateKeyFile = a\nPrivateKeyFile = b\nAddress = 10.0.0.1\n";
        let err = NetworkConfig::parse_with(text, |_| Ok(K1.to_string())).unwrap_err();
        assert!(err
            .to_string()
            .contains("line 3: PrivateKeyFile given twice"));
        let text = "[Interface]\nPrivateKeyFile =\nAddress = 10.0.0.1\n";
        let err = NetworkConfig::parse_with(text, |_| Ok(K1.to_string())).unwrap_err();
        assert!(err.to_string().contains("line 2: invalid PrivateKeyFile"));
    }

    #[test]
    fn a_peer_listed_twice_names_both_sections() {
        let text = format!(
            "[Interface]\nPrivateKey = {K1}\nAddress = 10.0.0.1\n[Peer]\nPublicKey = {K2}\n\
             \n[Peer]\nPublicKey = {K2}\n"
        );
        let err = NetworkConfig::parse(&text).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("line 7: peer {K2} is already listed in the [Peer] section at line 4")
        );
        let text = format!(
            "[Interface]\nPrivateKey = {K1}\nAddress = 10.0.0.1\n[Peer]\nPublicKey = {K2}\n\
             [Peer]\nPublicKey = {K1}\n"
        );
        assert_eq!(NetworkConfig::parse(&text).unwrap().peer_lines, vec![4, 6]);
    }

    #[test]
    fn huge_values_give_short_errors_and_lists_are_capped() {
        let iface = format!("[Interface]\nPrivateKey = {K1}\nAddress = 10.0.0.1/32\n");
        let huge = "x".repeat(MAX_CONFIG_LINE + 1);
        let long = "y".repeat(MAX_CONFIG_LINE - 100);
        let too_long = format!("line 4: longer than {MAX_CONFIG_LINE} bytes");
        for (text, want) in [
            (format!("{iface}{huge}\n"), too_long.as_str()),
            (format!("{iface}{long}\n"), "line 4: cannot parse"),
            (format!("{iface}{long} = 1\n"), "line 4: unknown key"),
            (format!("{iface}MTU = {long}\n"), "line 4: invalid MTU"),
            (format!("[{long}]\n"), "line 1: unknown section"),
        ] {
            let err = NetworkConfig::parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {}", clip(&err));
            assert!(err.len() < 300, "{} bytes: {}", err.len(), clip(&err));
        }
        let ips = (0..=MAX_ALLOWED_IPS)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect::<Vec<_>>();
        let text = format!(
            "{iface}[Peer]\nPublicKey = {K2}\nAllowedIPs = {}\nAllowedIPs = {}\n",
            ips[..10].join(","),
            ips[10..].join(",")
        );
        let err = NetworkConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("line 7: invalid AllowedIPs"), "{}", clip(&err));
        assert!(
            err.contains(&format!("more than {MAX_ALLOWED_IPS} entries")),
            "{}",
            clip(&err)
        );
        assert!(err.len() < 300, "{}", clip(&err));
        let text = format!("{iface}{}", "[Peer]\n".repeat(MAX_PEERS + 1));
        let err = NetworkConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("more than 16384 [Peer] sections"), "{err}");
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "(\\[(Interface|Peer)\\]\n|[A-Za-z]{1,12} ?= ?[ -~]{0,50}\n|[ -~]{0,40}\n){0,12}") {
            let _ = NetworkConfig::parse(&s);
        }
    }
}
