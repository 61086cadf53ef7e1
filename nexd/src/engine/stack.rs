//! The smoltcp side: interface, socket set, queue device and ephemeral ports.

use super::device::QueueDevice;
use super::ports::{PortAllocator, DEFAULT_RANGE};
use ipnet::IpNet;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use std::net::IpAddr;
use std::time::Instant;

/// TCP buffer per direction per connection. It is also the receive window, so it bounds
/// single-stream throughput at window / RTT. Pages are touched only when used, so idle
/// connections cost little resident memory.
pub const TCP_BUFFER: usize = 512 * 1024;
/// The most TCP buffers may grow in all (autotuning beyond the first `TCP_BUFFER`s), so many
/// busy flows cannot take the host's memory: 16 flows at 8 MiB each way.
pub const TCP_GROWTH_BUDGET: usize = 256 * 1024 * 1024;
/// UDP listener socket buffers (every flow's first datagrams): packet slots and payload bytes.
const UDP_SLOTS: usize = 256;
const UDP_PAYLOAD: usize = 512 * 1024;
/// A UDP flow's socket buffers. Slot metadata is written when allocated (~64 bytes a slot),
/// so 256 slots each way cost a flow 32 KiB at once (32 slots: 4 KiB); the engine drains a flow's socket after
/// every poll of at most `RX_BATCH` packets and flushes a full send queue (see
/// `egress_udp_datagram`), so fewer slots lose nothing. Payload pages are touched only as used.
const UDP_FLOW_SLOTS: usize = 32;
const UDP_FLOW_PAYLOAD: usize = 128 * 1024;

/// smoltcp interface, sockets and device, owned by the engine.
pub struct NetStack {
    /// The interface holding the node's tunnel addresses.
    pub iface: Interface,
    /// Every TCP and UDP socket.
    pub sockets: SocketSet<'static>,
    /// Packets in and out.
    pub device: QueueDevice,
    /// Egress source ports.
    pub ports: PortAllocator,
    addresses: Vec<IpNet>,
    epoch: Instant,
    /// Buffer per direction of each new TCP socket at first.
    pub tcp_buffer: usize,
    /// Largest buffer per direction a TCP socket's autotuning may grow to.
    pub tcp_window_max: usize,
    /// Congestion controller of new TCP sockets.
    pub tcp_congestion: TcpCongestion,
}

impl NetStack {
    /// A stack with the node's tunnel addresses.
    pub fn new(addresses: &[IpNet], mtu: usize) -> Self {
        let mut device = QueueDevice::new(mtu);
        let epoch = Instant::now();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = rand_seed();
        let mut iface = Interface::new(config, &mut device, SmolInstant::from_micros(0));
        iface.update_ip_addrs(|addrs| {
            for a in addresses {
                // Capacity is set by the smoltcp feature; extra addresses are ignored.
                let _ = addrs.push(IpCidr::new(IpAddress::from(a.addr()), a.prefix_len()));
            }
        });
        // Medium::Ip has no neighbours: every destination is reached "via" our own address,
        // and the WireGuard layer picks the peer.
        for a in addresses {
            let _ = match a.addr() {
                IpAddr::V4(v4) => iface.routes_mut().add_default_ipv4_route(v4).map(|_| ()),
                IpAddr::V6(v6) => iface.routes_mut().add_default_ipv6_route(v6).map(|_| ()),
            };
        }
        NetStack {
            iface,
            sockets: SocketSet::new(Vec::new()),
            device,
            ports: PortAllocator::new(DEFAULT_RANGE, rand_seed()),
            addresses: addresses.to_vec(),
            epoch,
            tcp_buffer: TCP_BUFFER,
            tcp_window_max: super::DEFAULT_MAX_TCP_WINDOW,
            tcp_congestion: TcpCongestion::default(),
        }
    }

    /// Hands out egress source ports from `range` (inclusive) instead of the default.
    pub fn set_ephemeral_ports(&mut self, range: (u16, u16)) {
        self.ports = PortAllocator::new(range, rand_seed());
    }

