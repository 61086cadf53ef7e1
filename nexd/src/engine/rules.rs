//! The rule table: rules grouped into services by (direction, protocol, port, bind address),
//! each with its listener, spreading new flows round-robin over the group's destinations,
//! within each rule's allow-list and flow limit.

use nexd_common::allow::{self, AllowPeer};
use nexd_common::{Direction, Key, Protocol, ProxyRule, Rule, RuleSpec};
use smoltcp::iface::SocketHandle;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use tokio::task::AbortHandle;

/// What listens for a service.
pub enum Listener {
    /// Host TCP listener tasks, one per bind address.
    EgressTcp(Vec<AbortHandle>),
    /// Host UDP receive tasks, one per bind address (each holds its socket).
    EgressUdp(Vec<AbortHandle>),
    /// Nothing: each new connection gets a socket of its own (`accept_syn`).
    IngressTcp,
    /// One smoltcp UDP socket bound to the port.
    IngressUdp(SocketHandle),
}

/// One rule of a service and its live flow count.
pub struct RuleEntry {
    /// The rule.
    pub rule: Rule,
    /// Who may use it (ingress only); empty admits every peer.
    pub allowed_peers: Vec<AllowPeer>,
    /// PROXY protocol header for the local server (TCP ingress only).
    pub proxy_protocol: Option<nexd_common::ProxyProtocol>,
    /// Flows opened through it and not yet closed.
    pub flows: usize,
    /// What it has done so far.
    pub counters: RuleCounters,
}

/// One rule's counters (status and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Flows opened through the rule.
    pub flows_total: u64,
    /// New flows refused because no rule's allow-list admitted the peer (counted on the
    /// rule whose turn it was).
    pub refused_not_allowed: u64,
    /// New flows refused because the rule was at its flow limit.
    pub refused_rule_limit: u64,
    /// TCP bytes from the host side into the tunnel, of closed flows.
    pub bytes_to_tunnel: u64,
    /// TCP bytes from the tunnel to the host side, of closed flows.
    pub bytes_to_host: u64,
}

/// A rule with its live flow count and counters.
#[derive(Debug, Clone)]
pub struct RuleStats {
    /// The rule.
    pub rule: ProxyRule,
    /// Flows open now.
    pub active: usize,
    /// Counters (bytes include the open flows').
    pub counters: RuleCounters,
}

/// Rules sharing a listener.
pub struct Service {
    /// Rules, in the order they were added.
    pub rules: Vec<RuleEntry>,
    next: usize,
    /// The listener.
    pub listener: Listener,
}

/// Who opens a flow through an ingress rule: its tunnel source and the peer that owns it.
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    /// Inner source address.
    pub src: IpAddr,
    /// The peer whose AllowedIPs own `src`.
    pub peer: Option<&'a Key>,
}

/// Why no rule of a service took a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No rule's allow-list admits the peer.
    NotAllowed,
    /// Every admitting rule is at its flow limit.
    RuleLimit,
}

/// Identifies the rule a flow was opened through, to release its slot when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowOrigin {
    /// The service.
    pub key: ServiceKey,
    /// The rule's destination within the service.
    pub destination: SocketAddr,
}

impl Service {
    /// The next destination, round-robin over the rules that admit `origin` (egress flows
    /// pass `None`) and are below `limit` flows. Takes a flow slot of the chosen rule.
    pub fn pick(&mut self, origin: Option<Origin>, limit: usize) -> Result<SocketAddr, Refusal> {
        let n = self.rules.len();
        let mut refusal = Refusal::NotAllowed;
        for i in 0..n {
            let idx = (self.next + i) % n;
            let e = &mut self.rules[idx];
            if let Some(o) = origin {
                if !allow::admits(&e.allowed_peers, o.src, o.peer) {
                    continue;
                }
            }
            if e.flows >= limit {
                refusal = Refusal::RuleLimit;
                continue;
            }
            e.flows += 1;
            e.counters.flows_total += 1;
            self.next = idx.wrapping_add(1);
            return Ok(e.rule.destination);
        }
        if let Some(e) = self.rules.get_mut(self.next % n.max(1)) {
            match refusal {
                Refusal::NotAllowed => e.counters.refused_not_allowed += 1,
                Refusal::RuleLimit => e.counters.refused_rule_limit += 1,
            }
        }
        Err(refusal)
    }
}

