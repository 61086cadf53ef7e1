//! The proxy rule grammar: `[protocol]:[port]:[destination_ip]:[destination_port]`, with an
//! optional bind address before the port for egress rules, as `ssh -L` takes it:
//! `tcp:127.0.0.1:5432:100.100.0.2:5432`.
//!
//! IPv6 addresses are written in brackets: `tcp:8080:[fd00::2]:80`, `tcp:[::1]:5432:…`.

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
    /// Host address an egress rule listens on, if the rule names one; without it an egress
    /// rule listens on loopback only ([`Rule::bind_addresses`]). Ingress rules have none.
    pub bind: Option<IpAddr>,
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
        "rule {} has too few fields: expected protocol:port:destination_ip:destination_port", crate::limits::quote_prefix(.0)
    )]
    TooFewFields(String),
    /// The bind address is not an IP address.
    #[error("invalid bind address {}: not an IPv4 address or a bracketed IPv6 address", crate::limits::quote_prefix(.0))]
    InvalidBind(String),
    /// An ingress rule names a bind address (it listens on the tunnel address).
    #[error(
        "ingress rule {} takes no bind address: ingress listens on the node's tunnel addresses", crate::limits::quote_prefix(.0)
    )]
    BindOnIngress(String),
    /// Protocol is neither tcp nor udp.
    #[error("unknown protocol {}: expected tcp or udp", crate::limits::quote_prefix(.0))]
    UnknownProtocol(String),
    /// A port is not a number in 1..=65535.
    #[error("invalid port {}: expected a number from 1 to 65535", crate::limits::quote_prefix(.0))]
    InvalidPort(String),
    /// The destination is not an IP address.
    #[error("invalid destination ip {}: not an IPv4 address or a bracketed IPv6 address", crate::limits::quote_prefix(.0))]
    InvalidIp(String),
    /// Direction is neither ingress nor egress.
    #[error("unknown direction {}: expected ingress or egress", crate::limits::quote_prefix(.0))]
    UnknownDirection(String),
    /// An allow-list entry is not a key, address or network.
    #[error(transparent)]
    InvalidPeer(#[from] crate::allow::AllowPeerError),
    /// A PROXY protocol version that does not exist.
    #[error(transparent)]
    Gateway(crate::gateway::GatewayError),
    /// A PROXY protocol header asked for on a rule other than TCP ingress.
    #[error("rule {}: --proxy-protocol applies to TCP ingress rules only", crate::limits::quote_prefix(.0))]
    ProxyProtocolNotIngressTcp(String),
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

/// An IPv4 address, or an IPv6 address in brackets.
fn parse_ip(s: &str) -> Option<IpAddr> {
    match s.strip_prefix('[').and_then(|i| i.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        None => s.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// Splits on ':' outside brackets, so a bracketed IPv6 address stays one field.
fn fields(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let f = fields(s);
        let (proto, bind, port, ip, dport) = match f.len() {
            0..=3 => return Err(RuleError::TooFewFields(s.to_string())),
            4 => (f[0], None, f[1], f[2], f[3]),
            5 => (f[0], Some(f[1]), f[2], f[3], f[4]),
            // An unbracketed IPv6 destination: name all of it.
            n => (
                f[0],
                None,
                f[1],
                &s[f[0].len() + f[1].len() + 2..s.len() - f[n - 1].len() - 1],
                f[n - 1],
            ),
        };
        let protocol = proto.parse()?;
        let bind = match bind {
            None => None,
            Some(b) => Some(parse_ip(b).ok_or_else(|| RuleError::InvalidBind(b.to_string()))?),
        };
        let port = parse_port(port)?;
        let ip = parse_ip(ip).ok_or_else(|| RuleError::InvalidIp(ip.to_string()))?;
        let dport = parse_port(dport)?;
        Ok(Rule {
            protocol,
            bind,
            port,
            destination: SocketAddr::new(ip, dport),
        })
    }
}

impl Rule {
    /// The host addresses an egress rule listens on: its bind address, or loopback (IPv4
    /// and IPv6) when it names none, as `ssh -L` does.
    pub fn bind_addresses(&self) -> Vec<IpAddr> {
        match self.bind {
            Some(a) => vec![a],
            None => vec![
                IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ],
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SocketAddr's Display brackets IPv6 addresses, which is exactly our grammar.
        write!(f, "{}:", self.protocol)?;
        match self.bind {
            Some(IpAddr::V6(a)) => write!(f, "[{a}]:")?,
            Some(IpAddr::V4(a)) => write!(f, "{a}:")?,
            None => {}
        }
        write!(f, "{}:{}", self.port, self.destination)
    }
}

impl ProxyRule {
    /// Builds a rule with the given direction.
    pub fn new(direction: Direction, rule: Rule) -> Self {
        ProxyRule { direction, rule }
    }

    /// Checks what the grammar alone cannot: an ingress rule names no bind address.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.direction == Direction::Ingress && self.rule.bind.is_some() {
            return Err(RuleError::BindOnIngress(self.rule.to_string()));
        }
        Ok(())
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
        let p = ProxyRule {
            direction: dir.parse()?,
            rule: rule.trim().parse()?,
        };
        p.validate()?;
        Ok(p)
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
            (
                "tcp:localhost:80:127.0.0.1:80",
                InvalidBind("localhost".into()),
            ),
            ("tcp:[::1]:0:127.0.0.1:80", InvalidPort("0".into())),
            ("tcp", TooFewFields("tcp".into())),
            ("", TooFewFields("".into())),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Rule>(), Err(want.clone()), "{input}");
            assert!(want.to_string().contains('"'), "message quotes the value");
        }
    }

    #[test]
    fn bind_address_before_the_port() {
        let r: Rule = "tcp:127.0.0.1:5432:100.100.0.2:5432".parse().unwrap();
        assert_eq!(r.bind, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(r.port, 5432);
        assert_eq!(r.to_string(), "tcp:127.0.0.1:5432:100.100.0.2:5432");
        assert_eq!(
            r.bind_addresses(),
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        let r: Rule = "udp:[::1]:53:[fd00::2]:53".parse().unwrap();
        assert_eq!(r.bind, Some("::1".parse().unwrap()));
        assert_eq!(r.to_string(), "udp:[::1]:53:[fd00::2]:53");
        let r: Rule = "tcp:0.0.0.0:80:10.0.0.1:80".parse().unwrap();
        assert_eq!(
            r.bind_addresses(),
            vec!["0.0.0.0".parse::<IpAddr>().unwrap()]
        );
        // Without one: loopback only, and listed as given.
        let r: Rule = "tcp:5432:100.100.0.2:5432".parse().unwrap();
        assert_eq!(r.bind, None);
        assert_eq!(r.to_string(), "tcp:5432:100.100.0.2:5432");
        assert_eq!(
            r.bind_addresses(),
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        let p: Result<ProxyRule, _> = "ingress tcp:127.0.0.1:443:127.0.0.1:8080".parse();
        assert!(matches!(p, Err(RuleError::BindOnIngress(_))), "{p:?}");
        assert!("egress tcp:127.0.0.1:443:127.0.0.1:8080"
            .parse::<ProxyRule>()
            .is_ok());
    }

    #[test]
    fn proxy_rule_round_trip() {
        let p: ProxyRule = "egress tcp:5432:100.100.0.2:5432".parse().unwrap();
        assert_eq!(p.direction, Direction::Egress);
        assert_eq!(p.to_string(), "egress tcp:5432:100.100.0.2:5432");
        assert!("sideways tcp:1:1.1.1.1:1".parse::<ProxyRule>().is_err());
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        let ip = || {
            prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u8; 16]>().prop_map(IpAddr::from),
            ]
        };
        (
            any::<bool>(),
            proptest::option::of(ip()),
            1u16..,
            ip(),
            1u16..,
        )
            .prop_map(|(tcp, bind, port, ip, dport)| Rule {
                protocol: if tcp { Protocol::Tcp } else { Protocol::Udp },
                bind,
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
