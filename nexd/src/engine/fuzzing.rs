//! In-memory harness for the engine fuzz targets in `fuzz/` (and their regression tests).
//!
//! A [`Node`] is what the event loop owns minus its sockets: the [`WgDevice`] and the smoltcp
//! [`NetStack`], with an ingress TCP port (kept listening as the engine does) and a bound UDP
//! socket, both answering like an echo server. A [`FuzzPeer`] is a configured WireGuard peer
//! driven by the harness with a plain boringtun [`Tunn`], so inputs can be real handshakes and
//! real encrypted packets as well as noise.
//!
//! Both entry points take arbitrary bytes, split them into records and never panic on their
//! own: a panic means the engine (or this harness) has a bug. Every loop is bounded, so a hang
//! is one too. One property is checked beyond "no panic": every packet the WireGuard layer
//! hands to the stack comes from the fuzzing peer's AllowedIPs (cryptokey routing).

use super::device::QueueDevice;
use super::stack::NetStack;
use super::wg::{WgDevice, WgIo};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;
use nexd_common::{Key, PeerConfig};
use smoltcp::iface::{Config, Interface, SocketHandle};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
    TcpSeqNumber, UdpPacket,
};
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The node's IPv4 tunnel address.
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 0, 1);
/// The node's IPv6 tunnel address.
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
/// The fuzzing peer's tunnel address (inside its AllowedIPs).
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 0, 2);
/// The fuzzing peer's IPv6 tunnel address.
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// The ingress TCP port the node listens on.
pub const TCP_PORT: u16 = 443;
/// The UDP port the node has a socket bound to.
pub const UDP_PORT: u16 = 53;
/// The fuzzing peer's configured endpoint.
pub const PEER_ENDPOINT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 51821);

const MTU: usize = 1420;
/// The fuzzing peer's AllowedIPs; the second peer owns a narrower range inside them.
const PEER_NETS: [&str; 2] = ["100.100.0.0/16", "fd00::/64"];
const OTHER_PEER_NETS: [&str; 2] = ["100.100.5.0/24", "fd00::5/128"];
/// Datagram sources a record can claim: the peer's endpoint, a roamed one, IPv6, a stranger.
const SOURCES: [&str; 4] = [
    "127.0.0.1:51821",
    "127.0.0.2:40000",
    "[::1]:51821",
    "192.0.2.7:9",
];
/// Bounds per input, so no input can make the harness loop for long.
const MAX_RECORDS: usize = 256;
const PUMP_ROUNDS: usize = 64;
const BOUNCE_ROUNDS: usize = 8;
const LISTEN_BACKLOG: usize = 2;
const MAX_FLOWS: usize = 8;
/// TCP sockets the node may have: listeners, flows, and a few closing beyond the cap.
const TCP_POOL: usize = LISTEN_BACKLOG + MAX_FLOWS + 4;
const NODE_NETS: [&str; 2] = ["100.100.0.1/32", "fd00::1/128"];
const SCRATCH: usize = 65536 + 64;

/// (private, public) from a seed byte 1-3; any 32 bytes make a valid X25519 private key.
/// Computed once: X25519 under sanitizers costs about a millisecond.
fn keypair(seed: u8) -> (Key, Key) {
    static KEYS: std::sync::OnceLock<Vec<(Key, Key)>> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        (0..4u8)
            .map(|s| {
                let public = PublicKey::from(&StaticSecret::from([s; 32]));
                (Key([s; 32]), Key(*public.as_bytes()))
            })
            .collect()
    });
    keys[usize::from(seed) % keys.len()]
}

fn fuzz_peer_config() -> PeerConfig {
    PeerConfig {
        public_key: keypair(2).1,
        preshared_key: None,
        allowed_ips: nets(&PEER_NETS),
        endpoint: None,
        persistent_keepalive: None,
    }
}

/// A smoltcp interface configured as [`NetStack::new`] does, with a fixed random seed.
fn fresh_interface(device: &mut QueueDevice) -> Interface {
    let mut config = Config::new(HardwareAddress::Ip);
    config.random_seed = 0x6e65_7864;
    let mut iface = Interface::new(config, device, SmolInstant::from_micros(0));
    let addresses = nets(&NODE_NETS);
    iface.update_ip_addrs(|addrs| {
        for a in &addresses {
            let _ = addrs.push(IpCidr::new(IpAddress::from(a.addr()), a.prefix_len()));
        }
    });
    for a in &addresses {
        let _ = match a.addr() {
            IpAddr::V4(v4) => iface.routes_mut().add_default_ipv4_route(v4).map(|_| ()),
            IpAddr::V6(v6) => iface.routes_mut().add_default_ipv6_route(v6).map(|_| ()),
        };
    }
    iface
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().filter_map(|n| n.parse().ok()).collect()
}

