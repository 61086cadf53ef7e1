//! Generated gRPC types for package `nexd.v1`, and conversions to the domain types.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("nexd.v1");

/// Encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/nexd_descriptor.bin"));

use crate::allow::{self, RuleSpec};
use crate::gateway::{self, Gateway, GatewayError, GatewayKind, GatewaySpec};
use crate::rule::{Direction as DomainDirection, ProxyRule as DomainRule, RuleError};

impl From<DomainRule> for ProxyRule {
    fn from(r: DomainRule) -> Self {
        ProxyRule {
            direction: match r.direction {
                DomainDirection::Ingress => Direction::Ingress,
                DomainDirection::Egress => Direction::Egress,
            } as i32,
            rule: r.rule.to_string(),
            allowed_peers: Vec::new(),
            bind_addresses: match r.direction {
                DomainDirection::Egress => r
                    .rule
                    .bind_addresses()
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
                DomainDirection::Ingress => Vec::new(),
            },
            origin: String::new(),
            proxy_protocol: String::new(),
        }
    }
}

impl From<&RuleSpec> for ProxyRule {
    fn from(r: &RuleSpec) -> Self {
        ProxyRule {
            allowed_peers: r.allowed_peers.iter().map(|a| a.to_string()).collect(),
            proxy_protocol: r.proxy_protocol.map(|v| v.to_string()).unwrap_or_default(),
            ..ProxyRule::from(r.rule)
        }
    }
}

impl TryFrom<&ProxyRule> for RuleSpec {
    type Error = RuleError;
    fn try_from(p: &ProxyRule) -> Result<Self, RuleError> {
        let rule = DomainRule::try_from(p)?;
        let proxy_protocol = match p.proxy_protocol.trim() {
            "" => None,
            v => Some(v.parse().map_err(RuleError::Gateway)?),
        };
        if proxy_protocol.is_some()
            && (rule.direction != DomainDirection::Ingress
                || rule.rule.protocol != crate::Protocol::Tcp)
        {
            return Err(RuleError::ProxyProtocolNotIngressTcp(rule.to_string()));
        }
        Ok(RuleSpec {
            rule,
            allowed_peers: allow::parse_list(&p.allowed_peers)?,
            proxy_protocol,
        })
    }
}

impl From<GatewayKind> for ProxyServerKind {
    fn from(k: GatewayKind) -> Self {
        match k {
            GatewayKind::Socks5 => ProxyServerKind::Socks5,
            GatewayKind::Http => ProxyServerKind::Http,
        }
    }
}

impl From<&GatewaySpec> for ProxyServer {
    fn from(g: &GatewaySpec) -> Self {
        ProxyServer {
            kind: ProxyServerKind::from(g.gateway.kind) as i32,
            listen: g.gateway.listen.to_string(),
            allow_destinations: g.allow.iter().map(|a| a.to_string()).collect(),
            origin: String::new(),
        }
    }
}

impl TryFrom<&ProxyServer> for GatewaySpec {
    type Error = GatewayError;
    fn try_from(p: &ProxyServer) -> Result<Self, GatewayError> {
        let kind = match ProxyServerKind::try_from(p.kind) {
            Ok(ProxyServerKind::Socks5) => GatewayKind::Socks5,
            Ok(ProxyServerKind::Http) => GatewayKind::Http,
            _ => return Err(GatewayError::UnknownKind(p.kind.to_string())),
        };
        Ok(GatewaySpec {
            gateway: Gateway {
                kind,
                listen: gateway::parse_listen(&p.listen)?,
            },
            allow: gateway::parse_dest_list(&p.allow_destinations)?,
        })
    }
}

impl TryFrom<&ProxyRule> for DomainRule {
    type Error = RuleError;
    fn try_from(p: &ProxyRule) -> Result<Self, RuleError> {
        let direction = match Direction::try_from(p.direction) {
            Ok(Direction::Ingress) => DomainDirection::Ingress,
            Ok(Direction::Egress) => DomainDirection::Egress,
            _ => return Err(RuleError::UnknownDirection(p.direction.to_string())),
        };
        let rule = DomainRule {
            direction,
            rule: p.rule.parse()?,
        };
        rule.validate()?;
        Ok(rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_round_trips_through_the_wire_type() {
        let d: DomainRule = "egress tcp:5432:100.100.0.2:5432".parse().unwrap();
        let wire = ProxyRule::from(d);
        assert_eq!(wire.direction, Direction::Egress as i32);
        assert_eq!(DomainRule::try_from(&wire).unwrap(), d);
        let bad = ProxyRule {
            direction: 7,
            rule: "tcp:1:1.1.1.1:1".into(),
            allowed_peers: vec![],
            bind_addresses: vec![],
            origin: String::new(),
            proxy_protocol: String::new(),
        };
        assert!(DomainRule::try_from(&bad).is_err());
        assert_eq!(wire.bind_addresses, ["127.0.0.1", "::1"]);
        let bad = ProxyRule {
            direction: Direction::Ingress as i32,
            rule: "tcp:0.0.0.0:1:1.1.1.1:1".into(),
            allowed_peers: vec![],
            bind_addresses: vec![],
            origin: String::new(),
            proxy_protocol: String::new(),
        };
        assert!(DomainRule::try_from(&bad).is_err());
    }

    #[test]
    fn allow_list_round_trips_and_bad_entries_are_named() {
        let spec = RuleSpec {
            rule: "ingress tcp:443:127.0.0.1:8080".parse().unwrap(),
            allowed_peers: allow::parse_list(&["100.100.0.2", "10.1.0.0/16"]).unwrap(),
            proxy_protocol: Some(crate::ProxyProtocol::V2),
        };
        let wire = ProxyRule::from(&spec);
        assert_eq!(wire.allowed_peers, ["100.100.0.2", "10.1.0.0/16"]);
        assert_eq!(RuleSpec::try_from(&wire).unwrap(), spec);
        let bad = ProxyRule {
            allowed_peers: vec!["nobody".into()],
            ..wire
        };
        let e = RuleSpec::try_from(&bad).unwrap_err().to_string();
        assert!(e.contains("\"nobody\""), "{e}");
        let egress = ProxyRule {
            proxy_protocol: "v1".into(),
            ..ProxyRule::from("egress tcp:1:1.1.1.1:1".parse::<DomainRule>().unwrap())
        };
        assert!(RuleSpec::try_from(&egress).is_err());
    }

    #[test]
    fn proxy_server_round_trips() {
        let spec = GatewaySpec {
            gateway: "socks5 127.0.0.1:1080".parse().unwrap(),
            allow: gateway::parse_dest_list(&["100.100.0.0/24:22"]).unwrap(),
        };
        let wire = ProxyServer::from(&spec);
        assert_eq!(wire.listen, "127.0.0.1:1080");
        assert_eq!(GatewaySpec::try_from(&wire).unwrap(), spec);
        let bad = ProxyServer { kind: 9, ..wire };
        assert!(GatewaySpec::try_from(&bad).is_err());
    }
}
