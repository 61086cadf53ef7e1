//! The data path: one task owns the WireGuard peers, the smoltcp stack and every flow.
//!
//! Host-side tasks (listeners, per-connection I/O) talk to it through one bounded event
//! channel; the control plane talks to it through [`EngineHandle`] commands with oneshot
//! replies. Nothing on the hot path takes a lock.

pub mod device;
mod event_loop;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod gateways;
pub mod host;
mod loops;
mod memory;
pub mod ports;
pub mod rules;
pub mod stack;
mod syn_guard;
mod tcp;
mod tcp_demux;
mod timestamps;
mod udp;
mod udp_batch;
pub mod wg;

#[cfg(test)]
mod core_tests;

use nexd_common::{Gateway, GatewaySpec, Key, NetworkConfig, PeerConfig, ProxyRule, RuleSpec};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use event_loop::{start, EngineExit};

/// Tunables with their defaults.
#[derive(Debug, Clone)]
pub struct Tunables {
    /// Tunnel MTU.
    pub mtu: usize,
    /// UDP flows without traffic for this long are closed.
    pub udp_idle_timeout: Duration,
    /// Give up connecting to a destination after this long.
    pub connect_timeout: Duration,
    /// Open flows (TCP and UDP, all rules) beyond which new ones are refused.
    pub max_flows: usize,
    /// Open flows through one rule beyond which its new ones are refused.
    pub max_flows_per_rule: usize,
    /// Bytes a TCP flow holds in each direction at first (its smoltcp buffer and window).
    pub max_pending_bytes: usize,
    /// Largest smoltcp buffer (and window) per direction a busy flow may grow to.
    pub max_tcp_window: usize,
    /// Congestion controller of tunnel-side TCP flows.
    pub tcp_congestion: stack::TcpCongestion,
    /// Tunnel-side source ports of egress flows (inclusive).
    pub ephemeral_ports: (u16, u16),
}

/// Default for [`Tunables::max_tcp_window`].
pub const DEFAULT_MAX_TCP_WINDOW: usize = 8 * 1024 * 1024;

/// Default for [`Tunables::max_flows`].
pub const DEFAULT_MAX_FLOWS: usize = 32768;
/// Default for [`Tunables::max_flows_per_rule`].
pub const DEFAULT_MAX_FLOWS_PER_RULE: usize = 16384;

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            mtu: 1420,
            udp_idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_flows: DEFAULT_MAX_FLOWS,
            max_flows_per_rule: DEFAULT_MAX_FLOWS_PER_RULE,
            max_pending_bytes: stack::TCP_BUFFER,
            max_tcp_window: DEFAULT_MAX_TCP_WINDOW,
            tcp_congestion: stack::TcpCongestion::default(),
            ephemeral_ports: ports::DEFAULT_RANGE,
        }
    }
}

/// Everything the engine needs to start.
pub struct EngineConfig {
    /// Identity, addresses and peers.
    pub network: NetworkConfig,
    /// Peer endpoints, resolved, in the same order as `network.peers`.
    pub endpoints: Vec<Option<SocketAddr>>,
    /// Tunables.
    pub tunables: Tunables,
    /// Settings shared by the proxy servers (SOCKS5 names, credentials).
    pub gateway: crate::gateway::GatewayOptions,
}

