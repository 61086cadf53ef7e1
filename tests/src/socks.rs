//! A small, strict SOCKS5 client (RFC 1928, RFC 1929) for tests that must see the exact
//! reply bytes a server sends: curl only says that it failed.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// CONNECT.
pub const CMD_CONNECT: u8 = 1;
/// UDP ASSOCIATE.
pub const CMD_UDP_ASSOCIATE: u8 = 3;

/// A destination as a request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// ATYP 1 (IPv4) or 4 (IPv6).
    Ip(SocketAddr),
    /// ATYP 3 (a domain name), resolved by the server.
    Name(String, u16),
}

impl std::str::FromStr for Dest {
    type Err = String;
    /// `1.2.3.4:80`, `[fd00::2]:80` or `name:80`.
    fn from_str(s: &str) -> Result<Dest, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Dest::Ip(a));
        }
        let (name, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected HOST:PORT"))?;
        let port = port
            .parse()
            .map_err(|_| format!("{s:?}: bad port {port:?}"))?;
        if name.is_empty() || name.len() > 255 {
            return Err(format!("{s:?}: bad name"));
        }
        Ok(Dest::Name(name.to_string(), port))
    }
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dest::Ip(a) => a.fmt(f),
            Dest::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

/// The address part (ATYP, address, port) of a request or UDP header.
pub fn encode_dest(d: &Dest) -> Vec<u8> {
    let mut v = Vec::new();
    match d {
        Dest::Ip(SocketAddr::V4(a)) => {
            v.push(1);
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Ip(SocketAddr::V6(a)) => {
            v.push(4);
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Name(n, p) => {
            v.push(3);
            v.push(n.len() as u8);
            v.extend_from_slice(n.as_bytes());
            v.extend_from_slice(&p.to_be_bytes());
        }
    }
    v
}

/// Reads an address part (ATYP, address, port) from `r`; domain names are refused, as a
/// reply's BND.ADDR from nexd is always an address.
pub fn read_addr(r: &mut impl Read) -> Result<SocketAddr, String> {
    let mut atyp = [0u8; 1];
    r.read_exact(&mut atyp).map_err(|e| format!("ATYP: {e}"))?;
    let ip = match atyp[0] {
        1 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|e| format!("IPv4: {e}"))?;
            IpAddr::V4(Ipv4Addr::from(b))
        }
        4 => {
            let mut b = [0u8; 16];
            r.read_exact(&mut b).map_err(|e| format!("IPv6: {e}"))?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
        t => return Err(format!("unexpected ATYP {t:#04x}")),
    };
    let mut port = [0u8; 2];
    r.read_exact(&mut port).map_err(|e| format!("port: {e}"))?;
    Ok(SocketAddr::new(ip, u16::from_be_bytes(port)))
}

/// How far a request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server chose no method we offered (it answered this METHOD, normally 0xff).
    NoMethod(u8),
    /// Username/password authentication failed with this STATUS (RFC 1929).
    AuthFailed(u8),
    /// The server answered the request: REP and BND.ADDR:BND.PORT.
    Reply(u8, SocketAddr),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::NoMethod(m) => write!(f, "method {m:#04x}"),
            Outcome::AuthFailed(s) => write!(f, "auth {s:#04x}"),
            Outcome::Reply(r, a) => write!(f, "reply {r:#04x} bound {a}"),
        }
    }
}

/// Connects to the SOCKS5 server at `server`, negotiates (no authentication, or
/// username/password when `auth` is given: then only that method is offered) and sends
/// `cmd` for `dest`. Returns the connection (positioned after the reply) and the outcome.
/// Protocol violations by the server are errors.
pub fn request(
    server: SocketAddr,
    cmd: u8,
    dest: &Dest,
    auth: Option<(&str, &str)>,
) -> Result<(TcpStream, Outcome), String> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(10))
        .map_err(|e| format!("connect {server}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let method = if auth.is_some() { 2 } else { 0 };
    s.write_all(&[5, 1, method])
        .map_err(|e| format!("greeting: {e}"))?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice)
        .map_err(|e| format!("method selection: {e}"))?;
    if choice[0] != 5 {
        return Err(format!("method selection has version {:#04x}", choice[0]));
    }
    if choice[1] != method {
        if choice[1] == 0xff {
            return Ok((s, Outcome::NoMethod(0xff)));
        }
        return Err(format!(
            "server chose method {:#04x}, which was not offered",
            choice[1]
        ));
    }
    if let Some((user, pass)) = auth {
        let mut m = vec![1, user.len() as u8];
        m.extend_from_slice(user.as_bytes());
        m.push(pass.len() as u8);
        m.extend_from_slice(pass.as_bytes());
        s.write_all(&m).map_err(|e| format!("auth request: {e}"))?;
        let mut status = [0u8; 2];
        s.read_exact(&mut status)
            .map_err(|e| format!("auth status: {e}"))?;
        if status[0] != 1 {
            return Err(format!("auth status has version {:#04x}", status[0]));
        }
        if status[1] != 0 {
            return Ok((s, Outcome::AuthFailed(status[1])));
        }
    }
    let mut req = vec![5, cmd, 0];
    req.extend(encode_dest(dest));
    s.write_all(&req).map_err(|e| format!("request: {e}"))?;
    let mut head = [0u8; 3];
    s.read_exact(&mut head).map_err(|e| format!("reply: {e}"))?;
    if head[0] != 5 || head[2] != 0 {
        return Err(format!("malformed reply head {head:02x?}"));
    }
    let bound = read_addr(&mut s)?;
    Ok((s, Outcome::Reply(head[1], bound)))
}

/// CONNECT to `dest` through `server`: the connection, ready for the destination's bytes.
pub fn connect(
    server: SocketAddr,
    dest: &Dest,
    auth: Option<(&str, &str)>,
) -> Result<TcpStream, String> {
    match request(server, CMD_CONNECT, dest, auth)? {
        (s, Outcome::Reply(0, _)) => Ok(s),
        (_, o) => Err(format!("SOCKS5 CONNECT {dest} via {server}: {o}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_encode() {
        let d: Dest = "100.100.0.2:8000".parse().unwrap();
        assert_eq!(encode_dest(&d), [1, 100, 100, 0, 2, 0x1f, 0x40]);
        let d: Dest = "[fd00::2]:80".parse().unwrap();
        let e = encode_dest(&d);
        assert_eq!((e[0], e.len(), &e[17..]), (4, 19, &[0, 80][..]));
        let d: Dest = "peer.test:443".parse().unwrap();
        assert_eq!(encode_dest(&d), b"\x03\x09peer.test\x01\xbb");
        assert!("nohost".parse::<Dest>().is_err());
        assert!("host:99999".parse::<Dest>().is_err());
        let mut r = &[4u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 7][..];
        assert_eq!(read_addr(&mut r).unwrap(), "[::1]:7".parse().unwrap());
        assert!(read_addr(&mut &[3u8, 1, b'a', 0, 1][..]).is_err());
    }
}
