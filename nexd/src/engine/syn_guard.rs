//! Keeps a retransmitted SYN away from the listening backlog.
//!
//! Each ingress port keeps several sockets in LISTEN, and smoltcp hands a segment to the first
//! socket that accepts it. A client's retransmitted SYN can thus reach a fresh LISTEN socket
//! instead of the one already in SYN-RECEIVED for its 4-tuple: a second connection, whose
//! SYN-ACK the client answers with an ACK the first one rejects, and whose reset then kills
//! the good connection. Such SYNs are dropped before smoltcp; the SYN-RECEIVED socket
//! retransmits its SYN-ACK by itself.

use std::collections::HashSet;
use std::net::IpAddr;

/// An ingress connection: remote address, remote port, local port.
pub type Tuple = (IpAddr, u16, u16);

/// Ingress connections that already have a socket.
#[derive(Default)]
pub struct SynGuard {
    live: HashSet<Tuple>,
}

impl SynGuard {
    /// Records a connection that left LISTEN.
    pub fn insert(&mut self, t: Tuple) {
        self.live.insert(t);
    }

    /// Forgets a closed connection.
    pub fn remove(&mut self, t: &Tuple) {
        self.live.remove(t);
    }

    /// Whether `packet` is a SYN (without ACK) for a connection that already has a socket.
    pub fn is_duplicate_syn(&self, packet: &[u8]) -> bool {
        !self.live.is_empty() && syn_tuple(packet).is_some_and(|t| self.live.contains(&t))
    }
}

/// The 4-tuple of a bare SYN segment (source address and port, destination port).
pub fn syn_tuple(packet: &[u8]) -> Option<Tuple> {
    let h = super::tcp_demux::parse(packet).filter(|h| h.is_bare_syn())?;
    Some((h.tuple.0, h.tuple.1, h.tuple.3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4_tcp(flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[12..16].copy_from_slice(&[100, 100, 0, 1]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&443u16.to_be_bytes());
        p[33] = flags;
        p
    }

    #[test]
    fn finds_bare_syns_only() {
        let t = (IpAddr::V4(Ipv4Addr::new(100, 100, 0, 1)), 40000, 443);
        assert_eq!(syn_tuple(&v4_tcp(0x02)), Some(t));
        assert_eq!(syn_tuple(&v4_tcp(0x12)), None, "SYN-ACK");
        assert_eq!(syn_tuple(&v4_tcp(0x10)), None, "ACK");
        let mut g = SynGuard::default();
        assert!(!g.is_duplicate_syn(&v4_tcp(0x02)));
        g.insert(t);
        assert!(g.is_duplicate_syn(&v4_tcp(0x02)));
        g.remove(&t);
        assert!(!g.is_duplicate_syn(&v4_tcp(0x02)));
    }

    #[test]
    fn v6_and_garbage() {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[6] = 6;
        p[8] = 0xfd;
        p[40..42].copy_from_slice(&1234u16.to_be_bytes());
        p[42..44].copy_from_slice(&80u16.to_be_bytes());
        p[53] = 0x02;
        let (src, sp, dp) = syn_tuple(&p).unwrap();
        assert_eq!((src.to_string().as_str(), sp, dp), ("fd00::", 1234, 80));
        for len in 0..60 {
            let _ = syn_tuple(&p[..len]);
            let _ = syn_tuple(&v4_tcp(0x02)[..len.min(40)]);
        }
        assert_eq!(syn_tuple(&[0x45, 0, 0]), None);
    }
}