/// Errors the engine reports for commands.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The rule is already active.
    #[error("rule already exists: {0}")]
    DuplicateRule(ProxyRule),
    /// As many rules are active as nexd holds ([`nexd_common::limits::MAX_RULES`]).
    #[error("too many rules: {0} are active, the most nexd holds; remove one first")]
    TooManyRules(usize),
    /// The rule is not active.
    #[error("no such rule: {0}")]
    UnknownRule(ProxyRule),
    /// A proxy server already listens there.
    #[error("proxy server already exists: {0}")]
    DuplicateGateway(Gateway),
    /// As many proxy servers run as nexd holds ([`nexd_common::limits::MAX_PROXY_SERVERS`]).
    #[error("too many proxy servers: {0} are running, the most nexd holds; remove one first")]
    TooManyGateways(usize),
    /// No proxy server listens there.
    #[error("no such proxy server: {0}")]
    UnknownGateway(Gateway),
    /// A proxy server's address could not be bound.
    #[error("cannot listen for {gateway}: {reason}")]
    GatewayUnavailable {
        /// The server.
        gateway: Gateway,
        /// Why, in words.
        reason: String,
    },
    /// The host port of an egress rule could not be bound.
    #[error("cannot listen for {rule}: port {port} {reason}")]
    PortUnavailable {
        /// The rule.
        rule: ProxyRule,
        /// The port.
        port: u16,
        /// Why, in words.
        reason: String,
    },
    /// A rule conflicts with the node's configuration.
    #[error("invalid rule {rule}: {reason}")]
    InvalidRule {
        /// The rule.
        rule: ProxyRule,
        /// Why.
        reason: String,
    },
    /// Peer errors.
    #[error(transparent)]
    Peer(#[from] wg::PeerError),
    /// The peer is not configured.
    #[error("no such peer: {0}")]
    UnknownPeer(Key),
    /// The WireGuard socket could not be opened.
    #[error("cannot open WireGuard UDP port {port}: {source}")]
    WireGuardSocket {
        /// The port asked for (0 = any).
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// The engine thread could not be started.
    #[error("cannot start the engine thread: {0}")]
    Thread(String),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

/// A snapshot of one peer for status output.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// Public key.
    pub public_key: Key,
    /// Current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// AllowedIPs.
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// Time since the latest handshake (kept after its session expires).
    pub since_handshake: Option<Duration>,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Keepalive interval.
    pub persistent_keepalive: Option<u16>,
}

/// A snapshot of the engine for status output.
#[derive(Debug, Clone)]
pub struct EngineStatus {
    /// The node's public key.
    pub public_key: Key,
    /// The bound WireGuard UDP address.
    pub listen_addr: SocketAddr,
    /// Tunnel addresses.
    pub addresses: Vec<ipnet::IpNet>,
    /// Active rules.
    pub rules: Vec<RuleSpec>,
    /// Active rules' flow counts and counters.
    pub rule_stats: Vec<rules::RuleStats>,
    /// Proxy servers with their flow counts and counters.
    pub gateways: Vec<gateways::GatewayStats>,
    /// Peers.
    pub peers: Vec<PeerStatus>,
    /// Open TCP flows.
    pub tcp_flows: usize,
    /// Open UDP flows.
    pub udp_flows: usize,
    /// Host sockets held for flows and rules: TCP connections (until closed), ingress UDP
    /// flows' sockets and rule listeners.
    pub host_sockets: usize,
    /// Counters: group, name, value.
    pub counters: Vec<(&'static str, &'static str, u64)>,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// Requests from the control plane.
pub enum Command {
    /// Start a rule; replies once its listener is up.
    AddRule(RuleSpec, Reply<()>),
    /// Stop a rule's listener; live flows drain.
    RemoveRule(ProxyRule, Reply<()>),
    /// Start a proxy server; replies once it listens.
    AddGateway(GatewaySpec, Reply<()>),
    /// Stop a proxy server's listener; live flows drain.
    RemoveGateway(Gateway, Reply<()>),
    /// Add a peer; `true`: refuse AllowedIPs another peer holds.
    AddPeer(PeerConfig, Option<SocketAddr>, bool, Reply<()>),
    /// Change a peer in place; replies with its resulting settings.
    SetPeer(Key, wg::PeerUpdate, Reply<PeerConfig>),
    /// Remove a peer.
    RemovePeer(Key, Reply<()>),
    /// Status snapshot.
    Status(Reply<EngineStatus>),
    /// Shutdown, first step: stop accepting (every listener closes, UDP flows end); replies
    /// with the TCP flows still open, which go on.
    StopAccepting(Reply<usize>),
    /// Shutdown: (TCP flows open, host connections still being reset).
    DrainProgress(Reply<(usize, usize)>),
    /// Shutdown, last step: reset every open TCP flow both ways; replies with how many.
    ResetAll(Reply<usize>),
}

/// The control plane's handle on a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    /// Cancelling this stops the engine.
    pub cancel: CancellationToken,
}

impl EngineHandle {
    /// A handle on whatever answers `commands`: the API fuzz target's stub engine.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn detached(commands: mpsc::Sender<Command>) -> Self {
        EngineHandle {
            commands,
            cancel: CancellationToken::new(),
        }
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Starts a rule. Returns once the listener accepts connections.
    pub async fn add_rule(&self, rule: RuleSpec) -> Result<(), EngineError> {
        self.call(|r| Command::AddRule(rule, r)).await
    }

    /// Stops a rule at once; never waits for live connections.
    pub async fn remove_rule(&self, rule: ProxyRule) -> Result<(), EngineError> {
        self.call(|r| Command::RemoveRule(rule, r)).await
    }

    /// Starts a proxy server. Returns once it accepts connections.
    pub async fn add_gateway(&self, spec: GatewaySpec) -> Result<(), EngineError> {
        self.call(|r| Command::AddGateway(spec, r)).await
    }

    /// Stops a proxy server's listener at once; never waits for live connections.
    pub async fn remove_gateway(&self, gateway: Gateway) -> Result<(), EngineError> {
        self.call(|r| Command::RemoveGateway(gateway, r)).await
    }

    /// Adds a peer. `exclusive`: refuse AllowedIPs another peer holds (the API); otherwise
    /// the new peer takes them over, as WireGuard does with a config file.
    pub async fn add_peer(
        &self,
        peer: PeerConfig,
        endpoint: Option<SocketAddr>,
        exclusive: bool,
    ) -> Result<(), EngineError> {
        self.call(|r| Command::AddPeer(peer, endpoint, exclusive, r))
            .await
    }

    /// Changes a peer in place; returns its resulting settings.
    pub async fn set_peer(
        &self,
        key: Key,
        update: wg::PeerUpdate,
    ) -> Result<PeerConfig, EngineError> {
        self.call(|r| Command::SetPeer(key, update, r)).await
    }

    /// Removes a peer.
    pub async fn remove_peer(&self, key: Key) -> Result<(), EngineError> {
        self.call(|r| Command::RemovePeer(key, r)).await
    }

    /// A status snapshot.
    pub async fn status(&self) -> Result<EngineStatus, EngineError> {
        self.call(Command::Status).await
    }

    /// Stops accepting new flows (shutdown); returns the TCP flows still open.
    pub async fn stop_accepting(&self) -> Result<usize, EngineError> {
        self.call(Command::StopAccepting).await
    }

    /// (TCP flows open, host connections still being reset).
    pub async fn drain_progress(&self) -> Result<(usize, usize), EngineError> {
        self.call(Command::DrainProgress).await
    }

    /// Resets every open TCP flow, to the peer and to the host; returns how many.
    pub async fn reset_all(&self) -> Result<usize, EngineError> {
        self.call(Command::ResetAll).await
    }
}
