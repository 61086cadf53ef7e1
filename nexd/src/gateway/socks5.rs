//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929): the server side of
//! the handshake, the reply, and the header of UDP ASSOCIATE datagrams.
//!
//! Every length on the wire is one byte, so each read goes into a fixed buffer of at most
//! 255 bytes (plus a port): a client cannot make the daemon allocate. The handshake has no
//! timeout of its own; the caller bounds it.

use super::auth::Credentials;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

const VERSION: u8 = 5;
const AUTH_VERSION: u8 = 1;
const METHOD_NONE: u8 = 0x00;
const METHOD_PASSWORD: u8 = 0x02;
const METHOD_REFUSED: u8 = 0xff;
const AUTH_OK: u8 = 0;
const AUTH_FAILED: u8 = 1;
const CMD_CONNECT: u8 = 1;
const CMD_UDP_ASSOCIATE: u8 = 3;
const ATYP_V4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_V6: u8 = 4;
/// Longest DST.ADDR DST.PORT: a length byte, a 255-byte name and a port.
const MAX_ADDR: usize = 1 + 255 + 2;

/// Where a client wants to go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// An address.
    Ip(SocketAddr),
    /// A domain name, not resolved yet, and a port.
    Name(String, u16),
}

impl Target {
    /// `host` as a target: an IP literal is [`Target::Ip`], a hostname of 1 to 255 letters,
    /// digits, `-`, `.` and `_` is [`Target::Name`], anything else `None`.
    pub fn from_host(host: &str, port: u16) -> Option<Target> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(Target::Ip(SocketAddr::new(ip, port)));
        }
        let valid = (1..=255).contains(&host.len())
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        valid.then(|| Target::Name(host.to_owned(), port))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ip(addr) => write!(f, "{addr}"),
            Target::Name(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A TCP connection to the target.
    Connect,
    /// A UDP relay; the target is where the client will send from (often `0.0.0.0:0`).
    UdpAssociate,
}

/// A client's request after a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub command: Command,
    /// Where to.
    pub target: Target,
}

/// The REP field of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// The request is granted.
    Succeeded = 0,
    /// General SOCKS server failure.
    GeneralFailure = 1,
    /// The ruleset does not allow the connection.
    NotAllowed = 2,
    /// Network unreachable.
    NetworkUnreachable = 3,
    /// Host unreachable.
    HostUnreachable = 4,
    /// The destination refused the connection.
    ConnectionRefused = 5,
    /// The destination did not answer in time.
    TtlExpired = 6,
    /// The command is not supported.
    CommandNotSupported = 7,
    /// The address type is not supported.
    AddressNotSupported = 8,
}

/// Why a handshake failed; whatever the client should see has been sent already.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Reading or writing failed, or the client closed the connection mid-handshake.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not SOCKS5 (or, in the authentication step, not RFC 1929 version 1).
    #[error("not SOCKS5: version byte {0:#04x}")]
    BadVersion(u8),
    /// The client offered no method the server accepts.
    #[error("no acceptable authentication method offered")]
    NoAcceptableMethod,
    /// Wrong user name or password.
    #[error("authentication failed")]
    AuthFailed,
    /// The request breaks the protocol.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// BIND or an unknown command.
    #[error("unsupported command {0}")]
    UnsupportedCommand(u8),
    /// An unknown address type.
    #[error("unsupported address type {0}")]
    UnsupportedAddress(u8),
}

/// Why a UDP ASSOCIATE datagram cannot be relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    /// A fragment (FRAG != 0); fragmentation is optional and not supported.
    #[error("fragmented datagram")]
    Fragmented,
    /// Too short, an unknown address type or an invalid name.
    #[error("malformed datagram header")]
    Malformed,
}

/// Runs the server side of a handshake: method selection, authentication when `creds` is
/// given, and the request. A refused or unsupported request has been answered already; a
/// granted one awaits [`send_reply`].
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    creds: Option<&Credentials>,
) -> Result<Request, HandshakeError> {
    select_method(s, creds.is_some()).await?;
    if let Some(creds) = creds {
        authenticate(s, creds).await?;
    }
    read_request(s).await
}

