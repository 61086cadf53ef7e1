//! Real servers and clients that verify bytes end to end.

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

/// Deterministic pseudo-random payload.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Hex SHA-256.
pub fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Echoes what `c` sends until it finishes (then finishes too) or fails.
pub fn echo_until_eof(c: &mut TcpStream) {
    let mut buf = vec![0u8; 65536];
    loop {
        match c.read(&mut buf) {
            Ok(0) => {
                let _ = c.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// TCP echo server: echoes until the client's FIN, then shuts down its write side.
/// Runs on background threads for the life of the process.
pub fn tcp_echo_server(listener: TcpListener) {
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            thread::spawn(move || {
                echo_until_eof(&mut c);
            });
        }
    });
}

/// TCP server that reads `len` bytes from each connection, writes them back and closes
/// first (the server side then holds the 4-tuple in TIME-WAIT, as an HTTP server with
/// `Connection: close` does). Runs on background threads for the life of the process.
pub fn tcp_reply_close_server(listener: TcpListener, len: usize) {
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            thread::spawn(move || {
                let mut buf = vec![0u8; len];
                let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                if c.read_exact(&mut buf).is_ok() {
                    let _ = c.write_all(&buf);
                }
            });
        }
    });
}

/// A TCP listener with a backlog of 4,096. std's 128 overflows when a proxy dials hundreds
/// of connections at once; the server side then resets some of them (seen as resets
/// through nexd in the 1,000-connection tests once nexd dialed fast enough).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// Starts a TCP echo server on 127.0.0.1 and returns its port.
pub fn echo_server() -> u16 {
    let l = listen(local(0)).expect("bind echo server");
    let port = l.local_addr().expect("local addr").port();
    tcp_echo_server(l);
    port
}

/// 127.0.0.1:`port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// TCP server that answers every connection with a fixed banner and closes.
pub fn tcp_banner_server(listener: TcpListener, banner: &'static str) {
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.write_all(banner.as_bytes());
        }
    });
}

/// UDP echo server.
pub fn udp_echo_server(sock: UdpSocket) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
}

/// Sends `len` bytes to an echo server, half-closes, reads the echo to EOF and checks it.
/// Writing and reading run concurrently so large transfers cannot deadlock.
pub fn tcp_echo_roundtrip(addr: SocketAddr, len: usize, seed: u64) -> Result<(), String> {
    let data = payload(len, seed);
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut writer = conn.try_clone().map_err(|e| e.to_string())?;
    let to_send = data.clone();
    let w = thread::spawn(move || -> Result<(), String> {
        writer
            .write_all(&to_send)
            .map_err(|e| format!("write: {e}"))?;
        // Half-close: the echo must still come back in full.
        writer
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))
    });
    let mut got = Vec::with_capacity(len);
    conn.read_to_end(&mut got)
        .map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
    w.join().map_err(|_| "writer panicked".to_string())??;
    check_echo(&data, &got)
}

/// The echo must be exactly what was sent (length and SHA-256).
pub fn check_echo(data: &[u8], got: &[u8]) -> Result<(), String> {
    if got.len() != data.len() || sha256(got) != sha256(data) {
        return Err(format!(
            "echo mismatch: sent {} bytes sha {}, got {} bytes sha {}",
            data.len(),
            sha256(data),
            got.len(),
            sha256(got)
        ));
    }
    Ok(())
}

/// Sends `count` datagrams of `size` bytes to a UDP echo and checks each reply's content.
/// Each datagram is retried a few times (UDP may drop), and all must come back intact.
pub fn udp_echo_check(addr: SocketAddr, count: usize, size: usize) -> Result<(), String> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|_| "addr")?
    } else {
        "[::]:0".parse().map_err(|_| "addr")?
    };
    let sock = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    for i in 0..count {
        let msg = payload(size, i as u64 + 1000);
        let mut ok = false;
        for _attempt in 0..10 {
            sock.send_to(&msg, addr).map_err(|e| format!("send: {e}"))?;
            match sock.recv_from(&mut buf) {
                Ok((n, _)) if buf[..n] == msg[..] => {
                    ok = true;
                    break;
                }
                Ok((n, _)) => {
                    // A late echo of an earlier retry: ignore unless it is garbage.
                    if n != size {
                        return Err(format!("datagram {i}: got {n} bytes, want {size}"));
                    }
                }
                Err(_) => {}
            }
        }
        if !ok {
            return Err(format!("datagram {i} of {size} bytes never echoed"));
        }
    }
    Ok(())
}

/// Result of [`connection_rate`].
pub struct RateResult {
    /// Connections that completed with their bytes verified.
    pub ok: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// The longest any one connection took, from connect to the echo's end (or failure).
    pub slowest: Duration,
    /// Connections that took longer than 500 ms.
    pub over_500ms: u64,
}