fn source(selector: u8) -> SocketAddr {
    SOURCES[usize::from(selector) % SOURCES.len()]
        .parse()
        .unwrap_or(PEER_ENDPOINT)
}

/// The inner source address of an IP packet, if it has one.
fn inner_source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// The WireGuard layer's I/O: datagrams are recorded, packets go to the stack, and each
/// packet's source is checked against cryptokey routing on the way.
struct Recorder<'a> {
    sent: &'a mut Vec<(SocketAddr, Vec<u8>)>,
    device: &'a mut QueueDevice,
    delivered: &'a mut usize,
}

impl WgIo for Recorder<'_> {
    fn send_datagram(&mut self, to: SocketAddr, data: &[u8]) {
        self.sent.push((to, data.to_vec()));
    }

    fn deliver_packet(&mut self, packet: &[u8]) {
        // Only the fuzzing peer has a session, so only its own sources may get through.
        // (boringtun cuts a packet to its IPv4 total length, so an authenticated peer can
        // pass packets too short to name a source; the stack drops those.)
        if let Some(src) = inner_source(packet) {
            static RANGES: std::sync::OnceLock<(Vec<IpNet>, Vec<IpNet>)> =
                std::sync::OnceLock::new();
            let (own, other) = RANGES.get_or_init(|| (nets(&PEER_NETS), nets(&OTHER_PEER_NETS)));
            let ok =
                own.iter().any(|n| n.contains(&src)) && !other.iter().any(|n| n.contains(&src));
            assert!(ok, "cryptokey routing let {src} through: {packet:02x?}");
        }
        *self.delivered += 1;
        self.device.push_rx(packet);
    }
}

/// The node under test: WireGuard device, stack, an echoing ingress port and UDP socket.
pub struct Node {
    /// The WireGuard device.
    pub wg: WgDevice,
    /// The smoltcp stack.
    pub stack: NetStack,
    listeners: Vec<SocketHandle>,
    flows: Vec<SocketHandle>,
    /// Closed TCP sockets, ready to listen again.
    free: Vec<SocketHandle>,
    tcp_sockets: usize,
    udp: Option<SocketHandle>,
    /// Datagrams the node sent, not yet taken by the harness.
    pub sent: Vec<(SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
    /// How far the current input got.
    pub reach: Reach,
}

/// How deep one input got, so tests can show that seeds reach what they are meant to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Packets cryptokey routing handed to the stack.
    pub delivered: usize,
    /// TCP connections accepted on the ingress port.
    pub accepted: usize,
    /// Bytes echoed on TCP flows.
    pub tcp_echoed: usize,
    /// Datagrams echoed by the UDP socket.
    pub udp_echoed: usize,
}

impl Node {
    /// Node key seed 1, with the fuzzing peer (seed 2) and a second peer (seed 3, with a
    /// preshared key) that owns a narrower range inside the first one's AllowedIPs.
    pub fn new() -> Node {
        let mut wg = WgDevice::new(&keypair(1).0);
        let fuzz_peer = fuzz_peer_config();
        let other = PeerConfig {
            public_key: keypair(3).1,
            preshared_key: Some(Key([9; 32])),
            allowed_ips: nets(&OTHER_PEER_NETS),
            endpoint: None,
            persistent_keepalive: Some(25),
        };
        // Both configurations are constants; failure would be a harness bug.
        let added = wg.add_peer(&fuzz_peer, Some(PEER_ENDPOINT), false).is_ok()
            && wg.add_peer(&other, None, false).is_ok();
        assert!(added, "harness peers rejected");
        Node {
            wg,
            stack: Self::fresh_stack(),
            listeners: Vec::new(),
            flows: Vec::new(),
            free: Vec::new(),
            tcp_sockets: 0,
            udp: None,
            sent: Vec::new(),
            buf: vec![0; SCRATCH],
            reach: Reach::default(),
        }
    }

    fn fresh_stack() -> NetStack {
        NetStack::new(&nets(&NODE_NETS), MTU)
    }

    /// Puts the stack back to its starting state: a new smoltcp interface (no fragments
    /// in reassembly, a fixed random seed so sequence numbers repeat), every TCP socket
    /// back to listening or free and the UDP socket rebound. The sockets themselves are
    /// reused: allocating their megabytes of buffers for every input made the engine
    /// targets several times slower.
    pub fn reset_stack(&mut self) {
        self.stack.iface = fresh_interface(&mut self.stack.device);
        self.stack.device.rx.clear();
        self.stack.device.tx.clear();
        self.free.append(&mut self.listeners);
        self.free.append(&mut self.flows);
        for &h in &self.free {
            self.stack.sockets.get_mut::<tcp::Socket>(h).abort();
        }
        let h = match self.udp {
            Some(h) => h,
            None => self.stack.new_udp_socket(),
        };
        let s = self.stack.sockets.get_mut::<udp::Socket>(h);
        s.close();
        self.udp = s.bind(UDP_PORT).is_ok().then_some(h);
        self.reach = Reach::default();
        self.refill_listeners();
    }

