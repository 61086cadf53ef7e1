//! Host-side tasks: listeners on host ports and per-connection socket I/O.
//!
//! They never touch engine state; they send [`Event`]s and receive data on bounded channels.

use super::rules::ServiceKey;
use bytes::{Bytes, BytesMut};
use nexd_common::{Gateway, Rule};
use socket2::{Domain, Protocol as SockProto, SockRef, Socket, Type};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::io::Interest;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::AbortHandle;

/// Identifies a flow inside the engine.
pub type FlowId = u64;

/// Largest chunk moved in one message; also the host read size.
pub const CHUNK: usize = 64 * 1024;
/// Chunks a host reader may have in flight to the engine per flow (bounded buffering).
pub const HOST_CREDITS: usize = 4;
/// Chunks queued from the engine to a host writer per flow.
pub const TO_HOST_DEPTH: usize = 4;

/// What host-side tasks tell the engine.
pub enum Event {
    /// A client connected to an egress TCP port.
    EgressTcp {
        key: ServiceKey,
        stream: TcpStream,
        client: SocketAddr,
    },
    /// A datagram arrived on an egress UDP port (`socket`: where replies go back out).
    EgressUdp {
        key: ServiceKey,
        socket: Arc<UdpSocket>,
        client: SocketAddr,
        data: Bytes,
    },
    /// Bytes read from a flow's host socket.
    HostData { flow: FlowId, data: Bytes },
    /// The host side finished writing (FIN).
    HostEof { flow: FlowId },
    /// The host side failed or reset; abort the flow.
    HostReset { flow: FlowId },
    /// The host writer drained a queue the engine found full.
    HostRoom { flow: FlowId },
    /// An ingress flow's connection to its local destination is up.
    IngressConnected { flow: FlowId, stream: TcpStream },
    /// An ingress flow's connection to its local destination failed.
    IngressFailed { flow: FlowId, error: String },
    /// A reply datagram from an ingress UDP flow's destination.
    UdpReply { flow: FlowId, data: Bytes },
    /// A proxy server's client asks for a TCP flow to the first of `candidates` the server
    /// may reach; the engine answers on `reply` once the connection is up or has failed.
    GatewayConnect {
        gateway: Gateway,
        candidates: Vec<SocketAddr>,
        client: SocketAddr,
        reply: oneshot::Sender<ConnectOutcome>,
    },
    /// The proxy server's client has its answer: attach its connection to the flow, after
    /// sending `preface` (bytes the client sent past its request) into the tunnel.
    GatewayAttach {
        flow: FlowId,
        stream: TcpStream,
        preface: Bytes,
    },
    /// A datagram of a SOCKS5 UDP association for `candidates` (one destination).
    GatewayDatagram {
        gateway: Gateway,
        association: u64,
        socket: Arc<UdpSocket>,
        client: SocketAddr,
        candidates: Vec<SocketAddr>,
        data: Bytes,
    },
    /// A SOCKS5 UDP association ended (its TCP connection closed): close its flows.
    AssociationEnded { association: u64 },
    /// A proxy server's client failed before asking for a flow.
    GatewayFailed {
        gateway: Gateway,
        why: GatewayFailure,
    },
}

/// Why a proxy server's client got no flow before its request reached the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayFailure {
    /// Wrong or missing credentials.
    AuthFailed,
    /// A malformed or unsupported request, or a name that may not be resolved.
    BadRequest,
    /// A name that did not resolve.
    Unresolved,
}

/// The engine's answer to [`Event::GatewayConnect`].
pub type ConnectOutcome = Result<Connected, ConnectRefusal>;

/// A proxy flow's connection is up.
#[derive(Debug, Clone, Copy)]
pub struct Connected {
    /// The flow, to attach the client's connection to.
    pub flow: FlowId,
    /// The destination reached.
    pub dest: SocketAddr,
    /// The tunnel address and port the connection comes from.
    pub bound: SocketAddr,
}

/// Why a proxy flow was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// No candidate is inside a peer's AllowedIPs and the server's allow-list.
    NotAllowed,
    /// The flow limit is reached.
    Limit,
    /// The destination refused the connection (reset).
    Refused,
    /// The destination did not answer within the connect timeout.
    TimedOut,
    /// The server was removed, nexd is shutting down, or no source port is free.
    Unavailable,
}

