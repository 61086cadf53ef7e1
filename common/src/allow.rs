//! Allow-list entries of an ingress rule: which peers may open flows through it.
//!
//! An entry is a peer's public key (base64), a tunnel address, or a network in CIDR form.
//! A flow is admitted when its tunnel source address is owned by an allowed key (by
//! cryptokey routing, the owner is the peer that sent it) or lies in an allowed network.

use crate::{Key, ProxyRule};
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One allow-list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllowPeer {
    /// A peer, by public key.
    Key(Key),
    /// A tunnel address or network.
    Net(IpNet),
}

/// Why a string is not an allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer {}: expected a base64 public key, a tunnel IP address or a CIDR", crate::limits::quote_prefix(.0))]
pub struct AllowPeerError(pub String);

impl FromStr for AllowPeer {
    type Err = AllowPeerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(AllowPeer::Net(IpNet::from(ip)));
        }
        if let Ok(net) = t.parse::<IpNet>() {
            return Ok(AllowPeer::Net(net.trunc()));
        }
        t.parse::<Key>()
            .map(AllowPeer::Key)
            .map_err(|_| AllowPeerError(s.to_string()))
    }
}

impl fmt::Display for AllowPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowPeer::Key(k) => k.fmt(f),
            // A single address prints without its /32 or /128.
            AllowPeer::Net(n) if n.prefix_len() == n.max_prefix_len() => n.addr().fmt(f),
            AllowPeer::Net(n) => n.fmt(f),
        }
    }
}

impl AllowPeer {
    /// Whether a flow from `src`, sent by the peer `owner`, matches this entry.
    pub fn admits(&self, src: IpAddr, owner: Option<&Key>) -> bool {
        match self {
            AllowPeer::Key(k) => owner == Some(k),
            AllowPeer::Net(n) => n.contains(&src),
        }
    }
}

/// A rule as it runs: the rule and who may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// The rule.
    pub rule: ProxyRule,
    /// Peers allowed to open flows through it (ingress only); empty admits every peer.
    pub allowed_peers: Vec<AllowPeer>,
    /// PROXY protocol header sent to the local server before the stream (TCP ingress only).
    pub proxy_protocol: Option<crate::gateway::ProxyProtocol>,
}

impl From<ProxyRule> for RuleSpec {
    fn from(rule: ProxyRule) -> Self {
        RuleSpec {
            rule,
            allowed_peers: Vec::new(),
            proxy_protocol: None,
        }
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.rule.fmt(f)?;
        if !self.allowed_peers.is_empty() {
            f.write_str(" allow-peer=")?;
            for (i, a) in self.allowed_peers.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                a.fmt(f)?;
            }
        }
        if let Some(v) = self.proxy_protocol {
            write!(f, " proxy-protocol={v}")?;
        }
        Ok(())
    }
}

/// Whether a list admits a flow; an empty list admits every peer.
pub fn admits(list: &[AllowPeer], src: IpAddr, owner: Option<&Key>) -> bool {
    list.is_empty() || list.iter().any(|a| a.admits(src, owner))
}

/// Parses a list, naming the first bad entry.
pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Vec<AllowPeer>, AllowPeerError> {
    let mut out: Vec<AllowPeer> = Vec::with_capacity(items.len());
    for s in items {
        let a: AllowPeer = s.as_ref().parse()?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form_and_round_trips() {
        let key = Key([9; 32]).to_string();
        for s in [
            key.as_str(),
            "100.100.0.2",
            "100.100.0.0/24",
            "fd00::2",
            "fd00::/64",
        ] {
            let a: AllowPeer = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(a.to_string().parse::<AllowPeer>().unwrap(), a);
        }
        assert_eq!(
            "10.0.0.7/24".parse::<AllowPeer>().unwrap().to_string(),
            "10.0.0.0/24"
        );
    }

    #[test]
    fn rejects_garbage_naming_it() {
        for s in ["", "peer", "1.2.3.4/40", "AAAA", "::1/200"] {
            let e = s.parse::<AllowPeer>().unwrap_err();
            assert!(e.to_string().contains(&format!("{s:?}")), "{e}");
        }
    }

    #[test]
    fn admits_by_key_or_address() {
        let k = Key([1; 32]);
        let other = Key([2; 32]);
        let src: IpAddr = "100.100.0.2".parse().unwrap();
        let list = parse_list(&[k.to_string()]).unwrap();
        assert!(admits(&list, src, Some(&k)));
        assert!(!admits(&list, src, Some(&other)));
        assert!(!admits(&list, src, None));
        let list = parse_list(&["100.100.0.0/30"]).unwrap();
        assert!(admits(&list, src, None));
        assert!(!admits(&list, "100.100.0.9".parse().unwrap(), Some(&k)));
        assert!(admits(&[], src, None));
    }

    #[test]
    fn duplicates_collapse() {
        let list = parse_list(&["10.0.0.1", "10.0.0.1/32"]).unwrap();
        assert_eq!(list.len(), 1);
    }
}
