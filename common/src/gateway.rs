//! Proxy servers into the tunnel (SOCKS5, HTTP CONNECT) and the PROXY protocol.
//!
//! A proxy server listens on a host address (`[ADDR:]PORT`, loopback unless an address is
//! given) and opens flows to destinations the client names, within the tunnel: only
//! addresses some peer's AllowedIPs cover, optionally narrowed by an allow-list of
//! destinations (`CIDR[:PORT[-PORT]]`).

use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// Which protocol a proxy server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GatewayKind {
    /// SOCKS version 5 (RFC 1928): CONNECT and UDP ASSOCIATE.
    Socks5,
    /// HTTP proxy: CONNECT and plain `GET http://…` forwarding.
    Http,
}

impl GatewayKind {
    /// The name used on the command line, in lists and in the state file.
    pub fn name(self) -> &'static str {
        match self {
            GatewayKind::Socks5 => "socks5",
            GatewayKind::Http => "http-proxy",
        }
    }
}

/// A proxy server: its protocol and the host address it listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gateway {
    /// Protocol.
    pub kind: GatewayKind,
    /// Host address and port.
    pub listen: SocketAddr,
}

/// One allow-list entry of a proxy server: a destination network and, optionally, ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DestAllow {
    /// Destination network (an address alone is a /32 or /128).
    pub net: IpNet,
    /// Inclusive port range; `None`: every port.
    pub ports: Option<(u16, u16)>,
}

/// A proxy server as it runs: the server and the destinations it may reach (empty: every
/// tunnel destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    /// The server.
    pub gateway: Gateway,
    /// Allow-list of destinations; empty admits every address a peer's AllowedIPs cover.
    pub allow: Vec<DestAllow>,
}

/// Which PROXY protocol header an ingress rule sends to its local server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyProtocol {
    /// The text header (`PROXY TCP4 … \r\n`).
    V1,
    /// The binary header.
    V2,
}

/// Why a string is not a proxy server address, destination or PROXY protocol version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Not `[ADDR:]PORT`.
    #[error("invalid listen address {}: expected [ADDR:]PORT, e.g. 1080, 127.0.0.1:1080 or [::1]:1080", crate::limits::quote_prefix(.0))]
    InvalidListen(String),
    /// Not `CIDR[:PORT[-PORT]]`.
    #[error("invalid destination {}: expected CIDR[:PORT[-PORT]], e.g. 100.100.0.0/24, 100.100.0.2:5432, [fd00::/64]:8000-8100", crate::limits::quote_prefix(.0))]
    InvalidDest(String),
    /// Not `v1` or `v2`.
    #[error("invalid PROXY protocol version {}: expected v1 or v2", crate::limits::quote_prefix(.0))]
    InvalidProxyProtocol(String),
    /// Neither `socks5` nor `http-proxy`.
    #[error("unknown proxy server kind {}: expected socks5 or http-proxy", crate::limits::quote_prefix(.0))]
    UnknownKind(String),
}

fn port(s: &str) -> Option<u16> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p != 0 && !s.starts_with('+'))
}

/// `[ADDR:]PORT`: `1080`, `127.0.0.1:1080`, `[::1]:1080`, `0.0.0.0:1080`. Without an
/// address, 127.0.0.1.
pub fn parse_listen(s: &str) -> Result<SocketAddr, GatewayError> {
    let bad = || GatewayError::InvalidListen(s.to_string());
    let t = s.trim();
    if let Some(p) = port(t) {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p));
    }
    // SocketAddr parsing brackets IPv6 and refuses bare IPv6 with a port, as we want.
    let addr: SocketAddr = t.parse().map_err(|_| bad())?;
    if addr.port() == 0 {
        return Err(bad());
    }
    Ok(addr)
}

impl FromStr for GatewayKind {
    type Err = GatewayError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "socks5" => Ok(GatewayKind::Socks5),
            "http-proxy" | "http" => Ok(GatewayKind::Http),
            _ => Err(GatewayError::UnknownKind(s.to_string())),
        }
    }
}