/// Sends the reply to a request: VER REP RSV ATYP BND.ADDR BND.PORT. An IPv4-mapped IPv6
/// `bound` is sent as IPv4.
pub async fn send_reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    reply: Reply,
    bound: SocketAddr,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(22);
    out.extend_from_slice(&[VERSION, reply as u8, 0]);
    encode_addr(&mut out, bound);
    s.write_all(&out).await?;
    s.flush().await
}

/// Splits a datagram from a UDP ASSOCIATE client into its destination and payload.
pub fn parse_udp(datagram: &[u8]) -> Result<(Target, &[u8]), UdpError> {
    let (&[_, _, frag, atyp], rest) = datagram.split_first_chunk().ok_or(UdpError::Malformed)?;
    if frag != 0 {
        return Err(UdpError::Fragmented);
    }
    decode_target(atyp, rest).map_err(|_| UdpError::Malformed)
}

/// The header to put before a datagram from `from` relayed to a UDP ASSOCIATE client.
pub fn udp_header(from: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(22);
    out.extend_from_slice(&[0, 0, 0]);
    encode_addr(&mut out, from);
    out
}

async fn select_method<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    need_password: bool,
) -> Result<(), HandshakeError> {
    let [version, count] = read_array(s).await?;
    if version != VERSION {
        return Err(HandshakeError::BadVersion(version));
    }
    let mut buf = [0u8; 255];
    let methods = &mut buf[..usize::from(count)];
    s.read_exact(methods).await?;
    let wanted = if need_password {
        METHOD_PASSWORD
    } else {
        METHOD_NONE
    };
    if !methods.contains(&wanted) {
        // The client may be gone already; the refusal is what is worth reporting.
        let _ = write(s, &[VERSION, METHOD_REFUSED]).await;
        return Err(HandshakeError::NoAcceptableMethod);
    }
    write(s, &[VERSION, wanted]).await?;
    Ok(())
}

async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    creds: &Credentials,
) -> Result<(), HandshakeError> {
    let [version, user_len] = read_array(s).await?;
    if version != AUTH_VERSION {
        return Err(HandshakeError::BadVersion(version));
    }
    let mut user = [0u8; 255];
    let user = &mut user[..usize::from(user_len)];
    s.read_exact(user).await?;
    let [password_len] = read_array(s).await?;
    let mut password = [0u8; 255];
    let password = &mut password[..usize::from(password_len)];
    s.read_exact(password).await?;
    if creds.check(user, password) {
        write(s, &[AUTH_VERSION, AUTH_OK]).await?;
        return Ok(());
    }
    let _ = write(s, &[AUTH_VERSION, AUTH_FAILED]).await;
    Err(HandshakeError::AuthFailed)
}

async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<Request, HandshakeError> {
    let [version, command, _reserved, atyp] = read_array(s).await?;
    if version != VERSION {
        return Err(HandshakeError::BadVersion(version));
    }
    // The address is read even for a command about to be refused: closing with unread
    // input would send a reset, which can destroy the reply before the client reads it.
    let target = read_target(s, atyp).await;
    let command = match command {
        CMD_CONNECT => Command::Connect,
        CMD_UDP_ASSOCIATE => Command::UdpAssociate,
        other => {
            if let Err(HandshakeError::Io(e)) = target {
                return Err(HandshakeError::Io(e));
            }
            refuse(s, Reply::CommandNotSupported).await;
            return Err(HandshakeError::UnsupportedCommand(other));
        }
    };
    match target {
        Ok(target) => Ok(Request { command, target }),
        Err(e) => {
            match e {
                HandshakeError::UnsupportedAddress(_) => {
                    refuse(s, Reply::AddressNotSupported).await
                }
                HandshakeError::Malformed(_) => refuse(s, Reply::GeneralFailure).await,
                _ => {}
            }
            Err(e)
        }
    }
}

/// Reads DST.ADDR DST.PORT of address type `atyp`.
async fn read_target<S: AsyncRead + Unpin>(s: &mut S, atyp: u8) -> Result<Target, HandshakeError> {
    let mut buf = [0u8; MAX_ADDR];
    let (start, len) = match atyp {
        ATYP_V4 => (0, 4 + 2),
        ATYP_V6 => (0, 16 + 2),
        ATYP_NAME => {
            let [name_len] = read_array(s).await?;
            buf[0] = name_len;
            (1, 1 + usize::from(name_len) + 2)
        }
        other => return Err(HandshakeError::UnsupportedAddress(other)),
    };
    s.read_exact(&mut buf[start..len]).await?;
    match decode_target(atyp, &buf[..len]) {
        Ok((target, _)) => Ok(target),
        Err(AddrError::Unsupported(a)) => Err(HandshakeError::UnsupportedAddress(a)),
        Err(AddrError::Short) => Err(HandshakeError::Malformed("truncated address")),
        Err(AddrError::BadName) => Err(HandshakeError::Malformed("invalid domain name")),
    }
}

