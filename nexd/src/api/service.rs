//! The `nexd.v1.Nexd` service: turns requests into engine commands and persists changes.

use super::conn::ApiCounters;
use crate::engine::wg::PeerUpdate;
use crate::engine::{EngineError, EngineHandle};
use crate::reload::Reloader;
use crate::state::{SavedPeer, State, StateStore};
use nexd_common::api::{self, nexd_server::Nexd};
use nexd_common::limits::{self, quote_prefix, LimitError};
use nexd_common::{Gateway, GatewaySpec, Key, PeerConfig, ProxyRule, RuleSpec};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

/// What mutating calls share: the state file and its in-memory copy. Held across the engine
/// call and the save, so concurrent calls apply and persist in one order.
pub struct RuntimeState {
    /// The file; `None` when the default state dir was unusable (changes are not saved).
    pub store: Option<StateStore>,
    /// Its contents.
    pub state: State,
}

/// The service.
#[derive(Clone)]
pub struct ApiService {
    engine: EngineHandle,
    runtime: Arc<Mutex<RuntimeState>>,
    reloader: Arc<Reloader>,
    started: Instant,
    counters: Arc<ApiCounters>,
}

impl ApiService {
    /// A service over a running engine; `runtime` and `reloader` are shared with SIGHUP.
    pub fn new(
        engine: EngineHandle,
        runtime: Arc<Mutex<RuntimeState>>,
        reloader: Arc<Reloader>,
    ) -> Self {
        ApiService {
            engine,
            runtime,
            reloader,
            started: Instant::now(),
            counters: Arc::default(),
        }
    }

    /// The connection counters, shared with the accept loop.
    pub fn counters(&self) -> Arc<ApiCounters> {
        self.counters.clone()
    }
}

fn status(e: EngineError) -> Status {
    match e {
        EngineError::DuplicateRule(_)
        | EngineError::DuplicateGateway(_)
        | EngineError::Peer(crate::engine::wg::PeerError::Duplicate(_)) => {
            Status::already_exists(e.to_string())
        }
        EngineError::UnknownRule(_)
        | EngineError::UnknownPeer(_)
        | EngineError::UnknownGateway(_) => Status::not_found(e.to_string()),
        EngineError::Peer(crate::engine::wg::PeerError::TooMany(_)) => {
            Status::resource_exhausted(e.to_string())
        }
        EngineError::InvalidRule { .. } | EngineError::Peer(_) => {
            Status::invalid_argument(e.to_string())
        }
        EngineError::PortUnavailable { .. } | EngineError::GatewayUnavailable { .. } => {
            Status::failed_precondition(e.to_string())
        }
        EngineError::TooManyRules(_) | EngineError::TooManyGateways(_) => {
            Status::resource_exhausted(e.to_string())
        }
        EngineError::Stopped => Status::unavailable(e.to_string()),
        EngineError::WireGuardSocket { .. } | EngineError::Thread(_) => {
            Status::internal(e.to_string())
        }
    }
}

fn saved(runtime: &RuntimeState) -> Result<(), Status> {
    match &runtime.store {
        Some(store) => store
            .save(&runtime.state)
            .map_err(|e| Status::internal(format!("change applied but not saved: {e}"))),
        None => Ok(()),
    }
}

/// An input over a size cap: refused before it is parsed, quoting only a prefix.
fn too_big(e: LimitError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn parse_rule(r: Option<&api::ProxyRule>) -> Result<ProxyRule, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("missing rule"))?;
    // RemoveProxyRule ignores the allow-list, so only the rule's own size matters.
    limits::check_len("rule", &r.rule).map_err(too_big)?;
    ProxyRule::try_from(r).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn parse_spec(r: Option<&api::ProxyRule>) -> Result<RuleSpec, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("missing rule"))?;
    limits::check_rule_input(&r.rule, &r.allowed_peers).map_err(too_big)?;
    limits::check_len("PROXY protocol version", &r.proxy_protocol).map_err(too_big)?;
    RuleSpec::try_from(r).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A proxy server to add: its kind, listen address and allow-list, within the caps.
