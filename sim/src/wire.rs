//! Reading the TCP headers of the packets on a link (what a capture at the link would show).

use smoltcp::wire::{IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket};

/// The fields of an IPv4 TCP segment the simulator counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    /// Source address.
    pub src: Ipv4Address,
    /// Destination address.
    pub dst: Ipv4Address,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number of the first byte (or of the SYN/FIN).
    pub seq: u32,
    /// Acknowledgement number when the ACK flag is set.
    pub ack: Option<u32>,
    /// Payload length in bytes.
    pub len: u32,
    /// SYN flag.
    pub syn: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// Number of SACK blocks carried.
    pub sack_blocks: u8,
    /// Advertised window field (unscaled).
    pub window: u16,
}

impl TcpInfo {
    /// Parses an IPv4 TCP packet; `None` for anything else or anything malformed.
    pub fn parse(packet: &[u8]) -> Option<TcpInfo> {
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        if ip.next_header() != IpProtocol::Tcp {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        let sack_blocks = tcp
            .selective_ack_ranges()
            .map(|r| r.iter().flatten().count() as u8)
            .unwrap_or(0);
        Some(TcpInfo {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            src_port: tcp.src_port(),
            dst_port: tcp.dst_port(),
            seq: tcp.seq_number().0 as u32,
            ack: tcp.ack().then(|| tcp.ack_number().0 as u32),
            len: tcp.payload().len() as u32,
            syn: tcp.syn(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            sack_blocks,
            window: tcp.window_len(),
        })
    }

    /// The direction this segment travels: (src, src port, dst, dst port).
    pub fn key(&self) -> FlowKey {
        FlowKey {
            src: self.src,
            src_port: self.src_port,
            dst: self.dst,
            dst_port: self.dst_port,
        }
    }

    /// Sequence space the segment occupies (payload plus SYN and FIN).
    pub fn seq_len(&self) -> u32 {
        self.len + u32::from(self.syn) + u32::from(self.fin)
    }
}

/// One direction of a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    /// Sender's address.
    pub src: Ipv4Address,
    /// Sender's port.
    pub src_port: u16,
    /// Receiver's address.
    pub dst: Ipv4Address,
    /// Receiver's port.
    pub dst_port: u16,
}

impl FlowKey {
    /// The opposite direction.
    pub fn reverse(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            src_port: self.dst_port,
            dst: self.src,
            dst_port: self.src_port,
        }
    }
}

/// True when sequence number `a` is after `b` (modulo 2^32).
pub fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}