    /// Hands the WireGuard device one datagram from the network.
    pub fn datagram(&mut self, from: SocketAddr, data: &[u8]) {
        let mut io = Recorder {
            sent: &mut self.sent,
            device: &mut self.stack.device,
            delivered: &mut self.reach.delivered,
        };
        self.wg.handle_datagram(from, data, &mut io);
    }

    /// Forgets the fuzzing peer's sessions: removes it and adds it back.
    pub fn readd_fuzz_peer(&mut self) {
        let cfg = fuzz_peer_config();
        self.wg.remove_peer(&cfg.public_key);
        // The same configuration was accepted before; it cannot fail now.
        let _ = self.wg.add_peer(&cfg, Some(PEER_ENDPOINT), false);
    }

    /// Runs WireGuard timers.
    pub fn tick(&mut self) {
        let mut io = Recorder {
            sent: &mut self.sent,
            device: &mut self.stack.device,
            delivered: &mut self.reach.delivered,
        };
        self.wg.tick(&mut io);
    }

    /// Polls the stack and services sockets until nothing moves (bounded), as the engine's
    /// pump does; everything the stack sends is encrypted by the WireGuard device.
    pub fn pump(&mut self) {
        for _ in 0..PUMP_ROUNDS {
            let changed = self.stack.poll();
            let progress = self.service();
            self.flush_tx();
            if !changed && !progress && self.stack.device.rx.is_empty() {
                break;
            }
        }
        self.flush_tx();
    }

    fn flush_tx(&mut self) {
        let tx = std::mem::take(&mut self.stack.device.tx);
        for pkt in tx {
            let mut io = Recorder {
                sent: &mut self.sent,
                device: &mut self.stack.device,
                delivered: &mut self.reach.delivered,
            };
            self.wg.send_packet(&pkt, &mut io);
            self.stack.device.recycle(pkt);
        }
    }

    /// Keeps listeners topped up like the engine; accepted sockets become echo flows.
    /// Sockets come from a bounded pool, so a full pool means no new listener (as if the
    /// host could take no more connections).
    fn refill_listeners(&mut self) {
        let mut i = 0;
        while i < self.listeners.len() {
            let h = self.listeners[i];
            if self.stack.sockets.get::<tcp::Socket>(h).state() == tcp::State::Listen {
                i += 1;
                continue;
            }
            self.listeners.swap_remove(i);
            self.reach.accepted += 1;
            // Like a full host side: beyond the cap, connections are reset.
            if self.flows.len() >= MAX_FLOWS {
                self.stack.sockets.get_mut::<tcp::Socket>(h).abort();
            }
            self.flows.push(h);
        }
        while self.listeners.len() < LISTEN_BACKLOG {
            let h = match self.free.pop() {
                Some(h) => h,
                None if self.tcp_sockets < TCP_POOL => {
                    self.tcp_sockets += 1;
                    self.stack.new_tcp_socket()
                }
                None => break,
            };
            if self
                .stack
                .sockets
                .get_mut::<tcp::Socket>(h)
                .listen(TCP_PORT)
                .is_err()
            {
                self.free.push(h);
                break;
            }
            self.listeners.push(h);
        }
    }