fn parse_server_spec(s: Option<&api::ProxyServer>) -> Result<GatewaySpec, Status> {
    let s = s.ok_or_else(|| Status::invalid_argument("missing server"))?;
    limits::check_server_input(&s.listen, &s.allow_destinations).map_err(too_big)?;
    let spec = GatewaySpec::try_from(s).map_err(|e| Status::invalid_argument(e.to_string()))?;
    limits::check_dest_count(spec.allow.len()).map_err(too_big)?;
    Ok(spec)
}

/// A proxy server to remove: only its kind and listen address count.
fn parse_server(s: Option<&api::ProxyServer>) -> Result<Gateway, Status> {
    let s = s.ok_or_else(|| Status::invalid_argument("missing server"))?;
    limits::check_len("listen address", &s.listen).map_err(too_big)?;
    let bare = api::ProxyServer {
        allow_destinations: Vec::new(),
        ..s.clone()
    };
    GatewaySpec::try_from(&bare)
        .map(|g| g.gateway)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The counters of one proxy server, as GetStatus reports them.
fn server_counters(g: &crate::engine::gateways::GatewayStats) -> api::ProxyServerCounters {
    let c = &g.counters;
    api::ProxyServerCounters {
        server: Some(api::ProxyServer::from(&g.spec)),
        active_flows: g.active as u64,
        flows_total: c.flows_total,
        bytes_to_tunnel: c.bytes_to_tunnel,
        bytes_to_host: c.bytes_to_host,
        refused_not_allowed: c.refused_not_allowed,
        refused_limit: c.refused_limit,
        auth_failed: c.auth_failed,
        bad_requests: c.bad_requests,
        connect_failed: c.connect_failed,
        datagrams: c.datagrams,
    }
}

/// Resolves `host:port` without blocking the runtime.
pub async fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    limits::check_len("endpoint", endpoint).map_err(|e| e.to_string())?;
    tokio::net::lookup_host(endpoint)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve endpoint {}", quote_prefix(endpoint)))
}

/// Parses AllowedIPs: CIDRs or bare addresses.
fn parse_allowed_ips(list: &[String]) -> Result<Vec<ipnet::IpNet>, Status> {
    limits::check_allowed_ips(list).map_err(too_big)?;
    list.iter()
        .map(|s| {
            s.trim()
                .parse::<ipnet::IpNet>()
                .or_else(|_| s.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    Status::invalid_argument(format!(
                        "invalid allowed IP {}: not an IP address or CIDR",
                        quote_prefix(s)
                    ))
                })
        })
        .collect()
}

/// The state file's form of a peer's settings.
fn saved_peer(cfg: &PeerConfig) -> SavedPeer {
    SavedPeer {
        public_key: cfg.public_key.to_string(),
        allowed_ips: cfg.allowed_ips.iter().map(|n| n.to_string()).collect(),
        endpoint: cfg.endpoint.clone(),
        persistent_keepalive: cfg.persistent_keepalive,
        preshared_key: cfg.preshared_key.map(|k| k.to_string()),
    }
}

fn invalid(what: &str, v: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid {what} {}: {why}", quote_prefix(v)))
}

fn parse_public_key(s: &str) -> Result<Key, Status> {
    limits::check_len("public key", s).map_err(too_big)?;
    s.parse()
        .map_err(|e: nexd_common::KeyError| invalid("public key", s, e))
}

/// A base64 preshared key; empty for none. The value is never echoed.
fn parse_preshared_key(s: &str) -> Result<Option<Key>, Status> {
    if s.len() > limits::MAX_FIELD_LEN {
        // Never echoed, not even a prefix.
        return Err(invalid("preshared key", "(hidden)", "too long"));
    }
    match s.trim() {
        "" => Ok(None),
        k => k
            .parse::<Key>()
            .map(Some)
            .map_err(|e| invalid("preshared key", "(hidden)", e)),
    }
}

/// A keepalive interval in seconds; 0 for none.
fn parse_keepalive(k: u32) -> Result<Option<u16>, Status> {
    match k {
        0 => Ok(None),
        k => u16::try_from(k)
            .map(Some)
            .map_err(|_| invalid("persistent keepalive", &k.to_string(), "must be 0-65535")),
    }
}