impl fmt::Display for GatewayKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `socks5 127.0.0.1:1080`
impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.listen)
    }
}

impl FromStr for Gateway {
    type Err = GatewayError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, listen) = s
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| GatewayError::UnknownKind(s.to_string()))?;
        Ok(Gateway {
            kind: kind.parse()?,
            listen: parse_listen(listen.trim())?,
        })
    }
}

impl FromStr for DestAllow {
    type Err = GatewayError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || GatewayError::InvalidDest(s.to_string());
        let t = s.trim();
        let (net, ports) = if let Some(rest) = t.strip_prefix('[') {
            let (net, after) = rest.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (net, None),
                a => (net, Some(a.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else if t.matches(':').count() > 1 {
            // A bare IPv6 network: no port can follow without brackets.
            (t, None)
        } else {
            match t.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (t, None),
            }
        };
        let net = match net.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => net.parse::<IpNet>().map_err(|_| bad())?.trunc(),
        };
        let ports = match ports {
            None => None,
            Some(p) => {
                let (lo, hi) = p.split_once('-').unwrap_or((p, p));
                let (lo, hi) = (port(lo).ok_or_else(bad)?, port(hi).ok_or_else(bad)?);
                if lo > hi {
                    return Err(bad());
                }
                Some((lo, hi))
            }
        };
        Ok(DestAllow { net, ports })
    }
}

impl fmt::Display for DestAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let single = self.net.prefix_len() == self.net.max_prefix_len();
        match (self.net, self.ports) {
            (IpNet::V6(_), Some(_)) if single => write!(f, "[{}]", self.net.addr())?,
            (IpNet::V6(n), Some(_)) => write!(f, "[{n}]")?,
            _ if single => write!(f, "{}", self.net.addr())?,
            (n, _) => write!(f, "{n}")?,
        }
        match self.ports {
            Some((lo, hi)) if lo == hi => write!(f, ":{lo}"),
            Some((lo, hi)) => write!(f, ":{lo}-{hi}"),
            None => Ok(()),
        }
    }
}

impl DestAllow {
    /// Whether `dest` matches this entry.
    pub fn admits(&self, dest: SocketAddr) -> bool {
        self.net.contains(&dest.ip())
            && self
                .ports
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&dest.port()))
    }
}

/// Whether an allow-list admits `dest` (an empty list admits every destination).
pub fn dest_admitted(allow: &[DestAllow], dest: SocketAddr) -> bool {
    allow.is_empty() || allow.iter().any(|a| a.admits(dest))
}

/// Parses allow-list entries, each possibly comma-separated.
pub fn parse_dest_list<S: AsRef<str>>(items: &[S]) -> Result<Vec<DestAllow>, GatewayError> {
    items
        .iter()
        .flat_map(|s| s.as_ref().split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

impl FromStr for ProxyProtocol {
    type Err = GatewayError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(ProxyProtocol::V1),
            "v2" | "2" => Ok(ProxyProtocol::V2),
            _ => Err(GatewayError::InvalidProxyProtocol(s.to_string())),
        }
    }
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        })
    }
}

/// `socks5 127.0.0.1:1080 allow-dest=100.100.0.0/24,100.100.0.9:22`
impl fmt::Display for GatewaySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.gateway.fmt(f)?;
        if !self.allow.is_empty() {
            f.write_str(" allow-dest=")?;
            for (i, a) in self.allow.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                a.fmt(f)?;
            }
        }
        Ok(())
    }
}

