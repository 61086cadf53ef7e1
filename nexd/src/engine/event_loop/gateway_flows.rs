//! Flows opened by proxy servers (SOCKS5, HTTP CONNECT): each request names its own
//! destination, which must lie inside a peer's AllowedIPs and the server's allow-list.

use super::{attach, mark_dirty, Engine};
use crate::engine::gateways::GatewayTable;
use crate::engine::host::{ConnectOutcome, ConnectRefusal, Connected, FlowId, GatewayFailure};
use crate::engine::tcp::{FlowState, TcpFlow};
use crate::engine::udp::EgressUdpOrigin;
use bytes::Bytes;
use nexd_common::Gateway;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::debug;

impl Engine {
    /// The first of `candidates` the server may reach (an IPv4-mapped IPv6 address as the
    /// IPv4 address it is), or `None`.
    fn gateway_destination(
        &self,
        gateway: &Gateway,
        candidates: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let entry = self.gateways.servers.get(gateway)?;
        let mut addrs = candidates
            .iter()
            .map(|d| SocketAddr::new(canonical(d.ip()), d.port()));
        addrs.find(|d| {
            let ip = d.ip();
            tunnel_destination(ip)
                && !self.local_ips.contains(&ip)
                && self.wg.route(ip).is_some()
                && self.stack.source_for(ip).is_some()
                && entry.admits(*d)
        })
    }

    /// Takes a flow slot of the server for a new flow to one of `candidates`, or says why
    /// not (counted).
    fn gateway_admit(
        &mut self,
        gateway: &Gateway,
        candidates: &[SocketAddr],
    ) -> Result<SocketAddr, ConnectRefusal> {
        if self.draining || !self.gateways.servers.contains_key(gateway) {
            return Err(ConnectRefusal::Unavailable);
        }
        let dest = self.gateway_destination(gateway, candidates);
        let total = self.flow_count() >= self.tunables.max_flows;
        let limit = self.tunables.max_flows_per_rule;
        let Some(entry) = self.gateways.servers.get_mut(gateway) else {
            return Err(ConnectRefusal::Unavailable);
        };
        let Some(dest) = dest else {
            entry.counters.refused_not_allowed += 1;
            self.counters.gateway_not_allowed += 1;
            debug!(server = %gateway, ?candidates, "destination outside the tunnel or the allow-list; refused");
            return Err(ConnectRefusal::NotAllowed);
        };
        if total || entry.flows >= limit {
            entry.counters.refused_limit += 1;
            if total {
                self.counters.refused_total_limit += 1;
            }
            return Err(ConnectRefusal::Limit);
        }
        entry.flows += 1;
        entry.counters.flows_total += 1;
        Ok(dest)
    }

    /// A proxy server's client asks for a TCP flow: opened now, answered once it is up.
    pub(super) fn gateway_connect(
        &mut self,
        gateway: Gateway,
        candidates: Vec<SocketAddr>,
        client: SocketAddr,
        reply: oneshot::Sender<ConnectOutcome>,
    ) {
        let dest = match self.gateway_admit(&gateway, &candidates) {
            Ok(d) => d,
            Err(why) => {
                let _ = reply.send(Err(why));
                return;
            }
        };
        let Some(mut flow) = self.connect_tunnel_tcp(client, dest) else {
            self.gateways.flow_closed(&gateway, (0, 0));
            let _ = reply.send(Err(ConnectRefusal::Unavailable));
            return;
        };
        let id = self.flow_id();
        debug!(flow = id, server = %gateway, %client, %dest, "proxy tcp flow");
        flow.gateway = Some(gateway);
        flow.connect_reply = Some(reply);
        self.insert_tcp_flow(id, flow);
    }

    /// The client has its answer: its connection joins the flow.
    pub(super) fn gateway_attach(
        &mut self,
        id: FlowId,
        stream: tokio::net::TcpStream,
        preface: Bytes,
    ) {
        let Some(f) = self.tcp_flows.get_mut(&id) else {
            // The flow ended meanwhile: reset the client.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            return;
        };
        f.host_preface(preface);
        attach(f, id, stream, &self.events_tx, &self.host_connections);
        mark_dirty(&mut self.dirty, id, f);
    }