    /// Echoes what arrived on flows and the UDP socket. Returns whether anything moved.
    fn service(&mut self) -> bool {
        self.refill_listeners();
        let mut progress = false;
        let mut i = 0;
        while i < self.flows.len() {
            let h = self.flows[i];
            let s = self.stack.sockets.get_mut::<tcp::Socket>(h);
            if s.state() == tcp::State::Closed {
                self.free.push(h);
                self.flows.swap_remove(i);
                progress = true;
                continue;
            }
            if s.can_recv() && s.send_capacity() > s.send_queue() {
                let room = (s.send_capacity() - s.send_queue()).min(self.buf.len());
                if let Ok(n) = s.recv_slice(&mut self.buf[..room]) {
                    progress |= n > 0;
                    self.reach.tcp_echoed += s.send_slice(&self.buf[..n]).unwrap_or(0);
                }
            }
            if s.state() == tcp::State::CloseWait {
                s.close();
                progress = true;
            }
            i += 1;
        }
        if let Some(h) = self.udp {
            let s = self.stack.sockets.get_mut::<udp::Socket>(h);
            // At most one buffer's worth of slots per round.
            for _ in 0..256 {
                let Ok((n, meta)) = s.recv_slice(&mut self.buf) else {
                    break;
                };
                progress = true;
                if s.send_slice(&self.buf[..n], meta.endpoint).is_ok() {
                    self.reach.udp_echoed += 1;
                }
            }
        }
        progress
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

/// The fuzzing peer (key seed 2): a plain boringtun tunnel to the node.
pub struct FuzzPeer {
    tunn: Tunn,
    buf: Vec<u8>,
    /// Datagrams the peer produced, for replays.
    pub history: Vec<Vec<u8>>,
    /// The sequence number the node's last TCP segment ends at, for acknowledging it.
    pub node_next_seq: Option<u32>,
}

impl FuzzPeer {
    /// A peer with no session yet.
    pub fn new() -> FuzzPeer {
        let tunn = Tunn::new(
            StaticSecret::from(keypair(2).0 .0),
            PublicKey::from(keypair(1).1 .0),
            None,
            None,
            0x42,
            None,
        );
        // Constant, valid key material: failure would be a harness bug.
        let Ok(tunn) = tunn else {
            panic!("harness peer rejected")
        };
        FuzzPeer {
            tunn,
            buf: vec![0; SCRATCH],
            history: Vec::new(),
            node_next_seq: None,
        }
    }

    /// A handshake initiation, sent even if one is in flight.
    pub fn initiation(&mut self) -> Option<Vec<u8>> {
        match self.tunn.format_handshake_initiation(&mut self.buf, true) {
            TunnResult::WriteToNetwork(d) => Some(d.to_vec()),
            _ => None,
        }
    }

    /// `packet` encrypted for the node (or a handshake initiation while there is no session).
    pub fn encrypt(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        match self.tunn.encapsulate(packet, &mut self.buf) {
            TunnResult::WriteToNetwork(d) => Some(d.to_vec()),
            _ => None,
        }
    }

    /// Takes a datagram from the node; returns what the peer sends back.
    pub fn receive(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let mut replies = Vec::new();
        let node_ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        match self.tunn.decapsulate(node_ip, data, &mut self.buf) {
            TunnResult::WriteToNetwork(d) => {
                replies.push(d.to_vec());
                // Packets queued during the handshake.
                for _ in 0..BOUNCE_ROUNDS {
                    match self.tunn.decapsulate(None, &[], &mut self.buf) {
                        TunnResult::WriteToNetwork(d) => replies.push(d.to_vec()),
                        _ => break,
                    }
                }
            }
            TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                if let Some(next) = tcp_segment_end(p) {
                    self.node_next_seq = Some(next);
                }
            }
            _ => {}
        }
        replies
    }

    /// Runs the peer's timers; returns what it sends.
    pub fn tick(&mut self) -> Option<Vec<u8>> {
        match self.tunn.update_timers(&mut self.buf) {
            TunnResult::WriteToNetwork(d) => Some(d.to_vec()),
            _ => None,
        }
    }

    /// Whether the peer has a session with the node.
    pub fn has_session(&self) -> bool {
        self.tunn.time_since_last_handshake().is_some()
    }
}

impl Default for FuzzPeer {
    fn default() -> Self {
        FuzzPeer::new()
    }
}

/// Carries datagrams between node and peer until both are quiet (bounded): handshakes
/// complete, cookie replies and keepalives are answered.
fn bounce(node: &mut Node, peer: &mut FuzzPeer) {
    for _ in 0..BOUNCE_ROUNDS {
        let out = std::mem::take(&mut node.sent);
        if out.is_empty() {
            return;
        }
        // Whatever the node sends reaches the peer (it may have roamed), and the peer
        // answers from its own endpoint.
        for (_, data) in out {
            for reply in peer.receive(&data) {
                node.datagram(PEER_ENDPOINT, &reply);
            }
        }
    }
    node.sent.clear();
}

/// Where a TCP segment from the node ends in sequence space, i.e. what acknowledges it.
fn tcp_segment_end(packet: &[u8]) -> Option<u32> {
    let (proto, payload) = transport(packet)?;
    if proto != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(payload).ok()?;
    let len = payload.len().checked_sub(usize::from(tcp.header_len()))? as u32
        + u32::from(tcp.syn())
        + u32::from(tcp.fin());
    Some((tcp.seq_number().0 as u32).wrapping_add(len))
}

/// The transport protocol and payload of an unfragmented IP packet.
fn transport(packet: &[u8]) -> Option<(IpProtocol, &[u8])> {
    match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.more_frags() || ip.frag_offset() != 0 {
                return None;
            }
            let proto = ip.next_header();
            let range = usize::from(ip.header_len())..usize::from(ip.total_len());
            Some((proto, packet.get(range)?))
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            let proto = ip.next_header();
            Some((proto, packet.get(40..40 + usize::from(ip.payload_len()))?))
        }
        _ => None,
    }
}

