//! Generated gRPC types for package `nexd.v1`, and conversions to the domain types.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("nexd.v1");

/// Encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/nexd_descriptor.bin"));

use crate::rule::{Direction as DomainDirection, ProxyRule as DomainRule, RuleError};

impl From<DomainRule> for ProxyRule {
    fn from(r: DomainRule) -> Self {
        ProxyRule {
            direction: match r.direction {
                DomainDirection::Ingress => Direction::Ingress,
                DomainDirection::Egress => Direction::Egress,
            } as i32,
            rule: r.rule.to_string(),
        }
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
        Ok(DomainRule {
            direction,
            rule: p.rule.parse()?,
        })
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
        };
        assert!(DomainRule::try_from(&bad).is_err());
    }
}
