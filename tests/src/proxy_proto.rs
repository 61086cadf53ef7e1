//! A strict reader of PROXY protocol headers (HAProxy's proxy-protocol.txt, versions 1 and
//! 2), for a test server that must tell exactly what nexd announced.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 header is at most this long, CRLF included.
const V1_MAX: usize = 107;

/// A parsed header of a proxied TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    /// The original client.
    pub src: SocketAddr,
    /// The address the client connected to.
    pub dst: SocketAddr,
}

/// Reads exactly one header from `r` (nothing past it) and checks every byte of it: a
/// version 1 line `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` with single spaces, canonical
/// addresses of the named family and ports without leading zeros; or a version 2 header
/// with command PROXY, family TCP over IPv4 or IPv6, and well-formed TLVs filling its
/// length. `UNKNOWN` / LOCAL headers are refused: nexd always knows the peer.
pub fn read_header(r: &mut impl Read) -> Result<Header, String> {
    let mut first = [0u8; 1];
    r.read_exact(&mut first)
        .map_err(|e| format!("no header: {e}"))?;
    match first[0] {
        b'P' => read_v1(r),
        b'\r' => read_v2(r),
        b => Err(format!(
            "first byte {b:#04x} starts neither a v1 nor a v2 header"
        )),
    }
}

fn read_v1(r: &mut impl Read) -> Result<Header, String> {
    let mut line = vec![b'P'];
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(format!("v1 header longer than {V1_MAX} bytes"));
        }
        let mut b = [0u8; 1];
        r.read_exact(&mut b)
            .map_err(|e| format!("v1 header cut after {} bytes: {e}", line.len()))?;
        if b[0] == b'\n' && !line.ends_with(b"\r") {
            return Err("v1 header ends in LF without CR".into());
        }
        line.push(b[0]);
    }
    let text = std::str::from_utf8(&line[..line.len() - 2])
        .map_err(|_| "v1 header is not ASCII".to_string())?;
    if text.contains('\r') || text.contains('\n') {
        return Err(format!("stray CR/LF in v1 header {text:?}"));
    }
    let parts: Vec<&str> = text.split(' ').collect();
    let [proxy, proto, src, dst, sport, dport] = parts[..] else {
        return Err(format!(
            "v1 header {text:?}: expected 6 fields, single spaces"
        ));
    };
    if proxy != "PROXY" {
        return Err(format!("v1 header {text:?} does not start with PROXY"));
    }
    let ip = |s: &str| -> Result<IpAddr, String> {
        let ip = match proto {
            "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4),
            "TCP6" => s.parse::<Ipv6Addr>().map(IpAddr::V6),
            p => return Err(format!("v1 protocol {p:?} (want TCP4 or TCP6)")),
        }
        .map_err(|_| format!("v1 address {s:?} is not {proto}"))?;
        // Canonical form only (an IPv6 address as Rust prints it, no zero padding).
        if ip.to_string() != s {
            return Err(format!("v1 address {s:?} is not in canonical form"));
        }
        Ok(ip)
    };
    let port = |s: &str| -> Result<u16, String> {
        let ok = !s.is_empty()
            && s.bytes().all(|c| c.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        ok.then(|| s.parse::<u16>().ok())
            .flatten()
            .ok_or_else(|| format!("v1 port {s:?} is not a decimal 0-65535"))
    };
    Ok(Header {
        version: 1,
        src: SocketAddr::new(ip(src)?, port(sport)?),
        dst: SocketAddr::new(ip(dst)?, port(dport)?),
    })
}

