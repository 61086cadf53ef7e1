//! Fixtures for end-to-end tests: real nexd processes, real peers, real servers and
//! clients, so tests read like stories.

pub mod faults;
pub mod leak;
pub mod load;
pub mod netns;
pub mod nexd;
pub mod pair;
pub mod procstat;
pub mod reflection;
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

/// A port that was free a moment ago on 127.0.0.1 for both TCP and UDP.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let Ok(t) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = t.local_addr() else { continue };
        if std::net::UdpSocket::bind(("127.0.0.1", addr.port())).is_ok() {
            return addr.port();
        }
    }
    panic!("no free port found");
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
