//! The WireGuard device layer, sans I/O: peers, cryptokey routing, handshakes and timers.
//!
//! Datagrams from the network go in through [`WgDevice::handle_datagram`]; decrypted IP
//! packets and datagrams to send come out through callbacks, so the same code runs under
//! the engine's UDP socket and in in-memory tests.

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;
use nexd_common::{Key, PeerConfig};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Handshakes per second accepted before peers must present cookies.
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Scratch buffer size: the largest IP packet plus WireGuard overhead.
const SCRATCH: usize = 65536 + 64;

/// Why packets were dropped, for the status counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct WgCounters {
    /// Datagrams that were not valid WireGuard messages or failed authentication.
    pub invalid_datagrams: u64,
    /// Handshake initiations from keys that are not configured peers.
    pub unknown_peer: u64,
    /// Handshake messages from configured peers that failed to authenticate or decrypt.
    pub handshake_failed: u64,
    /// Handshakes answered with a cookie because the rate limit was reached.
    pub handshake_rate_limited: u64,
    /// Decrypted packets whose source is outside the sending peer's AllowedIPs.
    pub spoofed_source: u64,
    /// Outgoing packets whose destination no peer's AllowedIPs cover.
    pub no_route: u64,
    /// Outgoing packets for a peer with no known endpoint.
    pub no_endpoint: u64,
}

/// One configured peer and its tunnel state.
pub struct Peer {
    /// The peer's public key.
    pub public_key: Key,
    tunn: Tunn,
    /// Where to send; follows the source of the last authenticated datagram (roaming).
    pub endpoint: Option<SocketAddr>,
    /// Networks routed to this peer and accepted as sources from it.
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive interval, if any.
    pub persistent_keepalive: Option<u16>,
    preshared_key: Option<Key>,
    last_handshake: Option<Duration>,
    /// When the latest handshake completed; kept after the session expires.
    last_handshake_at: Option<std::time::Instant>,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Packets may wait in boringtun's queue for the session we answered the peer's
    /// initiation with: send them once the peer's first data packet confirms it.
    flush_pending: bool,
}

impl Peer {
    /// Time since the last completed handshake, if any.
    pub fn since_handshake(&self) -> Option<Duration> {
        self.tunn.time_since_last_handshake()
    }

    /// Time since the latest completed handshake, also after its session expired.
    pub fn handshake_age(&self) -> Option<Duration> {
        self.since_handshake()
            .or_else(|| self.last_handshake_at.map(|t| t.elapsed()))
    }

    /// Bytes (sent, received) through this peer's tunnel.
    pub fn traffic(&self) -> (usize, usize) {
        let (_, tx, rx, _, _) = self.tunn.stats();
        (tx, rx)
    }
}

/// All peers of this node, with the allowed-IPs routing table.
pub struct WgDevice {
    private: StaticSecret,
    public: PublicKey,
    peers: HashMap<u32, Peer>,
    by_key: HashMap<[u8; 32], u32>,
    /// (network, peer index), longest prefix first.
    routes: Vec<(IpNet, u32)>,
    next_index: u32,
    rate_limiter: Arc<RateLimiter>,
    last_rate_reset: Instant,
    scratch: Vec<u8>,
    /// Drop counters.
    pub counters: WgCounters,
}

/// Where the device wants a buffer delivered.
pub trait WgIo {
    /// Send `data` to `to` over UDP.
    fn send_datagram(&mut self, to: SocketAddr, data: &[u8]);
    /// Deliver a decrypted IP packet to the stack.
    fn deliver_packet(&mut self, packet: &[u8]);
}

/// Why a peer could not be added.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// A peer with this key already exists.
    #[error("peer {0} already exists")]
    Duplicate(Key),
    /// boringtun refused the key material.
    #[error("invalid key material for peer {0}")]
    InvalidKeys(Key),
    /// Another peer holds one of the AllowedIPs.
    #[error("allowed IP {net} is held by peer {holder}: remove it there first")]
    AllowedIpTaken {
        /// The network.
        net: IpNet,
        /// The peer that holds it.
        holder: Key,
    },
    /// No peer has this key.
    #[error("unknown peer {0}")]
    Unknown(Key),
    /// The key is the node's own public key.
    #[error("peer {0} is this interface's own public key; a node cannot be its own peer")]
    OwnKey(Key),
    /// The node already has the most peers it may hold.
    #[error("too many peers (at most {0})")]
    TooMany(usize),
}

