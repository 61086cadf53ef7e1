//! The PROXY protocol header (HAProxy, versions 1 and 2) sent first on a connection to an
//! ingress server, telling it the client's address behind the tunnel.
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use nexd_common::ProxyProtocol;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first 12 bytes of every version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const V2_PROXY: u8 = 0x21;
/// AF_INET, STREAM.
const V2_TCP4: u8 = 0x11;
/// AF_INET6, STREAM.
const V2_TCP6: u8 = 0x21;

/// The header announcing a TCP connection from `src` to `dst`.
pub fn header(version: ProxyProtocol, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let ips = Ips::of(src.ip(), dst.ip());
    match version {
        ProxyProtocol::V1 => v1(&ips, src.port(), dst.port()),
        ProxyProtocol::V2 => v2(&ips, src.port(), dst.port()),
    }
}

/// Source and destination in one family, as both versions require.
enum Ips {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl Ips {
    /// Mixed families become IPv6, the IPv4 one mapped (`::ffff:a.b.c.d`).
    fn of(src: IpAddr, dst: IpAddr) -> Ips {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Ips::V4(s, d),
            (s, d) => Ips::V6(as_v6(s), as_v6(d)),
        }
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    }
}

fn v1(ips: &Ips, src_port: u16, dst_port: u16) -> Vec<u8> {
    let (family, src, dst) = match ips {
        Ips::V4(s, d) => ("TCP4", s.to_string(), d.to_string()),
        Ips::V6(s, d) => ("TCP6", s.to_string(), d.to_string()),
    };
    format!("PROXY {family} {src} {dst} {src_port} {dst_port}\r\n").into_bytes()
}

fn v2(ips: &Ips, src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(V2_SIGNATURE);
    out.push(V2_PROXY);
    match ips {
        Ips::V4(s, d) => {
            out.push(V2_TCP4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        Ips::V6(s, d) => {
            out.push(V2_TCP6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
    }
    out.extend_from_slice(&src_port.to_be_bytes());
    out.extend_from_slice(&dst_port.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_ipv4() {
        let h = header(
            ProxyProtocol::V1,
            addr("100.100.0.7:51234"),
            addr("127.0.0.1:8080"),
        );
        assert_eq!(h, b"PROXY TCP4 100.100.0.7 127.0.0.1 51234 8080\r\n");
    }

    #[test]
    fn v1_ipv6() {
        let h = header(
            ProxyProtocol::V1,
            addr("[fd00::7]:51234"),
            addr("[::1]:443"),
        );
        assert_eq!(h, b"PROXY TCP6 fd00::7 ::1 51234 443\r\n");
    }

    #[test]
    fn v1_mixed_families_map_the_ipv4_one() {
        let h = header(ProxyProtocol::V1, addr("100.100.0.7:1"), addr("[::1]:2"));
        assert_eq!(h, b"PROXY TCP6 ::ffff:100.100.0.7 ::1 1 2\r\n");
        let h = header(ProxyProtocol::V1, addr("[fd00::7]:1"), addr("10.0.0.1:2"));
        assert_eq!(h, b"PROXY TCP6 fd00::7 ::ffff:10.0.0.1 1 2\r\n");
    }

    #[test]
    fn v1_stays_within_the_spec_limit() {
        // The longest header a receiver must accept is 107 bytes.
        let h = header(
            ProxyProtocol::V1,
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535"),
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
        );
        assert!(h.len() <= 107, "{}", h.len());
    }

    #[test]
    fn v2_ipv4() {
        let h = header(
            ProxyProtocol::V2,
            addr("100.100.0.7:51234"),
            addr("127.0.0.1:8080"),
        );
        let want: Vec<u8> = [
            &b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"[..],
            &[0x21, 0x11, 0x00, 0x0c],
            &[100, 100, 0, 7],
            &[127, 0, 0, 1],
            &[0xc8, 0x22],
            &[0x1f, 0x90],
        ]
        .concat();
        assert_eq!(h, want);
        assert_eq!(h.len(), 16 + 12);
    }

    #[test]
    fn v2_ipv6() {
        let h = header(
            ProxyProtocol::V2,
            addr("[fd00::7]:51234"),
            addr("[::1]:443"),
        );
        let want: Vec<u8> = [
            &b"\r\n\r\n\0\r\nQUIT\n"[..],
            &[0x21, 0x21, 0x00, 0x24],
            &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0xc8, 0x22],
            &[0x01, 0xbb],
        ]
        .concat();
        assert_eq!(h, want);
        assert_eq!(h.len(), 16 + 36);
    }

    #[test]
    fn v2_mixed_families_map_the_ipv4_one() {
        let h = header(ProxyProtocol::V2, addr("10.0.0.1:1"), addr("[::1]:2"));
        assert_eq!(h[13], 0x21);
        assert_eq!(&h[14..16], &[0, 36]);
        assert_eq!(
            &h[16..32],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]
        );
        assert_eq!(&h[48..], &[0, 1, 0, 2]);
    }
}