/// State shared between a TCP flow in the engine and its host writer.
#[derive(Default)]
pub struct FlowShared {
    /// The engine found the to-host queue full and stopped reading from smoltcp.
    pub blocked: AtomicBool,
    /// The remote side finished cleanly: shut down the host write side instead of resetting.
    pub graceful: AtomicBool,
    /// Reset the host connection now, even while a write waits on a slow reader (shutdown).
    pub reset: tokio::sync::Notify,
    /// The flow ended cleanly (both FINs exchanged): close the host connection.
    pub ended: tokio::sync::Notify,
}

fn dual_stack_socket(port: u16, ty: Type, proto: SockProto) -> std::io::Result<Socket> {
    // One IPv6 socket with V6ONLY off serves IPv4 and IPv6; fall back to IPv4 where IPv6 is off.
    let v6 = Socket::new(Domain::IPV6, ty, Some(proto)).and_then(|s| {
        s.set_only_v6(false)?;
        Ok(s)
    });
    let (sock, addr): (Socket, SocketAddr) = match v6 {
        Ok(s) => (s, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))),
        Err(_) => (
            Socket::new(Domain::IPV4, ty, Some(proto))?,
            SocketAddr::from(([0, 0, 0, 0], port)),
        ),
    };
    if ty == Type::STREAM {
        sock.set_reuse_address(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

/// A socket bound to one host address; `::` also takes IPv4, as the unspecified address
/// of a dual-stack host does for most servers.
fn socket_on(addr: SocketAddr, ty: Type, proto: SockProto) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if let SocketAddr::V6(a) = addr {
        sock.set_only_v6(!a.ip().is_unspecified())?;
    }
    if ty == Type::STREAM {
        sock.set_reuse_address(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

/// Starts an egress rule's listener on each of its bind addresses ([`Rule::bind_addresses`])
/// with `listen`. Without a bind address the rule listens on loopback, and a host without
/// IPv6 has no `::1`: that one may be missing. On any other failure the listeners already
/// started are stopped.
pub fn listen_on_each(
    rule: &Rule,
    mut listen: impl FnMut(SocketAddr) -> std::io::Result<AbortHandle>,
) -> std::io::Result<Vec<AbortHandle>> {
    let mut tasks: Vec<AbortHandle> = Vec::new();
    for ip in rule.bind_addresses() {
        match listen(SocketAddr::new(ip, rule.port)) {
            Ok(t) => tasks.push(t),
            Err(e) if rule.bind.is_none() && ip.is_ipv6() && no_ipv6(&e) => {
                tracing::debug!(port = rule.port, "no IPv6 loopback here: {e}");
            }
            Err(e) => {
                tasks.iter().for_each(|t| t.abort());
                return Err(e);
            }
        }
    }
    Ok(tasks)
}

/// Whether binding `::1` failed because the host has no IPv6.
fn no_ipv6(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

/// Binds an egress TCP listener on one host address.
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = socket_on(addr, Type::STREAM, SockProto::TCP)?;
    // The kernel caps this at net.core.somaxconn; bursts of new clients must not overflow it.
    sock.listen(4096)?;
    TcpListener::from_std(sock.into())
}

/// Binds an egress UDP socket on one host address, with large buffers.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = socket_on(addr, Type::DGRAM, SockProto::UDP)?;
    raise_buffers(&sock);
    UdpSocket::from_std(sock.into())
}

/// The WireGuard socket, on all interfaces (IPv4 and IPv6), without a runtime: it is
/// registered later, on the engine's thread.
pub fn bind_udp_std(port: u16) -> std::io::Result<std::net::UdpSocket> {
    let sock = dual_stack_socket(port, Type::DGRAM, SockProto::UDP)?;
    raise_buffers(&sock);
    Ok(sock.into())
}

/// Raises socket buffers; the defaults drop packets under load. Best effort.
pub fn raise_buffers(sock: &Socket) {
    const SIZE: usize = 8 * 1024 * 1024;
    let _ = sock.set_recv_buffer_size(SIZE);
    let _ = sock.set_send_buffer_size(SIZE);
}

/// Accepts egress connections and hands them to the engine.
pub fn spawn_tcp_listener(
    listener: TcpListener,
    key: ServiceKey,
    events: mpsc::Sender<Event>,
) -> AbortHandle {
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            match listener.accept().await {
                Ok((stream, client)) => {
                    backoff.succeeded();
                    let _ = stream.set_nodelay(true);
                    if events
                        .send(Event::EgressTcp {
                            key,
                            stream,
                            client,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => backoff.failed(&e, key.2).await,
            }
        }
    })
    .abort_handle()
}

/// Accept failures so far (all listeners): EMFILE, ENFILE, ENOBUFS and the like.
pub static ACCEPT_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Pacing for an accept loop whose accept fails (out of descriptors, mostly): the loop
/// sleeps, longer while failures go on (10 ms doubling to 1 s), and logs once per
/// `LOG_EVERY` with the count, instead of spinning and logging every attempt.
#[derive(Default)]
pub struct AcceptBackoff {
    delay: Duration,
    since_log: u64,
    logged: Option<std::time::Instant>,
}

impl AcceptBackoff {
    const LOG_EVERY: Duration = Duration::from_secs(10);

    /// An accept worked: the next failure starts from the shortest pause.
    pub fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// An accept failed with `e`: count, maybe log, and wait before the next attempt.
    pub async fn failed(&mut self, e: &std::io::Error, port: u16) {
        ACCEPT_FAILURES.fetch_add(1, Ordering::Relaxed);
        self.since_log += 1;
        if self.logged.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY) {
            tracing::warn!(
                port,
                failures = self.since_log,
                "accept failed: {e}; new connections wait in the backlog (logged at most every {}s)",
                Self::LOG_EVERY.as_secs()
            );
            self.since_log = 0;
            self.logged = Some(std::time::Instant::now());
        }
        self.delay = (self.delay * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::time::sleep(self.delay).await;
    }
}

/// Receives egress datagrams and hands them to the engine.
pub fn spawn_udp_listener(
    sock: Arc<UdpSocket>,
    key: ServiceKey,
    events: mpsc::Sender<Event>,
) -> AbortHandle {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, client)) => {
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    let socket = sock.clone();
                    let ev = Event::EgressUdp {
                        key,
                        socket,
                        client,
                        data,
                    };
                    if events.send(ev).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::debug!(port = key.2, "udp recv: {e}"),
            }
        }
    })
    .abort_handle()
}