/// Changes to a peer in place; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct PeerUpdate {
    /// New AllowedIPs.
    pub allowed_ips: Option<Vec<IpNet>>,
    /// New endpoint.
    pub endpoint: Option<SocketAddr>,
    /// New keepalive (`Some(None)`: off).
    pub persistent_keepalive: Option<Option<u16>>,
    /// New preshared key (`Some(None)`: none).
    pub preshared_key: Option<Option<Key>>,
}

impl WgDevice {
    /// A device with the node's private key and no peers.
    pub fn new(private_key: &Key) -> Self {
        let private = StaticSecret::from(private_key.0);
        let public = PublicKey::from(&private);
        let rate_limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        WgDevice {
            private,
            public,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            routes: Vec::new(),
            next_index: 1,
            rate_limiter,
            last_rate_reset: Instant::now(),
            scratch: vec![0; SCRATCH],
            counters: WgCounters::default(),
        }
    }

    /// The node's public key.
    pub fn public_key(&self) -> Key {
        Key(*self.public.as_bytes())
    }

    /// The first of `nets` that a peer other than `key` holds, and that peer.
    fn taken(&self, key: &Key, nets: &[IpNet]) -> Option<(IpNet, Key)> {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.trunc()).collect();
        self.peers
            .values()
            .filter(|p| p.public_key != *key)
            .find_map(|p| {
                p.allowed_ips
                    .iter()
                    .find(|n| nets.contains(&n.trunc()))
                    .map(|n| (*n, p.public_key))
            })
    }

    /// Adds a peer; `endpoint` is already resolved. With `exclusive`, AllowedIPs another
    /// peer holds are refused (the API); without, the new peer takes them over with a
    /// warning, as WireGuard does (the config file).
    pub fn add_peer(
        &mut self,
        cfg: &PeerConfig,
        endpoint: Option<SocketAddr>,
        exclusive: bool,
    ) -> Result<(), PeerError> {
        if self.by_key.contains_key(&cfg.public_key.0) {
            return Err(PeerError::Duplicate(cfg.public_key));
        }
        if cfg.public_key == self.public_key() {
            return Err(PeerError::OwnKey(cfg.public_key));
        }
        if self.by_key.len() >= nexd_common::limits::MAX_PEERS {
            return Err(PeerError::TooMany(nexd_common::limits::MAX_PEERS));
        }
        if exclusive {
            if let Some((net, holder)) = self.taken(&cfg.public_key, &cfg.allowed_ips) {
                return Err(PeerError::AllowedIpTaken { net, holder });
            }
        }
        // Indices occupy the top 24 bits of boringtun session ids; never reuse one, so a
        // stale session of a removed peer can never be mistaken for a new peer.
        let index = self.next_index;
        self.next_index = (self.next_index + 1) & 0x00ff_ffff;
        // As in WireGuard, a prefix belongs to one peer: the newest takes it over.
        let new_nets: Vec<IpNet> = cfg.allowed_ips.iter().map(|n| n.trunc()).collect();
        for p in self.peers.values_mut() {
            let before = p.allowed_ips.len();
            p.allowed_ips.retain(|n| !new_nets.contains(&n.trunc()));
            if p.allowed_ips.len() != before {
                tracing::warn!(peer = %p.public_key, new_owner = %cfg.public_key, "overlapping AllowedIPs: moved to the peer listed later");
            }
        }
        let tunn = Tunn::new(
            self.private.clone(),
            PublicKey::from(cfg.public_key.0),
            cfg.preshared_key.map(|k| k.0),
            cfg.persistent_keepalive,
            index,
            Some(self.rate_limiter.clone()),
        )
        .map_err(|_| PeerError::InvalidKeys(cfg.public_key))?;
        self.peers.insert(
            index,
            Peer {
                public_key: cfg.public_key,
                tunn,
                endpoint,
                allowed_ips: cfg.allowed_ips.clone(),
                persistent_keepalive: cfg.persistent_keepalive,
                preshared_key: cfg.preshared_key,
                last_handshake: None,
                last_handshake_at: None,
                handshakes: 0,
                flush_pending: false,
            },
        );
        self.by_key.insert(cfg.public_key.0, index);
        self.rebuild_routes();
        Ok(())
    }

    /// Starts a handshake with `key` now, if its endpoint is known. Used when a peer with a
    /// keepalive is added at runtime, so it is reachable at once, as wireguard-go does.
    pub fn initiate(&mut self, key: &Key, io: &mut impl WgIo) {
        let Some(peer) = self.by_key.get(&key.0).and_then(|i| self.peers.get_mut(i)) else {
            return;
        };
        let Some(ep) = peer.endpoint else { return };
        if let TunnResult::WriteToNetwork(out) = peer
            .tunn
            .format_handshake_initiation(&mut self.scratch, false)
        {
            io.send_datagram(ep, out);
        }
    }

    /// Changes a peer in place and returns its resulting settings. AllowedIPs and endpoint
    /// keep the session; a new keepalive or preshared key starts a new one (boringtun fixes
    /// both at creation), flows continue once it is up.
    pub fn update_peer(&mut self, key: &Key, upd: &PeerUpdate) -> Result<PeerConfig, PeerError> {
        let index = *self.by_key.get(&key.0).ok_or(PeerError::Unknown(*key))?;
        if let Some(nets) = &upd.allowed_ips {
            if let Some((net, holder)) = self.taken(key, nets) {
                return Err(PeerError::AllowedIpTaken { net, holder });
            }
        }
        let private = self.private.clone();
        let rate_limiter = self.rate_limiter.clone();
        let peer = self.peers.get_mut(&index).ok_or(PeerError::Unknown(*key))?;
        let keepalive = upd
            .persistent_keepalive
            .unwrap_or(peer.persistent_keepalive);
        let psk = upd.preshared_key.unwrap_or(peer.preshared_key);
        if keepalive != peer.persistent_keepalive || psk != peer.preshared_key {
            peer.tunn = Tunn::new(
                private,
                PublicKey::from(key.0),
                psk.map(|k| k.0),
                keepalive,
                index,
                Some(rate_limiter),
            )
            .map_err(|_| PeerError::InvalidKeys(*key))?;
            peer.persistent_keepalive = keepalive;
            peer.preshared_key = psk;
            peer.last_handshake = None;
        }
        if let Some(ep) = upd.endpoint {
            peer.endpoint = Some(ep);
        }
        if let Some(nets) = &upd.allowed_ips {
            peer.allowed_ips = nets.clone();
        }
        let cfg = PeerConfig {
            public_key: *key,
            preshared_key: peer.preshared_key,
            allowed_ips: peer.allowed_ips.clone(),
            endpoint: peer.endpoint.map(|e| e.to_string()),
            persistent_keepalive: peer.persistent_keepalive,
        };
        self.rebuild_routes();
        Ok(cfg)
    }

    /// Removes a peer; returns whether it existed.
    pub fn remove_peer(&mut self, key: &Key) -> bool {
        let Some(index) = self.by_key.remove(&key.0) else {
            return false;
        };
        self.peers.remove(&index);
        self.rebuild_routes();
        true
    }

    /// All peers.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    fn rebuild_routes(&mut self) {
        self.routes = self
            .peers
            .iter()
            .flat_map(|(&i, p)| p.allowed_ips.iter().map(move |n| (n.trunc(), i)))
            .collect();
        self.routes
            .sort_by_key(|r| std::cmp::Reverse(r.0.prefix_len()));
    }

    /// The public key of the peer whose AllowedIPs own `ip` (longest prefix).
    pub fn owner(&self, ip: IpAddr) -> Option<&Key> {
        self.route(ip)
            .and_then(|i| self.peers.get(&i))
            .map(|p| &p.public_key)
    }

    /// The peer whose AllowedIPs contain `dst` with the longest prefix.
    pub fn route(&self, dst: IpAddr) -> Option<u32> {
        self.routes
            .iter()
            .find(|(net, _)| net.contains(&dst))
            .map(|&(_, i)| i)
    }

    /// Handles one datagram from the network.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], io: &mut impl WgIo) {
        let is_handshake;
        let mut is_init = false;
        let mut is_data = false;
        let index = {
            let packet =
                match self
                    .rate_limiter
                    .verify_packet(Some(from.ip()), data, &mut self.scratch)
                {
                    Ok(p) => p,
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        self.counters.handshake_rate_limited += 1;
                        io.send_datagram(from, cookie);
                        return;
                    }
                    Err(_) => {
                        self.counters.invalid_datagrams += 1;
                        return;
                    }
                };
            is_handshake = matches!(
                packet,
                Packet::HandshakeInit(_) | Packet::HandshakeResponse(_)
            );
            match packet {
                Packet::HandshakeInit(ref init) => {
                    is_init = true;
                    match parse_handshake_anon(&self.private, &self.public, init)
                        .ok()
                        .and_then(|h| self.by_key.get(&h.peer_static_public).copied())
                    {
                        Some(i) => i,
                        None => {
                            self.counters.unknown_peer += 1;
                            return;
                        }
                    }
                }
                Packet::HandshakeResponse(r) => r.receiver_idx >> 8,
                Packet::PacketCookieReply(c) => c.receiver_idx >> 8,
                Packet::PacketData(d) => {
                    is_data = true;
                    d.receiver_idx >> 8
                }
            }
        };
        let Some(peer) = self.peers.get_mut(&index) else {
            self.counters.invalid_datagrams += 1;
            if is_data {
                self.answer_stale_session(from, io);
            }
            return;
        };
        let mut authenticated = false;
        let mut failed = false;
        match peer
            .tunn
            .decapsulate(Some(from.ip()), data, &mut self.scratch)
        {
            TunnResult::Done => authenticated = true,
            TunnResult::Err(_) if is_handshake => self.counters.handshake_failed += 1,
            TunnResult::Err(_) => {
                self.counters.invalid_datagrams += 1;
                failed = true;
            }
            TunnResult::WriteToNetwork(out) => {
                authenticated = true;
                io.send_datagram(from, out);
                // Flush packets that were queued while the handshake was in flight, once a
                // session can carry them. Not after answering the peer's initiation: that
                // session is unusable until the peer's first data packet, so boringtun
                // would start an initiation of its own for them, orphaning one already in
                // flight when both sides initiated at once (its response is then refused,
                // and traffic waited ~10 s for the next handshake).
                if is_init {
                    peer.flush_pending = true;
                } else {
                    Self::flush_queued(peer, from, &mut self.scratch, io);
                }
            }
            TunnResult::WriteToTunnelV4(packet, src) => {
                authenticated = true;
                Self::accept_inner(
                    &self.routes,
                    index,
                    peer,
                    IpAddr::V4(src),
                    packet,
                    io,
                    &mut self.counters,
                );
            }
            TunnResult::WriteToTunnelV6(packet, src) => {
                authenticated = true;
                Self::accept_inner(
                    &self.routes,
                    index,
                    peer,
                    IpAddr::V6(src),
                    packet,
                    io,
                    &mut self.counters,
                );
            }
        }
        if authenticated {
            peer.endpoint = Some(from);
            if is_data && std::mem::take(&mut peer.flush_pending) {
                Self::flush_queued(peer, from, &mut self.scratch, io);
            }
        }
        if failed && is_data {
            self.answer_stale_session(from, io);
        }
    }

    /// Sends the packets boringtun queued for `peer` while it had no usable session.
    fn flush_queued(peer: &mut Peer, to: SocketAddr, scratch: &mut [u8], io: &mut impl WgIo) {
        while let TunnResult::WriteToNetwork(out) = peer.tunn.decapsulate(None, &[], scratch) {
            io.send_datagram(to, out);
        }
    }

    /// A data packet from `from` matched no session: typically a peer still using a session
    /// from before this node restarted. WireGuard would leave it to the peer's 15 s
    /// REKEY_TIMEOUT + KEEPALIVE_TIMEOUT timer, stalling its flows and new connections that
    /// long; instead, if `from` is the known endpoint of a peer we have no session with, we
    /// start a handshake with it now. The packet is unauthenticated, so nothing is sent to
    /// `from` unless it already is that peer's endpoint, and boringtun sends at most one
    /// initiation per REKEY_TIMEOUT while a handshake is in progress.
    fn answer_stale_session(&mut self, from: SocketAddr, io: &mut impl WgIo) {
        let Some(peer) = self
            .peers
            .values_mut()
            .find(|p| p.endpoint == Some(from) && p.since_handshake().is_none())
        else {
            return;
        };
        if let TunnResult::WriteToNetwork(out) = peer
            .tunn
            .format_handshake_initiation(&mut self.scratch, false)
        {
            io.send_datagram(from, out);
        }
    }

    /// Cryptokey routing: boringtun does not check the inner source, so we must. As in
    /// WireGuard, the source's longest-prefix route must lead back to the sending peer, so a
    /// peer with a wide range cannot pose as a peer that owns a narrower one.
    fn accept_inner(
        routes: &[(IpNet, u32)],
        index: u32,
        peer: &Peer,
        src: IpAddr,
        packet: &[u8],
        io: &mut impl WgIo,
        counters: &mut WgCounters,
    ) {
        let owner = routes
            .iter()
            .find(|(n, _)| n.contains(&src))
            .map(|&(_, i)| i);
        if owner == Some(index) {
            io.deliver_packet(packet);
        } else {
            counters.spoofed_source += 1;
            tracing::debug!(peer = %peer.public_key, %src, "dropped packet with source outside AllowedIPs");
        }
    }

    /// Encrypts an IP packet from the stack and sends it to the peer that owns its destination.
    pub fn send_packet(&mut self, packet: &[u8], io: &mut impl WgIo) {
        let Some(dst) = Tunn::dst_address(packet) else {
            self.counters.invalid_datagrams += 1;
            return;
        };
        let Some(peer) = self.route(dst).and_then(|i| self.peers.get_mut(&i)) else {
            self.counters.no_route += 1;
            return;
        };
        let need = (packet.len() + 32).max(148);
        if self.scratch.len() < need {
            self.scratch.resize(need, 0);
        }
        match peer.tunn.encapsulate(packet, &mut self.scratch) {
            TunnResult::WriteToNetwork(out) => match peer.endpoint {
                Some(ep) => io.send_datagram(ep, out),
                None => self.counters.no_endpoint += 1,
            },
            TunnResult::Err(e) => tracing::debug!(peer = %peer.public_key, "encapsulate: {e:?}"),
            // Queued inside boringtun until the handshake completes.
            _ => {}
        }
    }

    /// Runs WireGuard timers (handshake retries, keepalives, rekeying). Call every ~100 ms.
    pub fn tick(&mut self, io: &mut impl WgIo) {
        if self.last_rate_reset.elapsed() >= Duration::from_secs(1) {
            self.rate_limiter.reset_count();
            self.last_rate_reset = Instant::now();
        }
        for peer in self.peers.values_mut() {
            match peer.tunn.update_timers(&mut self.scratch) {
                TunnResult::WriteToNetwork(out) => match peer.endpoint {
                    Some(ep) => io.send_datagram(ep, out),
                    None => self.counters.no_endpoint += 1,
                },
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    tracing::debug!(peer = %peer.public_key, "session expired");
                }
                TunnResult::Err(e) => tracing::debug!(peer = %peer.public_key, "timers: {e:?}"),
                _ => {}
            }
            let since = peer.tunn.time_since_last_handshake();
            if let Some(s) = since {
                if peer.last_handshake.is_none_or(|prev| s < prev) {
                    peer.handshakes += 1;
                    tracing::info!(peer = %peer.public_key, endpoint = ?peer.endpoint, "handshake completed");
                }
                peer.last_handshake_at = std::time::Instant::now().checked_sub(s);
            }
            peer.last_handshake = since;
        }
    }

    /// Whether a handshake with `key` has completed.
    pub fn has_session(&self, key: &Key) -> bool {
        self.by_key
            .get(&key.0)
            .and_then(|i| self.peers.get(i))
            .is_some_and(|p| p.since_handshake().is_some())
    }
}
