//! One simulated node: a smoltcp interface with one tunnel address, as nexd sets it up.

use crate::device::QueueDevice;
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpCidr, Ipv4Address};

/// The WireGuard tunnel MTU nexd uses by default.
pub const TUNNEL_MTU: usize = 1420;

/// A smoltcp stack with its device and sockets.
pub struct Host {
    /// The interface (Medium::Ip, one /32 address, default route via itself).
    pub iface: Interface,
    /// Packets in and out.
    pub device: QueueDevice,
    /// Every socket of this host.
    pub sockets: SocketSet<'static>,
    /// The host's tunnel address.
    pub addr: Ipv4Address,
}

impl Host {
    /// A host with tunnel address `addr`/32; `seed` fixes smoltcp's random choices (ISNs).
    pub fn new(addr: Ipv4Address, mtu: usize, seed: u64) -> Self {
        let mut device = QueueDevice::new(mtu);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut device, Instant::ZERO);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(addr.into(), 32));
        });
        // As nexd does: Medium::Ip has no neighbours, everything goes "via" ourselves.
        let _ = iface.routes_mut().add_default_ipv4_route(addr);
        Host {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            addr,
        }
    }

    /// Runs smoltcp at `now`; true when a socket may have changed.
    pub fn poll(&mut self, now: Instant) -> bool {
        matches!(
            self.iface.poll(now, &mut self.device, &mut self.sockets),
            PollResult::SocketStateChanged
        )
    }

    /// When smoltcp next wants a poll.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        self.iface.poll_at(now, &self.sockets)
    }

    /// Adds a TCP socket to this host.
    pub fn add_tcp(&mut self, mut socket: tcp::Socket<'static>) -> SocketHandle {
        if socket.timestamp_enabled() {
            // Timestamps on the virtual clock, not the host's.
            socket.set_tsval_generator(Some(crate::sim::virtual_tsval));
        }
        self.sockets.add(socket)
    }

    /// The TCP socket behind `handle`.
    pub fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }
}
