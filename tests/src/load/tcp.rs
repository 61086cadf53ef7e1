//! Many TCP connections open at the same time, each echoing its own random bytes.

use crate::traffic::{payload, sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// What [`concurrent_echo`] saw.
#[derive(Debug)]
pub struct TcpLoadReport {
    /// Connections open at the same time when the data started to flow.
    pub open_at_once: usize,
    /// Connections whose echo came back complete with the right checksum.
    pub verified: usize,
    /// One line per failed connection.
    pub failures: Vec<String>,
    /// From the first connect to the last verified echo.
    pub elapsed: Duration,
}

/// Bounds for one run, generous because other builds share the machine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const ECHO_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens `conns` connections to an echo server at `addr` and waits (up to `open_deadline`)
/// until all are open; then calls `all_open` with the number open (the caller checks the
/// proxies and samples their resources while every flow exists), and only then sends
/// `bytes` pseudo-random bytes on each, half-closes, reads the echo to EOF and compares
/// checksums.
pub fn concurrent_echo(
    rt: &Runtime,
    addr: SocketAddr,
    conns: usize,
    bytes: usize,
    seed: u64,
    open_deadline: Duration,
    all_open: impl FnOnce(usize),
) -> TcpLoadReport {
    let start = Instant::now();
    let open = Arc::new(AtomicUsize::new(0));
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..conns)
        .map(|i| {
            let open = open.clone();
            let mut go = go_rx.clone();
            rt.spawn(async move {
                let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                    .await
                    .map_err(|_| format!("conn {i}: connect timed out"))?
                    .map_err(|e| format!("conn {i}: connect: {e}"))?;
                open.fetch_add(1, Ordering::SeqCst);
                tokio::time::timeout(ECHO_TIMEOUT, go.wait_for(|g| *g))
                    .await
                    .map_err(|_| format!("conn {i}: never told to start"))?
                    .map_err(|_| format!("conn {i}: start signal dropped"))?;
                let data = payload(bytes, seed.wrapping_add(i as u64));
                // Progress both ways, so a timeout says which direction stood still.
                let sent = AtomicUsize::new(0);
                let received = AtomicUsize::new(0);
                let local = conn.local_addr().map(|a| a.port()).unwrap_or(0);
                let (mut r, mut w) = conn.split();
                let write = async {
                    for piece in data.chunks(16 * 1024) {
                        w.write_all(piece).await?;
                        sent.fetch_add(piece.len(), Ordering::Relaxed);
                    }
                    // Half-close: the echo must still come back in full.
                    w.shutdown().await
                };
                let read = async {
                    let mut got = Vec::with_capacity(bytes);
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = r.read(&mut buf).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(got);
                        }
                        got.extend_from_slice(&buf[..n]);
                        received.fetch_add(n, Ordering::Relaxed);
                    }
                };
                let (wrote, got) =
                    tokio::time::timeout(ECHO_TIMEOUT, async { tokio::join!(write, read) })
                        .await
                        .map_err(|_| {
                            format!(
                                "conn {i} (local port {local}): echo timed out; sent {} of {bytes} \
                                 bytes, received {}",
                                sent.load(Ordering::Relaxed),
                                received.load(Ordering::Relaxed)
                            )
                        })?;
                wrote.map_err(|e| format!("conn {i}: write: {e}"))?;
                let got = got.map_err(|e| format!("conn {i}: read: {e}"))?;
                if got.len() != data.len() || sha256(&got) != sha256(&data) {
                    return Err(format!(
                        "conn {i}: echo mismatch: sent {} bytes, got {} bytes",
                        data.len(),
                        got.len()
                    ));
                }
                Ok(())
            })
        })
        .collect();
    crate::wait_until(open_deadline, || open.load(Ordering::SeqCst) >= conns);
    all_open(open.load(Ordering::SeqCst));
    let open_at_once = open.load(Ordering::SeqCst);
    let _ = go_tx.send(true);
    let mut failures = Vec::new();
    let mut verified = 0;
    for t in tasks {
        match rt.block_on(t) {
            Ok(Ok(())) => verified += 1,
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("task failed: {e}")),
        }
    }
    TcpLoadReport {
        open_at_once,
        verified,
        failures,
        elapsed: start.elapsed(),
    }
}
