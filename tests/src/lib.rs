//! Fixtures for end-to-end tests: real nexd processes, real peers, real servers and
//! clients, so tests read like stories.

pub mod faults;
pub mod leak;
pub mod load;
pub mod netns;
pub mod nexd;
pub mod pair;
pub mod postgres;
pub mod procstat;
pub mod proxy_proto;
pub mod reflection;
pub mod socks;
pub mod status;
pub mod traffic;
pub mod wan;
pub mod wan_relay;
pub mod wg_world;

use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port free on 127.0.0.1 for both TCP and UDP, below the ephemeral range.
///
/// Ports come from a block of this process's own (chosen by pid) in 20000-32767, handed out
/// in turn: a port from the ephemeral range (32768-60999) could be taken by any outgoing
/// connection on the machine between this check and the daemon's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const BASE: u32 = 20000;
    const BLOCK: u32 = 256;
    const BLOCKS: u32 = (32768 - BASE) / BLOCK;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = BASE + (std::process::id() % BLOCKS) * BLOCK;
    for _ in 0..BLOCK {
        let i = u32::from(NEXT.fetch_add(1, Ordering::Relaxed)) % BLOCK;
        let port = (block + i) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{block}-{}", block + BLOCK - 1);
}

/// Whether this process runs as root (needed for namespaces and setpriv).
pub fn is_root() -> bool {
    // SAFETY-free: geteuid has no preconditions; libc exposes it as a safe-to-call extern.
    nix_geteuid() == 0
}

fn nix_geteuid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// Prints why a test is skipped; used only when the environment truly cannot run it.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// Whether `prog` is on PATH.
pub fn have(prog: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `nexctl nexd proxy list` text without its `origin=…` column: the rules as given (and
/// their allow-lists), one per line.
pub fn rules_as_given(list: &str) -> String {
    list.lines()
        .map(|l| {
            l.split_whitespace()
                .filter(|w| !w.starts_with("origin="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