fn read_v2(r: &mut impl Read) -> Result<Header, String> {
    let mut fixed = [0u8; 15];
    r.read_exact(&mut fixed)
        .map_err(|e| format!("v2 header cut: {e}"))?;
    if fixed[..11] != V2_SIGNATURE[1..] {
        return Err(format!("bad v2 signature {:02x?}", &fixed[..11]));
    }
    let (ver_cmd, fam) = (fixed[11], fixed[12]);
    let len = u16::from_be_bytes([fixed[13], fixed[14]]) as usize;
    if ver_cmd != 0x21 {
        return Err(format!(
            "v2 version/command {ver_cmd:#04x} (want 0x21: version 2, PROXY)"
        ));
    }
    let addr_len = match fam {
        0x11 => 12,
        0x21 => 36,
        f => {
            return Err(format!(
                "v2 family/protocol {f:#04x} (want 0x11 TCP4 or 0x21 TCP6)"
            ))
        }
    };
    if len < addr_len {
        return Err(format!(
            "v2 length {len} is shorter than its addresses ({addr_len})"
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .map_err(|e| format!("v2 body cut: {e}"))?;
    let (src_ip, dst_ip, ports) = if fam == 0x11 {
        let a = |i: usize| {
            IpAddr::V4(Ipv4Addr::new(
                body[i],
                body[i + 1],
                body[i + 2],
                body[i + 3],
            ))
        };
        (a(0), a(4), &body[8..12])
    } else {
        let a = |i: usize| {
            let b: [u8; 16] = body[i..i + 16].try_into().expect("16 bytes");
            IpAddr::V6(Ipv6Addr::from(b))
        };
        (a(0), a(16), &body[32..36])
    };
    // TLVs must fill the rest exactly.
    let mut tlvs = &body[addr_len..];
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return Err(format!("v2 TLV header cut: {:02x?}", tlvs));
        }
        let l = u16::from_be_bytes([tlvs[1], tlvs[2]]) as usize;
        if tlvs.len() < 3 + l {
            return Err(format!("v2 TLV {:#04x} longer than the header", tlvs[0]));
        }
        tlvs = &tlvs[3 + l..];
    }
    Ok(Header {
        version: 2,
        src: SocketAddr::new(src_ip, u16::from_be_bytes([ports[0], ports[1]])),
        dst: SocketAddr::new(dst_ip, u16::from_be_bytes([ports[2], ports[3]])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<Header, String> {
        let mut r = b;
        let h = read_header(&mut r)?;
        assert!(r.is_empty() || r == b"rest", "read past the header");
        Ok(h)
    }

    fn v2(fam: u8, addrs: &[u8], extra: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x21);
        h.push(fam);
        h.extend_from_slice(&((addrs.len() + extra.len()) as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h.extend_from_slice(extra);
        h
    }

    #[test]
    fn v1_headers() {
        let h = parse(b"PROXY TCP4 100.100.0.2 100.100.0.1 24680 443\r\nrest").unwrap();
        assert_eq!(
            (h.version, h.src, h.dst),
            (
                1,
                "100.100.0.2:24680".parse().unwrap(),
                "100.100.0.1:443".parse().unwrap()
            )
        );
        let h = parse(b"PROXY TCP6 fd00::2 fd00::1 1 65535\r\n").unwrap();
        assert_eq!(h.src, "[fd00::2]:1".parse().unwrap());
        for bad in [
            &b"PROXY TCP4 100.100.0.2 100.100.0.1 24680 443\n"[..],
            b"PROXY  TCP4 100.100.0.2 100.100.0.1 24680 443\r\n",
            b"PROXY TCP4 100.100.0.2 100.100.0.1 024680 443\r\n",
            b"PROXY TCP4 100.100.0.2 100.100.0.1 65536 443\r\n",
            b"PROXY TCP6 100.100.0.2 100.100.0.1 1 2\r\n",
            b"PROXY TCP6 fd00:0::2 fd00::1 1 2\r\n",
            b"PROXY UNKNOWN\r\n",
            b"PROXY TCP4 100.100.0.2 100.100.0.1 24680\r\n",
            b"PROXY TCP4 100.100.0.2 100.100.0.1 24680 443",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        assert!(parse(long.as_bytes()).is_err());
    }

    #[test]
    fn v2_headers() {
        let addrs = [100, 100, 0, 2, 100, 100, 0, 1, 0x60, 0x68, 0x01, 0xbb];
        let mut b = v2(0x11, &addrs, &[]);
        b.extend_from_slice(b"rest");
        let h = parse(&b).unwrap();
        assert_eq!(
            (h.version, h.src, h.dst),
            (
                2,
                "100.100.0.2:24680".parse().unwrap(),
                "100.100.0.1:443".parse().unwrap()
            )
        );
        // A TLV (PP2_TYPE_NOOP) filling the length is fine; a cut one is not.
        assert!(parse(&v2(0x11, &addrs, &[0x04, 0, 2, 0, 0])).is_ok());
        assert!(parse(&v2(0x11, &addrs, &[0x04, 0, 3, 0, 0])).is_err());
        assert!(parse(&v2(0x11, &addrs, &[0x04, 0])).is_err());
        let mut six = [0u8; 36];
        six[0] = 0xfd;
        six[15] = 2;
        six[16] = 0xfd;
        six[31] = 1;
        six[32..].copy_from_slice(&[0, 9, 1, 0xbb]);
        assert_eq!(
            parse(&v2(0x21, &six, &[])).unwrap().src,
            "[fd00::2]:9".parse().unwrap()
        );
        // Wrong family for the length, LOCAL command, UDP, bad signature, short body.
        assert!(parse(&v2(0x21, &addrs, &[])).is_err());
        let mut local = v2(0x11, &addrs, &[]);
        local[12] = 0x20;
        assert!(parse(&local).is_err());
        let mut udp = v2(0x11, &addrs, &[]);
        udp[13] = 0x12;
        assert!(parse(&udp).is_err());
        let mut sig = v2(0x11, &addrs, &[]);
        sig[5] = b'X';
        assert!(parse(&sig).is_err());
        let cut = v2(0x11, &addrs, &[]);
        assert!(parse(&cut[..cut.len() - 1]).is_err());
    }
}