/// Record flags for [`ip_packets`]: each fixes up part of the fuzz bytes, so the fuzzer can
/// reach deep stack states without guessing addresses, sequence numbers or checksums.
pub mod flags {
    /// Set IPv4 total length / IPv6 payload length from the record's size.
    pub const FIX_LENGTH: u8 = 0x01;
    /// Source = the peer's tunnel address, destination = the node's.
    pub const FIX_ADDRESSES: u8 = 0x02;
    /// TCP acknowledgement number = the end of the node's last TCP segment.
    pub const FIX_ACK: u8 = 0x04;
    /// Fill the IPv4 header and TCP/UDP/ICMP checksums.
    pub const FIX_CHECKSUMS: u8 = 0x08;
    /// Run both sides' WireGuard timers after this record.
    pub const TICK: u8 = 0x10;
}

fn fix_up(packet: &mut [u8], f: u8, node_next_seq: Option<u32>) {
    let Some(&first) = packet.first() else { return };
    let len = packet.len();
    match first >> 4 {
        // Unchecked views, as the length fields are what may need fixing; the bounds are
        // checked here instead.
        4 if len >= 20 => {
            let mut ip = Ipv4Packet::new_unchecked(&mut *packet);
            if f & flags::FIX_LENGTH != 0 {
                ip.set_total_len(len.min(usize::from(u16::MAX)) as u16);
            }
            if f & flags::FIX_ADDRESSES != 0 {
                ip.set_src_addr(PEER_V4);
                ip.set_dst_addr(NODE_V4);
            }
            if f & flags::FIX_CHECKSUMS != 0 && usize::from(ip.header_len()) <= len {
                ip.fill_checksum();
            }
        }
        6 if len >= 40 => {
            let mut ip = Ipv6Packet::new_unchecked(&mut *packet);
            if f & flags::FIX_LENGTH != 0 {
                ip.set_payload_len(len.saturating_sub(40).min(usize::from(u16::MAX)) as u16);
            }
            if f & flags::FIX_ADDRESSES != 0 {
                ip.set_src_addr(PEER_V6);
                ip.set_dst_addr(NODE_V6);
            }
        }
        _ => return,
    }
    fix_transport(packet, f, node_next_seq);
}

fn fix_transport(packet: &mut [u8], f: u8, node_next_seq: Option<u32>) {
    let Some((proto, range, src, dst)) = transport_range(packet) else {
        return;
    };
    let Some(payload) = packet.get_mut(range) else {
        return;
    };
    let sum = f & flags::FIX_CHECKSUMS != 0;
    match proto {
        IpProtocol::Tcp => {
            let Ok(mut tcp) = TcpPacket::new_checked(payload) else {
                return;
            };
            if let (true, Some(ack)) = (f & flags::FIX_ACK != 0, node_next_seq) {
                tcp.set_ack_number(TcpSeqNumber(ack as i32));
            }
            if sum {
                tcp.fill_checksum(&src, &dst);
            }
        }
        IpProtocol::Udp if sum => {
            if let Ok(mut udp) = UdpPacket::new_checked(payload) {
                udp.fill_checksum(&src, &dst);
            }
        }
        IpProtocol::Icmp if sum => {
            if let Ok(mut icmp) = smoltcp::wire::Icmpv4Packet::new_checked(payload) {
                icmp.fill_checksum();
            }
        }
        IpProtocol::Icmpv6 if sum => {
            if let (Ok(mut icmp), IpAddress::Ipv6(s), IpAddress::Ipv6(d)) =
                (smoltcp::wire::Icmpv6Packet::new_checked(payload), src, dst)
            {
                icmp.fill_checksum(&s, &d);
            }
        }
        _ => {}
    }
}

type TransportRange = (IpProtocol, std::ops::Range<usize>, IpAddress, IpAddress);

fn transport_range(packet: &[u8]) -> Option<TransportRange> {
    let (proto, payload) = transport(packet)?;
    let start = payload.as_ptr() as usize - packet.as_ptr() as usize;
    let (src, dst) = match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
            )
        }
        _ => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            (
                IpAddress::Ipv6(ip.src_addr()),
                IpAddress::Ipv6(ip.dst_addr()),
            )
        }
    };
    Some((proto, start..start + payload.len(), src, dst))
}

/// Splits fuzz input into `(header byte, payload)` records: a header, a 16-bit big-endian
/// length, then that many bytes (fewer at the end of the input).
pub fn records(data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (&head, tail) = rest.split_first()?;
        let (len, tail) = match tail {
            [hi, lo, tail @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), tail),
            _ => (tail.len(), tail),
        };
        let (body, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        Some((head, body))
    })
    .take(MAX_RECORDS)
}

/// A node and a peer with a completed handshake, kept across inputs: the handshake's
/// X25519 work would otherwise dominate every run, and the session's state does not depend
/// on the inner packets the fuzzer controls.
struct Tunnel {
    node: Node,
    peer: FuzzPeer,
}

thread_local! {
    static TUNNEL: RefCell<Option<Tunnel>> = const { RefCell::new(None) };
}

