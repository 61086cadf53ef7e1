//! Forwarding-loop checks for new rules: a rule whose destination is one of this node's
//! own listeners would turn one connection into an unbounded chain of flows.

use super::rules::RuleTable;
use nexd_common::{Direction, ProxyRule, Rule};
use std::net::IpAddr;

/// Why `new` would forward into this node itself, if it would.
pub fn loop_reason(table: &RuleTable, new: &ProxyRule, tunnel_ips: &[IpAddr]) -> Option<String> {
    let rule = &new.rule;
    let dest = rule.destination;
    match new.direction {
        Direction::Egress if tunnel_ips.contains(&canonical(dest.ip())) => Some(format!(
            "its destination {} is this node's own tunnel address: connections would loop back into nexd",
            dest.ip()
        )),
        Direction::Egress => active(table, Direction::Ingress)
            .find(|ingress| ingress.protocol == rule.protocol && reaches_listener(ingress, rule))
            .map(|ingress| {
                format!(
                    "ingress rule {ingress} forwards to the port this rule would listen on: \
                     connections would loop back into nexd"
                )
            }),
        Direction::Ingress => active(table, Direction::Egress)
            .find(|egress| egress.protocol == rule.protocol && reaches_listener(rule, egress))
            .map(|egress| {
                format!(
                    "its destination {dest} is egress rule {egress}'s own listener: \
                     connections would loop back into nexd"
                )
            }),
    }
}

/// The active rules of one direction.
fn active(table: &RuleTable, direction: Direction) -> impl Iterator<Item = &Rule> {
    table
        .services
        .iter()
        .filter(move |(k, _)| k.0 == direction)
        .flat_map(|(_, s)| s.rules.iter().map(|e| &e.rule))
}

/// Whether an ingress rule's destination is one of an egress rule's host listeners.
fn reaches_listener(ingress: &Rule, egress: &Rule) -> bool {
    ingress.destination.port() == egress.port
        && egress
            .bind_addresses()
            .into_iter()
            .any(|bind| reaches(canonical(ingress.destination.ip()), bind))
}

/// Whether connecting to `dest` reaches a socket bound to `bind` on this host. Only what
/// is known without asking the OS: the same address, loopback or the unspecified address
/// against a wildcard bind, and 0.0.0.0 / :: (which Linux connects to loopback).
fn reaches(dest: IpAddr, bind: IpAddr) -> bool {
    dest == bind
        || (dest.is_unspecified() && (bind.is_loopback() || bind.is_unspecified()))
        || (bind.is_unspecified()
            && (dest.is_loopback() || dest.is_unspecified())
            && (dest.is_ipv4() == bind.is_ipv4() || bind.is_ipv6()))
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they stand for.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_and_wildcards_reach_their_listeners() {
        assert!(reaches(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(reaches(ip("::1"), ip("::1")));
        assert!(reaches(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(reaches(ip("127.0.0.5"), ip("0.0.0.0")));
        assert!(reaches(ip("127.0.0.1"), ip("::")));
        assert!(reaches(ip("::1"), ip("::")));
        assert!(reaches(canonical(ip("::ffff:127.0.0.1")), ip("127.0.0.1")));
        assert!(!reaches(ip("127.0.0.2"), ip("127.0.0.1")));
        assert!(!reaches(ip("::1"), ip("0.0.0.0")));
        assert!(!reaches(ip("192.0.2.1"), ip("127.0.0.1")));
    }
}
