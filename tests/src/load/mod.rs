//! Load generators for many concurrent flows: a tokio runtime in the test process with echo
//! servers that count their connections, and clients that verify every byte.
//!
//! Threads per connection (as in [`crate::traffic`]) do not scale to thousands of flows on
//! two cores, so everything here is async.

pub mod burst;
pub mod tcp;
pub mod udp;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

/// A runtime for load clients and servers (two workers: this machine has two cores).
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// TCP connections an echo server has seen.
#[derive(Default)]
pub struct ConnCount {
    accepted: AtomicUsize,
    open: AtomicUsize,
}

impl ConnCount {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections accepted and not yet finished.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Starts a TCP echo server on 127.0.0.1 (echoes until the client's FIN, then shuts down
/// its write side) on `rt`; returns its port and its connection counts.
pub fn tcp_echo_server(rt: &Runtime) -> (u16, Arc<ConnCount>) {
    // std's listen backlog of 128 overflows when 1,000 dials arrive at once: with SYN
    // cookies the dialer then counts as connected while the server never sees the connection
    // until data comes, and the test waits for all of them before sending any.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("echo socket");
    sock.set_reuse_address(true).expect("reuseaddr");
    sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind echo server");
    sock.listen(4096).expect("listen");
    let std_listener: std::net::TcpListener = sock.into();
    let port = std_listener.local_addr().expect("local addr").port();
    std_listener.set_nonblocking(true).expect("nonblocking");
    let count = Arc::new(ConnCount::default());
    let c = count.clone();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                // EMFILE and the like: yield rather than spin; the test's assertions report it.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            c.accepted.fetch_add(1, Ordering::SeqCst);
            c.open.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
                c.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, count)
}

/// Starts a UDP echo server on 127.0.0.1 with a large receive buffer; returns its port.
pub fn udp_echo_server() -> u16 {
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .expect("udp socket");
    // Thousands of flows arrive in bursts; the default buffer would drop some of them.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    sock.bind(&addr.into()).expect("bind udp echo");
    let sock: std::net::UdpSocket = sock.into();
    let port = sock.local_addr().expect("local addr").port();
    crate::traffic::udp_echo_server(sock);
    port
}