fn connected() -> Tunnel {
    let mut node = Node::new();
    let mut peer = FuzzPeer::new();
    for _ in 0..BOUNCE_ROUNDS {
        if peer.has_session() && node.wg.has_session(&keypair(2).1) {
            break;
        }
        if let Some(init) = peer.initiation() {
            node.datagram(PEER_ENDPOINT, &init);
        }
        bounce(&mut node, &mut peer);
    }
    assert!(peer.has_session(), "in-memory handshake failed");
    Tunnel { node, peer }
}

/// Fuzz target `ip_packet`: each record is an IP packet the authenticated peer encrypts and
/// sends; the node decrypts it, applies cryptokey routing, and its stack (ingress TCP port
/// [`TCP_PORT`], UDP port [`UDP_PORT`], both echoing) is pumped after every packet. The
/// node's replies go back to the peer, which notes TCP sequence numbers for [`flags::FIX_ACK`].
/// Record header bits are [`flags`].
pub fn ip_packets(data: &[u8]) -> Reach {
    TUNNEL.with(|cell| {
        let mut slot = cell.borrow_mut();
        let t = slot.get_or_insert_with(connected);
        t.node.reset_stack();
        t.node.sent.clear();
        t.peer.node_next_seq = None;
        let mut packet = Vec::new();
        for (f, body) in records(data) {
            packet.clear();
            packet.extend_from_slice(body);
            fix_up(&mut packet, f, t.peer.node_next_seq);
            if let Some(d) = t.peer.encrypt(&packet) {
                t.node.datagram(PEER_ENDPOINT, &d);
            }
            if f & flags::TICK != 0 {
                t.node.tick();
                if let Some(d) = t.peer.tick() {
                    t.node.datagram(PEER_ENDPOINT, &d);
                }
            }
            t.node.pump();
            bounce(&mut t.node, &mut t.peer);
        }
        let reach = t.node.reach;
        // A session lost to timers would make later inputs meaningless: start over.
        if !t.peer.has_session() {
            *slot = None;
        }
        reach
    })
}

/// Record kinds for [`datagrams`] (bits 2-3 of the header; bits 0-1 pick the source).
pub mod kinds {
    /// The payload as a raw datagram.
    pub const RAW: u8 = 0;
    /// A fresh, valid handshake initiation from the peer, payload XORed over its start.
    pub const INITIATION: u8 = 1;
    /// The payload as an IP packet, encrypted by the peer (an initiation while it has no
    /// session).
    pub const DATA: u8 = 2;
    /// An earlier datagram (payload byte 0 picks which) with the rest XORed over its start.
    pub const REPLAY: u8 = 3;
    /// Header bit: run the node's timers after this record.
    pub const TICK_NODE: u8 = 0x10;
    /// Header bit: run the peer's timers after this record.
    pub const TICK_PEER: u8 = 0x20;
    /// Header bit: before this record, the node forgets the peer's sessions (re-adds it).
    pub const FORGET_PEER: u8 = 0x40;
}

fn xor_into(target: &mut [u8], pattern: &[u8]) {
    for (t, p) in target.iter_mut().zip(pattern) {
        *t ^= p;
    }
}

thread_local! {
    static PAIR: RefCell<Option<(Node, FuzzPeer)>> = const { RefCell::new(None) };
}

/// Fuzz target `wg_datagram`: each record is one UDP datagram into the node's WireGuard
/// device (then its stack, fresh for each input, is pumped). Record header: bits 0-1 the
/// source address, bits 2-3 the [`kinds`], plus the bits in [`kinds`]. Replies go to the
/// peer, so a valid initiation completes a handshake and later records ride the session.
///
/// The node and peer persist across inputs, as in [`ip_packets`]: a fresh pair costs four
/// X25519 operations, which made the target about 20 times slower. So WireGuard state (not
/// the stack's) carries over from earlier inputs; [`kinds::FORGET_PEER`] resets it.
pub fn datagrams(data: &[u8]) -> Reach {
    PAIR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let (node, peer) = slot.get_or_insert_with(|| (Node::new(), FuzzPeer::new()));
        node.reset_stack();
        node.sent.clear();
        peer.history.clear();
        datagrams_on(node, peer, data);
        node.reach
    })
}

