//! The proxy rule grammar: `[protocol]:[port]:[destination_ip]:[destination_port]`.
//!
//! IPv6 destinations are written in brackets: `tcp:8080:[fd00::2]:80`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Transport protocol of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP streams.
    Tcp,
    /// UDP datagrams.
    Udp,
}

/// Which way a rule carries connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// From the WireGuard network to a destination on the host network.
    Ingress,
    /// From the host to a destination on the WireGuard network.
    Egress,
}

/// One parsed rule: listen on `port`, forward to `destination`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Port nexd listens on (host port for egress, tunnel port for ingress).
    pub port: u16,
    /// Where accepted connections are forwarded.
    pub destination: SocketAddr,
}

/// A rule together with its direction, as the daemon stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyRule {
    /// Ingress or egress.
    pub direction: Direction,
    /// The rule itself.
    pub rule: Rule,
}

/// Why a string is not a valid rule. Every variant names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Fewer than four `:`-separated fields.
    #[error(
        "rule {0:?} has too few fields: expected protocol:port:destination_ip:destination_port"
    )]
    TooFewFields(String),
    /// Protocol is neither tcp nor udp.
    #[error("unknown protocol {0:?}: expected tcp or udp")]
    UnknownProtocol(String),
    /// A port is not a number in 1..=65535.
    #[error("invalid port {0:?}: expected a number from 1 to 65535")]
    InvalidPort(String),
    /// The destination is not an IP address.
    #[error("invalid destination ip {0:?}: not an IPv4 address or a bracketed IPv6 address")]
    InvalidIp(String),
    /// Direction is neither ingress nor egress.
    #[error("unknown direction {0:?}: expected ingress or egress")]
    UnknownDirection(String),
    /// An allow-list entry is not a key, address or network.
    #[error(transparent)]
    InvalidPeer(#[from] crate::allow::AllowPeerError),
}

impl FromStr for Protocol {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(RuleError::UnknownProtocol(s.to_string())),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl FromStr for Direction {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ingress" => Ok(Direction::Ingress),
            "egress" => Ok(Direction::Egress),
            _ => Err(RuleError::UnknownDirection(s.to_string())),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

fn parse_port(s: &str) -> Result<u16, RuleError> {
    match s.parse::<u16>() {
        // Reject "+80" and "080"-style oddities only where they overflow; u16 parsing is strict enough.
        Ok(p) if p != 0 && !s.starts_with('+') => Ok(p),
        _ => Err(RuleError::InvalidPort(s.to_string())),
    }
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let too_few = || RuleError::TooFewFields(s.to_string());
        let (proto, rest) = s.split_once(':').ok_or_else(too_few)?;
        let (port, rest) = rest.split_once(':').ok_or_else(too_few)?;
        // The destination is everything up to the last ':'; IPv6 must be bracketed.
        let (ip, dport) = rest.rsplit_once(':').ok_or_else(too_few)?;
        let protocol = proto.parse()?;
        let port = parse_port(port)?;
        let ip: IpAddr = match ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')) {
            Some(v6) => v6
                .parse::<std::net::Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| RuleError::InvalidIp(ip.to_string()))?,
            None => ip
                .parse::<std::net::Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| RuleError::InvalidIp(ip.to_string()))?,
        };
        let dport = parse_port(dport)?;
        Ok(Rule {
            protocol,
            port,
            destination: SocketAddr::new(ip, dport),
        })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SocketAddr's Display brackets IPv6 addresses, which is exactly our grammar.
        write!(f, "{}:{}:{}", self.protocol, self.port, self.destination)
    }
}

impl ProxyRule {
    /// Builds a rule with the given direction.
    pub fn new(direction: Direction, rule: Rule) -> Self {
        ProxyRule { direction, rule }
    }
}

/// `egress tcp:5432:100.100.0.2:5432`
impl fmt::Display for ProxyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.direction, self.rule)
    }
}

impl FromStr for ProxyRule {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (dir, rule) = s
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| RuleError::UnknownDirection(s.to_string()))?;
        Ok(ProxyRule {
            direction: dir.parse()?,
            rule: rule.trim().parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_examples() {
        let r: Rule = "tcp:443:127.0.0.1:8080".parse().unwrap();
        assert_eq!(r.protocol, Protocol::Tcp);
        assert_eq!(r.port, 443);
        assert_eq!(r.destination, "127.0.0.1:8080".parse().unwrap());
        let r: Rule = "tcp:5432:100.100.0.2:5432".parse().unwrap();
        assert_eq!(r.to_string(), "tcp:5432:100.100.0.2:5432");
    }

    #[test]
    fn ipv6_and_case() {
        let r: Rule = "UDP:8080:[fd00::2]:80".parse().unwrap();
        assert_eq!(r.protocol, Protocol::Udp);
        assert_eq!(r.to_string(), "udp:8080:[fd00::2]:80");
    }

    #[test]
    fn errors_name_the_value() {
        use RuleError::*;
        let cases = [
            ("tcp:0:127.0.0.1:80", InvalidPort("0".into())),
            ("tcp:65536:127.0.0.1:80", InvalidPort("65536".into())),
            ("tcp:80:127.0.0.1:0", InvalidPort("0".into())),
            ("tcp:x:127.0.0.1:80", InvalidPort("x".into())),
            ("tcp:-1:127.0.0.1:80", InvalidPort("-1".into())),
            ("tcp:+80:127.0.0.1:80", InvalidPort("+80".into())),
            ("sctp:80:127.0.0.1:80", UnknownProtocol("sctp".into())),
            ("tcp:80:not-an-ip:80", InvalidIp("not-an-ip".into())),
            ("tcp:80:fd00::2:80", InvalidIp("fd00::2".into())),
            ("tcp:80:[1.2.3.4]:80", InvalidIp("[1.2.3.4]".into())),
            ("tcp:80:127.0.0.1", TooFewFields("tcp:80:127.0.0.1".into())),
            ("tcp", TooFewFields("tcp".into())),
            ("", TooFewFields("".into())),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Rule>(), Err(want.clone()), "{input}");
            assert!(want.to_string().contains('"'), "message quotes the value");
        }
    }

    #[test]
    fn proxy_rule_round_trip() {
        let p: ProxyRule = "egress tcp:5432:100.100.0.2:5432".parse().unwrap();
        assert_eq!(p.direction, Direction::Egress);
        assert_eq!(p.to_string(), "egress tcp:5432:100.100.0.2:5432");
        assert!("sideways tcp:1:1.1.1.1:1".parse::<ProxyRule>().is_err());
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        (
            any::<bool>(),
            1u16..,
            prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u8; 16]>().prop_map(IpAddr::from),
            ],
            1u16..,
        )
            .prop_map(|(tcp, port, ip, dport)| Rule {
                protocol: if tcp { Protocol::Tcp } else { Protocol::Udp },
                port,
                destination: SocketAddr::new(ip, dport),
            })
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(r in arb_rule()) {
            prop_assert_eq!(r.to_string().parse::<Rule>(), Ok(r));
        }

        #[test]
        fn parse_never_panics(s in ".{0,64}") {
            let _ = s.parse::<Rule>();
            let _ = s.parse::<ProxyRule>();
        }
    }
}
