//! Finding the TCP flow a decrypted packet belongs to, before smoltcp sees it.
//!
//! smoltcp looks for a packet's socket by asking every socket in a set, and polls every socket
//! of a set for output. With all flows in one set, each packet and each poll cost time in
//! proportion to the open connections: 10,000 idle connections slowed a single transfer from
//! 1.2 Gbit/s to 37 Mbit/s. So each TCP flow has a socket set of its own, and this index
//! sends each packet straight to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A TCP connection as its packets arrive: remote address and port, local address and port.
pub type Tuple = (IpAddr, u16, IpAddr, u16);

/// The parts of a TCP packet's headers the engine looks at.
pub struct TcpHeader {
    /// Remote (source) address and port, local (destination) address and port.
    pub tuple: Tuple,
    /// The TCP flags byte.
    pub flags: u8,
}

impl TcpHeader {
    /// A bare SYN (no ACK): the first packet of a connection.
    pub fn is_bare_syn(&self) -> bool {
        self.flags & 0x02 != 0 && self.flags & 0x10 == 0
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Source, destination and transport header onward of an unfragmented IPv4 or IPv6 packet
/// carrying `protocol` (directly after the fixed IPv6 header); `None` for anything else.
fn transport(packet: &[u8], protocol: u8) -> Option<(IpAddr, IpAddr, &[u8])> {
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let fragmented = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x3fff != 0;
            if *packet.get(9)? != protocol || ihl < 20 || fragmented {
                return None;
            }
            let s: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some((
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                packet.get(ihl..)?,
            ))
        }
        6 => {
            if *packet.get(6)? != protocol {
                return None;
            }
            let s: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some((
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                packet.get(40..)?,
            ))
        }
        _ => None,
    }
}

/// The destination address and port of an unfragmented UDP packet: egress UDP flows have
/// socket sets of their own too, found by their tunnel address and port.
pub fn udp_destination(packet: &[u8]) -> Option<(IpAddr, u16)> {
    let (_, dst, udp) = transport(packet, UDP)?;
    Some((dst, u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?])))
}

/// A fragment of a UDP datagram: its reassembly key (source, destination, identification)
/// and, in the first fragment, the datagram's destination address and port.
pub struct UdpFragment {
    /// Source, destination and IP identification: the same for every fragment.
    pub key: (IpAddr, IpAddr, u32),
    /// Destination address and port, from the UDP header in the first fragment.
    pub first: Option<(IpAddr, u16)>,
}

/// Recognises a fragment of a UDP datagram (IPv4, or IPv6 with the fragment header first).
pub fn udp_fragment(packet: &[u8]) -> Option<UdpFragment> {
    let (src, dst, id, offset, rest) = match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let frag = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
            if *packet.get(9)? != UDP || ihl < 20 || frag & 0x3fff == 0 {
                return None;
            }
            let s: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            let id = u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]);
            (
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                u32::from(id),
                frag & 0x1fff,
                packet.get(ihl..)?,
            )
        }
        6 => {
            const FRAGMENT_HEADER: u8 = 44;
            if *packet.get(6)? != FRAGMENT_HEADER || *packet.get(40)? != UDP {
                return None;
            }
            let s: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            let offset = u16::from_be_bytes([*packet.get(42)?, *packet.get(43)?]) >> 3;
            let id: [u8; 4] = packet.get(44..48)?.try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                u32::from_be_bytes(id),
                offset,
                packet.get(48..)?,
            )
        }
        _ => return None,
    };
    let first = if offset == 0 {
        Some((dst, u16::from_be_bytes([*rest.get(2)?, *rest.get(3)?])))
    } else {
        None
    };
    Some(UdpFragment {
        key: (src, dst, id),
        first,
    })
}

/// Parses the IP and TCP headers of an unfragmented TCP packet; `None` for anything else.
pub fn parse(packet: &[u8]) -> Option<TcpHeader> {
    let (src, dst, tcp) = transport(packet, TCP)?;
    let flags = *tcp.get(13)?;
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    Some(TcpHeader {
        tuple: (src, sport, dst, dport),
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_v6_and_garbage() {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[12..16].copy_from_slice(&[100, 100, 0, 1]);
        p[16..20].copy_from_slice(&[100, 100, 0, 2]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&443u16.to_be_bytes());
        p[33] = 0x02;
        let h = parse(&p).unwrap();
        assert_eq!(
            h.tuple,
            (
                "100.100.0.1".parse().unwrap(),
                40000,
                "100.100.0.2".parse().unwrap(),
                443
            )
        );
        assert!(h.is_bare_syn());
        p[33] = 0x12;
        assert!(!parse(&p).unwrap().is_bare_syn());
        p[9] = 17;
        assert!(parse(&p).is_none(), "UDP");
        assert_eq!(
            udp_destination(&p),
            Some(("100.100.0.2".parse().unwrap(), 443))
        );
        p[9] = 6;
        p[6] = 0x20;
        assert!(parse(&p).is_none(), "fragment");
        p[9] = 17;
        p[4..6].copy_from_slice(&7u16.to_be_bytes());
        let f = udp_fragment(&p).unwrap();
        assert_eq!(f.key.2, 7);
        assert_eq!(f.first, Some(("100.100.0.2".parse().unwrap(), 443)));
        p[7] = 0x10;
        assert!(
            udp_fragment(&p).unwrap().first.is_none(),
            "a later fragment"
        );
        assert!(udp_destination(&p).is_none());
        p[9] = 6;

        let mut q = vec![0u8; 60];
        q[0] = 0x60;
        q[6] = 6;
        q[8] = 0xfd;
        q[24] = 0xfd;
        q[39] = 1;
        q[40..42].copy_from_slice(&1234u16.to_be_bytes());
        q[42..44].copy_from_slice(&80u16.to_be_bytes());
        let (s, sp, d, dp) = parse(&q).unwrap().tuple;
        assert_eq!(
            (s.to_string(), sp, d.to_string(), dp),
            ("fd00::".to_string(), 1234, "fd00::1".to_string(), 80)
        );
        for len in 0..60 {
            let _ = parse(&p[..len.min(40)]);
            let _ = parse(&q[..len]);
        }
    }
}
