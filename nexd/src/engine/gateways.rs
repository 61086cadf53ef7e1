//! The proxy servers (SOCKS5, HTTP CONNECT) the engine runs: their listeners, live flow
//! counts and counters.

use nexd_common::gateway::{self, DestAllow};
use nexd_common::{Gateway, GatewaySpec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::task::AbortHandle;

/// What one proxy server has done so far (status and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayCounters {
    /// Flows opened (TCP connections and UDP destinations of an association).
    pub flows_total: u64,
    /// TCP bytes from clients into the tunnel, of closed flows.
    pub bytes_to_tunnel: u64,
    /// TCP bytes from the tunnel to clients, of closed flows.
    pub bytes_to_host: u64,
    /// Requests for destinations outside every AllowedIPs or the allow-list.
    pub refused_not_allowed: u64,
    /// Requests refused at a flow limit.
    pub refused_limit: u64,
    /// Clients that failed authentication.
    pub auth_failed: u64,
    /// Malformed or unsupported requests.
    pub bad_requests: u64,
    /// Destinations that refused or never answered.
    pub connect_failed: u64,
    /// UDP datagrams relayed, both ways.
    pub datagrams: u64,
}

/// A proxy server with its live flow count and counters.
#[derive(Debug, Clone)]
pub struct GatewayStats {
    /// The server and its allow-list.
    pub spec: GatewaySpec,
    /// Flows open now.
    pub active: usize,
    /// Counters (bytes include the open flows').
    pub counters: GatewayCounters,
}

/// One running proxy server.
pub struct GatewayEntry {
    /// Destinations it may reach; empty: every tunnel destination.
    pub allow: Vec<DestAllow>,
    /// Flows open through it.
    pub flows: usize,
    /// Counters.
    pub counters: GatewayCounters,
    /// Its accept loop.
    pub listener: AbortHandle,
}

impl GatewayEntry {
    /// Whether the allow-list admits `dest`.
    pub fn admits(&self, dest: SocketAddr) -> bool {
        gateway::dest_admitted(&self.allow, dest)
    }
}

/// Every proxy server, by protocol and listen address.
#[derive(Default)]
pub struct GatewayTable {
    /// Servers.
    pub servers: BTreeMap<Gateway, GatewayEntry>,
}

impl GatewayTable {
    /// Gives back a flow slot (a server removed meanwhile has none to give back) and adds
    /// the flow's bytes (host → tunnel, tunnel → host).
    pub fn flow_closed(&mut self, g: &Gateway, moved: (u64, u64)) {
        if let Some(e) = self.servers.get_mut(g) {
            e.flows = e.flows.saturating_sub(1);
            e.counters.bytes_to_tunnel += moved.0;
            e.counters.bytes_to_host += moved.1;
        }
    }

    /// Counts a datagram relayed through one of the server's UDP associations.
    pub fn count_datagram(&mut self, g: &Gateway) {
        if let Some(e) = self.servers.get_mut(g) {
            e.counters.datagrams += 1;
        }
    }

    /// Every server with its counters; `live` gives the open TCP flows' bytes.
    pub fn stats<'a>(
        &self,
        live: impl Iterator<Item = (&'a Gateway, (u64, u64))>,
    ) -> Vec<GatewayStats> {
        let mut out: BTreeMap<Gateway, GatewayStats> = self
            .servers
            .iter()
            .map(|(g, e)| {
                (
                    *g,
                    GatewayStats {
                        spec: GatewaySpec {
                            gateway: *g,
                            allow: e.allow.clone(),
                        },
                        active: e.flows,
                        counters: e.counters,
                    },
                )
            })
            .collect();
        for (g, (up, down)) in live {
            if let Some(st) = out.get_mut(g) {
                st.counters.bytes_to_tunnel += up;
                st.counters.bytes_to_host += down;
            }
        }
        out.into_values().collect()
    }

    /// Every server, sorted.
    pub fn list(&self) -> Vec<GatewaySpec> {
        self.servers
            .iter()
            .map(|(g, e)| GatewaySpec {
                gateway: *g,
                allow: e.allow.clone(),
            })
            .collect()
    }
}
