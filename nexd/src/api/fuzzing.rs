//! In-memory harness for the `api` fuzz target: arbitrary request sequences through the
//! real service layer ([`ApiService`]) over a stub engine that keeps rules, proxy servers and
//! peers in maps.
//!
//! An input is a sequence of records: one byte picking the method, a 16-bit big-endian
//! length, that many bytes decoded as the method's protobuf request (undecodable bytes are
//! skipped, as tonic would refuse them). Each input starts from an empty service. Checked beyond "no panic": every error is one line
//! of bounded length, and after each call the rules, servers and peers the service reports are the
//! ones the stub engine holds.

use super::{ApiService, RuntimeState};
use crate::engine::wg::PeerError;
use crate::engine::{Command, EngineError, EngineHandle, EngineStatus, PeerStatus};
use crate::reload::Reloader;
use crate::state::State;
use nexd_common::api::{self, nexd_server::Nexd};
use nexd_common::{Key, NetworkConfig, PeerConfig, ProxyRule, RuleSpec};
use prost::Message;
use std::collections::btree_map::{BTreeMap, Entry};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};

/// Records per input; more are ignored (keeps every input fast).
const MAX_RECORDS: usize = 64;
/// The longest error message the API may send (a rule, a key and a reason, not an input).
const MAX_MESSAGE: usize = 1024;

const CONFIG: &str = "[Interface]\nPrivateKey = 4Ag1ZnFe6VhGI4cAiDpzqGrP9m9rCrdYHiA7vTLHkl0=\nAddress = 100.100.0.1/24, fd00::1/64\n";

/// What the stub engine holds.
#[derive(Default)]
struct Model {
    rules: Vec<RuleSpec>,
    gateways: Vec<nexd_common::GatewaySpec>,
    peers: BTreeMap<[u8; 32], PeerConfig>,
}

impl Model {
    fn answer(&mut self, cmd: Command) {
        match cmd {
            Command::AddRule(spec, reply) => {
                let r = if self.rules.iter().any(|s| s.rule == spec.rule) {
                    Err(EngineError::DuplicateRule(spec.rule))
                } else if self.rules.len() >= nexd_common::limits::MAX_RULES {
                    Err(EngineError::TooManyRules(self.rules.len()))
                } else {
                    self.rules.push(spec);
                    Ok(())
                };
                let _ = reply.send(r);
            }
            Command::RemoveRule(rule, reply) => {
                let before = self.rules.len();
                self.rules.retain(|s| s.rule != rule);
                let r = match self.rules.len() < before {
                    true => Ok(()),
                    false => Err(EngineError::UnknownRule(rule)),
                };
                let _ = reply.send(r);
            }
            Command::AddGateway(spec, reply) => {
                let r = if self.gateways.iter().any(|s| s.gateway == spec.gateway) {
                    Err(EngineError::DuplicateGateway(spec.gateway))
                } else {
                    self.gateways.push(spec);
                    Ok(())
                };
                let _ = reply.send(r);
            }
            Command::RemoveGateway(gateway, reply) => {
                let before = self.gateways.len();
                self.gateways.retain(|s| s.gateway != gateway);
                let r = match self.gateways.len() < before {
                    true => Ok(()),
                    false => Err(EngineError::UnknownGateway(gateway)),
                };
                let _ = reply.send(r);
            }
            Command::AddPeer(cfg, _, _, reply) => {
                let key = cfg.public_key;
                let r = match self.peers.entry(key.0) {
                    Entry::Occupied(_) => Err(PeerError::Duplicate(key).into()),
                    Entry::Vacant(e) => {
                        e.insert(cfg);
                        Ok(())
                    }
                };
                let _ = reply.send(r);
            }
            Command::SetPeer(key, update, reply) => {
                let r = match self.peers.get_mut(&key.0) {
                    Some(p) => {
                        if let Some(ips) = update.allowed_ips {
                            p.allowed_ips = ips;
                        }
                        if let Some(k) = update.persistent_keepalive {
                            p.persistent_keepalive = k;
                        }
                        if let Some(k) = update.preshared_key {
                            p.preshared_key = k;
                        }
                        Ok(p.clone())
                    }
                    None => Err(EngineError::UnknownPeer(key)),
                };
                let _ = reply.send(r);
            }
            Command::RemovePeer(key, reply) => {
                let r = match self.peers.remove(&key.0) {
                    Some(_) => Ok(()),
                    None => Err(EngineError::UnknownPeer(key)),
                };
                let _ = reply.send(r);
            }
            Command::Status(reply) => {
                let _ = reply.send(Ok(self.status()));
            }
            Command::StopAccepting(reply) | Command::ResetAll(reply) => {
                let _ = reply.send(Ok(0));
            }
            Command::DrainProgress(reply) => {
                let _ = reply.send(Ok((0, 0)));
            }
        }
    }

