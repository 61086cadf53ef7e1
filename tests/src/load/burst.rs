//! A burst of TCP connects fired as fast as one thread can, most of them abandoned at once
//! (half closed with FIN, half reset), a few kept to prove the proxy still carries data.

use crate::traffic::{payload, sha256};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// What [`syn_burst`] saw.
#[derive(Debug)]
pub struct BurstReport {
    /// Connects fired.
    pub fired: usize,
    /// Connects the local kernel refused outright (e.g. no free source port).
    pub connect_errors: usize,
    /// Closed right after connect with a FIN.
    pub abandoned_fin: usize,
    /// Closed right after connect with a reset (SO_LINGER 0).
    pub abandoned_rst: usize,
    /// Kept and used for an echo.
    pub kept: usize,
    /// Kept connections whose echo came back intact.
    pub kept_verified: usize,
    /// One line per failed kept connection.
    pub failures: Vec<String>,
    /// Time to fire every connect.
    pub fire_time: Duration,
}

/// Bytes each kept connection echoes.
const KEPT_BYTES: usize = 4096;
/// A kept connection may have lost its SYN to a full accept queue: the kernel retries it
/// after 1, 3, 7, 15 s, so allow for several retries on a loaded machine.
const KEPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Fires `total` non-blocking connects at an echo server behind `addr`; every
/// `keep_every`-th is kept and then echoes [`KEPT_BYTES`] checked by checksum, the others
/// are closed at once.
pub fn syn_burst(rt: &Runtime, addr: SocketAddr, total: usize, keep_every: usize) -> BurstReport {
    let mut report = BurstReport {
        fired: 0,
        connect_errors: 0,
        abandoned_fin: 0,
        abandoned_rst: 0,
        kept: 0,
        kept_verified: 0,
        failures: Vec::new(),
        fire_time: Duration::ZERO,
    };
    let start = Instant::now();
    let mut kept = Vec::new();
    for i in 0..total {
        report.fired += 1;
        let Ok(s) = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        else {
            report.connect_errors += 1;
            continue;
        };
        if s.set_nonblocking(true).is_err() {
            report.connect_errors += 1;
            continue;
        }
        match s.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(_) => {
                report.connect_errors += 1;
                continue;
            }
        }
        if i % keep_every == 0 {
            kept.push((i, s));
        } else if i % 2 == 0 {
            let _ = s.set_linger(Some(Duration::ZERO));
            report.abandoned_rst += 1;
        } else {
            report.abandoned_fin += 1;
        }
    }
    report.fire_time = start.elapsed();
    report.kept = kept.len();
    let tasks: Vec<_> = kept
        .into_iter()
        .map(|(i, s)| rt.spawn(async move { echo_on(i, s).await }))
        .collect();
    for t in tasks {
        match rt.block_on(t) {
            Ok(Ok(())) => report.kept_verified += 1,
            Ok(Err(e)) => report.failures.push(e),
            Err(e) => report.failures.push(format!("task failed: {e}")),
        }
    }
    report
}

async fn echo_on(i: usize, s: Socket) -> Result<(), String> {
    let run = async {
        let mut c = tokio::net::TcpStream::from_std(s.into()).map_err(|e| e.to_string())?;
        // The connect may still be in progress: writable means it finished, one way or another.
        c.writable().await.map_err(|e| e.to_string())?;
        if let Ok(Some(e)) = c.take_error() {
            return Err(format!("connect: {e}"));
        }
        let data = payload(KEPT_BYTES, 0xb0057 + i as u64);
        let (mut r, mut w) = c.split();
        let write = async {
            w.write_all(&data).await?;
            w.shutdown().await
        };
        let read = async {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.map(|_| got)
        };
        let (wrote, got) = tokio::join!(write, read);
        wrote.map_err(|e| format!("write: {e}"))?;
        let got = got.map_err(|e| format!("read: {e}"))?;
        if sha256(&got) != sha256(&data) {
            return Err(format!("echo mismatch: got {} bytes", got.len()));
        }
        Ok(())
    };
    match tokio::time::timeout(KEPT_TIMEOUT, run).await {
        Ok(r) => r.map_err(|e| format!("kept conn {i}: {e}")),
        Err(_) => Err(format!("kept conn {i}: timed out")),
    }
}