/// Reads replies from an ingress UDP flow's destination.
pub fn spawn_udp_reply_reader(
    sock: Arc<UdpSocket>,
    flow: FlowId,
    events: mpsc::Sender<Event>,
) -> AbortHandle {
    thread_local! {
        // One receive buffer per worker thread, not one per flow: 10,000 idle flows would
        // otherwise hold 640 MiB of buffers.
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 65536]);
    }
    tokio::spawn(async move {
        loop {
            if sock.readable().await.is_err() {
                return;
            }
            let got = SCRATCH.with(|b| {
                let mut b = b.borrow_mut();
                sock.try_recv(&mut b)
                    .map(|n| Bytes::copy_from_slice(&b[..n]))
            });
            match got {
                Ok(data) => {
                    if events.send(Event::UdpReply { flow, data }).await.is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // ICMP port unreachable from a connected socket; keep the flow until idle.
                Err(e) => tracing::debug!(flow, "udp reply recv: {e}"),
            }
        }
    })
    .abort_handle()
}

/// Dials an ingress flow's local destination and sends it `header` (a PROXY protocol
/// header) first, before any byte of the stream.
pub fn spawn_ingress_dial(
    dest: SocketAddr,
    flow: FlowId,
    timeout: Duration,
    header: Option<Vec<u8>>,
    events: mpsc::Sender<Event>,
) {
    tokio::spawn(async move {
        let dial = async {
            let mut stream = TcpStream::connect(dest).await?;
            let _ = stream.set_nodelay(true);
            if let Some(h) = header {
                stream.write_all(&h).await?;
            }
            Ok::<_, std::io::Error>(stream)
        };
        let ev = match tokio::time::timeout(timeout, dial).await {
            Ok(Ok(stream)) => Event::IngressConnected { flow, stream },
            Ok(Err(e)) => Event::IngressFailed {
                flow,
                error: e.to_string(),
            },
            Err(_) => Event::IngressFailed {
                flow,
                error: format!("timed out after {timeout:?}"),
            },
        };
        let _ = events.send(ev).await;
    });
}

