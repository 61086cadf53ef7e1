//! Helpers for fault-injection tests: paced transfers whose progress can be watched (so a
//! fault lands mid-transfer, not before or after), daemon introspection (status, peers, open
//! file descriptors) and SIGKILL of a process we started.

use crate::pair::nexctl_as;
use crate::traffic::{check_echo, payload};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Sends `len` bytes to an echo server at about `bytes_per_sec`, half-closes, reads the echo
/// to EOF and checks its SHA-256. `progress` counts bytes echoed back so far, so a test can
/// inject its fault once the transfer is under way. Reads give up after `stall` without data.
pub fn paced_echo_roundtrip(
    addr: SocketAddr,
    len: usize,
    seed: u64,
    bytes_per_sec: u64,
    stall: Duration,
    progress: Arc<AtomicU64>,
) -> Result<(), String> {
    let data = payload(len, seed);
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_read_timeout(Some(stall))
        .map_err(|e| e.to_string())?;
    let mut writer = conn.try_clone().map_err(|e| e.to_string())?;
    let to_send = data.clone();
    let w = thread::spawn(move || -> Result<(), String> {
        let start = Instant::now();
        let mut sent = 0usize;
        for chunk in to_send.chunks(16 * 1024) {
            writer
                .write_all(chunk)
                .map_err(|e| format!("write after {sent} bytes: {e}"))?;
            sent += chunk.len();
            // Pacing is the point of this helper (it stretches the transfer over a known
            // time), not synchronisation.
            let due = Duration::from_secs_f64(sent as f64 / bytes_per_sec as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
        }
        writer
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))
    });
    let mut got = Vec::with_capacity(len);
    let mut buf = vec![0u8; 64 * 1024];
    let read = loop {
        match conn.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                progress.store(got.len() as u64, Ordering::SeqCst);
            }
            Err(e) => break Err(format!("read after {} bytes: {e}", got.len())),
        }
    };
    // Unblock a writer stuck on a dead connection before joining it.
    let _ = conn.shutdown(Shutdown::Both);
    let wrote = w.join().map_err(|_| "writer panicked".to_string())?;
    read?;
    wrote?;
    check_echo(&data, &got)
}

/// `nexctl --output json <args>` against `socket`, parsed; panics on failure.
pub fn nexctl_json(socket: &Path, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--output", "json"];
    full.extend_from_slice(args);
    let (code, out, err) = nexctl_as(None, socket, &full);
    assert_eq!(code, 0, "nexctl {args:?} failed: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("nexctl {args:?}: bad JSON {e}: {out}"))
}

/// `nexctl nexd status` as JSON.
pub fn status(socket: &Path) -> serde_json::Value {
    nexctl_json(socket, &["nexd", "status"])
}

/// A drop counter from a status document (0 if absent).
pub fn counter(status: &serde_json::Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

/// The `tcp_flows` figure from a status document.
pub fn tcp_flows(status: &serde_json::Value) -> u64 {
    status["tcp_flows"].as_u64().unwrap_or(u64::MAX)
}

/// The endpoint nexd currently uses for the peer with `public_key`, if any.
pub fn peer_endpoint(socket: &Path, public_key: &str) -> Option<String> {
    let peers = nexctl_json(socket, &["nexd", "peers", "list"]);
    peers["peers"]
        .as_array()?
        .iter()
        .find(|p| p["public_key"] == public_key)
        .and_then(|p| p["endpoint"].as_str().map(str::to_string))
}

/// Bytes (tx, rx) nexd counts for the peer with `public_key`.
pub fn peer_traffic(socket: &Path, public_key: &str) -> (u64, u64) {
    let peers = nexctl_json(socket, &["nexd", "peers", "list"]);
    peers["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["public_key"] == public_key))
        .map(|p| {
            (
                p["tx_bytes"].as_u64().unwrap_or(0),
                p["rx_bytes"].as_u64().unwrap_or(0),
            )
        })
        .unwrap_or((0, 0))
}

/// Number of open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(usize::MAX)
}

/// Sends SIGKILL to `pid` (a process this test started).
pub fn sigkill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid} failed");
}

/// A child process whose stdout lines a test can wait for (e.g. a testkit transfer that
/// reports progress); stdin stays open until drop, so `hold-conns` keeps holding. Killed and
/// reaped on drop.
pub struct LineChild {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line seen so far.
    pub seen: Vec<String>,
}

impl LineChild {
    /// Spawns `cmd` with piped stdin/stdout.
    pub fn spawn(mut cmd: std::process::Command) -> LineChild {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        LineChild {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits up to `timeout` for a line satisfying `pred`; returns it, or None on timeout or
    /// end of output.
    pub fn wait_line(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        crate::wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Progress reported by a `progress N` line, if it is one.
pub fn progress_of(line: &str) -> Option<u64> {
    line.strip_prefix("progress ")?.trim().parse().ok()
}