/// Key of a service: direction, protocol, port and (egress) the bind address as given.
pub type ServiceKey = (Direction, Protocol, u16, Option<IpAddr>);

/// All services.
#[derive(Default)]
pub struct RuleTable {
    /// Services by key.
    pub services: BTreeMap<ServiceKey, Service>,
}

/// The service key of a rule.
pub fn key_of(r: &ProxyRule) -> ServiceKey {
    (r.direction, r.rule.protocol, r.rule.port, r.rule.bind)
}

impl RuleTable {
    /// Host sockets the rules listen on (egress listeners, one per bind address).
    pub fn host_listeners(&self) -> usize {
        self.services
            .values()
            .map(|s| match &s.listener {
                Listener::EgressTcp(t) | Listener::EgressUdp(t) => t.len(),
                _ => 0,
            })
            .sum()
    }

    /// Whether the exact rule is active (whatever its allow-list).
    pub fn contains(&self, r: &ProxyRule) -> bool {
        self.services
            .get(&key_of(r))
            .is_some_and(|s| s.rules.iter().any(|e| e.rule == r.rule))
    }

    /// How many rules are active.
    pub fn count(&self) -> usize {
        self.services.values().map(|s| s.rules.len()).sum()
    }

    /// Adds a rule to an existing service; returns false if there is no service yet.
    pub fn join(&mut self, r: &RuleSpec) -> bool {
        match self.services.get_mut(&key_of(&r.rule)) {
            Some(s) => {
                s.rules.push(entry(r));
                true
            }
            None => false,
        }
    }