    fn status(&self) -> EngineStatus {
        EngineStatus {
            public_key: Key([1; 32]),
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 51820)),
            addresses: Vec::new(),
            rules: self.rules.clone(),
            rule_stats: Vec::new(),
            gateways: self
                .gateways
                .iter()
                .map(|spec| crate::engine::gateways::GatewayStats {
                    spec: spec.clone(),
                    active: 0,
                    counters: Default::default(),
                })
                .collect(),
            peers: self
                .peers
                .values()
                .map(|p| PeerStatus {
                    public_key: p.public_key,
                    endpoint: None,
                    allowed_ips: p.allowed_ips.clone(),
                    since_handshake: None,
                    handshakes: 0,
                    tx_bytes: 0,
                    rx_bytes: 0,
                    persistent_keepalive: p.persistent_keepalive,
                })
                .collect(),
            tcp_flows: 0,
            udp_flows: 0,
            host_sockets: 0,
            counters: Vec::new(),
        }
    }
}

/// A current-thread runtime on which each input gets a fresh service and stub engine, so
/// inputs are independent (a crash reproduces from its input alone).
pub struct Harness {
    rt: tokio::runtime::Runtime,
}

/// The service and the model behind it, for one input.
struct Session {
    service: ApiService,
    model: Arc<std::sync::Mutex<Model>>,
}

impl Harness {
    /// The runtime.
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Harness { rt }
    }

    /// Runs one input (see the module comment); panics on a broken property.
    pub fn run(&self, data: &[u8]) {
        self.rt.block_on(async {
            let session = Session::new();
            session.run(data).await;
        });
    }
}