/// Why DST.ADDR DST.PORT cannot be decoded.
enum AddrError {
    Short,
    Unsupported(u8),
    BadName,
}

/// Decodes DST.ADDR DST.PORT of address type `atyp` from the start of `b`: the target and
/// the bytes after it.
fn decode_target(atyp: u8, b: &[u8]) -> Result<(Target, &[u8]), AddrError> {
    match atyp {
        ATYP_V4 => {
            let (ip, rest) = b.split_first_chunk::<4>().ok_or(AddrError::Short)?;
            let (port, rest) = rest.split_first_chunk::<2>().ok_or(AddrError::Short)?;
            let addr = SocketAddr::new(IpAddr::from(*ip), u16::from_be_bytes(*port));
            Ok((Target::Ip(addr), rest))
        }
        ATYP_V6 => {
            let (ip, rest) = b.split_first_chunk::<16>().ok_or(AddrError::Short)?;
            let (port, rest) = rest.split_first_chunk::<2>().ok_or(AddrError::Short)?;
            let addr = SocketAddr::new(IpAddr::from(*ip), u16::from_be_bytes(*port));
            Ok((Target::Ip(addr), rest))
        }
        ATYP_NAME => {
            let (&len, rest) = b.split_first().ok_or(AddrError::Short)?;
            let (name, rest) = rest
                .split_at_checked(usize::from(len))
                .ok_or(AddrError::Short)?;
            let (port, rest) = rest.split_first_chunk::<2>().ok_or(AddrError::Short)?;
            let name = std::str::from_utf8(name).map_err(|_| AddrError::BadName)?;
            let target =
                Target::from_host(name, u16::from_be_bytes(*port)).ok_or(AddrError::BadName)?;
            Ok((target, rest))
        }
        other => Err(AddrError::Unsupported(other)),
    }
}

