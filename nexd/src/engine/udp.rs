//! UDP flows: one per client address, each with its own tunnel-side (egress) or host-side
//! (ingress) socket, closed after an idle timeout.

use super::rules::FlowOrigin;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::wire::IpEndpoint;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

/// Host client → tunnel destination.
pub struct EgressUdpFlow {
    /// The flow's own socket set (see `tcp_demux`), holding just its socket.
    pub set: SocketSet<'static>,
    /// smoltcp socket in `set`, bound to an ephemeral tunnel port.
    pub handle: SocketHandle,
    /// Packets routed to this flow, waiting for its next poll.
    pub rx: VecDeque<Vec<u8>>,
    /// Queued for servicing in the current pump.
    pub dirty: bool,
    /// Tunnel source address and port.
    pub local: (IpAddr, u16),
    /// Host client address.
    pub client: SocketAddr,
    /// The service's host socket (replies go out through it).
    pub host: Arc<UdpSocket>,
    /// Tunnel destination.
    pub dest: SocketAddr,
    /// Last datagram either way.
    pub last_active: Instant,
    /// Where it was opened: a rule, or a proxy server's UDP association.
    pub origin: EgressUdpOrigin,
}

/// What opened an egress UDP flow.
pub enum EgressUdpOrigin {
    /// A rule, whose flow slot the flow holds.
    Rule(FlowOrigin),
    /// A SOCKS5 UDP association of a proxy server, whose slot the flow holds; replies go
    /// back with `header` (the SOCKS5 UDP header naming the destination) in front.
    Association {
        /// The server.
        gateway: nexd_common::Gateway,
        /// The association.
        id: u64,
        /// The SOCKS5 UDP header for replies.
        header: bytes::Bytes,
    },
}

/// Tunnel client → host destination.
pub struct IngressUdpFlow {
    /// Service port (the smoltcp socket of the service sends replies).
    pub port: u16,
    /// The tunnel client.
    pub remote: IpEndpoint,
    /// Our tunnel address the client wrote to (replies come from it).
    pub local_addr: Option<smoltcp::wire::IpAddress>,
    /// Host socket connected to the destination (send with [`send_now`]).
    pub host: Arc<UdpSocket>,
    /// Reply reader task.
    pub reader: AbortHandle,
    /// Last datagram either way.
    pub last_active: Instant,
    /// The rule it was opened through.
    pub origin: FlowOrigin,
}

/// Largest UDP payload nexd carries. Over IPv4, larger than the tunnel MTU is fine: smoltcp
/// fragments (and reassembles what peers fragment), as a kernel WireGuard interface would.
/// smoltcp does not fragment outgoing IPv6, so there the limit is the MTU; larger datagrams
/// are dropped and counted, never truncated.
pub fn max_payload(mtu: usize, dst: IpAddr) -> usize {
    if dst.is_ipv4() {
        65535 - 20 - 8
    } else {
        mtu.saturating_sub(40 + 8)
    }
}

/// Opens a host UDP socket connected to `dest`, with large buffers. One descriptor per flow:
/// send with [`send_now`], receive through tokio.
pub fn connect_host(dest: SocketAddr) -> std::io::Result<Arc<UdpSocket>> {
    let bind: SocketAddr = if dest.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = std::net::UdpSocket::bind(bind)?;
    super::host::raise_buffers(&socket2::SockRef::from(&sock));
    sock.connect(dest)?;
    sock.set_nonblocking(true)?;
    Ok(Arc::new(UdpSocket::from_std(sock)?))
}

/// Sends on a connected socket with a plain syscall. tokio's `try_send` on a socket the
/// reactor has not polled yet reports WouldBlock without trying, which dropped every new
/// flow's first datagram.
pub fn send_now(sock: &UdpSocket, data: &[u8]) -> std::io::Result<usize> {
    socket2::SockRef::from(sock).send(data)
}