/// Validates a SetPeer request into an engine update.
fn update_from_request(r: &api::SetPeerRequest) -> Result<(Key, PeerUpdate), Status> {
    let key = parse_public_key(&r.public_key)?;
    let mut u = PeerUpdate::default();
    if !r.allowed_ips.is_empty() {
        u.allowed_ips = Some(parse_allowed_ips(&r.allowed_ips)?);
    }
    if let Some(k) = r.persistent_keepalive {
        u.persistent_keepalive = Some(parse_keepalive(k)?);
    }
    if let Some(psk) = &r.preshared_key {
        u.preshared_key = Some(parse_preshared_key(psk)?);
    }
    Ok((key, u))
}

/// Validates an AddPeer request into a peer config (and what to save).
fn peer_from_request(r: &api::AddPeerRequest) -> Result<(PeerConfig, SavedPeer), Status> {
    let public_key = parse_public_key(&r.public_key)?;
    let preshared_key = parse_preshared_key(&r.preshared_key)?;
    if r.allowed_ips.is_empty() {
        return Err(Status::invalid_argument(
            "at least one allowed IP is required",
        ));
    }
    let allowed_ips = parse_allowed_ips(&r.allowed_ips)?;
    let keepalive = parse_keepalive(r.persistent_keepalive)?;
    let endpoint = Some(r.endpoint.trim().to_string()).filter(|e| !e.is_empty());
    let cfg = PeerConfig {
        public_key,
        preshared_key,
        allowed_ips,
        endpoint,
        persistent_keepalive: keepalive,
    };
    let saved = saved_peer(&cfg);
    Ok((cfg, saved))
}

#[tonic::async_trait]
impl Nexd for ApiService {
    async fn add_proxy_rule(
        &self,
        req: Request<api::AddProxyRuleRequest>,
    ) -> Result<Response<api::AddProxyRuleResponse>, Status> {
        let spec = parse_spec(req.get_ref().rule.as_ref())?;
        let mut rt = self.runtime.lock().await;
        self.engine.add_rule(spec.clone()).await.map_err(status)?;
        let line = spec.rule.to_string();
        if !rt.state.rules.contains(&line) {
            rt.state.rules.push(line.clone());
        }
        match spec.proxy_protocol {
            Some(v) => rt.state.proxy_protocol.insert(line.clone(), v.to_string()),
            None => rt.state.proxy_protocol.remove(&line),
        };
        if spec.allowed_peers.is_empty() {
            rt.state.allowed_peers.remove(&line);
        } else {
            let list = spec.allowed_peers.iter().map(|a| a.to_string()).collect();
            rt.state.allowed_peers.insert(line, list);
        }
        saved(&rt)?;
        Ok(Response::new(api::AddProxyRuleResponse {}))
    }

    async fn remove_proxy_rule(
        &self,
        req: Request<api::RemoveProxyRuleRequest>,
    ) -> Result<Response<api::RemoveProxyRuleResponse>, Status> {
        let rule = parse_rule(req.get_ref().rule.as_ref())?;
        let mut rt = self.runtime.lock().await;
        self.engine.remove_rule(rule).await.map_err(status)?;
        let line = rule.to_string();
        rt.state.rules.retain(|r| *r != line);
        rt.state.allowed_peers.remove(&line);
        rt.state.proxy_protocol.remove(&line);
        saved(&rt)?;
        Ok(Response::new(api::RemoveProxyRuleResponse {}))
    }

    async fn list_proxy_rules(
        &self,
        _req: Request<api::ListProxyRulesRequest>,
    ) -> Result<Response<api::ListProxyRulesResponse>, Status> {
        let st = self.engine.status().await.map_err(status)?;
        let rt = self.runtime.lock().await;
        let rules = st
            .rules
            .iter()
            .map(|r| {
                let runtime = rt.state.rules.contains(&r.rule.to_string());
                api::ProxyRule {
                    origin: if runtime { "runtime" } else { "flag" }.to_string(),
                    ..api::ProxyRule::from(r)
                }
            })
            .collect();
        let servers = st
            .gateways
            .iter()
            .map(|g| {
                let runtime = rt.state.servers.contains(&g.spec.gateway.to_string());
                api::ProxyServer {
                    origin: if runtime { "runtime" } else { "flag" }.to_string(),
                    ..api::ProxyServer::from(&g.spec)
                }
            })
            .collect();
        Ok(Response::new(api::ListProxyRulesResponse {
            rules,
            servers,
        }))
    }