impl From<Gateway> for GatewaySpec {
    fn from(gateway: Gateway) -> Self {
        GatewaySpec {
            gateway,
            allow: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("1080").unwrap(),
            "127.0.0.1:1080".parse().unwrap()
        );
        assert_eq!(
            parse_listen("0.0.0.0:3128").unwrap(),
            "0.0.0.0:3128".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:1080").unwrap(),
            "[::1]:1080".parse().unwrap()
        );
        for bad in [
            "0",
            "65536",
            "::1:1080",
            "localhost:1080",
            "1.2.3.4:0",
            "",
            "x",
        ] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.to_string().contains('"'), "{e}");
        }
    }

    #[test]
    fn gateway_round_trip() {
        let g: Gateway = "socks5 127.0.0.1:1080".parse().unwrap();
        assert_eq!(g.kind, GatewayKind::Socks5);
        assert_eq!(g.to_string(), "socks5 127.0.0.1:1080");
        let g: Gateway = "http-proxy [::1]:3128".parse().unwrap();
        assert_eq!(g.to_string(), "http-proxy [::1]:3128");
        assert!("ftp 1.2.3.4:21".parse::<Gateway>().is_err());
    }

    #[test]
    fn destinations() {
        let d: DestAllow = "100.100.0.0/24".parse().unwrap();
        assert!(d.admits("100.100.0.9:1".parse().unwrap()));
        assert!(!d.admits("100.100.1.9:1".parse().unwrap()));
        let d: DestAllow = "100.100.0.2:5432".parse().unwrap();
        assert!(d.admits("100.100.0.2:5432".parse().unwrap()));
        assert!(!d.admits("100.100.0.2:5433".parse().unwrap()));
        assert_eq!(d.to_string(), "100.100.0.2:5432");
        let d: DestAllow = "[fd00::/64]:8000-8100".parse().unwrap();
        assert!(d.admits("[fd00::5]:8050".parse().unwrap()));
        assert!(!d.admits("[fd00::5]:8101".parse().unwrap()));
        assert_eq!(d.to_string(), "[fd00::/64]:8000-8100");
        let d: DestAllow = "fd00::/64".parse().unwrap();
        assert_eq!(d.to_string(), "fd00::/64");
        let d: DestAllow = "10.1.2.3/8".parse().unwrap();
        assert_eq!(d.to_string(), "10.0.0.0/8");
        for bad in [
            "",
            "x",
            "1.2.3.4:0",
            "1.2.3.4:9-2",
            "[fd00::1]x",
            "1.2.3.4/33",
        ] {
            assert!(bad.parse::<DestAllow>().is_err(), "{bad}");
        }
        let list = parse_dest_list(&["100.100.0.2:80,100.100.0.3", " "]).unwrap();
        assert_eq!(list.len(), 2);
        assert!(dest_admitted(&[], "1.1.1.1:1".parse().unwrap()));
        assert!(!dest_admitted(&list, "100.100.0.2:81".parse().unwrap()));
        assert!(dest_admitted(&list, "100.100.0.3:81".parse().unwrap()));
    }

    #[test]
    fn proxy_protocol_versions() {
        assert_eq!("v1".parse::<ProxyProtocol>().unwrap(), ProxyProtocol::V1);
        assert_eq!("V2".parse::<ProxyProtocol>().unwrap(), ProxyProtocol::V2);
        assert!("v3".parse::<ProxyProtocol>().is_err());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,48}") {
            let _ = parse_listen(&s);
            let _ = s.parse::<DestAllow>();
            let _ = s.parse::<Gateway>();
        }

        #[test]
        fn dest_round_trip(a in any::<[u8; 16]>(), len in 0u8..=128, lo in 1u16.., span in 0u16..100, v4 in any::<bool>()) {
            let net = if v4 {
                IpNet::new(IpAddr::from([a[0], a[1], a[2], a[3]]), len % 33).unwrap().trunc()
            } else {
                IpNet::new(IpAddr::from(a), len).unwrap().trunc()
            };
            let d = DestAllow { net, ports: Some((lo, lo.saturating_add(span))) };
            prop_assert_eq!(d.to_string().parse::<DestAllow>(), Ok(d));
            let d = DestAllow { net, ports: None };
            prop_assert_eq!(d.to_string().parse::<DestAllow>(), Ok(d));
        }
    }
}