/// Appends ATYP ADDR PORT; IPv4-mapped IPv6 as IPv4, which an IPv4-only client can use.
fn encode_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => {
            out.push(ATYP_V4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(ATYP_V6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Answers a request with a failure; a write error is dropped, since the client may be
/// gone and the protocol error is what the caller reports.
async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, reply: Reply) {
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let _ = send_reply(s, reply, unspecified).await;
}

async fn read_array<const N: usize, S: AsyncRead + Unpin>(s: &mut S) -> io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn creds() -> Credentials {
        Credentials::parse("alice:s3cret\nbob:pa:ss\n").unwrap()
    }

    /// Feeds `input` to a handshake, then EOF; returns its result and what the client got.
    async fn run(
        input: &[u8],
        creds: Option<&Credentials>,
    ) -> (Result<Request, HandshakeError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            handshake(&mut server, creds),
        )
        .await
        .expect("the handshake ends once its input does");
        drop(server);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        (result, out)
    }

    const NO_AUTH: &[u8] = &[5, 1, 0];
    const CONNECT_V4: &[u8] = &[5, 1, 0, 1, 100, 100, 0, 2, 0x1f, 0x90];

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn auth(user: &[u8], password: &[u8]) -> Vec<u8> {
        let mut v = vec![1, user.len() as u8];
        v.extend_from_slice(user);
        v.push(password.len() as u8);
        v.extend_from_slice(password);
        v
    }

    #[tokio::test]
    async fn connect_ipv4_without_auth() {
        let (r, out) = run(&cat(&[NO_AUTH, CONNECT_V4]), None).await;
        let r = r.unwrap();
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.target, Target::Ip("100.100.0.2:8080".parse().unwrap()));
        assert_eq!(out, [5, 0]);
    }

    #[tokio::test]
    async fn connect_ipv6_and_udp_associate() {
        let mut req = vec![5, 3, 0, 4];
        req.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        req.extend_from_slice(&53u16.to_be_bytes());
        let (r, out) = run(&cat(&[&[5, 2, 1, 0], &req]), None).await;
        let r = r.unwrap();
        assert_eq!(r.command, Command::UdpAssociate);
        assert_eq!(r.target, Target::Ip("[fd00::1]:53".parse().unwrap()));
        assert_eq!(r.target.to_string(), "[fd00::1]:53");
        assert_eq!(out, [5, 0]);
    }

    #[tokio::test]
    async fn connect_by_name() {
        let name = b"db.internal_1";
        let mut req = vec![5, 1, 0, 3, name.len() as u8];
        req.extend_from_slice(name);
        req.extend_from_slice(&5432u16.to_be_bytes());
        let r = run(&cat(&[NO_AUTH, &req]), None).await.0.unwrap();
        assert_eq!(r.target, Target::Name("db.internal_1".into(), 5432));
        assert_eq!(r.target.to_string(), "db.internal_1:5432");
    }

    #[tokio::test]
    async fn a_name_that_is_an_ip_literal_is_an_address() {
        for (name, want) in [("10.0.0.1", "10.0.0.1:80"), ("::1", "[::1]:80")] {
            let mut req = vec![5, 1, 0, 3, name.len() as u8];
            req.extend_from_slice(name.as_bytes());
            req.extend_from_slice(&80u16.to_be_bytes());
            let r = run(&cat(&[NO_AUTH, &req]), None).await.0.unwrap();
            assert_eq!(r.target, Target::Ip(want.parse().unwrap()));
        }
    }

    #[tokio::test]
    async fn bad_names_are_refused_with_general_failure() {
        let long = vec![b'a'; 255];
        let ok = run(&cat(&[NO_AUTH, &[5, 1, 0, 3, 255], &long, &[0, 80]]), None)
            .await
            .0;
        assert!(ok.is_ok(), "255 bytes is the limit, not past it");
        for name in [&b""[..], b"a b", b"a/b", b"\xff\xfe", b"a\0b", b"[::1]"] {
            let mut req = vec![5, 1, 0, 3, name.len() as u8];
            req.extend_from_slice(name);
            req.extend_from_slice(&[0, 80]);
            let (r, out) = run(&cat(&[NO_AUTH, &req]), None).await;
            assert!(
                matches!(r, Err(HandshakeError::Malformed(_))),
                "{name:?}: {r:?}"
            );
            assert_eq!(out, [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        }
    }

    #[tokio::test]
    async fn password_auth_success() {
        let c = creds();
        let input = cat(&[&[5, 2, 0, 2], &auth(b"bob", b"pa:ss"), CONNECT_V4]);
        let (r, out) = run(&input, Some(&c)).await;
        assert_eq!(r.unwrap().command, Command::Connect);
        assert_eq!(out, [5, 2, 1, 0]);
    }

    #[tokio::test]
    async fn wrong_password_is_answered_and_refused() {
        let c = creds();
        let wrong: [(&[u8], &[u8]); 3] =
            [(b"alice", b"s3creT"), (b"mallory", b"s3cret"), (b"", b"")];
        for (user, password) in wrong {
            let input = cat(&[&[5, 1, 2], &auth(user, password), CONNECT_V4]);
            let (r, out) = run(&input, Some(&c)).await;
            assert!(matches!(r, Err(HandshakeError::AuthFailed)), "{r:?}");
            assert_eq!(out, [5, 2, 1, 1]);
        }
    }

    #[tokio::test]
    async fn method_selection() {
        let c = creds();
        // Authentication required but not offered.
        let (r, out) = run(&cat(&[NO_AUTH, CONNECT_V4]), Some(&c)).await;
        assert!(matches!(r, Err(HandshakeError::NoAcceptableMethod)));
        assert_eq!(out, [5, 0xff]);
        // Only password offered to a server without credentials.
        let (r, out) = run(&[5, 1, 2], None).await;
        assert!(matches!(r, Err(HandshakeError::NoAcceptableMethod)));
        assert_eq!(out, [5, 0xff]);
        // No methods at all.
        let (r, out) = run(&[5, 0], None).await;
        assert!(matches!(r, Err(HandshakeError::NoAcceptableMethod)));
        assert_eq!(out, [5, 0xff]);
    }

    #[tokio::test]
    async fn bad_versions() {
        let (r, out) = run(&[4, 1, 0, 80, 10, 0, 0, 1, 0], None).await;
        assert!(matches!(r, Err(HandshakeError::BadVersion(4))));
        assert!(out.is_empty());
        let (r, _) = run(b"GET / HTTP/1.1\r\n\r\n", None).await;
        assert!(matches!(r, Err(HandshakeError::BadVersion(b'G'))));
        // The request's version.
        let (r, _) = run(&cat(&[NO_AUTH, &[4, 1, 0, 1, 1, 2, 3, 4, 0, 80]]), None).await;
        assert!(matches!(r, Err(HandshakeError::BadVersion(4))));
        // The authentication step's version.
        let c = creds();
        let (r, out) = run(&[5, 1, 2, 5, 1, b'a', 1, b'b'], Some(&c)).await;
        assert!(matches!(r, Err(HandshakeError::BadVersion(5))));
        assert_eq!(out, [5, 2]);
    }

    #[tokio::test]
    async fn unsupported_command_is_answered() {
        let bind = [5, 2, 0, 1, 1, 2, 3, 4, 0, 80];
        let (r, out) = run(&cat(&[NO_AUTH, &bind]), None).await;
        assert!(matches!(r, Err(HandshakeError::UnsupportedCommand(2))));
        assert_eq!(out, [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
        let (r, out) = run(&cat(&[NO_AUTH, &[5, 9, 0, 7]]), None).await;
        assert!(matches!(r, Err(HandshakeError::UnsupportedCommand(9))));
        assert_eq!(out[3], Reply::CommandNotSupported as u8);
    }

    #[tokio::test]
    async fn unsupported_address_type_is_answered() {
        let (r, out) = run(&cat(&[NO_AUTH, &[5, 1, 0, 2, 1, 2, 3, 4, 0, 80]]), None).await;
        assert!(matches!(r, Err(HandshakeError::UnsupportedAddress(2))));
        assert_eq!(out, [5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn truncated_input_is_an_io_error_at_every_cut() {
        let c = creds();
        let mut name_req = vec![5, 1, 0, 3, 7];
        name_req.extend_from_slice(b"example");
        name_req.extend_from_slice(&[1, 187]);
        let full = cat(&[&[5, 2, 0, 2], &auth(b"alice", b"s3cret"), &name_req]);
        for cut in 0..full.len() {
            let (r, _) = run(&full[..cut], Some(&c)).await;
            match r {
                Err(HandshakeError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        let r = run(&full, Some(&c)).await.0.unwrap();
        assert_eq!(r.target, Target::Name("example".into(), 443));
    }

    #[tokio::test]
    async fn a_client_gone_before_the_answer_is_an_error_not_a_panic() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&[5, 1, 0]).await.unwrap();
        drop(client);
        assert!(matches!(
            handshake(&mut server, None).await,
            Err(HandshakeError::Io(_))
        ));
    }

    #[tokio::test]
    async fn replies() {
        let mut out = Vec::new();
        send_reply(
            &mut out,
            Reply::Succeeded,
            "192.0.2.1:1080".parse().unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(out, [5, 0, 0, 1, 192, 0, 2, 1, 0x04, 0x38]);
        let mut out = Vec::new();
        send_reply(
            &mut out,
            Reply::HostUnreachable,
            "[2001:db8::1]:80".parse().unwrap(),
        )
        .await
        .unwrap();
        let mut want = vec![5, 4, 0, 4];
        want.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        want.extend_from_slice(&[0, 80]);
        assert_eq!(out, want);
        let mut out = Vec::new();
        send_reply(
            &mut out,
            Reply::Succeeded,
            "[::ffff:127.0.0.1]:9".parse().unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(out, [5, 0, 0, 1, 127, 0, 0, 1, 0, 9]);
    }

    #[test]
    fn reply_codes() {
        let codes = [
            Reply::Succeeded,
            Reply::GeneralFailure,
            Reply::NotAllowed,
            Reply::NetworkUnreachable,
            Reply::HostUnreachable,
            Reply::ConnectionRefused,
            Reply::TtlExpired,
            Reply::CommandNotSupported,
            Reply::AddressNotSupported,
        ];
        for (i, r) in codes.into_iter().enumerate() {
            assert_eq!(r as u8 as usize, i);
        }
    }

    #[test]
    fn udp_datagrams() {
        let d = [0, 0, 0, 1, 10, 0, 0, 9, 0, 53, b'h', b'i'];
        let (t, data) = parse_udp(&d).unwrap();
        assert_eq!(t, Target::Ip("10.0.0.9:53".parse().unwrap()));
        assert_eq!(data, b"hi");

        let mut d = vec![0, 0, 0, 4];
        d.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        d.extend_from_slice(&[0, 7]);
        let (t, data) = parse_udp(&d).unwrap();
        assert_eq!(t, Target::Ip("[::1]:7".parse().unwrap()));
        assert!(data.is_empty());

        let d = [0, 0, 0, 3, 3, b'd', b'n', b's', 0, 53, 1, 2, 3];
        let (t, data) = parse_udp(&d).unwrap();
        assert_eq!(t, Target::Name("dns".into(), 53));
        assert_eq!(data, [1, 2, 3]);

        assert_eq!(
            parse_udp(&[0, 0, 1, 1, 10, 0, 0, 9, 0, 53]),
            Err(UdpError::Fragmented)
        );
        for bad in [
            &[][..],
            &[0, 0, 0],
            &[0, 0, 0, 1, 10, 0, 0, 9, 0],
            &[
                0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            &[0, 0, 0, 3, 4, b'd', b'n', b's', 0, 53],
            &[0, 0, 0, 3, 0, 0, 53],
            &[0, 0, 0, 3, 1, b' ', 0, 53],
            &[0, 0, 0, 2, 10, 0, 0, 9, 0, 53],
        ] {
            assert_eq!(parse_udp(bad), Err(UdpError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn udp_headers() {
        assert_eq!(
            udp_header(SocketAddr::from((Ipv4Addr::new(10, 0, 0, 9), 53))),
            [0, 0, 0, 1, 10, 0, 0, 9, 0, 53]
        );
        assert_eq!(
            udp_header("[::ffff:10.0.0.9]:53".parse().unwrap()),
            [0, 0, 0, 1, 10, 0, 0, 9, 0, 53]
        );
        let h = udp_header("[fd00::2]:443".parse().unwrap());
        let mut want = vec![0, 0, 0, 4];
        want.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        want.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(h, want);
        // What the server writes, the server reads back.
        for from in ["10.1.2.3:9", "[fd00::2]:443"] {
            let from: SocketAddr = from.parse().unwrap();
            let mut d = udp_header(from);
            d.extend_from_slice(b"payload");
            assert_eq!(parse_udp(&d).unwrap(), (Target::Ip(from), &b"payload"[..]));
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            Target::from_host("a-b.c_d", 1),
            Some(Target::Name("a-b.c_d".into(), 1))
        );
        assert_eq!(
            Target::from_host("1.2.3.4", 1),
            Some(Target::Ip("1.2.3.4:1".parse().unwrap()))
        );
        for bad in ["", "a b", "a:b", "[::1]", "ä", "a\n", &"a".repeat(256)] {
            assert_eq!(Target::from_host(bad, 1), None, "{bad:?}");
        }
    }

    /// Mutations of valid handshakes: random bytes, flips, cuts and insertions.
    fn mutate(rng: &mut impl rand::Rng, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        match rng.random_range(0..4) {
            0 => {
                v = vec![0; rng.random_range(0..600)];
                rng.fill(&mut v[..]);
                if rng.random_bool(0.5) && !v.is_empty() {
                    v[0] = 5;
                }
            }
            1 => {
                for _ in 0..rng.random_range(1..4) {
                    if !v.is_empty() {
                        let i = rng.random_range(0..v.len());
                        v[i] = rng.random();
                    }
                }
            }
            2 => v.truncate(rng.random_range(0..=v.len())),
            _ => {
                let i = rng.random_range(0..=v.len());
                let extra: Vec<u8> = (0..rng.random_range(1..300))
                    .map(|_| rng.random())
                    .collect();
                v.splice(i..i, extra);
            }
        }
        v
    }

    #[tokio::test]
    async fn random_input_never_panics() {
        let c = creds();
        let seeds = [
            cat(&[NO_AUTH, CONNECT_V4]),
            cat(&[
                &[5, 1, 2],
                &auth(b"alice", b"s3cret"),
                &[5, 1, 0, 3, 3, b'a', b'b', b'c', 0, 80],
            ]),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1928);
        for i in 0..3000 {
            let input = mutate(&mut rng, &seeds[i % 2]);
            let creds = (i % 3 == 0).then_some(&c);
            let _ = run(&input, creds).await;
            let _ = parse_udp(&input);
        }
    }
}