fn datagrams_on(node: &mut Node, peer: &mut FuzzPeer, data: &[u8]) {
    for (head, body) in records(data) {
        if head & kinds::FORGET_PEER != 0 {
            node.readd_fuzz_peer();
        }
        let from = source(head & 0x03);
        let datagram = match (head >> 2) & 0x03 {
            kinds::RAW => Some(body.to_vec()),
            kinds::INITIATION => peer.initiation().map(|mut d| {
                xor_into(&mut d, body);
                d
            }),
            kinds::DATA => peer.encrypt(body),
            _ => {
                let pick = body.first().map_or(0, |&b| usize::from(b));
                let all = peer.history.len();
                (all > 0).then(|| {
                    let mut d = peer.history[pick % all].clone();
                    xor_into(&mut d, body.get(1..).unwrap_or_default());
                    d
                })
            }
        };
        if let Some(d) = datagram {
            node.datagram(from, &d);
            if peer.history.len() < 64 {
                peer.history.push(d);
            }
        }
        if head & kinds::TICK_NODE != 0 {
            node.tick();
        }
        if head & kinds::TICK_PEER != 0 {
            if let Some(d) = peer.tick() {
                node.datagram(PEER_ENDPOINT, &d);
            }
        }
        node.pump();
        bounce(node, peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    const ALL_FIXES: u8 =
        flags::FIX_LENGTH | flags::FIX_ADDRESSES | flags::FIX_ACK | flags::FIX_CHECKSUMS;

    fn record(out: &mut Vec<u8>, head: u8, body: &[u8]) {
        out.push(head);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }

    /// An IPv4 packet with zero length and checksum: the harness fills them in.
    fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&PEER_V4.octets());
        p.extend_from_slice(&NODE_V4.octets());
        p.extend_from_slice(payload);
        p
    }

    fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        p.extend_from_slice(&PEER_V6.octets());
        p.extend_from_slice(&NODE_V6.octets());
        p.extend_from_slice(payload);
        p
    }

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const PSH_ACK: u8 = 0x18;
    const FIN_ACK: u8 = 0x11;

    fn tcp(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = 40000u16.to_be_bytes().to_vec();
        t.extend_from_slice(&TCP_PORT.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&[0; 4]); // ack: FIX_ACK fills it in
        t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        t
    }

    fn udp(payload: &[u8]) -> Vec<u8> {
        let mut u = 40001u16.to_be_bytes().to_vec();
        u.extend_from_slice(&UDP_PORT.to_be_bytes());
        u.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    /// A whole TCP exchange: SYN, ACK of the SYN-ACK, data, FIN.
    fn tcp_session(ip: fn(u8, &[u8]) -> Vec<u8>) -> Vec<u8> {
        let mut input = Vec::new();
        record(&mut input, ALL_FIXES, &ip(6, &tcp(1000, SYN, &[])));
        record(&mut input, ALL_FIXES, &ip(6, &tcp(1001, ACK, &[])));
        record(&mut input, ALL_FIXES, &ip(6, &tcp(1001, PSH_ACK, b"hello")));
        record(&mut input, ALL_FIXES, &ip(6, &tcp(1006, FIN_ACK, &[])));
        input
    }

    /// Named seed inputs for `ip_packet`.
    fn ip_packet_seeds() -> Vec<(&'static str, Vec<u8>)> {
        let mut udp4 = Vec::new();
        record(&mut udp4, ALL_FIXES, &ipv4(17, &udp(b"ping")));
        let mut udp6 = Vec::new();
        record(&mut udp6, ALL_FIXES, &ipv6(17, &udp(b"ping6")));
        let mut icmp = Vec::new();
        record(
            &mut icmp,
            ALL_FIXES,
            &ipv4(1, &[8, 0, 0, 0, 0, 1, 0, 1, b'x', b'y']),
        );
        // A UDP datagram in two IPv4 fragments (1480 + 520 payload bytes).
        let big = udp(&[0x5a; 1992]);
        let mut first = ipv4(17, &big[..1480]);
        first[6] = 0x20; // more fragments
        let mut second = ipv4(17, &big[1480..]);
        second[6] = 0;
        second[7] = (1480 / 8) as u8;
        let mut frags = Vec::new();
        // The harness fills only IPv4 header checksums of fragments; a zero UDP checksum
        // means none over IPv4.
        record(&mut frags, ALL_FIXES, &first);
        record(&mut frags, ALL_FIXES, &second);
        let mut spoofed = Vec::new();
        let mut other = ipv4(17, &udp(b"spoof"));
        other[12..16].copy_from_slice(&[100, 100, 5, 9]);
        record(&mut spoofed, ALL_FIXES & !flags::FIX_ADDRESSES, &other);
        vec![
            ("seed-tcp4-session", tcp_session(ipv4)),
            ("seed-tcp6-session", tcp_session(ipv6)),
            ("seed-udp4", udp4),
            ("seed-udp6", udp6),
            ("seed-icmp-echo", icmp),
            ("seed-udp4-fragments", frags),
            ("seed-spoofed-source", spoofed),
        ]
    }

    /// Named seed inputs for `wg_datagram`.
    fn wg_datagram_seeds() -> Vec<(&'static str, Vec<u8>)> {
        let init = FuzzPeer::new().initiation().unwrap_or_default();
        let mut raw_init = Vec::new();
        record(&mut raw_init, kinds::FORGET_PEER | kinds::RAW << 2, &init);
        let mut session = Vec::new();
        record(
            &mut session,
            kinds::FORGET_PEER | kinds::INITIATION << 2,
            &[],
        );
        for p in [ipv4(6, &tcp(1000, SYN, &[])), ipv4(17, &udp(b"ping"))] {
            let mut p = p;
            fix_up(&mut p, ALL_FIXES, None);
            record(&mut session, kinds::DATA << 2, &p);
        }
        let mut replay = Vec::new();
        record(&mut replay, kinds::INITIATION << 2, &[]);
        // The same initiation again from a stranger's address, then noise from IPv6.
        record(&mut replay, 3 | kinds::REPLAY << 2, &[0]);
        record(&mut replay, 2, &[4, 0, 0, 0, 1, 2, 3, 4, 0xde, 0xad]);
        record(
            &mut replay,
            kinds::TICK_NODE | kinds::TICK_PEER | kinds::DATA << 2,
            &[],
        );
        vec![
            ("seed-handshake-initiation", raw_init),
            ("seed-session-tcp-udp", session),
            ("seed-replay-noise", replay),
        ]
    }

    fn corpus_dir(target: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target)
    }

    /// Rewrites the committed engine seeds: `cargo test -p nexd --lib write_seeds -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus; run by hand after changing the seeds"]
    fn write_seeds() {
        for (target, seeds) in [
            ("ip_packet", ip_packet_seeds()),
            ("wg_datagram", wg_datagram_seeds()),
        ] {
            let dir = corpus_dir(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in seeds {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }

    #[test]
    fn records_split_and_stop() {
        let r: Vec<_> = records(&[1, 0, 2, 9, 9, 7, 0]).collect();
        assert_eq!(r, vec![(1, &[9u8, 9][..]), (7, &[0u8][..])]);
        let r: Vec<_> = records(&[5, 0, 9, 1]).collect();
        assert_eq!(r, vec![(5, &[1u8][..])]);
        assert_eq!(records(&vec![0u8; 10_000]).count(), MAX_RECORDS);
    }

    #[test]
    fn ip_packet_seeds_reach_sockets() {
        let seeds: std::collections::HashMap<_, _> = ip_packet_seeds().into_iter().collect();
        for name in ["seed-tcp4-session", "seed-tcp6-session"] {
            let r = ip_packets(&seeds[name]);
            assert_eq!((r.accepted, r.tcp_echoed), (1, 5), "{name}: {r:?}");
            // The stack is reset between inputs: the same input gets just as far again.
            assert_eq!(ip_packets(&seeds[name]), r, "{name} again");
        }
        for name in ["seed-udp4", "seed-udp6", "seed-udp4-fragments"] {
            let r = ip_packets(&seeds[name]);
            assert_eq!(r.udp_echoed, 1, "{name}: {r:?}");
        }
        assert_eq!(ip_packets(&seeds["seed-icmp-echo"]).delivered, 1);
        // From the fuzzing peer's session but a source the other peer owns: dropped.
        assert_eq!(ip_packets(&seeds["seed-spoofed-source"]).delivered, 0);
    }

    #[test]
    fn wg_datagram_seeds_reach_the_stack() {
        let seeds: std::collections::HashMap<_, _> = wg_datagram_seeds().into_iter().collect();
        // A bare initiation completes no handshake (the peer never sees the response) but
        // must be answered; the session seed gets a TCP SYN and a UDP datagram through.
        assert_eq!(datagrams(&seeds["seed-handshake-initiation"]).delivered, 0);
        let r = datagrams(&seeds["seed-session-tcp-udp"]);
        assert_eq!((r.delivered, r.udp_echoed), (2, 1), "{r:?}");
        datagrams(&seeds["seed-replay-noise"]);
        // Forgetting the peer really drops its session: its next packet is not accepted.
        let mut forget = Vec::new();
        let mut ping = ipv4(17, &udp(b"ping"));
        fix_up(&mut ping, ALL_FIXES, None);
        record(&mut forget, kinds::DATA << 2, &ping);
        assert_eq!(datagrams(&forget).delivered, 1);
        forget[0] |= kinds::FORGET_PEER;
        assert_eq!(datagrams(&forget).delivered, 0);
    }

    /// Every committed seed (and any regression input added next to them) still runs clean.
    #[test]
    fn committed_corpus_runs_clean() {
        for (target, run) in [
            ("ip_packet", (|d| _ = ip_packets(d)) as fn(&[u8])),
            ("wg_datagram", |d| _ = datagrams(d)),
        ] {
            let entries = std::fs::read_dir(corpus_dir(target)).unwrap();
            let mut n = 0;
            for e in entries {
                let path = e.unwrap().path();
                if path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
                {
                    run(&std::fs::read(&path).unwrap());
                    n += 1;
                }
            }
            assert!(n > 0, "no seeds for {target}");
        }
    }
}