    /// A datagram of a SOCKS5 UDP association: out through the association's flow to its
    /// destination, opened on the first datagram.
    pub(super) fn gateway_datagram(
        &mut self,
        gateway: Gateway,
        association: u64,
        socket: Arc<tokio::net::UdpSocket>,
        client: SocketAddr,
        candidates: Vec<SocketAddr>,
        data: Bytes,
    ) {
        let known = candidates
            .iter()
            .map(|d| SocketAddr::new(canonical(d.ip()), d.port()))
            .find_map(|d| self.association_index.get(&(association, d)).copied());
        let id = match known {
            Some(id) => id,
            None => {
                let Ok(dest) = self.gateway_admit(&gateway, &candidates) else {
                    return;
                };
                let origin = EgressUdpOrigin::Association {
                    gateway,
                    id: association,
                    header: Bytes::from(crate::gateway::socks5::udp_header(dest)),
                };
                let Some(id) = self.open_tunnel_udp(client, socket, dest, origin) else {
                    self.gateways.flow_closed(&gateway, (0, 0));
                    return;
                };
                self.association_index.insert((association, dest), id);
                id
            }
        };
        self.gateways.count_datagram(&gateway);
        self.send_egress_udp(id, data);
    }

    /// A SOCKS5 UDP association ended: its flows close.
    pub(super) fn association_ended(&mut self, association: u64) {
        let ids: Vec<FlowId> = self
            .association_index
            .iter()
            .filter(|((a, _), _)| *a == association)
            .map(|(_, &id)| id)
            .collect();
        for id in ids {
            self.close_egress_udp(id);
        }
    }

    /// A proxy server's client failed before asking for a flow: count it.
    pub(super) fn gateway_failed(&mut self, gateway: Gateway, why: GatewayFailure) {
        if let Some(e) = self.gateways.servers.get_mut(&gateway) {
            match why {
                GatewayFailure::AuthFailed => e.counters.auth_failed += 1,
                GatewayFailure::BadRequest | GatewayFailure::Unresolved => {
                    e.counters.bad_requests += 1
                }
            }
        }
    }
}

/// Answers the client waiting for flow `id` once its connection is up or has failed
/// (`state`). A client that has gone meanwhile gets its flow aborted.
pub(super) fn answer_connect(
    flow: &mut TcpFlow,
    id: FlowId,
    state: &FlowState,
    gateways: &mut GatewayTable,
    connect_timeout: Duration,
) {
    let Some(reply) = flow.connect_reply.take() else {
        return;
    };
    if flow.established() && *state == FlowState::Open {
        let bound = flow
            .local
            .map(|(ip, port)| SocketAddr::new(ip, port))
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let ok = Connected {
            flow: id,
            dest: flow.dest,
            bound,
        };
        if reply.send(Ok(ok)).is_err() {
            flow.abort();
        }
        return;
    }
    // Closed before the handshake completed: a reset, or no answer until the timeout.
    let why = if flow.started.elapsed() + Duration::from_millis(200) >= connect_timeout {
        ConnectRefusal::TimedOut
    } else {
        ConnectRefusal::Refused
    };
    if let Some(g) = &flow.gateway {
        if let Some(e) = gateways.servers.get_mut(g) {
            e.counters.connect_failed += 1;
        }
    }
    let _ = reply.send(Err(why));
}

/// Whether a proxy server may ever send to `ip`: never loopback, unspecified, multicast or
/// broadcast, whatever a peer's AllowedIPs say (a peer routing 0.0.0.0/0 covers them too).
fn tunnel_destination(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || a.is_broadcast())
        }
        IpAddr::V6(a) => !(a.is_loopback() || a.is_unspecified() || a.is_multicast()),
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address; any other address as it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
