//! The rule table: rules grouped into services by (direction, protocol, port), each with
//! its listener, spreading new flows round-robin over the group's destinations.

use nexd_common::{Direction, Protocol, ProxyRule, Rule};
use smoltcp::iface::SocketHandle;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

/// What listens for a service.
pub enum Listener {
    /// Host TCP listener task.
    EgressTcp(AbortHandle),
    /// Host UDP socket and its receive task.
    EgressUdp(Arc<UdpSocket>, AbortHandle),
    /// smoltcp sockets in LISTEN state (a backlog, topped up after every poll).
    IngressTcp(Vec<SocketHandle>),
    /// One smoltcp UDP socket bound to the port.
    IngressUdp(SocketHandle),
}

/// Rules sharing a listener.
pub struct Service {
    /// Destinations, in the order they were added.
    pub rules: Vec<Rule>,
    next: usize,
    /// The listener.
    pub listener: Listener,
}

impl Service {
    /// The next destination, round-robin.
    pub fn pick(&mut self) -> Option<SocketAddr> {
        if self.rules.is_empty() {
            return None;
        }
        let r = self.rules[self.next % self.rules.len()];
        self.next = self.next.wrapping_add(1);
        Some(r.destination)
    }
}

/// Key of a service.
pub type ServiceKey = (Direction, Protocol, u16);

/// All services.
#[derive(Default)]
pub struct RuleTable {
    /// Services by key.
    pub services: BTreeMap<ServiceKey, Service>,
}

/// The service key of a rule.
pub fn key_of(r: &ProxyRule) -> ServiceKey {
    (r.direction, r.rule.protocol, r.rule.port)
}

impl RuleTable {
    /// Whether the exact rule is active.
    pub fn contains(&self, r: &ProxyRule) -> bool {
        self.services
            .get(&key_of(r))
            .is_some_and(|s| s.rules.contains(&r.rule))
    }

    /// Adds a rule to an existing service; returns false if there is no service yet.
    pub fn join(&mut self, r: &ProxyRule) -> bool {
        match self.services.get_mut(&key_of(r)) {
            Some(s) => {
                s.rules.push(r.rule);
                true
            }
            None => false,
        }
    }

    /// Creates the service for a rule with its listener.
    pub fn create(&mut self, r: &ProxyRule, listener: Listener) {
        self.services.insert(
            key_of(r),
            Service {
                rules: vec![r.rule],
                next: 0,
                listener,
            },
        );
    }

    /// Removes a rule; returns the listener if the service is now empty, `None` if the rule
    /// was unknown (and `Some(None)` when other rules still use the listener).
    pub fn remove(&mut self, r: &ProxyRule) -> Option<Option<Listener>> {
        let key = key_of(r);
        let s = self.services.get_mut(&key)?;
        let pos = s.rules.iter().position(|x| *x == r.rule)?;
        s.rules.remove(pos);
        if s.rules.is_empty() {
            return Some(self.services.remove(&key).map(|s| s.listener));
        }
        Some(None)
    }

    /// Every active rule, sorted.
    pub fn list(&self) -> Vec<ProxyRule> {
        self.services
            .iter()
            .flat_map(|(&(direction, _, _), s)| {
                s.rules
                    .iter()
                    .map(move |&rule| ProxyRule { direction, rule })
            })
            .collect()
    }
}