    async fn add_proxy_server(
        &self,
        req: Request<api::AddProxyServerRequest>,
    ) -> Result<Response<api::AddProxyServerResponse>, Status> {
        let spec = parse_server_spec(req.get_ref().server.as_ref())?;
        let line = spec.gateway.to_string();
        let mut rt = self.runtime.lock().await;
        // The engine has no cap of its own on servers; this one keeps the state file within
        // what nexd reads back at the next start.
        if !rt.state.servers.contains(&line) && rt.state.servers.len() >= limits::MAX_PROXY_SERVERS
        {
            return Err(Status::resource_exhausted(format!(
                "too many proxy servers added at runtime (at most {})",
                limits::MAX_PROXY_SERVERS
            )));
        }
        self.engine
            .add_gateway(spec.clone())
            .await
            .map_err(status)?;
        if !rt.state.servers.contains(&line) {
            rt.state.servers.push(line.clone());
        }
        if spec.allow.is_empty() {
            rt.state.server_allow.remove(&line);
        } else {
            let list = spec.allow.iter().map(|a| a.to_string()).collect();
            rt.state.server_allow.insert(line, list);
        }
        saved(&rt)?;
        Ok(Response::new(api::AddProxyServerResponse {}))
    }

    async fn remove_proxy_server(
        &self,
        req: Request<api::RemoveProxyServerRequest>,
    ) -> Result<Response<api::RemoveProxyServerResponse>, Status> {
        let gateway = parse_server(req.get_ref().server.as_ref())?;
        let mut rt = self.runtime.lock().await;
        self.engine.remove_gateway(gateway).await.map_err(status)?;
        let line = gateway.to_string();
        rt.state.servers.retain(|s| *s != line);
        rt.state.server_allow.remove(&line);
        saved(&rt)?;
        Ok(Response::new(api::RemoveProxyServerResponse {}))
    }

    async fn get_status(
        &self,
        _req: Request<api::GetStatusRequest>,
    ) -> Result<Response<api::GetStatusResponse>, Status> {
        let st = self.engine.status().await.map_err(status)?;
        Ok(Response::new(api::GetStatusResponse {
            public_key: st.public_key.to_string(),
            addresses: st.addresses.iter().map(|a| a.to_string()).collect(),
            listen_port: st.listen_addr.port() as u32,
            uptime_seconds: self.started.elapsed().as_secs(),
            peer_count: st.peers.len() as u32,
            rule_count: st.rules.len() as u32,
            tcp_flows: st.tcp_flows as u32,
            udp_flows: st.udp_flows as u32,
            host_sockets: st.host_sockets as u32,
            server_counters: st.gateways.iter().map(server_counters).collect(),
            open_fds: crate::fd_limit::open_fds().unwrap_or(0) as u32,
            fd_limit: crate::fd_limit::current()
                .unwrap_or(0)
                .min(u64::from(u32::MAX)) as u32,
            counters: st
                .counters
                .iter()
                .map(|&(group, name, value)| api::Counter {
                    name: name.to_string(),
                    value,
                    group: group.to_string(),
                })
                .chain(self.counters.snapshot())
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            rule_counters: st
                .rule_stats
                .iter()
                .map(|r| api::RuleCounters {
                    rule: Some(r.rule.into()),
                    active_flows: r.active as u64,
                    flows_total: r.counters.flows_total,
                    bytes_to_tunnel: r.counters.bytes_to_tunnel,
                    bytes_to_host: r.counters.bytes_to_host,
                    refused_not_allowed: r.counters.refused_not_allowed,
                    refused_rule_limit: r.counters.refused_rule_limit,
                })
                .collect(),
        }))
    }