impl Session {
    /// A service with no rules and no peers, changes not saved to disk.
    fn new() -> Self {
        let (tx, mut rx) = mpsc::channel::<Command>(16);
        let model = Arc::new(std::sync::Mutex::new(Model::default()));
        let m = model.clone();
        // Ends when the service (the only sender) is dropped with the session.
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                m.lock().unwrap_or_else(|e| e.into_inner()).answer(cmd);
            }
        });
        let config = NetworkConfig::parse(CONFIG).expect("fixed config parses");
        let reloader = Arc::new(Reloader::new(
            std::path::Path::new("/nonexistent/nexd-fuzz.conf"),
            config,
        ));
        let runtime = Arc::new(Mutex::new(RuntimeState {
            store: None,
            state: State::default(),
        }));
        let service = ApiService::new(EngineHandle::detached(tx), runtime, reloader);
        Session { service, model }
    }

    async fn run(&self, data: &[u8]) {
        let mut rest = data;
        for _ in 0..MAX_RECORDS {
            let [op, hi, lo, tail @ ..] = rest else {
                return;
            };
            let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
            let (body, next) = tail.split_at(len);
            rest = next;
            self.call(*op, body).await;
            self.check_lists().await;
        }
    }

    async fn call(&self, op: u8, body: &[u8]) {
        use tonic::Request;
        let s = &self.service;
        let r: Result<(), tonic::Status> = match op % 10 {
            0 => match api::AddProxyRuleRequest::decode(body) {
                Ok(m) => s.add_proxy_rule(Request::new(m)).await.map(drop),
                Err(_) => Ok(()),
            },
            1 => match api::RemoveProxyRuleRequest::decode(body) {
                Ok(m) => s.remove_proxy_rule(Request::new(m)).await.map(drop),
                Err(_) => Ok(()),
            },
            2 => match api::AddPeerRequest::decode(body) {
                Ok(mut m) => {
                    m.endpoint = literal_endpoint(&m.endpoint);
                    s.add_peer(Request::new(m)).await.map(drop)
                }
                Err(_) => Ok(()),
            },
            3 => match api::SetPeerRequest::decode(body) {
                Ok(mut m) => {
                    m.endpoint = m.endpoint.as_deref().map(literal_endpoint);
                    s.set_peer(Request::new(m)).await.map(drop)
                }
                Err(_) => Ok(()),
            },
            4 => match api::RemovePeerRequest::decode(body) {
                Ok(m) => s.remove_peer(Request::new(m)).await.map(drop),
                Err(_) => Ok(()),
            },
            5 => s
                .get_status(Request::new(api::GetStatusRequest {}))
                .await
                .map(drop),
            6 => s
                .list_proxy_rules(Request::new(api::ListProxyRulesRequest {}))
                .await
                .map(drop),
            7 => s
                .list_peers(Request::new(api::ListPeersRequest {}))
                .await
                .map(drop),
            8 => match api::AddProxyServerRequest::decode(body) {
                Ok(m) => s.add_proxy_server(Request::new(m)).await.map(drop),
                Err(_) => Ok(()),
            },
            _ => match api::RemoveProxyServerRequest::decode(body) {
                Ok(m) => s.remove_proxy_server(Request::new(m)).await.map(drop),
                Err(_) => Ok(()),
            },
        };
        if let Err(e) = r {
            let m = e.message();
            assert!(!m.contains('\n'), "error of more than one line: {m:?}");
            assert!(m.len() <= MAX_MESSAGE, "error of {} bytes: {m:?}", m.len());
        }
    }

    /// What ListProxyRules and ListPeers report is what the engine holds.
    async fn check_lists(&self) {
        use tonic::Request;
        let api::ListProxyRulesResponse { rules, servers } = self
            .service
            .list_proxy_rules(Request::new(api::ListProxyRulesRequest {}))
            .await
            .expect("list rules")
            .into_inner();
        let peers = self
            .service
            .list_peers(Request::new(api::ListPeersRequest {}))
            .await
            .expect("list peers")
            .into_inner()
            .peers;
        let model = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let listed: Vec<ProxyRule> = rules
            .iter()
            .map(|r| ProxyRule::try_from(r).expect("listed rule parses back"))
            .collect();
        let held: Vec<ProxyRule> = model.rules.iter().map(|s| s.rule).collect();
        assert_eq!(listed, held, "listed rules differ from the engine's");
        let listed: Vec<nexd_common::GatewaySpec> = servers
            .iter()
            .map(|s| nexd_common::GatewaySpec::try_from(s).expect("listed server parses back"))
            .collect();
        assert_eq!(
            listed, model.gateways,
            "listed servers differ from the engine's"
        );
        let active = peers.iter().filter(|p| p.origin != "config-removed");
        assert_eq!(active.count(), model.peers.len(), "listed peers differ");
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// The endpoint if it is an address literal, else none: a name would be resolved through
/// DNS, and the fuzzer must not send traffic anywhere.
fn literal_endpoint(e: &str) -> String {
    match e.trim().parse::<SocketAddr>() {
        Ok(_) => e.to_string(),
        Err(_) => String::new(),
    }
}

/// Encodes `records` as one input: (method byte, request).
pub fn input(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (op, body) in records {
        out.push(*op);
        out.extend((body.len() as u16).to_be_bytes());
        out.extend(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(direction: api::Direction, rule: &str, peers: &[&str]) -> api::ProxyRule {
        api::ProxyRule {
            direction: direction as i32,
            rule: rule.to_string(),
            allowed_peers: peers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// An AddProxyServerRequest (also decodes as a RemoveProxyServerRequest).
    fn server(kind: &str, listen: &str, allow: &[&str]) -> Vec<u8> {
        let kind = match kind {
            "socks5" => api::ProxyServerKind::Socks5,
            _ => api::ProxyServerKind::Http,
        };
        api::AddProxyServerRequest {
            server: Some(api::ProxyServer {
                kind: kind as i32,
                listen: listen.to_string(),
                allow_destinations: allow.iter().map(|s| s.to_string()).collect(),
                origin: String::new(),
            }),
        }
        .encode_to_vec()
    }

    /// The seeds in fuzz/corpus/api, as the fuzz target reads them.
    pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let add = |r: api::ProxyRule| api::AddProxyRuleRequest { rule: Some(r) }.encode_to_vec();
        let key = Key([7; 32]).to_string();
        let peer = api::AddPeerRequest {
            public_key: key.clone(),
            allowed_ips: vec!["100.100.0.2/32".into(), "fd00::2".into()],
            endpoint: "127.0.0.1:51821".into(),
            persistent_keepalive: 25,
            preshared_key: String::new(),
        }
        .encode_to_vec();
        let set = api::SetPeerRequest {
            public_key: key.clone(),
            allowed_ips: vec!["100.100.0.0/24".into()],
            persistent_keepalive: Some(0),
            ..Default::default()
        }
        .encode_to_vec();
        let remove = api::RemovePeerRequest { public_key: key }.encode_to_vec();
        vec![
            (
                "seed-rules",
                input(&[
                    (
                        0,
                        add(rule(
                            api::Direction::Ingress,
                            "tcp:443:127.0.0.1:8443",
                            &["100.100.0.0/24"],
                        )),
                    ),
                    (
                        0,
                        add(rule(api::Direction::Egress, "udp:5353:100.100.0.2:53", &[])),
                    ),
                    (6, vec![]),
                    (
                        1,
                        api::RemoveProxyRuleRequest {
                            rule: Some(rule(
                                api::Direction::Ingress,
                                "tcp:443:127.0.0.1:8443",
                                &[],
                            )),
                        }
                        .encode_to_vec(),
                    ),
                    (5, vec![]),
                ]),
            ),
            (
                "seed-peers",
                input(&[
                    (2, peer.clone()),
                    (2, peer),
                    (3, set),
                    (7, vec![]),
                    (4, remove.clone()),
                    (4, remove),
                ]),
            ),
            (
                "seed-servers",
                input(&[
                    (
                        8,
                        server("socks5", "1080", &["100.100.0.0/24", "[fd00::2]:22"]),
                    ),
                    (8, server("socks5", "127.0.0.1:1080", &[])),
                    (8, server("http-proxy", "[::1]:3128", &[])),
                    (8, server("http-proxy", "0", &[])),
                    (6, vec![]),
                    (9, server("http-proxy", "[::1]:3128", &[])),
                    (9, server("http-proxy", "[::1]:3128", &[])),
                    (5, vec![]),
                ]),
            ),
            (
                "seed-oversized",
                input(&[(
                    0,
                    add(rule(api::Direction::Ingress, &"9".repeat(3000), &[])),
                )]),
            ),
        ]
    }

    #[test]
    fn seeds_reach_the_service_and_keep_the_lists_in_step() {
        let h = Harness::new();
        for (name, data) in seeds() {
            let model = h.rt.block_on(async {
                let s = Session::new();
                s.run(&data).await;
                let m = s.model.lock().unwrap();
                (m.rules.len(), m.peers.len(), m.gateways.len())
            });
            match name {
                "seed-rules" => assert_eq!(model, (1, 0, 0), "{name}"),
                "seed-peers" => assert_eq!(model, (0, 0, 0), "{name}"),
                "seed-servers" => assert_eq!(model, (0, 0, 1), "{name}"),
                _ => {}
            }
        }
        // Noise is harmless.
        let mut x = 0x9e37_79b9_u32;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        h.run(&noise);
    }

    /// Writes the seeds: `cargo test -p nexd --lib write_api_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_api_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/api");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds() {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}
