//! One SOCKS5 client: method negotiation and authentication, then CONNECT (its connection
//! joins a TCP flow) or UDP ASSOCIATE (datagrams relayed while its connection lasts).

use super::listener::{Session, HANDSHAKE_TIMEOUT};
use super::resolve::{self, ResolveError};
use super::socks5::{self, Command, HandshakeError, Reply, Target};
use crate::engine::host::{ConnectRefusal, Event, GatewayFailure};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::OwnedSemaphorePermit;

/// Identifies UDP associations across every server.
static NEXT_ASSOCIATION: AtomicU64 = AtomicU64::new(1);
/// Names an association remembers, and for how long.
const NAME_CACHE: usize = 256;
const NAME_TTL: Duration = Duration::from_secs(30);

const UNSPECIFIED: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Runs the client's session to its end (for CONNECT: until its connection joins a flow).
pub async fn run(
    mut stream: TcpStream,
    client: SocketAddr,
    session: Session,
    slot: OwnedSemaphorePermit,
) {
    let creds = session.options.credentials.get();
    let request = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        socks5::handshake(&mut stream, creds.as_deref()),
    )
    .await;
    let request = match request {
        Ok(Ok(r)) => r,
        // The client went away or stalled: nothing to count.
        Ok(Err(HandshakeError::Io(_))) => return,
        Ok(Err(HandshakeError::AuthFailed)) => {
            return session.failed(GatewayFailure::AuthFailed).await
        }
        Ok(Err(HandshakeError::NoAcceptableMethod)) if creds.is_some() => {
            return session.failed(GatewayFailure::AuthFailed).await
        }
        Ok(Err(e)) => {
            tracing::debug!(server = %session.gateway, %client, "socks5: {e}");
            return session.failed(GatewayFailure::BadRequest).await;
        }
        Err(_) => return session.failed(GatewayFailure::BadRequest).await,
    };
    match request.command {
        Command::Connect => {
            drop(slot);
            connect(stream, client, &session, &request.target).await;
        }
        Command::UdpAssociate => {
            drop(slot);
            associate(stream, client, &session, &request.target).await;
        }
    }
}

/// The addresses of a request's target, or the reply that refuses it (counted).
async fn candidates(target: &Target, session: &Session) -> Result<Vec<SocketAddr>, Reply> {
    let (name, port) = match target {
        Target::Ip(a) => return Ok(vec![*a]),
        Target::Name(n, p) => (n, *p),
    };
    match resolve::addresses(name, port, session.options.resolve_names).await {
        Ok(a) => Ok(a),
        Err(ResolveError::NamesRefused) => {
            session.failed(GatewayFailure::BadRequest).await;
            Err(Reply::AddressNotSupported)
        }
        Err(ResolveError::Unresolved) => {
            session.failed(GatewayFailure::Unresolved).await;
            Err(Reply::HostUnreachable)
        }
    }
}

fn refusal_reply(why: ConnectRefusal) -> Reply {
    match why {
        ConnectRefusal::NotAllowed => Reply::NotAllowed,
        ConnectRefusal::Refused => Reply::ConnectionRefused,
        ConnectRefusal::TimedOut => Reply::HostUnreachable,
        ConnectRefusal::Limit | ConnectRefusal::Unavailable => Reply::GeneralFailure,
    }
}

async fn connect(mut stream: TcpStream, client: SocketAddr, session: &Session, target: &Target) {
    let addrs = match candidates(target, session).await {
        Ok(a) => a,
        Err(reply) => {
            let _ = socks5::send_reply(&mut stream, reply, UNSPECIFIED).await;
            return;
        }
    };
    let connected = match session.connect(addrs, client).await {
        Some(Ok(c)) => c,
        Some(Err(why)) => {
            tracing::debug!(server = %session.gateway, %client, %target, ?why, "socks5 connect refused");
            let _ = socks5::send_reply(&mut stream, refusal_reply(why), UNSPECIFIED).await;
            return;
        }
        None => {
            let _ = socks5::send_reply(&mut stream, Reply::GeneralFailure, UNSPECIFIED).await;
            return;
        }
    };
    let flow = connected.flow;
    let ev = match socks5::send_reply(&mut stream, Reply::Succeeded, connected.bound).await {
        Ok(()) => Event::GatewayAttach {
            flow,
            stream,
            preface: Bytes::new(),
        },
        Err(_) => Event::HostReset { flow },
    };
    let _ = session.events.send(ev).await;
}

/// Relays the client's datagrams while its TCP connection stays open (RFC 1928 §7).
async fn associate(mut stream: TcpStream, client: SocketAddr, session: &Session, target: &Target) {
    // Datagrams come to the address the client reached us on.
    let local = match stream.local_addr() {
        Ok(a) => a.ip(),
        Err(_) => return,
    };
    let sock = match UdpSocket::bind(SocketAddr::new(local, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(server = %session.gateway, "socks5 udp associate: cannot bind: {e}");
            let _ = socks5::send_reply(&mut stream, Reply::GeneralFailure, UNSPECIFIED).await;
            return;
        }
    };
    crate::engine::host::raise_buffers(&socket2::SockRef::from(&sock));
    let bound = match sock.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    if socks5::send_reply(&mut stream, Reply::Succeeded, bound)
        .await
        .is_err()
    {
        return;
    }
    let association = NEXT_ASSOCIATION.fetch_add(1, Ordering::Relaxed);
    let sock = Arc::new(sock);
    // Only the client's host may use the association; a port it named, only that port.
    let wanted_port = match target {
        Target::Ip(a) if a.port() != 0 => Some(a.port()),
        _ => None,
    };
    let mut peer: Option<SocketAddr> = None;
    let mut names: HashMap<String, (Vec<SocketAddr>, Instant)> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut control = [0u8; 256];
    loop {
        let (n, from) = tokio::select! {
            r = stream.read(&mut control) => match r {
                Ok(0) | Err(_) => break,
                // Nothing is defined on the connection after the reply; ignore it.
                Ok(_) => continue,
            },
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        if canonical(from.ip()) != canonical(client.ip())
            || peer.is_some_and(|p| p != from)
            || wanted_port.is_some_and(|p| p != from.port())
        {
            continue;
        }
        peer = Some(from);
        let Ok((target, payload)) = socks5::parse_udp(&buf[..n]) else {
            continue;
        };
        let addrs = match &target {
            Target::Ip(a) => vec![*a],
            Target::Name(name, port) => match names.get(name) {
                Some((a, at)) if at.elapsed() < NAME_TTL => {
                    a.iter().map(|x| SocketAddr::new(x.ip(), *port)).collect()
                }
                _ => match resolve::addresses(name, *port, session.options.resolve_names).await {
                    Ok(a) => {
                        if names.len() >= NAME_CACHE {
                            names.clear();
                        }
                        names.insert(name.clone(), (a.clone(), Instant::now()));
                        a
                    }
                    Err(_) => continue,
                },
            },
        };
        let ev = Event::GatewayDatagram {
            gateway: session.gateway,
            association,
            socket: sock.clone(),
            client: from,
            candidates: addrs,
            data: Bytes::copy_from_slice(payload),
        };
        if session.events.send(ev).await.is_err() {
            break;
        }
    }
    let _ = session
        .events
        .send(Event::AssociationEnded { association })
        .await;
}

/// An address with IPv4-mapped IPv6 seen as IPv4, to compare a client's addresses.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