    async fn list_peers(
        &self,
        _req: Request<api::ListPeersRequest>,
    ) -> Result<Response<api::ListPeersResponse>, Status> {
        let st = self.engine.status().await.map_err(status)?;
        let mut peers: Vec<api::Peer> = st
            .peers
            .into_iter()
            .map(|p| api::Peer {
                public_key: p.public_key.to_string(),
                endpoint: p.endpoint.map(|e| e.to_string()).unwrap_or_default(),
                allowed_ips: p.allowed_ips.iter().map(|n| n.to_string()).collect(),
                latest_handshake_seconds_ago: p.since_handshake.map(|d| d.as_secs()),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                persistent_keepalive: p.persistent_keepalive.unwrap_or(0) as u32,
                handshakes: p.handshakes,
                origin: String::new(),
            })
            .collect();
        let config = self.reloader.config_peers().await;
        let rt = self.runtime.lock().await;
        for p in peers.iter_mut() {
            let runtime = rt
                .state
                .added_peers
                .iter()
                .any(|s| s.public_key == p.public_key);
            p.origin = if runtime { "runtime" } else { "config" }.to_string();
        }
        for k in &rt.state.removed_peers {
            if config.iter().any(|c| c.to_string() == *k) {
                peers.push(api::Peer {
                    public_key: k.clone(),
                    origin: "config-removed".to_string(),
                    ..api::Peer::default()
                });
            }
        }
        peers.sort_by(|a, b| a.public_key.cmp(&b.public_key));
        Ok(Response::new(api::ListPeersResponse { peers }))
    }

    async fn add_peer(
        &self,
        req: Request<api::AddPeerRequest>,
    ) -> Result<Response<api::AddPeerResponse>, Status> {
        let (cfg, saved_peer) = peer_from_request(req.get_ref())?;
        let endpoint = match &cfg.endpoint {
            Some(ep) => Some(resolve(ep).await.map_err(Status::invalid_argument)?),
            None => None,
        };
        let mut rt = self.runtime.lock().await;
        self.engine
            .add_peer(cfg, endpoint, true)
            .await
            .map_err(status)?;
        rt.state.record_runtime_peer(saved_peer);
        saved(&rt)?;
        Ok(Response::new(api::AddPeerResponse {}))
    }

    async fn remove_peer(
        &self,
        req: Request<api::RemovePeerRequest>,
    ) -> Result<Response<api::RemovePeerResponse>, Status> {
        let key = parse_public_key(&req.get_ref().public_key)?;
        let mut rt = self.runtime.lock().await;
        self.engine.remove_peer(key).await.map_err(status)?;
        let k = key.to_string();
        let before = rt.state.added_peers.len();
        rt.state.added_peers.retain(|p| p.public_key != k);
        if rt.state.added_peers.len() == before && !rt.state.removed_peers.contains(&k) {
            // A peer from the config file: remember its removal.
            rt.state.removed_peers.push(k);
        }
        saved(&rt)?;
        Ok(Response::new(api::RemovePeerResponse {}))
    }

    async fn set_peer(
        &self,
        req: Request<api::SetPeerRequest>,
    ) -> Result<Response<api::SetPeerResponse>, Status> {
        let (key, mut update) = update_from_request(req.get_ref())?;
        let endpoint = req
            .get_ref()
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        if let Some(ep) = endpoint {
            update.endpoint = Some(resolve(ep).await.map_err(Status::invalid_argument)?);
        }
        let mut rt = self.runtime.lock().await;
        let mut cfg = self.engine.set_peer(key, update).await.map_err(status)?;
        // Save the endpoint as given (a name stays a name), else what the peer has now.
        if let Some(ep) = endpoint {
            cfg.endpoint = Some(ep.to_string());
        }
        rt.state.record_runtime_peer(saved_peer(&cfg));
        saved(&rt)?;
        Ok(Response::new(api::SetPeerResponse {}))
    }

    async fn reload(
        &self,
        _req: Request<api::ReloadRequest>,
    ) -> Result<Response<api::ReloadResponse>, Status> {
        let r = self
            .reloader
            .reload(&self.engine, &self.runtime)
            .await
            .map_err(Status::invalid_argument)?;
        crate::reload::log_report(&r, "nexctl");
        Ok(Response::new(api::ReloadResponse {
            peers_added: r.added as u32,
            peers_removed: r.removed as u32,
            peers_changed: r.changed as u32,
            warnings: r.warnings,
        }))
    }

    async fn get_version(
        &self,
        _req: Request<api::GetVersionRequest>,
    ) -> Result<Response<api::GetVersionResponse>, Status> {
        Ok(Response::new(api::GetVersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}