    /// smoltcp's clock: microseconds since the stack was created.
    pub fn now(&self) -> SmolInstant {
        SmolInstant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// Processes queued packets and socket work. Returns whether any socket may have changed.
    pub fn poll(&mut self) -> bool {
        let now = self.now();
        self.device.reset_rx_budget();
        matches!(
            self.iface.poll(now, &mut self.device, &mut self.sockets),
            smoltcp::iface::PollResult::SocketStateChanged
        )
    }

    /// How long until smoltcp next needs a poll, if it has timers pending.
    pub fn poll_delay(&mut self) -> Option<std::time::Duration> {
        let now = self.now();
        self.iface
            .poll_delay(now, &self.sockets)
            .map(|d| std::time::Duration::from_micros(d.total_micros()))
    }

    /// The node's tunnel address of the same family as `dst`, used as the source for egress.
    pub fn source_for(&self, dst: IpAddr) -> Option<IpAddr> {
        self.addresses
            .iter()
            .map(|a| a.addr())
            .find(|a| a.is_ipv4() == dst.is_ipv4())
    }

    /// A new TCP socket in the shared set (listeners).
    pub fn new_tcp_socket(&mut self) -> SocketHandle {
        let s = self.tcp_socket();
        self.sockets.add(s)
    }

    /// Polls a flow's own socket set: its queued packets in, its output to the device.
    /// Returns whether the socket may have changed.
    pub fn poll_flow(
        &mut self,
        set: &mut SocketSet<'static>,
        rx: &mut std::collections::VecDeque<Vec<u8>>,
    ) -> bool {
        let now = self.now();
        // The flow's packets take the place of the shared queue for this poll.
        std::mem::swap(&mut self.device.rx, rx);
        self.device.unlimited_rx_budget();
        let r = self.iface.poll(now, &mut self.device, set);
        std::mem::swap(&mut self.device.rx, rx);
        matches!(r, smoltcp::iface::PollResult::SocketStateChanged)
    }

    /// When smoltcp next needs `set` polled (microseconds on [`NetStack::now`]'s clock).
    pub fn poll_at(&mut self, set: &SocketSet<'static>) -> Option<i64> {
        let now = self.now();
        self.iface.poll_at(now, set).map(|t| t.total_micros())
    }

    /// A new TCP socket with large buffers, tuned for a proxy, in no set yet.
    pub fn tcp_socket(&self) -> tcp::Socket<'static> {
        tuned_tcp_socket(self.tcp_buffer, self.tcp_window_max, self.tcp_congestion)
    }

    /// A new UDP socket for a listener.
    pub fn new_udp_socket(&mut self) -> SocketHandle {
        self.sockets.add(udp_socket(UDP_SLOTS, UDP_PAYLOAD))
    }

    /// A new UDP socket for one flow, with smaller buffers, in no set yet.
    pub fn udp_flow_socket(&self) -> udp::Socket<'static> {
        udp_socket(UDP_FLOW_SLOTS, UDP_FLOW_PAYLOAD)
    }
}

fn udp_socket(slots: usize, payload: usize) -> udp::Socket<'static> {
    let buffer =
        || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; slots], vec![0; payload]);
    udp::Socket::new(buffer(), buffer())
}

/// The congestion controller of nexd's TCP flows on the tunnel side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpCongestion {
    /// Loss-based (RFC 9438), as Linux's default `cubic`.
    Cubic,
    /// Model-based: paces at the measured bottleneck bandwidth, as Linux's `bbr`; holds its
    /// rate through random loss.
    #[default]
    Bbr,
}

impl std::str::FromStr for TcpCongestion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cubic" => Ok(TcpCongestion::Cubic),
            "bbr" => Ok(TcpCongestion::Bbr),
            _ => Err(format!(
                "unknown TCP congestion control {s:?}: use cubic or bbr"
            )),
        }
    }
}

impl std::fmt::Display for TcpCongestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TcpCongestion::Cubic => "cubic",
            TcpCongestion::Bbr => "bbr",
        })
    }
}

/// A TCP socket configured as nexd configures every flow's socket (also used by nexd-sim):
/// `buffer` octets per direction at first, growing with the path up to `window_max`.
pub fn tuned_tcp_socket(
    buffer: usize,
    window_max: usize,
    congestion: TcpCongestion,
) -> tcp::Socket<'static> {
    let rx = tcp::SocketBuffer::new(vec![0; buffer]);
    let tx = tcp::SocketBuffer::new(vec![0; buffer]);
    let mut s = tcp::Socket::new(rx, tx);
    // Windows grow with the measured bandwidth-delay product, as Linux autotuning does;
    // idle flows and slow readers keep the initial buffers.
    s.set_buffer_limits(window_max, window_max);
    s.set_congestion_control(match congestion {
        TcpCongestion::Cubic => tcp::CongestionControl::Cubic,
        TcpCongestion::Bbr => tcp::CongestionControl::Bbr,
    });
    // The host side already coalesces writes; Nagle here only adds latency.
    s.set_nagle_enabled(false);
    // Delayed ACKs (10 ms by default) slow every request/response and every close.
    s.set_ack_delay(None);
    // RFC 7323 timestamps, so a peer still holding a reused 4-tuple in TIME-WAIT accepts
    // the SYN at once (see `timestamps`).
    s.set_tsval_generator(Some(super::timestamps::tsval));
    s
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}