/// Moves bytes between a host TCP connection and the engine, in both directions.
///
/// Reading takes a credit per chunk (the engine returns it once smoltcp has taken the
/// bytes), so at most `HOST_CREDITS` chunks per flow wait in memory. The writer task owns
/// the connection's lifetime: it closes the socket (both halves) once the engine ends the
/// flow, so no host socket outlives its flow. `open` counts the host connections held.
pub fn spawn_tcp_io(
    stream: TcpStream,
    flow: FlowId,
    events: mpsc::Sender<Event>,
    from_engine: mpsc::Receiver<Bytes>,
    credits: Arc<Semaphore>,
    shared: Arc<FlowShared>,
    open: Arc<AtomicUsize>,
) {
    let (rd, wr) = stream.into_split();
    let reader = tokio::spawn(read_host(rd, flow, events.clone(), credits));
    open.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        write_host(wr, reader, flow, events, from_engine, &shared).await;
        open.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Resolves once the host connection has failed or been reset (EPOLLERR), even while the
/// reader waits for credits or has already seen EOF: a client that resets a stalled or
/// half-closed connection must end the flow at once, not after the tunnel side times out.
async fn host_error(rd: &OwnedReadHalf) {
    // An error from registering means the socket is unusable: treat it as failed too.
    let _ = rd.as_ref().ready(Interest::ERROR).await;
}

/// Host → engine: reads while the engine has credit, then reports EOF, and keeps watching
/// for a reset afterwards.
async fn read_host(
    rd: OwnedReadHalf,
    flow: FlowId,
    events: mpsc::Sender<Event>,
    credits: Arc<Semaphore>,
) {
    loop {
        // Biased: while data flows, the first branch is ready at once and the error watch
        // is never polled (registered), so it costs nothing per chunk.
        let permit = tokio::select! {
            biased;
            p = credits.acquire() => match p {
                Ok(p) => p,
                // The flow is over.
                Err(_) => return,
            },
            _ = host_error(&rd) => break,
        };
        // Allocate only once data is there: an idle connection then holds no buffer.
        let readable = tokio::select! {
            biased;
            r = rd.readable() => r.is_ok(),
            _ = host_error(&rd) => false,
        };
        if !readable {
            break;
        }
        let mut buf = BytesMut::with_capacity(CHUNK);
        match rd.try_read_buf(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Ok(0) => {
                if events.send(Event::HostEof { flow }).await.is_err() {
                    return;
                }
                host_error(&rd).await;
                break;
            }
            Ok(_) => {
                permit.forget();
                let data = buf.freeze();
                if events.send(Event::HostData { flow, data }).await.is_err() {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    let _ = events.send(Event::HostReset { flow }).await;
}

/// Engine → host, then the connection's end: a clean shutdown of the write side after the
/// remote FIN (the other direction may go on), a reset when the flow was reset, and the
/// socket closed once the engine has ended the flow.
async fn write_host(
    mut wr: OwnedWriteHalf,
    reader: tokio::task::JoinHandle<()>,
    flow: FlowId,
    events: mpsc::Sender<Event>,
    mut from_engine: mpsc::Receiver<Bytes>,
    shared: &FlowShared,
) {
    let reset = loop {
        let chunk = tokio::select! {
            biased;
            _ = shared.reset.notified() => break true,
            c = from_engine.recv() => match c {
                Some(c) => c,
                // The engine dropped its sender: either the remote side finished (FIN)
                // or the flow was reset.
                None => break !shared.graceful.load(Ordering::SeqCst),
            },
        };
        let written = tokio::select! {
            biased;
            _ = shared.reset.notified() => break true,
            r = wr.write_all(&chunk) => r,
        };
        if written.is_err() {
            let _ = events.send(Event::HostReset { flow }).await;
            break true;
        }
        if shared.blocked.swap(false, Ordering::SeqCst)
            && events.send(Event::HostRoom { flow }).await.is_err()
        {
            break true;
        }
    };
    let reset = reset || {
        let _ = wr.shutdown().await;
        // Half-closed: the host may still send until the engine ends the flow.
        tokio::select! {
            _ = shared.reset.notified() => true,
            _ = shared.ended.notified() => false,
        }
    };
    reader.abort();
    if reset {
        // SO_LINGER 0 turns the close into a RST, as a reset deserves; forgetting the half
        // keeps its drop from sending a FIN first.
        let _ = SockRef::from(wr.as_ref()).set_linger(Some(Duration::ZERO));
        wr.forget();
    }
    // The socket closes with the last half: this one here, the reader's with its task.
}