/// Who closes a short connection first, and so holds its 4-tuple in TIME-WAIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closer {
    /// The client half-closes after its request; the echo server closes after it.
    Client,
    /// The server closes after its reply ([`tcp_reply_close_server`]); the client's next
    /// connection from the same port meets the server's TIME-WAIT.
    Server,
}

/// Opens short-lived connections to an echo server from `threads` threads for `duration`:
/// each sends 32 bytes and must read the same 32 bytes back, then EOF. With
/// [`Closer::Client`] it half-closes after writing (for [`tcp_echo_server`]); with
/// [`Closer::Server`] it waits for the server to close (for [`tcp_reply_close_server`]).
pub fn connection_rate(
    addr: SocketAddr,
    threads: usize,
    duration: Duration,
    closer: Closer,
) -> RateResult {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let slowest_us = Arc::new(AtomicU64::new(0));
    let over = Arc::new(AtomicU64::new(0));
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (ok, failed) = (ok.clone(), failed.clone());
            let (slowest_us, over) = (slowest_us.clone(), over.clone());
            thread::spawn(move || {
                let mut i = 0u64;
                while start.elapsed() < duration {
                    let msg = payload(32, (t as u64) << 32 | i);
                    i += 1;
                    let began = std::time::Instant::now();
                    let r = (|| -> std::io::Result<bool> {
                        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                        c.set_read_timeout(Some(Duration::from_secs(5)))?;
                        c.write_all(&msg)?;
                        if closer == Closer::Client {
                            c.shutdown(Shutdown::Write)?;
                        }
                        let mut got = Vec::with_capacity(32);
                        c.read_to_end(&mut got)?;
                        Ok(got == msg)
                    })();
                    let took = began.elapsed();
                    slowest_us.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
                    if took > Duration::from_millis(500) {
                        over.fetch_add(1, Ordering::Relaxed);
                    }
                    match r {
                        Ok(true) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    RateResult {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        slowest: Duration::from_micros(slowest_us.load(Ordering::Relaxed)),
        over_500ms: over.load(Ordering::Relaxed),
    }
}

/// Request/response round trips of `size` bytes over one connection to an echo server;
/// returns sorted round-trip times.
pub fn round_trips(addr: SocketAddr, count: usize, size: usize) -> std::io::Result<Vec<Duration>> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let msg = payload(size, 7);
    let mut buf = vec![0u8; size];
    let mut rtts = Vec::with_capacity(count);
    for _ in 0..count {
        let t = std::time::Instant::now();
        c.write_all(&msg)?;
        c.read_exact(&mut buf)?;
        rtts.push(t.elapsed());
        if buf != msg {
            return Err(std::io::Error::other("echo mismatch"));
        }
    }
    rtts.sort();
    Ok(rtts)
}

/// TCP server that reads a `len`-byte message, echoes it and closes first, as HTTP/1.0
/// servers do: its kernel then holds each connection's 4-tuple in TIME-WAIT for 60 s.
pub fn tcp_echo_close_server(listener: TcpListener, len: usize) {
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                let mut msg = vec![0u8; len];
                if c.read_exact(&mut msg).is_ok() {
                    let _ = c.write_all(&msg);
                }
                // Dropping closes: this side sends the first FIN.
            });
        }
    });
}

/// Result of [`serial_connections`].
#[derive(Debug, Default)]
pub struct SerialResult {
    /// Connections whose echo came back intact.
    pub ok: u64,
    /// Connections that failed (first few reasons in `errors`).
    pub failed: u64,
    /// Connections that took longer than the `slow` threshold.
    pub slow: u64,
    /// Time of every connection, connect to verified EOF, in order.
    pub times: Vec<Duration>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// The first few failures.
    pub errors: Vec<String>,
}

/// Opens up to `count` connections one after another, for at most `duration`: each sends
/// `len` bytes (a different payload each), reads the echo to EOF and checks it. A connection
/// taking longer than `slow` is counted (and, being one at a time, delays the rest).
pub fn serial_connections(
    addr: SocketAddr,
    count: u64,
    duration: Duration,
    len: usize,
    slow: Duration,
) -> SerialResult {
    let mut r = SerialResult::default();
    let start = std::time::Instant::now();
    for i in 0..count {
        if start.elapsed() >= duration {
            break;
        }
        let msg = payload(len, i);
        let t = std::time::Instant::now();
        let res = (|| -> Result<(), String> {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .map_err(|e| format!("connect: {e}"))?;
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            c.write_all(&msg).map_err(|e| format!("write: {e}"))?;
            let mut got = Vec::with_capacity(len);
            c.read_to_end(&mut got)
                .map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
            check_echo(&msg, &got)
        })();
        let took = t.elapsed();
        r.times.push(took);
        if took > slow {
            r.slow += 1;
        }
        match res {
            Ok(()) => r.ok += 1,
            Err(e) => {
                r.failed += 1;
                if r.errors.len() < 10 {
                    r.errors.push(format!("connection {i}: {e}"));
                }
            }
        }
    }
    r.elapsed = start.elapsed();
    r
}