    /// Creates the service for a rule with its listener.
    pub fn create(&mut self, r: &RuleSpec, listener: Listener) {
        self.services.insert(
            key_of(&r.rule),
            Service {
                rules: vec![entry(r)],
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
        let pos = s.rules.iter().position(|e| e.rule == r.rule)?;
        s.rules.remove(pos);
        if s.rules.is_empty() {
            return Some(self.services.remove(&key).map(|s| s.listener));
        }
        Some(None)
    }

    /// Gives back a flow slot. Flows of a rule removed meanwhile have nothing to give back.
    pub fn flow_closed(&mut self, origin: &FlowOrigin) {
        if let Some(e) = self.services.get_mut(&origin.key).and_then(|s| {
            s.rules
                .iter_mut()
                .find(|e| e.rule.destination == origin.destination)
        }) {
            e.flows = e.flows.saturating_sub(1);
        }
    }

    /// Adds a closed TCP flow's bytes (host → tunnel, tunnel → host) to its rule.
    pub fn add_bytes(&mut self, origin: &FlowOrigin, moved: (u64, u64)) {
        if let Some(e) = self.entry_mut(origin) {
            e.counters.bytes_to_tunnel += moved.0;
            e.counters.bytes_to_host += moved.1;
        }
    }

    fn entry_mut(&mut self, origin: &FlowOrigin) -> Option<&mut RuleEntry> {
        self.services.get_mut(&origin.key).and_then(|s| {
            s.rules
                .iter_mut()
                .find(|e| e.rule.destination == origin.destination)
        })
    }

    /// The PROXY protocol header the rule of a flow asks for, if any.
    pub fn proxy_protocol_of(&self, origin: &FlowOrigin) -> Option<nexd_common::ProxyProtocol> {
        self.services.get(&origin.key).and_then(|s| {
            s.rules
                .iter()
                .find(|e| e.rule.destination == origin.destination)
                .and_then(|e| e.proxy_protocol)
        })
    }

    /// The rule a flow was opened through, as `direction rule`, if it is still active.
    pub fn rule_of(&self, origin: &FlowOrigin) -> Option<String> {
        let s = self.services.get(&origin.key)?;
        let e = s
            .rules
            .iter()
            .find(|e| e.rule.destination == origin.destination)?;
        Some(format!("{} {}", origin.key.0, e.rule))
    }

    /// Every active rule with its counters; `live` gives the open TCP flows' bytes.
    pub fn stats<'a>(
        &self,
        live: impl Iterator<Item = (&'a FlowOrigin, (u64, u64))>,
    ) -> Vec<RuleStats> {
        let mut out: Vec<(ServiceKey, RuleStats)> = Vec::new();
        for (&key, s) in &self.services {
            for e in &s.rules {
                out.push((
                    key,
                    RuleStats {
                        rule: ProxyRule {
                            direction: key.0,
                            rule: e.rule,
                        },
                        active: e.flows,
                        counters: e.counters,
                    },
                ));
            }
        }
        for (origin, (up, down)) in live {
            if let Some((_, st)) = out
                .iter_mut()
                .find(|(k, st)| *k == origin.key && st.rule.rule.destination == origin.destination)
            {
                st.counters.bytes_to_tunnel += up;
                st.counters.bytes_to_host += down;
            }
        }
        out.into_iter().map(|(_, st)| st).collect()
    }

    /// Every active rule, sorted.
    pub fn list(&self) -> Vec<RuleSpec> {
        self.services
            .iter()
            .flat_map(|(&(direction, _, _, _), s)| {
                s.rules.iter().map(move |e| RuleSpec {
                    rule: ProxyRule {
                        direction,
                        rule: e.rule,
                    },
                    allowed_peers: e.allowed_peers.clone(),
                    proxy_protocol: e.proxy_protocol,
                })
            })
            .collect()
    }
}

fn entry(r: &RuleSpec) -> RuleEntry {
    RuleEntry {
        rule: r.rule.rule,
        allowed_peers: r.allowed_peers.clone(),
        proxy_protocol: r.proxy_protocol,
        flows: 0,
        counters: RuleCounters::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str, allow: &[&str]) -> RuleSpec {
        RuleSpec {
            rule: s.parse().unwrap(),
            allowed_peers: allow::parse_list(allow).unwrap(),
            proxy_protocol: None,
        }
    }

    fn table(specs: &[RuleSpec]) -> RuleTable {
        let mut t = RuleTable::default();
        for s in specs {
            if !t.join(s) {
                t.create(s, Listener::IngressTcp);
            }
        }
        t
    }

    #[test]
    fn round_robin_respects_allow_lists_and_limits() {
        let k = Key([3; 32]);
        let mut t = table(&[
            spec("ingress tcp:80:127.0.0.1:1", &["100.64.0.0/24"]),
            spec("ingress tcp:80:127.0.0.1:2", &[&k.to_string()]),
        ]);
        let s = t.services.values_mut().next().unwrap();
        let inside = Origin {
            src: "100.64.0.5".parse().unwrap(),
            peer: None,
        };
        let keyed = Origin {
            src: "100.65.0.5".parse().unwrap(),
            peer: Some(&k),
        };
        let stranger = Origin {
            src: "100.66.0.5".parse().unwrap(),
            peer: Some(&Key([4; 32])),
        };
        assert_eq!(s.pick(Some(inside), 2).unwrap().port(), 1);
        assert_eq!(s.pick(Some(keyed), 2).unwrap().port(), 2);
        assert_eq!(s.pick(Some(stranger), 2), Err(Refusal::NotAllowed));
        assert_eq!(s.pick(Some(inside), 2).unwrap().port(), 1);
        assert_eq!(s.pick(Some(inside), 2), Err(Refusal::RuleLimit));
        t.flow_closed(&FlowOrigin {
            key: (Direction::Ingress, Protocol::Tcp, 80, None),
            destination: "127.0.0.1:1".parse().unwrap(),
        });
        let s = t.services.values_mut().next().unwrap();
        assert_eq!(s.pick(Some(inside), 2).unwrap().port(), 1);
    }

    #[test]
    fn open_rules_alternate() {
        let mut t = table(&[
            spec("egress tcp:80:10.0.0.1:1", &[]),
            spec("egress tcp:80:10.0.0.1:2", &[]),
        ]);
        let s = t.services.values_mut().next().unwrap();
        let ports: Vec<u16> = (0..4).map(|_| s.pick(None, 100).unwrap().port()).collect();
        assert_eq!(ports, [1, 2, 1, 2]);
    }
}
