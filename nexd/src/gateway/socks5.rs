//! SOCKS5 (placeholder; the real codec replaces this file).

use super::auth::Credentials;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

/// A requested destination.
#[derive(Debug, Clone)]
pub enum Target {
    /// An address.
    Ip(SocketAddr),
    /// A name and port.
    Name(String, u16),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Ip(a) => a.fmt(f),
            Target::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

/// Request commands.
pub enum Command {
    /// CONNECT.
    Connect,
    /// UDP ASSOCIATE.
    UdpAssociate,
}

/// A request.
pub struct Request {
    /// Command.
    pub command: Command,
    /// Destination.
    pub target: Target,
}

/// Reply codes.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// 0.
    Succeeded,
    /// 1.
    GeneralFailure,
    /// 2.
    NotAllowed,
    /// 4.
    HostUnreachable,
    /// 5.
    ConnectionRefused,
    /// 8.
    AddressNotSupported,
}

/// Handshake failures.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// I/O.
    #[error("{0}")]
    Io(std::io::Error),
    /// Auth.
    #[error("authentication failed")]
    AuthFailed,
    /// No method.
    #[error("no acceptable method")]
    NoAcceptableMethod,
}

/// Placeholder.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    creds: Option<&Credentials>,
) -> Result<Request, HandshakeError> {
    let _ = (s, creds);
    Err(HandshakeError::NoAcceptableMethod)
}

/// Placeholder.
pub async fn send_reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    reply: Reply,
    bound: SocketAddr,
) -> std::io::Result<()> {
    let _ = (s, reply, bound);
    Ok(())
}

/// Placeholder.
#[allow(clippy::result_unit_err)]
pub fn parse_udp(d: &[u8]) -> Result<(Target, &[u8]), ()> {
    let _ = d;
    Err(())
}

/// The header in front of a reply datagram from `from`.
pub fn udp_header(from: SocketAddr) -> Vec<u8> {
    let _ = from;
    Vec::new()
}
